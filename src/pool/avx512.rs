//! The forward max pool on AVX-512: for strides 1 and 2, one pass from
//! registers ([`maxpool_fused`]): the column maxima of a block of
//! windows' rows, then each tap as a lane shift of them; masked loads put
//! −∞ at the borders. Wider windows take the separable max of
//! [`separable`](super::separable) on 16 lanes. Sums take the portable
//! rows and planes holding a NaN or a −0 the AVX2 exact rows
//! (`Isa::Avx512` requires AVX2).

use std::arch::x86_64::*;

use super::avx2::Avx2Rows;
use super::params::PoolGeometry;
use super::scan::{Kind, MaxPlane, RowKernel, body};
use super::separable::{MAX_ROWS, MaxLanes, maxpool_separable, window_rows};
use crate::simd::x86::Avx512;

/// The AVX-512 row kernels of the pool: `maxpool_fused_avx512`,
/// `maxpool_separable_avx512`, and the AVX2 exact rows. `DQ`: the CPU has
/// AVX-512DQ (use `Avx512Rows<true>` only where `simd::x86::Avx512::dq`
/// gave a token).
pub(super) struct Avx512Rows<const DQ: bool>;

/// One plane of the forward pass on a CPU with AVX-512DQ, compiled with DQ
/// throughout: the max planes take `vfpclassps`, and the average pool's
/// portable loops vectorise as they did when the AVX-512 path required DQ
/// (compiled without it, VGG-16's 2×2 average pool ran 3–26 % slower on
/// 2 threads of a Zen 4).
///
/// # Safety
/// AVX-512F, AVX-512DQ, AVX2 and FMA; `x` and `y` are one plane of `g`'s
/// input and output.
#[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
pub(super) unsafe fn forward_plane_dq(kind: Kind, g: &PoolGeometry, x: &[f32], y: &mut [f32]) {
    // SAFETY: forwarded; every feature `Avx512Rows<true>` needs is enabled here.
    unsafe { body::<Avx512Rows<true>>(kind, g, x, y) }
}

/// The lanes of `v` that hold a NaN or a −0 (the values whose order of
/// scan changes a maximum's bits): one `vfpclassps` (QNaN 0x01 | −0 0x04 |
/// SNaN 0x80) with `DQ`, else an unordered self-compare for NaN and an
/// integer compare for the bits of −0 (on Zen 4 the two compares cost the
/// 3×3 max pool 15–22 %).
///
/// # Safety
/// AVX-512F, and AVX-512DQ if `DQ`.
#[inline(always)]
unsafe fn nan_or_negative_zero<const DQ: bool>(v: __m512) -> __mmask16 {
    // SAFETY: the caller guarantees AVX-512F (and DQ for the first arm).
    unsafe {
        if DQ {
            _mm512_fpclass_ps_mask::<0x85>(v)
        } else {
            _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v)
                | _mm512_cmpeq_epi32_mask(_mm512_castps_si512(v), _mm512_set1_epi32(i32::MIN))
        }
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
    // Two compares per vector into mask registers: cheap enough inline.
    const CHECKS_INLINE: bool = true;
    #[inline(always)]
    unsafe fn ambiguous(v: __m512) -> u32 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { nan_or_negative_zero::<false>(v) as u32 }
    }
}

impl<const DQ: bool> RowKernel for Avx512Rows<DQ> {
    #[inline(always)]
    unsafe fn max_plane(g: &PoolGeometry, x: &[f32], y: &mut [f32], scratch: &mut Vec<f32>) -> MaxPlane {
        // SAFETY: AVX-512F is the caller's contract, DQ too where `DQ` (see
        // `Avx512Rows`), and `x`, `y` are one plane of `g`'s input and output.
        unsafe { if DQ { max_plane_dq(g, x, y, scratch) } else { max_plane_f(g, x, y, scratch) } }
    }

