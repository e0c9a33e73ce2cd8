//! Turning C's pointer-and-length pairs into slices, checked first: NULL,
//! alignment, the byte size, and outputs that overlap inputs. Nothing here
//! can check that a pointer really addresses `len` floats; the header makes
//! that the caller's promise.

use std::mem::{align_of, size_of};

use crate::status::{Failure, cg_status};

fn null(name: &str) -> Failure {
    Failure::new(cg_status::CG_ERROR_NULL_POINTER, format!("{name} is NULL"))
}

/// Checks what can be checked of `len` elements of `T` at `ptr`; `Ok(false)`
/// for an empty buffer (no pointer needed, NULL allowed).
fn check_region<T>(name: &str, ptr: *const T, len: usize) -> Result<bool, Failure> {
    if len == 0 {
        return Ok(false);
    }
    if ptr.is_null() {
        return Err(null(name));
    }
    if !(ptr as usize).is_multiple_of(align_of::<T>()) {
        return Err(Failure::new(
            cg_status::CG_ERROR_MISALIGNED,
            format!("{name} ({ptr:p}) is not aligned to {} bytes", align_of::<T>()),
        ));
    }
    let fits = len
        .checked_mul(size_of::<T>())
        .filter(|&bytes| bytes <= isize::MAX as usize && (ptr as usize).checked_add(bytes).is_some());
    if fits.is_none() {
        return Err(Failure::new(
            cg_status::CG_ERROR_OVERFLOW,
            format!("{name}_len = {len}: the buffer would not fit the address space"),
        ));
    }
    Ok(true)
}

/// The bytes a buffer of this call covers, for the overlap checks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Region<'n> {
    name: &'n str,
    start: usize,
    end: usize,
}

impl<'n> Region<'n> {
    /// The bytes of `slice` (empty for an empty slice).
    pub(crate) fn of<T>(name: &'n str, slice: &[T]) -> Self {
        let start = slice.as_ptr() as usize;
        Region { name, start, end: start + std::mem::size_of_val(slice) }
    }

    fn overlaps(&self, other: &Region) -> bool {
        self.start < self.end && other.start < other.end && self.start < other.end && other.start < self.end
    }
}

/// The `len` elements at `ptr`, read-only.
///
/// # Safety
/// If `ptr` is not NULL and `len > 0`, `ptr` must address `len` readable
/// elements that nothing writes during the call.
pub(crate) unsafe fn slice<'a, T>(name: &str, ptr: *const T, len: usize) -> Result<&'a [T], Failure> {
    if !check_region(name, ptr, len)? {
        return Ok(&[]);
    }
    // SAFETY: `ptr` is non-NULL and aligned, the byte size fits isize, and
    // the caller promises `len` readable elements there, not written meanwhile.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// The `len` floats at `ptr`, read-only.
///
/// # Safety
/// As [`slice`].
pub(crate) unsafe fn floats<'a>(name: &str, ptr: *const f32, len: usize) -> Result<&'a [f32], Failure> {
    // SAFETY: passed on.
    unsafe { slice(name, ptr, len) }
}

/// An optional input: NULL is `None` (e.g. no bias), whatever `len` says.
///
/// # Safety
/// As [`slice`].
pub(crate) unsafe fn optional_floats<'a>(
    name: &str,
    ptr: *const f32,
    len: usize,
) -> Result<Option<&'a [f32]>, Failure> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: the caller's promise, passed on.
    unsafe { floats(name, ptr, len) }.map(Some)
}

