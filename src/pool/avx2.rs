//! The interior rows of the forward pool on AVX2: eight output columns per
//! register, all taps of their windows combined in registers (row-major
//! window order) and stored once. Stride 1 reads one unaligned vector per
//! tap; stride 2 reads two overlapping vectors and keeps the even lanes.

use std::arch::x86_64::*;

use super::{MAX, PoolGeometry, RowKernel, SUM, body};

/// [`body`](super::body) with the AVX2 interior rows.
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn forward_plane(kind: super::Kind, g: &PoolGeometry, x: &[f32], y: &mut [f32]) {
    // SAFETY: AVX2 is enabled here.
    unsafe { body::<Avx2>(kind, g, x, y) }
}

pub(super) struct Avx2;

/// The tallest window the vector rows take.
const MAX_ROWS: usize = 16;

/// Eight consecutive windows' tap: `p[0], p[S], .., p[7·S]`.
///
/// # Safety
/// AVX2; `p .. p + 7·S + 1` readable.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn load<const S: usize>(p: *const f32) -> __m256 {
    // SAFETY: the caller guarantees AVX2 and the range; with S = 2 the two
    // loads cover p[0..8] and p[7..15], inside p[0..=14].
    unsafe {
        if S == 1 {
            _mm256_loadu_ps(p)
        } else {
            let a = _mm256_loadu_ps(p);
            let b = _mm256_loadu_ps(p.add(7));
            // Per 128-bit half: a0 a2 b1 b3 = p0 p2 p8 p10 | p4 p6 p12 p14.
            let even = _mm256_shuffle_ps::<0b11_01_10_00>(a, b);
            _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(even)))
        }
    }
}

/// [`combine`](super::combine) on eight lanes, with the same operand order.
///
/// # Safety
/// AVX2.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn combine<const OP: u8>(acc: __m256, v: __m256) -> __m256 {
    match OP {
        SUM => _mm256_add_ps(acc, v),
        // maxps(v, acc) is `v > acc ? v : acc`, the scalar rule exactly.
        MAX => _mm256_max_ps(v, acc),
        _ => {
            let take = _mm256_or_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(v, acc), _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
            _mm256_blendv_ps(acc, v, take)
        }
    }
}

impl RowKernel for Avx2 {
    #[inline(always)]
    unsafe fn max_plane(g: &PoolGeometry, x: &[f32], y: &mut [f32], scratch: &mut Vec<f32>) -> bool {
        match g.w.stride {
            // SAFETY: AVX2 is the caller's contract, and `x`, `y` are one
            // plane of `g`'s input and output.
            1 => unsafe { separable_max_plane::<1>(g, x, y, scratch) },
            // SAFETY: as above.
            2 => unsafe { separable_max_plane::<2>(g, x, y, scratch) },
            _ => false,
        }
    }

    #[inline(always)]
    unsafe fn row<const OP: u8>(g: &PoolGeometry, x: &[f32], oy: usize, lo: usize, out: &mut [f32], d: f32) -> bool {
        // Sums take the portable loop: compiled for AVX2 here it measured
        // 3-4x faster on VGG's 2x2/2 average pool than these blocks, whose
        // split loads straight from a plane too large for L2 stall.
        if OP == SUM {
            return false;
        }
        match g.w.stride {
            // SAFETY: forwarded from the caller.
            1 => unsafe { row_s::<OP, 1>(g, x, oy, lo, out, d) },
            // SAFETY: forwarded from the caller.
            2 => unsafe { row_s::<OP, 2>(g, x, oy, lo, out, d) },
            _ => false,
        }
    }
}