    #[inline(always)]
    unsafe fn exact_max_row(g: &PoolGeometry, x: &[f32], oy: usize, lo: usize, out: &mut [f32]) -> bool {
        // SAFETY: the caller's contract covers AVX2 (the path requires it).
        unsafe { Avx2Rows::exact_max_row(g, x, oy, lo, out) }
    }
}

/// The max plane compiled for AVX-512 (the caller may be a closure, which
/// does not carry the target features): [`maxpool_fused`] where a
/// window's taps span at most one block past its own, else
/// [`maxpool_separable`].
///
/// # Safety
/// AVX-512F, and DQ if `DQ`; `x` and `y` are one plane of `g`'s input and output.
#[inline(always)]
unsafe fn max_plane<const DQ: bool>(g: &PoolGeometry, x: &[f32], y: &mut [f32], scratch: &mut Vec<f32>) -> MaxPlane {
    let last_tap = g.w.dilation * (g.w.kernel - 1);
    // SAFETY: forwarded; AVX-512F are enabled here, and each fused
    // arm's last tap is within 16·S (dilation 1 and kernel ≤ 3, or checked).
    unsafe {
        match (g.w.stride, g.w.kernel, g.w.dilation) {
            (1, 2, 1) => maxpool_fused::<DQ, 1, 2, 1>(g, x, y),
            (1, 3, 1) => maxpool_fused::<DQ, 1, 3, 1>(g, x, y),
            (1, _, _) if last_tap <= 16 => maxpool_fused::<DQ, 1, 0, 0>(g, x, y),
            (2, 2, 1) => maxpool_fused::<DQ, 2, 2, 1>(g, x, y),
            (2, 3, 1) => maxpool_fused::<DQ, 2, 3, 1>(g, x, y),
            (2, _, _) if last_tap <= 32 => maxpool_fused::<DQ, 2, 0, 0>(g, x, y),
            (1, _, _) => maxpool_separable::<Avx512, 1>(g, x, y, scratch),
            (2, _, _) => maxpool_separable::<Avx512, 2>(g, x, y, scratch),
            _ => MaxPlane::Declined,
        }
    }
}

/// [`max_plane`] compiled for AVX-512F alone.
///
/// # Safety
/// AVX-512F; `x` and `y` are one plane of `g`'s input and output.
#[target_feature(enable = "avx512f")]
unsafe fn max_plane_f(g: &PoolGeometry, x: &[f32], y: &mut [f32], scratch: &mut Vec<f32>) -> MaxPlane {
    // SAFETY: forwarded.
    unsafe { max_plane::<false>(g, x, y, scratch) }
}

/// [`max_plane`] compiled with AVX-512DQ, for its `vfpclassps`.
///
/// # Safety
/// AVX-512F and DQ; `x` and `y` are one plane of `g`'s input and output.
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn max_plane_dq(g: &PoolGeometry, x: &[f32], y: &mut [f32], scratch: &mut Vec<f32>) -> MaxPlane {
    // SAFETY: forwarded; DQ is enabled here.
    unsafe { max_plane::<true>(g, x, y, scratch) }
}

/// The lanes of 16 columns starting at `c` (may be negative) that lie inside
/// a row of `w`.
#[inline(always)]
fn columns_inside(c: isize, w: usize) -> __mmask16 {
    let lo = (-c).clamp(0, 16) as u32;
    let hi = (w as isize - c).clamp(0, 16) as u32;
    let below_hi = if hi >= 16 { 0xffff } else { (1u32 << hi) - 1 };
    (below_hi & !((1u32 << lo) - 1)) as __mmask16
}

