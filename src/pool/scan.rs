//! The scans of the forward pools: one plane, a row of windows at a time,
//! each lane a window walked in row-major order, with the vector row
//! kernels of a path ([`RowKernel`]) where it has them. Generic over the
//! path; names no ISA.

use super::params::PoolGeometry;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Max,
    Avg,
}

/// What a whole-plane max kernel did. (Only the x86-64 kernels compute
/// planes; NEON declines them all.)
#[derive(Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) enum MaxPlane {
    /// The plane is computed.
    Done,
    /// The plane holds a NaN or a −0: it needs the exact row-major scan.
    OrderMatters,
    /// The kernel does not take this geometry; nothing is known of the plane.
    Declined,
}

/// Vector kernels for parts of the forward pass; each may decline.
pub(super) trait RowKernel {
    /// Computes the max-pooled plane `y` from the input plane `x` if no
    /// window holds a NaN or a −0 (then the scan order cannot change the
    /// bits, and the kernel may take any); otherwise says why not, leaving
    /// `y` unspecified. `scratch` is a reusable buffer.
    ///
    /// # Safety
    /// The CPU has the implementation's instructions; `x` and `y` are one
    /// plane of `g`'s input and output.
    unsafe fn max_plane(g: &PoolGeometry, x: &[f32], y: &mut [f32], scratch: &mut Vec<f32>) -> MaxPlane;

    /// Writes `out[i]`, the exact row-major max scan (`MAX_NAN`) of interior
    /// window `(oy, lo + i)`, for every `i`, and returns `true`; or returns
    /// `false`, writing nothing.
    ///
    /// # Safety
    /// The CPU has the implementation's instructions; `lo .. lo + out.len()`
    /// are interior windows of `g` (all taps inside the input), and `x` is
    /// one plane of its input.
    unsafe fn exact_max_row(g: &PoolGeometry, x: &[f32], oy: usize, lo: usize, out: &mut [f32]) -> bool;
}

/// No vector kernel: every row takes the portable loops, which the compiler
/// vectorises for the target it builds for.
pub(super) struct Portable;

impl RowKernel for Portable {
    #[inline(always)]
    unsafe fn max_plane(_: &PoolGeometry, _: &[f32], _: &mut [f32], _: &mut Vec<f32>) -> MaxPlane {
        MaxPlane::Declined
    }
    #[inline(always)]
    unsafe fn exact_max_row(_: &PoolGeometry, _: &[f32], _: usize, _: usize, _: &mut [f32]) -> bool {
        false
    }
}

/// The forward pass of one plane: for max, a plane without NaN or −0 (the
/// common case) takes `I`'s whole-plane kernel, or else the plain `v > m`
/// scan, which compiles to one `max` instruction per tap; both may scan in
/// any order. Other planes take the row-major scan that also propagates NaN.
/// All give the same bits where they apply.
///
/// # Safety
/// The CPU has `I`'s instructions.
#[inline(always)]
pub(super) unsafe fn body<I: RowKernel>(kind: Kind, g: &PoolGeometry, x: &[f32], y: &mut [f32]) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match kind {
            Kind::Max => match with_scratch(|scratch| I::max_plane(g, x, y, scratch)) {
                MaxPlane::Done => {}
                MaxPlane::OrderMatters => plane_body::<MAX_NAN, I>(g, x, y),
                MaxPlane::Declined if order_matters(x) => plane_body::<MAX_NAN, I>(g, x, y),
                MaxPlane::Declined => plane_body::<MAX, I>(g, x, y),
            },
            Kind::Avg => plane_body::<SUM, I>(g, x, y),
        }
    }
}

/// Whether `x` holds a NaN or a −0: the values for which the maximum of a
/// window depends on the order of the scan (which NaN; which zero). Without
/// them, equal values have equal bits, so any order gives the same result.
/// Two integer reductions: NaN is the only value
/// whose bits shifted left (sign dropped) exceed those of infinity, and −0
/// the only one whose bits with the sign flipped are 0.
#[inline(always)]
pub(super) fn order_matters(x: &[f32]) -> bool {
    // Integer max/min reductions may be reassociated, so this vectorises.
    let (mut high, mut low) = (0u32, u32::MAX);
    for v in x {
        high = high.max(v.to_bits() << 1);
        low = low.min(v.to_bits() ^ 0x8000_0000);
    }
    high > f32::INFINITY.to_bits() << 1 || low == 0
}

