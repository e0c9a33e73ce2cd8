//! `dwconv_paired_rows_avx512`: the depthwise convolution (channel
//! multiplier 1, NCHW) by 3-wide kernels at stride 2 on planes whose
//! output rows are 4 to 7 pixels wide (MobileNetV2's and ShuffleNet's 3×3
//! stride 2 on 14²), two
//! output rows to a 16-lane vector, read in place from each channel's
//! plane: no transposes. For each tap, the two input rows the pair's
//! windows read are loaded with masks (the masked lanes are the zero
//! padding) and one two-source permute (`vpermt2ps`) picks each output
//! pixel's input, at the stride, into its lane. Four pairs (8 output rows)
//! are summed at once, four chains of FMAs in flight.
//!
//! The blocks of channels as lanes (`blocked.rs`) spend most of their time
//! on those planes transposing the input into channels-last pixels and
//! back (Zen 4, 16 channels of 14² at 3×3 stride 2: half the block's time
//! in the input's transposes, an eighth in the sums).
//!
//! Each output sums its `kh·kw` taps in order (kernel row by row, left to
//! right) from `+0.0`, fused, padding taps included as products with
//! `0.0`, then adds its bias and applies the activation: the bits of every
//! other exact path.

use std::arch::x86_64::*;

use super::Block;
use crate::geometry::ConvGeometry;
use crate::simd::Lanes;
use crate::simd::x86::Avx512;

/// Output-row pairs summed together: four accumulators in flight.
const PAIRS: usize = 4;

/// Most row loads of a channel: its table lives on the stack, so the
/// steady state allocates nothing (up to 80 output rows under a 3-row
/// kernel; taller planes go to the blocks).
const MAX_LOADS: usize = 256;

/// Whether [`dwconv_paired`] takes this geometry: 3-wide kernels at
/// stride 2 along the rows, output rows of at least 4 pixels (two fill 8
/// lanes or more), and every tap's columns within 16 floats of the row
/// (`(w_out − 1)·2 + 2·dilation < 16`: at most 7 pixels undilated), so
/// that each input row is loaded once a kernel row. Elsewhere the blocks
/// of channels win: a permute and an FMA a tap and pair share the vector
/// pipes, so at stride 1 (960 channels of 7² 3×3: 40 against 30 µs on Zen
/// 4) and with a load a tap (672 of 14² 5×5 stride 2: 123 against 47 µs)
/// this path lost; 5-wide kernels on narrower rows were not measured, and
/// go to the blocks.
pub(super) fn takes(geo: &ConvGeometry) -> bool {
    let [_, stride_w] = geo.taken_strides();
    let [_, dilation_w] = geo.taken_dilations();
    // (A load's place fits an i32: planes of up to 2^31 floats.)
    let plane_fits = geo.h_in.checked_mul(geo.w_in).is_some_and(|p| p < i32::MAX as usize);
    let loads = geo.h_out.div_ceil(2 * PAIRS).checked_mul(geo.kh).and_then(|l| l.checked_mul(2 * PAIRS));
    stride_w == 2
        && geo.kw == 3
        && loads.is_some_and(|l| l <= MAX_LOADS)
        && (4..=8).contains(&geo.w_out)
        && dilation_w < 8
        && (geo.w_out - 1) * 2 + 2 * dilation_w < 16
        && plane_fits
}