/// The max pool of a plane in one pass, one output row at a time, 16
/// windows at a time, from registers only. For each block of 16 windows:
/// the column maxima of the window rows, 16·S columns (`S` vectors, with
/// columns outside the row as −∞ by masked loads, so borders need no
/// separate code); for S = 2 split into even and odd columns by two
/// permutes; then tap `o` (its column offset, `u · dilation`) of the 16
/// windows is those columns shifted by `o / S` lanes, with the next
/// block's columns shifted in, one two-register permute. The next block's
/// columns are carried, so each input vector is loaded once per output row.
/// `KW` and `DW` are the kernel width and dilation if known at compile time
/// (the taps then unroll into constant permutes), else 0. Stops at a
/// plane with a NaN or a −0 (two compares per load), as the separable
/// max does.
///
/// # Safety
/// AVX-512F, and DQ if `DQ`; `x` and `y` are one plane of `g`'s input
/// and output; `S` is `g.w.stride` (1 or 2), and the last tap's offset is at most 16·S.
#[inline(always)]
unsafe fn maxpool_fused<const DQ: bool, const S: usize, const KW: usize, const DW: usize>(
    g: &PoolGeometry,
    x: &[f32],
    y: &mut [f32],
) -> MaxPlane {
    let (w, wo) = (g.w.size, g.w.out);
    let kw = if KW == 0 { g.w.kernel } else { KW };
    let dw = if DW == 0 { g.w.dilation } else { DW };
    assert!(S == g.w.stride && dw == g.w.dilation && dw * (kw - 1) <= 16 * S, "taps beyond the next block");
    assert!(x.len() == g.h.size * w && y.len() == g.h.out * wo, "not one plane");
    if g.h.kernel > MAX_ROWS {
        return MaxPlane::Declined;
    }
    let col0 = -(g.w.pad_a as isize);
    let mut flags = 0u32;
    for oy in 0..g.h.out {
        let (rows, count) = window_rows(g, oy).unwrap_or_default();
        let rows = &rows[..count];
        assert!(rows.iter().all(|&r| r + w <= x.len()), "window row outside the plane");
        let out = &mut y[oy * wo..(oy + 1) * wo];
        // SAFETY: the caller's CPU guarantee; every row offset r has
        // r + w <= x.len(), and dw · (kw - 1) <= 16·S, both asserted.
        unsafe {
            match rows.len() {
                0 => out.fill(f32::NEG_INFINITY),
                2 => fused_row::<DQ, S, KW, DW, 2>(x, w, rows, col0, kw, dw, out, &mut flags),
                3 => fused_row::<DQ, S, KW, DW, 3>(x, w, rows, col0, kw, dw, out, &mut flags),
                _ => fused_row::<DQ, S, KW, DW, 0>(x, w, rows, col0, kw, dw, out, &mut flags),
            }
        }
    }
    if flags != 0 { MaxPlane::OrderMatters } else { MaxPlane::Done }
}

/// One output row of [`maxpool_fused`] from the window rows at offsets
/// `rows` (`R` of them, or any number with `R = 0`; at least one).
///
/// # Safety
/// AVX-512F, and DQ if `DQ`; each `r` in `rows` has `r + w <= x.len()`; the last
/// tap's offset `dw · (kw - 1)` is at most 16·S.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn fused_row<const DQ: bool, const S: usize, const KW: usize, const DW: usize, const R: usize>(
    x: &[f32],
    w: usize,
    rows: &[usize],
    col0: isize,
    kw: usize,
    dw: usize,
    out: &mut [f32],
    flags: &mut u32,
) {
    let (kw, dw) = (if KW == 0 { kw } else { KW }, if DW == 0 { dw } else { DW });
    let wo = out.len();
    // The lanes the last tap shifts by: the last block needs no next one
    // if its last window's last tap stays within it.
    let last_shift = dw * (kw - 1) / S;
    let blocks = wo.div_ceil(16);
    // SAFETY: AVX-512F (the caller's contract) for every intrinsic;
    // the loads as argued in `column_max`, the stores below.
    unsafe {
        let iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let mut cur = block_columns::<DQ, S, R>(x, w, rows, col0, flags);
        for j in 0..blocks {
            let n = (wo - 16 * j).min(16);
            let next = if j + 1 < blocks || n - 1 + last_shift >= 16 {
                block_columns::<DQ, S, R>(x, w, rows, col0 + (16 * S * (j + 1)) as isize, flags)
            } else {
                [_mm512_set1_ps(f32::NEG_INFINITY); S]
            };
            let mut acc = _mm512_set1_ps(f32::NEG_INFINITY);
            for u in 0..kw {
                let o = u * dw;
                let (p, t) = (o % S, o / S);
                let v = match t {
                    0 => cur[p],
                    16 => next[p],
                    _ => _mm512_permutex2var_ps(cur[p], _mm512_add_epi32(iota, _mm512_set1_epi32(t as i32)), next[p]),
                };
                acc = _mm512_max_ps(v, acc);
            }
            if n == 16 {
                // SAFETY: windows 16j .. 16j + 16 are inside `out`.
                _mm512_storeu_ps(out.as_mut_ptr().add(16 * j), acc);
            } else {
                // SAFETY: lanes l < n are windows 16j + l < wo, inside `out`;
                // the others are not written (no fault).
                _mm512_mask_storeu_ps(out.as_mut_ptr().wrapping_add(16 * j), ((1u32 << n) - 1) as __mmask16, acc);
            }
            cur = next;
        }
    }
}