/// The maximum of a plane in two passes: first the column maxima of every
/// output row's window rows (`scratch`, `h_out × w` floats, full vectors),
/// then the window maxima along each of those rows, eight windows at a time,
/// with the border windows from the same column maxima. Declines (`false`)
/// a plane with a NaN or a −0, where the scan order could change the bits.
///
/// # Safety
/// AVX2; `x` and `y` are one plane of `g`'s input and output.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn separable_max_plane<const S: usize>(
    g: &PoolGeometry,
    x: &[f32],
    y: &mut [f32],
    scratch: &mut Vec<f32>,
) -> bool {
    let (w, oh) = (g.w.size, g.h.out);
    if g.h.kernel > MAX_ROWS || super::order_matters(x) {
        return false;
    }
    scratch.resize(oh * w, 0.0);
    for (oy, cols) in scratch.chunks_exact_mut(w).take(oh).enumerate() {
        // SAFETY: AVX2; kernel height <= MAX_ROWS, so `window_rows` is Some.
        unsafe { column_max(x, &window_rows(g, oy).unwrap_or_default(), cols) };
    }
    // SAFETY: AVX2 is the caller's contract; `scratch` holds `h_out` rows of
    // `w` column maxima and `y` is one output plane.
    unsafe {
        match g.w.kernel {
            2 => window_max_rows::<S, 2>(g, scratch, y),
            3 => window_max_rows::<S, 3>(g, scratch, y),
            _ => window_max_rows::<S, 0>(g, scratch, y),
        }
    }
    true
}

/// The second pass of [`separable_max_plane`]: each output row's window
/// maxima from its row of column maxima in `cols` (`w` floats per row).
///
/// # Safety
/// AVX2; `cols` holds `h_out` rows of `w` floats, `y` is one output plane.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn window_max_rows<const S: usize, const KW: usize>(g: &PoolGeometry, cols: &[f32], y: &mut [f32]) {
    let (lo, hi) = g.w.interior();
    let n = hi - lo;
    let base = if n > 0 { g.w.start(lo) as usize } else { 0 };
    let single = [0usize];
    for (cols, out) in cols.chunks_exact(g.w.size).zip(y.chunks_exact_mut(g.w.out)) {
        let mut i = 0;
        while n >= 8 && i + 8 <= n {
            // SAFETY: windows lo + i .. lo + i + 8 are interior, so their
            // taps are inside `cols`, the one row of `single`; i + 8 <= n.
            let v = unsafe { block::<MAX, S, KW>(g, cols, &single, base + i * S, 1.0) };
            // SAFETY: lo + i + 8 <= hi <= w_out.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(lo + i), v) };
            i += 8;
        }
        if n >= 8 && i < n {
            // SAFETY: as above, for the last eight interior windows.
            let v = unsafe { block::<MAX, S, KW>(g, cols, &single, base + (n - 8) * S, 1.0) };
            // SAFETY: hi - 8 .. hi is inside `out` (hi <= w_out).
            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(hi - 8), v) };
            i = n;
        }
        for ox in (0..lo).chain(lo + i..g.w.out) {
            let mut m = f32::NEG_INFINITY;
            for u in 0..g.w.kernel {
                if let Some(ix) = g.w.tap(ox, u) {
                    m = super::combine::<MAX>(m, cols[ix]);
                }
            }
            out[ox] = m;
        }
    }
}

/// `cols[c]` = the maximum of `x[r + c]` over the row offsets `r` in
/// `rows.0[..rows.1]` (−∞ for none).
///
/// # Safety
/// AVX2.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn column_max(x: &[f32], rows: &([usize; MAX_ROWS], usize), cols: &mut [f32]) {
    let rows = &rows.0[..rows.1];
    assert!(rows.iter().all(|&r| r + cols.len() <= x.len()), "window row outside the plane");
    // SAFETY: (every arm) AVX2; every row offset r has r + w <= x.len().
    unsafe {
        match rows.len() {
            0 => cols.fill(f32::NEG_INFINITY),
            2 => column_max_n::<2>(x, rows, cols),
            3 => column_max_n::<3>(x, rows, cols),
            _ => column_max_n::<0>(x, rows, cols),
        }
    }
}