/// The depthwise convolution of one block of channels (see [`Block`]; its
/// scratch is not used): each channel's planes in place.
///
/// # Safety
/// The CPU has AVX-512F (an [`Avx512`] exists); [`takes`] holds for the
/// block's geometry.
#[inline(always)]
pub(super) unsafe fn dwconv_paired(job: Block<'_>) {
    let count = job.count();
    let Block { geo, skip, input, weight, bias, act, out, .. } = job;
    let (plane_in, pixels, taps) = (geo.h_in * geo.w_in, geo.out_pixels(), geo.kh * geo.kw);
    assert!(takes(geo), "a block of a geometry dwconv_paired takes");
    let [stride_h, stride_w] = geo.taken_strides();
    let [dilation_h, dilation_w] = geo.taken_dilations();
    let (w_in, w_out, kw) = (geo.w_in as isize, geo.w_out, geo.kw);
    // Lane l < w_out takes the first source (the pair's upper row) at
    // column l·stride, lane w_out + l the second (16 +) at l·stride; the
    // lanes past 2·w_out are never stored.
    let mut lanes = [0i32; 16];
    for (l, i) in lanes.iter_mut().enumerate().take(2 * w_out) {
        *i = if l < w_out { l * stride_w } else { 16 + (l - w_out) * stride_w } as i32;
    }
    // Each input row is loaded once a kernel row, from the first tap's
    // first column (`span` of them: all the taps' windows, which `takes`
    // fits in 16 floats); those inside the row are loaded (the mask), the
    // others are the zero padding. Tap v permutes from `v·dilation` on.
    let span_len = (w_out - 1) * stride_w + (kw - 1) * dilation_w + 1;
    let first = -(geo.pad_left as isize);
    let mut mask = 0u16;
    for j in 0..span_len {
        if (0..w_in).contains(&(first + j as isize)) {
            mask |= 1 << j;
        }
    }
    let span = Span { first, mask };
    let mut offsets = [0i32; 16];
    for (v, o) in offsets.iter_mut().enumerate().take(kw) {
        *o = (v * dilation_w) as i32;
    }
    let rows_out = geo.h_out;
    let groups = rows_out.div_ceil(2 * PAIRS);
    // Every load of a channel, the same for all: for each group of PAIRS
    // pairs and kernel row, the 2·PAIRS rows' first floats from the
    // plane's start and lanes (none for a padding row). Plain loops into
    // the stack, at most `MAX_LOADS` (collecting a chain of `flat_map`s
    // into a `Vec` took a fifth of 576 channels of 14² at 3×3 stride 2).
    let per_row = 2 * PAIRS;
    let len = groups * geo.kh * per_row;
    let mut table = [Load { at: 0, mask: 0 }; MAX_LOADS];
    let loads = &mut table[..len];
    let mut next = loads.iter_mut();
    for g in 0..groups {
        for u in 0..geo.kh {
            for r in 0..2 * PAIRS {
                let iy = ((2 * PAIRS * g + r) * stride_h + u * dilation_h) as isize - geo.pad_top as isize;
                let load = next.next().expect("len loads");
                if (0..geo.h_in as isize).contains(&iy) {
                    *load = Load { at: (iy * w_in + span.first) as i32, mask: span.mask };
                }
            }
        }
    }
    let loads = &*loads;
    for c in skip..count {
        let plane = &input[c * plane_in..][..plane_in];
        let kernel = &weight[c * taps..][..taps];
        let out_plane = &mut out[(c - skip) * pixels..][..pixels];
        // (Index loops: `chunks_exact` and `zip` divided their lengths for
        // every channel, three integer divisions a channel.)
        for g in 0..groups {
            // SAFETY: AVX-512F is the caller's guarantee.
            let mut acc = [unsafe { _mm512_setzero_ps() }; PAIRS];
            for u in 0..geo.kh {
                let loads = &loads[(g * geo.kh + u) * per_row..][..per_row];
                let kernel_row = &kernel[u * kw..][..kw];
                // SAFETY: each `Load` reads only columns inside its row of
                // `plane` (see `load`); `lanes`, `offsets` hold 16 i32;
                // AVX-512F is the caller's guarantee.
                unsafe {
                    // (A loop, not `array::from_fn`: its closure would be
                    // compiled without the target features where not inlined.)
                    let mut x = [_mm512_setzero_ps(); 2 * PAIRS];
                    for (x, &l) in x.iter_mut().zip(loads) {
                        *x = load(plane, l);
                    }
                    for v in 0..kw {
                        let w = Avx512::splat(kernel_row[v]);
                        let index =
                            _mm512_add_epi32(_mm512_loadu_si512(lanes.as_ptr().cast()), _mm512_set1_epi32(offsets[v]));
                        for (p, a) in acc.iter_mut().enumerate() {
                            *a = Avx512::fma(w, _mm512_permutex2var_ps(x[2 * p], index, x[2 * p + 1]), *a);
                        }
                    }
                }
            }
            let b = bias.map(|b| b[c]);
            for (p, &a) in acc.iter().enumerate() {
                let oy = 2 * (PAIRS * g + p);
                if oy >= rows_out {
                    break;
                }
                let lanes = (rows_out - oy).min(2) * w_out;
                // SAFETY: lanes ≤ 2·w_out ≤ 16 floats from pixel oy·w_out
                // are inside the output plane (rows oy and oy + 1 < h_out,
                // or the last row alone); AVX-512F is the caller's guarantee.
                unsafe {
                    let v = match b {
                        Some(b) => Avx512::add(a, Avx512::splat(b)),
                        None => a,
                    };
                    let dst = out_plane[oy * w_out..][..lanes].as_mut_ptr();
                    _mm512_mask_storeu_ps(dst, ((1u32 << lanes) - 1) as u16, Avx512::activate(act, v));
                }
            }
        }
    }
}

/// One row load of a channel: the row's columns from `at` floats past the
/// plane's start (signed: the first row's left padding is before it), the
/// lanes of `mask` inside the plane, the others zero (none for a padding
/// row).
#[derive(Clone, Copy)]
struct Load {
    at: i32,
    mask: u16,
}

/// Columns `first ..` of a row, the lanes of `mask` inside it.
#[derive(Clone, Copy)]
struct Span {
    first: isize,
    mask: u16,
}

/// The lanes of `l.mask` from `plane[l.at ..]`, the others zero. (A
/// function, not a closure: a closure is compiled without its caller's
/// target features, and its intrinsics become calls.)
///
/// # Safety
/// The CPU has AVX-512F; the lanes of `l.mask` lie inside `plane`.
#[inline(always)]
unsafe fn load(plane: &[f32], l: Load) -> __m512 {
    // SAFETY: the lanes read lie inside `plane` (the caller's); the masked
    // lanes are not read. AVX-512F is the caller's guarantee.
    unsafe { _mm512_maskz_loadu_ps(l.mask, plane.as_ptr().wrapping_offset(l.at as isize)) }
}