/// One block's columns, from column `c` on, as `S` vectors: for S = 1,
/// column `c + l` in lane `l`; for S = 2, the even columns `c + 2l`, then
/// the odd ones. Each column is the maximum over the row offsets `rows`,
/// with columns outside `0..w` as −∞. Ors into `flags` the NaN/−0 test of
/// every loaded vector. (Functions, not closures: a closure would not
/// inherit the caller's target features, and its intrinsics would not
/// inline.)
///
/// # Safety
/// AVX-512F, and DQ if `DQ`; each `r` in `rows` has `r + w <= x.len()`.
#[inline(always)]
unsafe fn block_columns<const DQ: bool, const S: usize, const R: usize>(
    x: &[f32],
    w: usize,
    rows: &[usize],
    c: isize,
    flags: &mut u32,
) -> [__m512; S] {
    // SAFETY: the caller's guarantees, forwarded.
    unsafe {
        let a = column_max::<DQ, R>(x, w, rows, c, flags);
        let mut v = [a; S];
        if S == 2 {
            let b = column_max::<DQ, R>(x, w, rows, c + 16, flags);
            let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
            let odds = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
            v[0] = _mm512_permutex2var_ps(a, evens, b);
            v[1] = _mm512_permutex2var_ps(a, odds, b);
        }
        v
    }
}

/// The maxima over the row offsets `rows` of columns `c .. c + 16` (−∞ for
/// columns outside `0..w`); ors the NaN/−0 test of each load into `flags`.
///
/// # Safety
/// AVX-512F, and DQ if `DQ`; each `r` in `rows` has `r + w <= x.len()`.
#[inline(always)]
unsafe fn column_max<const DQ: bool, const R: usize>(
    x: &[f32],
    w: usize,
    rows: &[usize],
    c: isize,
    flags: &mut u32,
) -> __m512 {
    let rows = &rows[..if R == 0 { rows.len() } else { R }];
    // SAFETY: AVX-512F (the caller's contract). Lanes l with mask bit
    // l have 0 <= c + l < w and r + w <= x.len(): each load reads only inside
    // row r; masked-off lanes are not accessed (no fault).
    unsafe {
        let neg_inf = _mm512_set1_ps(f32::NEG_INFINITY);
        let mut m = neg_inf;
        if c >= 0 && c as usize + 16 <= w {
            for &r in rows {
                let v = _mm512_loadu_ps(x.as_ptr().add(r + c as usize));
                *flags |= nan_or_negative_zero::<DQ>(v) as u32;
                m = _mm512_max_ps(v, m);
            }
        } else {
            let mask = columns_inside(c, w);
            for &r in rows {
                let v = _mm512_mask_loadu_ps(neg_inf, mask, x.as_ptr().wrapping_offset(r as isize + c));
                *flags |= nan_or_negative_zero::<DQ>(v) as u32;
                m = _mm512_max_ps(v, m);
            }
        }
        m
    }
}
