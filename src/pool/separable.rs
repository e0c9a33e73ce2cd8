//! The separable max pool, generic over vector lanes: the column maxima of
//! each output row's window rows, then the window maxima along those, so a
//! 3×3 window costs 2 + 2 maxes instead of 8. It scans a window column by
//! column, not in PyTorch's row-major order, which changes the bits only
//! where a window's maximum is a zero held with both signs or where several
//! NaNs meet; a plane holding a NaN or a −0 is therefore declined and takes
//! the exact row-major scan.

use super::params::PoolGeometry;
use super::scan::{MAX, MaxPlane, combine, order_matters};
use crate::simd::Lanes;

/// The tallest window the vector kernels take.
pub(super) const MAX_ROWS: usize = 16;

/// The vector lanes ([`Lanes`]: `N` floats per register, load, store),
/// plus what the max needs.
pub(super) trait MaxLanes: Lanes {
    /// `N` consecutive windows' tap, `p[0], p[S], .., p[(N-1)·S]` (S = 1, 2).
    ///
    /// # Safety
    /// The CPU has the lanes' instructions; `p .. p + (N-1)·S + 1` readable.
    unsafe fn load_strided<const S: usize>(p: *const f32) -> Self::V;
    /// `v > acc ? v : acc` per lane, the scalar rule of [`combine`]`::<MAX>`.
    ///
    /// # Safety
    /// The CPU has the lanes' instructions.
    unsafe fn max(v: Self::V, acc: Self::V) -> Self::V;
    /// Whether [`MaxLanes::ambiguous`] is cheap enough (one instruction) to
    /// run on every loaded vector; otherwise the plane is scanned first with
    /// [`order_matters`].
    const CHECKS_INLINE: bool;
    /// Non-zero if a lane of `v` is a NaN or a −0 (only when `CHECKS_INLINE`).
    ///
    /// # Safety
    /// The CPU has the lanes' instructions.
    unsafe fn ambiguous(v: Self::V) -> u32;
}

/// The offsets in the plane of the valid input rows of output row `oy`'s
/// windows, and their count; `None` for windows taller than `MAX_ROWS`.
#[inline(always)]
pub(super) fn window_rows(g: &PoolGeometry, oy: usize) -> Option<([usize; MAX_ROWS], usize)> {
    let mut rows = [0usize; MAX_ROWS];
    let mut count = 0;
    for iy in (0..g.h.kernel).filter_map(|t| g.h.tap(oy, t)) {
        *rows.get_mut(count)? = iy * g.w.size;
        count += 1;
    }
    Some((rows, count))
}

/// `maxpool_separable_<isa>`: the maximum of a plane in two passes: the column maxima of every output
/// row's window rows (`scratch`, `h_out × w` floats), then the window maxima
/// along each of those rows, `N` windows at a time, with the border windows
/// from the same column maxima. Two passes over the plane rather than two
/// per row, so the second never loads from stores still in flight. Stops at
/// a plane with a NaN or a −0, and declines windows taller than `MAX_ROWS`.
///
/// # Safety
/// The CPU has `L`'s instructions; `x` and `y` are one plane of `g`'s input
/// and output.
#[inline(always)]
pub(super) unsafe fn maxpool_separable<L: MaxLanes, const S: usize>(
    g: &PoolGeometry,
    x: &[f32],
    y: &mut [f32],
    scratch: &mut Vec<f32>,
) -> MaxPlane {
    let (w, oh) = (g.w.size, g.h.out);
    if g.h.kernel > MAX_ROWS {
        return MaxPlane::Declined;
    }
    if !L::CHECKS_INLINE && order_matters(x) {
        return MaxPlane::OrderMatters;
    }
    let mut flags = 0;
    scratch.resize(oh * w, 0.0);
    for (oy, cols) in scratch.chunks_exact_mut(w).take(oh).enumerate() {
        let (rows, count) = window_rows(g, oy).unwrap_or_default();
        let rows = &rows[..count];
        assert!(rows.iter().all(|&r| r + w <= x.len()), "window row outside the plane");
        // SAFETY: the caller's CPU guarantee; every row offset r has r + w <= x.len().
        unsafe {
            match rows.len() {
                0 => cols.fill(f32::NEG_INFINITY),
                2 => flags |= column_max::<L, 2>(x, rows, cols),
                3 => flags |= column_max::<L, 3>(x, rows, cols),
                _ => flags |= column_max::<L, 0>(x, rows, cols),
            }
        }
    }
    // Every element a window reads lies in a row loaded above.
    if flags != 0 {
        return MaxPlane::OrderMatters;
    }
    // SAFETY: the caller's CPU guarantee; `scratch` holds `h_out` rows of `w`
    // column maxima and `y` is one output plane.
    unsafe {
        match g.w.kernel {
            2 => window_max_rows::<L, S, 2>(g, scratch, y),
            3 => window_max_rows::<L, S, 3>(g, scratch, y),
            _ => window_max_rows::<L, S, 0>(g, scratch, y),
        }
    }
    MaxPlane::Done
}

