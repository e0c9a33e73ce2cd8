//! `cg_status`, the thread-local message behind `cg_last_error`, and
//! [`call`]: the one gate every entry point goes through (panics caught,
//! failures recorded).

use std::cell::RefCell;
use std::ffi::{CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

use convgemm::ConvError;

/// What a call returns: `CG_OK`, or the kind of mistake that made it fail
/// (`cg_last_error()` then says which argument and why).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum cg_status {
    /// The call succeeded and wrote its outputs.
    CG_OK = 0,
    /// A pointer the call needs is NULL (a buffer whose length is not 0, a
    /// shape, the params, a plan).
    CG_ERROR_NULL_POINTER = 1,
    /// A pointer is not aligned for its type (4 bytes for float, that of
    /// size_t for shapes).
    CG_ERROR_MISALIGNED = 2,
    /// An output buffer overlaps an input buffer, or (sgemm) two elements of
    /// C share an address.
    CG_ERROR_ALIASING = 3,
    /// A parameter is out of its range, e.g. a zero stride or an enum value
    /// the header does not define.
    CG_ERROR_BAD_PARAMETER = 4,
    /// Two shapes disagree (channels not divisible by groups, a gradient's
    /// shape that does not match the forward shapes, ...).
    CG_ERROR_SHAPE_MISMATCH = 5,
    /// The dilated kernel is larger than the padded input along an axis.
    CG_ERROR_NO_OUTPUT = 6,
    /// A length is not the product of its shape (or, for cg_sgemm, too
    /// short for the elements its strides address).
    CG_ERROR_BUFFER_LENGTH = 7,
    /// Size arithmetic would overflow (a shape or length beyond what the
    /// address space can hold).
    CG_ERROR_OVERFLOW = 8,
    /// The thread pool could not be created.
    CG_ERROR_THREAD_POOL = 9,
    /// The plan pointer does not point to a plan (a best-effort check of the
    /// plan's mark; a destroyed plan is freed memory and cannot be detected).
    CG_ERROR_BAD_PLAN = 10,
    /// A bug in convgemm (a Rust panic, caught at the boundary). Please
    /// report it with the message.
    CG_ERROR_INTERNAL = 11,
}

/// A rejected call: its status and the sentence `cg_last_error` returns.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) status: cg_status,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(status: cg_status, message: impl Into<String>) -> Self {
        Failure { status, message: message.into() }
    }
}

impl From<ConvError> for Failure {
    fn from(e: ConvError) -> Self {
        let status = match e {
            ConvError::BadParameter { .. } => cg_status::CG_ERROR_BAD_PARAMETER,
            ConvError::ShapeMismatch { .. } => cg_status::CG_ERROR_SHAPE_MISMATCH,
            ConvError::NoOutput { .. } => cg_status::CG_ERROR_NO_OUTPUT,
            ConvError::BufferLength { .. } => cg_status::CG_ERROR_BUFFER_LENGTH,
            ConvError::Overflow { .. } => cg_status::CG_ERROR_OVERFLOW,
            // The C interface neither forces an algorithm nor picks an ISA:
            // anything else convgemm may reject is a parameter.
            _ => cg_status::CG_ERROR_BAD_PARAMETER,
        };
        Failure { status, message: e.to_string() }
    }
}

thread_local! {
    /// This thread's last failure, as `cg_last_error` hands it out.
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn record(failure: Failure) -> cg_status {
    // Messages are ours and never hold a NUL; if one ever did, cut it there.
    let bytes: Vec<u8> = failure.message.into_bytes().into_iter().take_while(|&b| b != 0).collect();
    let message = CString::new(bytes).unwrap_or_default();
    // A thread being torn down (a call from a thread-exit destructor) has no
    // slot any more: the status still says what went wrong.
    let _ = LAST_ERROR.try_with(|slot| *slot.borrow_mut() = message);
    failure.status
}

/// Runs one entry point's body with any panic caught and turned into
/// `CG_ERROR_INTERNAL`, and a failure recorded for `cg_last_error`. (The
/// body hands its computation to `threads::run`.)
pub(crate) fn call(body: impl FnOnce() -> Result<(), Failure>) -> cg_status {
    let outcome = catch_unwind(AssertUnwindSafe(body));
    match outcome {
        Ok(Ok(())) => cg_status::CG_OK,
        Ok(Err(failure)) => record(failure),
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_string());
            record(Failure::new(
                cg_status::CG_ERROR_INTERNAL,
                format!("internal error in convgemm (please report it): {what}"),
            ))
        }
    }
}

/// This thread's last failure, in words; `""` if no call on this thread has
/// failed. The string stays valid until the next failing call on the same
/// thread; successful calls leave it as it is.
#[unsafe(no_mangle)]
pub extern "C" fn cg_last_error() -> *const c_char {
    // A thread being torn down has no slot any more: give the static "".
    LAST_ERROR.try_with(|slot| slot.borrow().as_ptr()).unwrap_or(c"".as_ptr())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn last() -> String {
        // SAFETY: cg_last_error returns a NUL-terminated string that lives
        // until this thread's next failing call.
        unsafe { CStr::from_ptr(cg_last_error()) }.to_string_lossy().into_owned()
    }

    #[test]
    fn a_panic_becomes_a_status_and_a_message() {
        assert_eq!(last(), "");
        let status = call(|| panic!("the sky fell"));
        assert_eq!(status, cg_status::CG_ERROR_INTERNAL);
        assert!(last().contains("the sky fell"), "{}", last());
        // A success leaves the last failure in place.
        assert_eq!(call(|| Ok(())), cg_status::CG_OK);
        assert!(last().contains("the sky fell"));
    }

    #[test]
    fn a_message_with_a_nul_is_cut_there() {
        let status = call(|| Err(Failure::new(cg_status::CG_ERROR_BAD_PARAMETER, "before\0after")));
        assert_eq!(status, cg_status::CG_ERROR_BAD_PARAMETER);
        assert_eq!(last(), "before");
    }
}