/// How a window's elements are combined (the const parameter of the scans).
pub(super) const SUM: u8 = 0;
/// The maximum, for planes without NaN or −0 (see [`order_matters`]):
/// `v > m`, exactly one `max` instruction, in any scan order.
pub(super) const MAX: u8 = 1;
/// The maximum with PyTorch's full rule `v > m || isnan(v)`: the first
/// maximum, or the last NaN.
pub(super) const MAX_NAN: u8 = 2;

/// One step of a window's scan.
#[inline(always)]
pub(super) fn combine<const OP: u8>(acc: f32, v: f32) -> f32 {
    match OP {
        SUM => acc + v,
        MAX => {
            if v > acc {
                v
            } else {
                acc
            }
        }
        _ => {
            if v > acc || v.is_nan() {
                v
            } else {
                acc
            }
        }
    }
}

/// `acc[i] = combine(acc[i], src[i * S])` for every `i`: one tap of a row of
/// windows. Written so the compiler vectorises it over `i`.
#[inline(always)]
fn combine_row<const OP: u8, const S: usize>(acc: &mut [f32], src: &[f32], stride: usize) {
    let s = if S == 0 { stride } else { S };
    assert!(acc.is_empty() || (acc.len() - 1) * s < src.len(), "tap row out of bounds");
    for (i, a) in acc.iter_mut().enumerate() {
        // SAFETY: i * s <= (acc.len() - 1) * s < src.len(), asserted above.
        let v = unsafe { *src.get_unchecked(i * s) };
        *a = combine::<OP>(*a, v);
    }
}

/// One plane of the forward pass. The windows whose columns are all inside
/// the input (the interior) are computed a row of windows at a time, by `I`
/// or else tap by tap in row-major window order over a row of accumulators,
/// each output column a lane; the border windows go through the scalar scan.
/// All scan each window in row-major order (or, for `MAX`, in an order that
/// cannot change the bits), so they agree bit for bit.
///
/// # Safety
/// The CPU has `I`'s instructions.
#[inline(always)]
unsafe fn plane_body<const OP: u8, I: RowKernel>(g: &PoolGeometry, x: &[f32], y: &mut [f32]) {
    let (w, ow, sw) = (g.w.size, g.w.out, g.w.stride);
    let (lo, hi) = g.w.interior();
    let init = if OP == SUM { 0.0 } else { f32::NEG_INFINITY };
    for (oy, row_out) in y.chunks_exact_mut(ow).enumerate() {
        let divisor = if OP == SUM && hi > lo {
            let rows = (0..g.h.kernel).filter_map(|t| g.h.tap(oy, t)).count();
            g.divisor(oy, lo, rows * g.w.kernel)
        } else {
            1.0
        };
        let inner = &mut row_out[lo..hi];
        // SAFETY: `I`'s instructions are the caller's contract; lo..hi are
        // the interior windows and `x` is a plane of `g`'s input.
        let vector = OP == MAX_NAN && unsafe { I::exact_max_row(g, x, oy, lo, inner) };
        if hi > lo && !vector {
            inner.fill(init);
            for iy in (0..g.h.kernel).filter_map(|t| g.h.tap(oy, t)) {
                let row = &x[iy * w..][..w];
                for u in 0..g.w.kernel {
                    // Window `lo` starts inside the input, so this is >= 0.
                    let first = (g.w.start(lo) + (u * g.w.dilation) as isize) as usize;
                    match sw {
                        1 => combine_row::<OP, 1>(inner, &row[first..], 1),
                        2 => combine_row::<OP, 2>(inner, &row[first..], 2),
                        s => combine_row::<OP, 0>(inner, &row[first..], s),
                    }
                }
            }
            if OP == SUM {
                inner.iter_mut().for_each(|v| *v /= divisor);
            }
        }
        for ox in (0..lo).chain(hi..ow) {
            let mut acc = init;
            let mut count = 0;
            for i in g.taps(oy, ox) {
                acc = combine::<OP>(acc, x[i]);
                count += 1;
            }
            row_out[ox] = if OP == SUM { acc / g.divisor(oy, ox, count) } else { acc };
        }
    }
}

/// Runs `f` with this thread's scratch row buffer (a fresh one if it is in
/// use further up the stack).
fn with_scratch<R>(f: impl FnOnce(&mut Vec<f32>) -> R) -> R {
    use std::cell::RefCell;
    thread_local! {
        static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) => f(&mut v),
        Err(_) => f(&mut Vec::new()),
    })
}