/// The `len` elements at `ptr`, writable, after checking that they overlap
/// none of `others` (an output that is also an input would be read while it
/// is written; two outputs would be written twice).
///
/// # Safety
/// If `ptr` is not NULL and `len > 0`, `ptr` must address `len` readable and
/// writable elements that no other thread touches during the call.
pub(crate) unsafe fn slice_mut<'a, T>(
    name: &str,
    ptr: *mut T,
    len: usize,
    others: &[Region],
) -> Result<&'a mut [T], Failure> {
    if !check_region(name, ptr.cast_const(), len)? {
        return Ok(&mut []);
    }
    let this = Region { name, start: ptr as usize, end: ptr as usize + len * size_of::<T>() };
    if let Some(other) = others.iter().find(|o| this.overlaps(o)) {
        return Err(Failure::new(cg_status::CG_ERROR_ALIASING, format!("{name} overlaps {}", other.name)));
    }
    // SAFETY: non-NULL, aligned, the byte size fits isize, disjoint from
    // every slice this call reads or writes, and the caller promises `len`
    // writable elements there that no one else touches.
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
}

/// [`slice_mut`] of floats.
///
/// # Safety
/// As [`slice_mut`].
pub(crate) unsafe fn floats_mut<'a>(
    name: &str,
    ptr: *mut f32,
    len: usize,
    others: &[Region],
) -> Result<&'a mut [f32], Failure> {
    // SAFETY: passed on.
    unsafe { slice_mut(name, ptr, len, others) }
}

/// `N` sizes (a shape, a kernel size), copied out.
///
/// # Safety
/// A non-NULL `ptr` must address `N` readable `size_t`.
pub(crate) unsafe fn dims<const N: usize>(name: &str, ptr: *const usize) -> Result<[usize; N], Failure> {
    check_region(name, ptr, N)?;
    // SAFETY: non-NULL and aligned (checked), and the caller promises N
    // readable size_t there; they are copied before anything is written.
    Ok(unsafe { ptr.cast::<[usize; N]>().read() })
}

/// A shape of four dimensions, copied out.
///
/// # Safety
/// A non-NULL `ptr` must address four readable `size_t`.
pub(crate) unsafe fn shape(name: &str, ptr: *const usize) -> Result<[usize; 4], Failure> {
    // SAFETY: passed on.
    unsafe { dims(name, ptr) }
}

/// A params struct, copied out (so a later write cannot change it).
///
/// # Safety
/// A non-NULL `ptr` must address a readable `T`.
pub(crate) unsafe fn read<T: Copy>(name: &str, ptr: *const T) -> Result<T, Failure> {
    check_region(name, ptr, 1)?;
    // SAFETY: non-NULL and aligned (checked); the caller promises a readable
    // T, and every field of the params structs is a plain integer, valid for
    // any bits.
    Ok(unsafe { ptr.read() })
}

/// Where a call writes a small plain result (an output shape, a plan
/// handle): checked now, written only after everything else succeeded.
pub(crate) fn out_ptr<T>(name: &str, ptr: *mut T) -> Result<*mut T, Failure> {
    check_region(name, ptr.cast_const(), 1)?;
    Ok(ptr)
}

/// The arguments most entry points take: one input tensor with its shape
/// and one output buffer, checked (the output apart from the input).
pub(crate) struct InOut<'a> {
    pub(crate) input: &'a [f32],
    pub(crate) shape: [usize; 4],
    pub(crate) output: &'a mut [f32],
}

/// Reads and checks `(name, pointer, length)` of the input, `(name,
/// pointer)` of its shape and `(name, pointer, length)` of the output.
///
/// # Safety
/// As [`floats`], [`shape`] and [`floats_mut`] for each.
pub(crate) unsafe fn in_out<'a>(
    (in_name, input, input_len): (&str, *const f32, usize),
    (shape_name, shape_ptr): (&str, *const usize),
    (out_name, output, output_len): (&str, *mut f32, usize),
) -> Result<InOut<'a>, Failure> {
    // SAFETY: the caller's promise for each, passed on; the output is
    // checked apart from the input.
    unsafe {
        let shape = shape(shape_name, shape_ptr)?;
        let input = floats(in_name, input, input_len)?;
        let output = floats_mut(out_name, output, output_len, &[Region::of(in_name, input)])?;
        Ok(InOut { input, shape, output })
    }
}
