//! The forward max pool on AVX-512: the separable max of
//! [`separable`](super::separable) on 16 lanes, with the stride-2 tap as
//! one two-register permute. Sums take the portable rows and planes holding
//! a NaN or a −0 the AVX2 exact rows (`Isa::Avx512` requires AVX2).

use std::arch::x86_64::*;

use super::avx2::Avx2;
use super::separable::{MaxLanes, separable_max_plane};
use super::{MaxPlane, PoolGeometry, RowKernel, body};
use crate::conv::depthwise::Lanes;

/// [`body`](super::body) with the AVX-512 max planes.
///
/// # Safety
/// The CPU has AVX-512F, AVX-512DQ and AVX2.
#[target_feature(enable = "avx512f,avx512dq,avx2")]
pub(super) unsafe fn forward_plane(kind: super::Kind, g: &PoolGeometry, x: &[f32], y: &mut [f32]) {
    // SAFETY: AVX-512F and AVX2 are enabled here.
    unsafe { body::<Avx512>(kind, g, x, y) }
}

/// The AVX-512 lanes, and the row kernels of the pool on this path.
#[derive(Clone, Copy)]
pub(super) struct Avx512;

impl Lanes for Avx512 {
    const N: usize = 16;
    type V = __m512;
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F and 16 readable floats.
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        // SAFETY: the caller guarantees AVX-512F and 16 writable floats.
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
}

impl MaxLanes for Avx512 {
    #[inline(always)]
    unsafe fn load_strided<const S: usize>(p: *const f32) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F and p[0 ..= 15·S]; with
        // S = 2 the loads cover p[0..16] and p[15..31], inside p[0..=30].
        unsafe {
            if S == 1 {
                _mm512_loadu_ps(p)
            } else {
                let a = _mm512_loadu_ps(p);
                let b = _mm512_loadu_ps(p.add(15));
                // Lanes 0..8: a[0], a[2], .., a[14]; lanes 8..16: b[1], b[3], .., b[15]
                // (= p[16], p[18], .., p[30]); index bit 4 picks b.
                let idx = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 17, 19, 21, 23, 25, 27, 29, 31);
                _mm512_permutex2var_ps(a, idx, b)
            }
        }
    }
    #[inline(always)]
    unsafe fn max(v: __m512, acc: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F. vmaxps(v, acc) is
        // `v > acc ? v : acc`, the scalar rule exactly.
        unsafe { _mm512_max_ps(v, acc) }
    }
    // One `vfpclassps` per vector: QNaN (0x01) | −0 (0x04) | SNaN (0x80).
    const CHECKS_INLINE: bool = true;
    #[inline(always)]
    unsafe fn ambiguous(v: __m512) -> u32 {
        // SAFETY: the caller guarantees AVX-512F and DQ (the path requires both).
        unsafe { _mm512_fpclass_ps_mask::<0x85>(v) as u32 }
    }
}

impl RowKernel for Avx512 {
    #[inline(always)]
    unsafe fn max_plane(g: &PoolGeometry, x: &[f32], y: &mut [f32], scratch: &mut Vec<f32>) -> MaxPlane {
        // SAFETY: AVX-512F is the caller's contract, and `x`, `y` are one
        // plane of `g`'s input and output.
        unsafe { max_plane(g, x, y, scratch) }
    }

    #[inline(always)]
    unsafe fn exact_max_row(g: &PoolGeometry, x: &[f32], oy: usize, lo: usize, out: &mut [f32]) -> bool {
        // SAFETY: the caller's contract covers AVX2 (the path requires it).
        unsafe { Avx2::exact_max_row(g, x, oy, lo, out) }
    }
}

/// [`separable_max_plane`] compiled for AVX-512 (the caller may be a
/// closure, which does not carry the target features).
///
/// # Safety
/// AVX-512F and DQ; `x` and `y` are one plane of `g`'s input and output.
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn max_plane(g: &PoolGeometry, x: &[f32], y: &mut [f32], scratch: &mut Vec<f32>) -> MaxPlane {
    match g.w.stride {
        // SAFETY: forwarded; AVX-512F is enabled here.
        1 => unsafe { separable_max_plane::<Avx512, 1>(g, x, y, scratch) },
        // SAFETY: as above.
        2 => unsafe { separable_max_plane::<Avx512, 2>(g, x, y, scratch) },
        _ => MaxPlane::Declined,
    }
}
