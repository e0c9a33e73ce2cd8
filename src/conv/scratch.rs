//! Per-thread scratch of the convolution paths (the explicit im2col matrix,
//! the padded plane of the direct path, Winograd's transformed tiles),
//! reused across calls.

use std::cell::RefCell;

thread_local! {
    /// Per-thread scratch of the convolution paths (the explicit im2col
    /// matrix, the padded plane of the direct path), reused across calls.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Per-thread indices (the depthwise blocks' landing places), reused
    /// across calls.
    static INDICES: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// `f` with the vector in `cell`, or a fresh one if it is in use.
fn borrowed_or_fresh<T, R>(cell: &RefCell<Vec<T>>, f: impl FnOnce(&mut Vec<T>) -> R) -> R {
    match cell.try_borrow_mut() {
        Ok(mut v) => f(&mut v),
        Err(_) => f(&mut Vec::new()),
    }
}

/// Runs `f` with this thread's scratch vector (or a fresh one if it is in use).
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Vec<f32>) -> R) -> R {
    SCRATCH.with(|cell| borrowed_or_fresh(cell, f))
}

/// Runs `f` with this thread's index vector (or a fresh one if it is in use).
pub(crate) fn with_indices<R>(f: impl FnOnce(&mut Vec<u32>) -> R) -> R {
    INDICES.with(|cell| borrowed_or_fresh(cell, f))
}
