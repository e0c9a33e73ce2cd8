//! The forward max pool on AVX2: the separable max of
//! [`separable`](super::separable) on the 8-wide AVX2 lanes,
//! and the exact row-major scan (for planes holding a NaN or a −0) eight
//! windows to a register, all taps combined in registers and stored once.
//! Stride 1 reads one unaligned vector per tap; stride 2 reads two
//! overlapping vectors and keeps the even lanes. Sums take the portable rows.

use std::arch::x86_64::*;

use super::params::PoolGeometry;
use super::scan::{MaxPlane, RowKernel};
use super::separable::{MaxLanes, maxpool_separable, window_rows};
use crate::simd::x86::Avx2 as Lanes8;

/// The AVX2 row kernels of the pool: `maxpool_separable_avx2` and
/// `maxpool_exact_rows_avx2`.
pub(super) struct Avx2Rows;

/// The AVX2 lanes serve the separable max.
impl MaxLanes for Lanes8 {
    #[inline(always)]
    unsafe fn load_strided<const S: usize>(p: *const f32) -> __m256 {
        // SAFETY: forwarded from the caller.
        unsafe { load::<S>(p) }
    }
    #[inline(always)]
    unsafe fn max(v: __m256, acc: __m256) -> __m256 {
        // SAFETY: the caller guarantees AVX2. maxps(v, acc) is
        // `v > acc ? v : acc`, the scalar rule exactly.
        unsafe { _mm256_max_ps(v, acc) }
    }
    // Four µops per vector on AVX2: a separate pass is cheaper.
    const CHECKS_INLINE: bool = false;
    #[inline(always)]
    unsafe fn ambiguous(_: __m256) -> u32 {
        0
    }
}

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

/// [`combine`](super::combine)`::<MAX_NAN>` on eight lanes: `v > acc ||
/// isnan(v) ? v : acc`, the first maximum or the last NaN.
///
/// # Safety
/// AVX2.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn max_nan(acc: __m256, v: __m256) -> __m256 {
    let take = _mm256_or_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(v, acc), _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
    _mm256_blendv_ps(acc, v, take)
}

impl RowKernel for Avx2Rows {
    #[inline(always)]
    unsafe fn max_plane(g: &PoolGeometry, x: &[f32], y: &mut [f32], scratch: &mut Vec<f32>) -> MaxPlane {
        // SAFETY: AVX2 is the caller's contract, and `x`, `y` are one plane
        // of `g`'s input and output.
        unsafe { max_plane(g, x, y, scratch) }
    }

    #[inline(always)]
    unsafe fn exact_max_row(g: &PoolGeometry, x: &[f32], oy: usize, lo: usize, out: &mut [f32]) -> bool {
        match g.w.stride {
            // SAFETY: forwarded from the caller.
            1 => unsafe { maxpool_exact_rows::<1>(g, x, oy, lo, out) },
            // SAFETY: forwarded from the caller.
            2 => unsafe { maxpool_exact_rows::<2>(g, x, oy, lo, out) },
            _ => false,
        }
    }
}

/// `maxpool_separable_avx2`: [`maxpool_separable`] compiled for AVX2 (the caller may be a closure,
/// which does not carry the target features).
///
/// # Safety
/// AVX2; `x` and `y` are one plane of `g`'s input and output.
#[target_feature(enable = "avx2")]
unsafe fn max_plane(g: &PoolGeometry, x: &[f32], y: &mut [f32], scratch: &mut Vec<f32>) -> MaxPlane {
    match g.w.stride {
        // SAFETY: forwarded; AVX2 is enabled here.
        1 => unsafe { maxpool_separable::<Lanes8, 1>(g, x, y, scratch) },
        // SAFETY: as above.
        2 => unsafe { maxpool_separable::<Lanes8, 2>(g, x, y, scratch) },
        _ => MaxPlane::Declined,
    }
}

/// `maxpool_exact_rows_avx2`: the exact max scan of the interior windows `lo .. lo + out.len()` of
/// output row `oy`, eight at a time; a last partial block is recomputed
/// overlapping the one before it. Rows narrower than eight windows, or
/// windows taller than `MAX_ROWS`, are left to the portable loop (`false`).
///
/// # Safety
/// AVX2; `lo .. lo + out.len()` are interior windows of `g`, and `x` is one
/// plane of `g`'s input.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn maxpool_exact_rows<const S: usize>(
    g: &PoolGeometry,
    x: &[f32],
    oy: usize,
    lo: usize,
    out: &mut [f32],
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
        unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(i), block::<S>(g, x, rows, base + i * S)) };
        i += 8;
    }
    if i < n {
        // SAFETY: n >= 8, so n - 8 .. n is inside `out`, and those windows are interior.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(n - 8), block::<S>(g, x, rows, base + (n - 8) * S)) };
    }
    true
}

/// Eight consecutive interior windows whose valid rows start at `rows` in
/// `x`, the first window at column `col`: their exact max scans, taps in
/// row-major window order.
///
/// # Safety
/// AVX2; the eight windows are interior windows of `g` and `x` is a plane of
/// its input, so every tap column `col + l·S + u·dw` (`l < 8`, `u < kw`) is
/// inside each valid row, and `load` reads exactly from the first to the
/// last of those columns.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn block<const S: usize>(g: &PoolGeometry, x: &[f32], rows: &[usize], col: usize) -> __m256 {
    let (kw, dw) = (g.w.kernel, g.w.dilation);
    let mut acc = _mm256_set1_ps(f32::NEG_INFINITY);
    for &row in rows {
        // SAFETY: a row of the plane, column `col`: inside `x` (above).
        let p = unsafe { x.as_ptr().add(row + col) };
        for u in 0..kw {
            // SAFETY: the taps of the eight windows in this row (above).
            acc = unsafe { max_nan(acc, load::<S>(p.add(u * dw))) };
        }
    }
    acc
}