/// [`column_max`] for `R` rows (0: any number, at least one).
///
/// # Safety
/// AVX2; `rows` is not empty and each `r` in it has `r + cols.len() <= x.len()`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn column_max_n<const R: usize>(x: &[f32], rows: &[usize], cols: &mut [f32]) {
    let r = if R == 0 { rows.len() } else { R };
    let rows = &rows[..r];
    let (first, rest) = (rows[0], &rows[1..]);
    let w = cols.len();
    let mut c = 0;
    while c + 8 <= w {
        // SAFETY: c + 8 <= w and every row offset has room for w floats.
        unsafe {
            let mut m = _mm256_loadu_ps(x.as_ptr().add(first + c));
            for &r in rest {
                m = _mm256_max_ps(_mm256_loadu_ps(x.as_ptr().add(r + c)), m);
            }
            _mm256_storeu_ps(cols.as_mut_ptr().add(c), m);
        }
        c += 8;
    }
    for (j, m) in cols.iter_mut().enumerate().skip(c) {
        *m = rest.iter().fold(x[first + j], |acc, &r| super::combine::<MAX>(acc, x[r + j]));
    }
}

/// The offsets in the plane of the valid input rows of output row `oy`'s
/// windows, and their count; `None` for windows taller than `MAX_ROWS`
/// (left to the portable loop).
#[inline(always)]
fn window_rows(g: &PoolGeometry, oy: usize) -> Option<([usize; MAX_ROWS], usize)> {
    let mut rows = [0usize; MAX_ROWS];
    let mut count = 0;
    for iy in (0..g.h.kernel).filter_map(|t| g.h.tap(oy, t)) {
        *rows.get_mut(count)? = iy * g.w.size;
        count += 1;
    }
    Some((rows, count))
}

/// The interior windows `lo .. lo + out.len()` of output row `oy`, eight at
/// a time; a last partial block is recomputed overlapping the one before it.
/// Rows narrower than eight windows are left to the portable loop.
///
/// # Safety
/// AVX2; `lo .. lo + out.len()` are interior windows of `g`, and `x` is one
/// plane of `g`'s input.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn row_s<const OP: u8, const S: usize>(
    g: &PoolGeometry,
    x: &[f32],
    oy: usize,
    lo: usize,
    out: &mut [f32],
    divisor: f32,
) -> bool {
    let n = out.len();
    if n < 8 {
        return false;
    }
    let Some((rows, count)) = window_rows(g, oy) else { return false };
    let rows = &rows[..count];
    assert!(x.len() >= g.h.size * g.w.size && lo + n <= g.w.out, "interior row outside the plane");
    // Window `lo` starts inside the input.
    let base = g.w.start(lo) as usize;
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n = out.len(); windows lo + i .. lo + i + 8 are interior.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(i), block::<OP, S, 0>(g, x, rows, base + i * S, divisor)) };
        i += 8;
    }
    if i < n {
        // SAFETY: n >= 8, so n - 8 .. n is inside `out`, and those windows are interior.
        unsafe {
            _mm256_storeu_ps(out.as_mut_ptr().add(n - 8), block::<OP, S, 0>(g, x, rows, base + (n - 8) * S, divisor))
        };
    }
    true
}

/// Eight consecutive interior windows whose valid rows start at `rows` in
/// `x`, the first window at column `col`: their scans (divided by `divisor`
/// for a sum). `KW` is the kernel width when known at compile time (then the
/// tap loop unrolls), else 0.
///
/// # Safety
/// AVX2; the eight windows are interior windows of `g` and `x` is a plane of
/// its input, so every tap column `col + l·S + u·dw` (`l < 8`, `u < kw`) is
/// inside each valid row, and `load` reads exactly from the first to the
/// last of those columns.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn block<const OP: u8, const S: usize, const KW: usize>(
    g: &PoolGeometry,
    x: &[f32],
    rows: &[usize],
    col: usize,
    divisor: f32,
) -> __m256 {
    let kw = if KW == 0 { g.w.kernel } else { KW };
    let dw = g.w.dilation;
    let mut acc = _mm256_set1_ps(if OP == SUM { 0.0 } else { f32::NEG_INFINITY });
    for &row in rows {
        // SAFETY: a row of the plane, column `col`: inside `x` (above).
        let p = unsafe { x.as_ptr().add(row + col) };
        for u in 0..kw {
            // SAFETY: the taps of the eight windows in this row (above).
            acc = unsafe { combine::<OP>(acc, load::<S>(p.add(u * dw))) };
        }
    }
    if OP == SUM {
        acc = _mm256_div_ps(acc, _mm256_set1_ps(divisor));
    }
    acc
}