/// `cols[c]` = the maximum of `x[r + c]` over the row offsets `r` in `rows`
/// (`R` of them, or any number with `R = 0`; at least one). Returns non-zero
/// if `L::CHECKS_INLINE` and a NaN or a −0 was among them.
///
/// # Safety
/// The CPU has `L`'s instructions; each `r` in `rows` has `r + cols.len() <= x.len()`.
#[inline(always)]
unsafe fn column_max<L: MaxLanes, const R: usize>(x: &[f32], rows: &[usize], cols: &mut [f32]) -> u32 {
    let r = if R == 0 { rows.len() } else { R };
    let rows = &rows[..r];
    let (first, rest) = (rows[0], &rows[1..]);
    let w = cols.len();
    let mut c = 0;
    let mut flags = 0;
    while c + L::N <= w {
        // SAFETY: c + N <= w and every row offset has room for w floats.
        unsafe {
            let mut m = L::load(x.as_ptr().add(first + c));
            if L::CHECKS_INLINE {
                flags |= L::ambiguous(m);
            }
            for &r in rest {
                let v = L::load(x.as_ptr().add(r + c));
                if L::CHECKS_INLINE {
                    flags |= L::ambiguous(v);
                }
                m = L::max(v, m);
            }
            L::store(cols.as_mut_ptr().add(c), m);
        }
        c += L::N;
    }
    for (j, m) in cols.iter_mut().enumerate().skip(c) {
        *m = rest.iter().fold(x[first + j], |acc, &r| combine::<MAX>(acc, x[r + j]));
        if L::CHECKS_INLINE {
            flags |= rows.iter().any(|&r| order_matters(&x[r + j..r + j + 1])) as u32;
        }
    }
    flags
}

/// The second pass: each output row's window maxima from its row of column
/// maxima in `cols` (`w` floats per row). `KW` is the kernel width when
/// known at compile time (the tap loop unrolls), else 0.
///
/// # Safety
/// The CPU has `L`'s instructions; `cols` holds `h_out` rows of `w` floats,
/// `y` is one output plane.
#[inline(always)]
unsafe fn window_max_rows<L: MaxLanes, const S: usize, const KW: usize>(g: &PoolGeometry, cols: &[f32], y: &mut [f32]) {
    let (lo, hi) = g.w.interior();
    let n = hi - lo;
    let base = if n > 0 { g.w.start(lo) as usize } else { 0 };
    let (kw, dw) = (if KW == 0 { g.w.kernel } else { KW }, g.w.dilation);
    for (cols, out) in cols.chunks_exact(g.w.size).zip(y.chunks_exact_mut(g.w.out)) {
        let mut i = 0;
        while n >= L::N && i + L::N <= n {
            // SAFETY: windows lo + i .. lo + i + N are interior; lo + i + N <= hi <= w_out.
            unsafe { L::store(out.as_mut_ptr().add(lo + i), window_block::<L, S>(cols, base + i * S, kw, dw)) };
            i += L::N;
        }
        if n >= L::N && i < n {
            // SAFETY: the last N interior windows; hi - N .. hi is inside `out`.
            unsafe {
                L::store(out.as_mut_ptr().add(hi - L::N), window_block::<L, S>(cols, base + (n - L::N) * S, kw, dw))
            };
            i = n;
        }
        for ox in (0..lo).chain(lo + i..g.w.out) {
            let mut m = f32::NEG_INFINITY;
            for u in 0..g.w.kernel {
                if let Some(ix) = g.w.tap(ox, u) {
                    m = combine::<MAX>(m, cols[ix]);
                }
            }
            out[ox] = m;
        }
    }
}

/// `N` windows of `kw` taps `dw` apart, starting at column `col` of `cols`
/// and `S` apart: their maxima. (A function, not a closure: a closure would
/// not inherit the caller's target features, and its intrinsics would not
/// inline.)
///
/// # Safety
/// The CPU has `L`'s instructions; every tap `col + l·S + u·dw` (`l < N`,
/// `u < kw`) is inside `cols`.
#[inline(always)]
unsafe fn window_block<L: MaxLanes, const S: usize>(cols: &[f32], col: usize, kw: usize, dw: usize) -> L::V {
    // SAFETY: the caller's guarantees; `load_strided` reads exactly from the
    // first to the last tap of the N windows.
    unsafe {
        let p = cols.as_ptr().add(col);
        let mut acc = L::load_strided::<S>(p);
        for u in 1..kw {
            acc = L::max(L::load_strided::<S>(p.add(u * dw)), acc);
        }
        acc
    }
}
