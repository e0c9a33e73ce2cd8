//! Depthwise convolution: groups with one input channel (depthwise, channel
//! multipliers, single-channel inputs), where a GEMM tile would be mostly
//! empty (M = channel multiplier, often 1), by direct SIMD kernels over
//! output columns on the `simd` lanes: `dwconv_rows_<isa>` here (any kernel,
//! stride and dilation, from a zero-padded plane) and
//! `dwconv_{3x3,5x5}_rolling_<isa>` in `rolling.rs` (stride 1, masked
//! lanes). Each output still sums its taps in the order of the
//! reproducibility rule, so both are bit-identical to the GEMM paths.

#[cfg(target_arch = "x86_64")]
mod rolling;

use crate::activation::Activation;
use crate::error::ConvError;
use crate::gemm::KC;
use crate::geometry::ConvGeometry;
use crate::isa::Isa;
use crate::simd::{self, Lanes, PerPath, WithLanes};

/// Whether the depthwise kernels take `geo`: one input channel per group,
/// and a zero-padded plane (which `dwconv_rows` may copy) no larger than the
/// buffers the caller gave, so the copy stays bounded.
pub(crate) fn applies(geo: &ConvGeometry) -> bool {
    let plane_budget = 4 * (geo.h_in * geo.w_in + geo.out_pixels()) + 4096;
    let padded_len = (geo.h_in + geo.pad_top + geo.pad_bottom).checked_mul(geo.w_in + geo.pad_left + geo.pad_right);
    geo.c_in_per_group() == 1 && padded_len.is_some_and(|len| len <= plane_budget)
}

/// The depthwise convolution of one (image, group) on the lanes of `isa`:
/// `out` is `[m, h_out, w_out]` for the group's `m` output channels,
/// `weight` their `[m, kh·kw]` taps, `bias` their `m` biases; `padded` is
/// scratch. The rolling rows where they take the geometry and the lanes
/// have masks (AVX-512, AVX2), else the rows from a padded plane (the
/// AVX-512 path runs those on its AVX2 lanes).
///
/// # Panics
/// If [`applies`] is false for `geo`, or a buffer does not match it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run(
    isa: Isa,
    geo: &ConvGeometry,
    plane: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    out: &mut [f32],
    padded: &mut Vec<f32>,
) -> Result<(), ConvError> {
    simd::dispatch(isa, Depthwise { geo, plane, weight, bias, act, out, padded })
}

/// The name of the kernel [`run`] takes on `isa` for `geo`:
/// `dwconv_{3x3,5x5}_rolling_<isa>` or `dwconv_rows_<isa>` (the AVX-512
/// path runs the rows on its AVX2 lanes).
pub(crate) fn kernel_name(isa: Isa, geo: &ConvGeometry) -> &'static str {
    struct Name<'a>(#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] &'a ConvGeometry);
    #[cfg(target_arch = "x86_64")]
    impl Name<'_> {
        fn rolling(&self, names: [&'static str; 2]) -> Option<&'static str> {
            rolling::takes(self.0).then_some(if self.0.kh == 3 { names[0] } else { names[1] })
        }
    }
    impl PerPath for Name<'_> {
        type Output = &'static str;
        fn portable(self, _: simd::Scalar<simd::Fused>) -> &'static str {
            "dwconv_rows_portable"
        }
        fn portable_unfused(self, _: simd::Scalar<simd::Unfused>) -> &'static str {
            "dwconv_rows_portable_unfused"
        }
        #[cfg(target_arch = "x86_64")]
        fn avx2(self, _: simd::x86::Avx2) -> &'static str {
            self.rolling(["dwconv_3x3_rolling_avx2", "dwconv_5x5_rolling_avx2"]).unwrap_or("dwconv_rows_avx2")
        }
        #[cfg(target_arch = "x86_64")]
        fn avx512(self, _: simd::x86::Avx512) -> &'static str {
            self.rolling(["dwconv_3x3_rolling_avx512", "dwconv_5x5_rolling_avx512"]).unwrap_or("dwconv_rows_avx2")
        }
        #[cfg(target_arch = "aarch64")]
        fn neon(self, _: simd::neon::Neon) -> &'static str {
            "dwconv_rows_neon"
        }
    }
    simd::select(isa, Name(geo)).unwrap_or("unavailable")
}

/// The arguments of [`run`], as code generic over the lanes.
struct Depthwise<'a> {
    geo: &'a ConvGeometry,
    plane: &'a [f32],
    weight: &'a [f32],
    bias: Option<&'a [f32]>,
    act: Activation,
    out: &'a mut [f32],
    padded: &'a mut Vec<f32>,
}

impl WithLanes for Depthwise<'_> {
    type Output = ();

    #[inline(always)]
    fn run<L: Lanes>(self, _: L) {
        // SAFETY: a token of `L` exists and `simd::dispatch` entered its features.
        unsafe { dwconv_rows::<L>(self) }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn avx2(self, lanes: simd::x86::Avx2) {
        if rolling::takes(self.geo) { self.rolling::<simd::x86::Avx2>() } else { self.run(lanes) }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn avx512(self, lanes: simd::x86::Avx512) {
        if rolling::takes(self.geo) { self.rolling::<simd::x86::Avx512>() } else { self.run(lanes.avx2()) }
    }
}

#[cfg(target_arch = "x86_64")]
impl Depthwise<'_> {
    /// The rolling rows on the masked lanes `L`, for a geometry `rolling::takes`.
    #[inline(always)]
    fn rolling<L: simd::MaskedLanes>(self) {
        // SAFETY: called from `L`'s path of `simd::dispatch`, inside its features.
        unsafe { rolling::dwconv_rolling::<L>(self) }
    }
}

/// `R` consecutive output rows of one output channel: for each row `r` and
/// `ox` in `0..w_out`,
/// `out[r][ox] (=|+=) Σ_t w[t] · x[t_offset + r·row_step + ox·stride_w]`
/// over this K chunk's taps, in order, from `+0.0` (store when `first`, add
/// when not). `x` is the zero-padded plane; `out` holds `R·w_out` floats.
/// One broadcast weight feeds `3·R` vector FMAs (12 accumulators with
/// `R = 4`, inside AVX2's 16 registers), so the loop is FMA-bound.
///
/// # Safety
/// `L`'s instructions are available.
#[inline(always)]
unsafe fn rows_chunk<L: Lanes, const R: usize>(
    x: &[f32],
    taps: &[(usize, f32)],
    row_step: usize,
    stride_w: usize,
    out: &mut [f32],
    first: bool,
) {
    let w_out = out.len() / R;
    let n = L::N;
    let max_offset = taps.iter().map(|&(o, _)| o).max().unwrap_or(0) + (R - 1) * row_step;
    let xp = x.as_ptr();
    let mut ox = 0;
    // Every vector load reads x[offset + r·row_step + ox .. + N] with the
    // block inside 0..w_out (or, for the last partial vector, checked
    // separately), so within x once max_offset + w_out <= x.len().
    let vectors_fit = stride_w == 1 && max_offset + w_out <= x.len();
    if vectors_fit {
        while ox + 3 * n <= w_out {
            // SAFETY: CPU support is the caller's guarantee.
            let mut acc = [[unsafe { L::splat(0.0) }; 3]; R];
            for &(offset, w) in taps {
                // SAFETY: in bounds (see above); CPU support as above.
                unsafe {
                    let wv = L::splat(w);
                    for (r, row) in acc.iter_mut().enumerate() {
                        let src = xp.add(offset + r * row_step + ox);
                        row[0] = L::fma(wv, L::load(src), row[0]);
                        row[1] = L::fma(wv, L::load(src.add(n)), row[1]);
                        row[2] = L::fma(wv, L::load(src.add(2 * n)), row[2]);
                    }
                }
            }
            for (r, row) in acc.iter().enumerate() {
                finish::<L>(row, &mut out[r * w_out + ox..][..3 * n], first);
            }
            ox += 3 * n;
        }
    }
    // One vector at a time; the last, partial one computed whole where the
    // padded plane extends far enough (its extra lanes are dropped).
    while stride_w == 1 && ox < w_out && (ox + n <= w_out && vectors_fit || max_offset + ox + n <= x.len()) {
        // SAFETY: CPU support is the caller's guarantee.
        let mut acc = [[unsafe { L::splat(0.0) }; 1]; R];
        for &(offset, w) in taps {
            // SAFETY: offset + r·row_step + ox + N <= x.len() (loop condition); CPU as above.
            unsafe {
                let wv = L::splat(w);
                for (r, row) in acc.iter_mut().enumerate() {
                    row[0] = L::fma(wv, L::load(xp.add(offset + r * row_step + ox)), row[0]);
                }
            }
        }
        let valid = n.min(w_out - ox);
        for (r, row) in acc.iter().enumerate() {
            if valid == n {
                finish::<L>(row, &mut out[r * w_out + ox..][..n], first);
                continue;
            }
            let mut lanes = [0.0f32; 16];
            finish::<L>(row, &mut lanes, true);
            for (o, &v) in out[r * w_out + ox..][..valid].iter_mut().zip(&lanes) {
                *o = if first { v } else { *o + v };
            }
        }
        ox += valid;
    }
    for r in 0..R {
        for (ox, out) in (ox..).zip(&mut out[r * w_out + ox..(r + 1) * w_out]) {
            let mut acc = 0.0f32;
            for &(offset, w) in taps {
                acc = w.mul_add(x[offset + r * row_step + ox * stride_w], acc);
            }
            *out = if first { acc } else { *out + acc };
        }
    }
}

/// Stores (first chunk) or adds (later chunks) accumulators into `out`
/// (`acc.len()·N` floats).
#[inline(always)]
fn finish<L: Lanes>(acc: &[L::V], out: &mut [f32], first: bool) {
    assert!(out.len() >= acc.len() * L::N && acc.len() <= 3);
    if first {
        for (q, &a) in acc.iter().enumerate() {
            // SAFETY: `out` holds acc.len()·N floats (asserted).
            unsafe { L::store(out.as_mut_ptr().add(q * L::N), a) };
        }
        return;
    }
    let mut staged = [0.0f32; 64];
    for (q, &a) in acc.iter().enumerate() {
        // SAFETY: `staged` holds 64 >= 4·N floats.
        unsafe { L::store(staged.as_mut_ptr().add(q * L::N), a) };
    }
    for (o, &s) in out.iter_mut().zip(&staged) {
        *o += s;
    }
}

/// Floats of zero slack after a copied plane, so the last partial vector of
/// a row can be loaded whole.
const SLACK: usize = 16;

/// The input plane with its zero padding: `plane` itself when there is no
/// padding and output rows split into whole vectors of `lanes`, else a copy in `padded` (with
/// [`SLACK`] zeros after it). Returns it and its row length.
#[inline(always)]
fn padded_plane<'a>(
    geo: &ConvGeometry,
    lanes: usize,
    plane: &'a [f32],
    padded: &'a mut Vec<f32>,
) -> (&'a [f32], usize) {
    if [geo.pad_top, geo.pad_left, geo.pad_bottom, geo.pad_right] == [0; 4] && geo.w_out.is_multiple_of(lanes) {
        return (plane, geo.w_in);
    }
    let row = geo.w_in + geo.pad_left + geo.pad_right;
    // Every float written once: the top and bottom padding rows by fills,
    // each input row by fixed-size pieces (the rows are short: no library
    // call per row), each side padding by a store of 8 zeros that the row
    // copy, or the next row's, then partly overwrites.
    let (top, bottom) = (geo.pad_top * row, (geo.pad_top + geo.h_in) * row);
    padded.resize(bottom + geo.pad_bottom * row + SLACK, 0.0);
    padded[..top].fill(0.0);
    padded[bottom..].fill(0.0);
    if geo.w_in > 0 {
        let short_pads = geo.pad_left <= 8 && geo.pad_right <= 8;
        let body = &mut padded[top..];
        for (iy, src) in plane.chunks_exact(geo.w_in).take(geo.h_in).enumerate() {
            let at = iy * row;
            if short_pads {
                body[at..at + 8].fill(0.0);
            } else {
                body[at..at + geo.pad_left].fill(0.0);
            }
            copy_short(&mut body[at + geo.pad_left..at + geo.pad_left + geo.w_in], src);
            let end = at + geo.pad_left + geo.w_in;
            if short_pads {
                body[end..end + 8].fill(0.0);
            } else {
                body[end..end + geo.pad_right].fill(0.0);
            }
        }
    } else {
        // No input columns: the rows are all padding (found by fuzzing:
        // they kept the scratch's last contents).
        padded[top..bottom].fill(0.0);
    }
    (&padded[..], row)
}

/// `dst.copy_from_slice(src)` in pieces of 8 floats, inline.
#[inline(always)]
fn copy_short(dst: &mut [f32], src: &[f32]) {
    assert_eq!(dst.len(), src.len());
    let mut d = dst.chunks_exact_mut(8);
    let mut s = src.chunks_exact(8);
    for (d, s) in (&mut d).zip(&mut s) {
        let s: &[f32; 8] = s.try_into().expect("8 floats");
        let d: &mut [f32; 8] = d.try_into().expect("8 floats");
        *d = *s;
    }
    for (d, s) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *d = *s;
    }
}

/// `dwconv_rows_<isa>`: the depthwise convolution of one (image, group)
/// from its zero-padded plane, for any kernel, stride and dilation (see
/// [`run`] for the arguments).
///
/// # Safety
/// `L`'s instructions are available.
#[inline(always)]
unsafe fn dwconv_rows<L: Lanes>(job: Depthwise<'_>) {
    let Depthwise { geo, plane, weight, bias, act, out, padded } = job;
    let (padded, row_stride) = padded_plane(geo, L::N, plane, padded);
    // The tap table: a small one for the usual kernels (up to 5×5), so each
    // call does not clear a KC-long one.
    if geo.kh * geo.kw <= 32 {
        // SAFETY: forwarded from the caller.
        unsafe { planes::<L>(geo, padded, row_stride, weight, bias, act, out, &mut [(0, 0.0); 32]) }
    } else {
        // SAFETY: forwarded from the caller.
        unsafe { planes::<L>(geo, padded, row_stride, weight, bias, act, out, &mut [(0, 0.0); KC]) }
    }
}

/// The body of [`dwconv_rows`], from the padded plane (rows
/// `row_stride` apart), with a tap table of at least `min(KC, kh·kw)`.
///
/// # Safety
/// `L`'s instructions are available.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn planes<L: Lanes>(
    geo: &ConvGeometry,
    padded: &[f32],
    row_stride: usize,
    weight: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    out: &mut [f32],
    taps: &mut [(usize, f32)],
) {
    let taps_per_kernel = geo.kh * geo.kw;
    assert!(taps.len() >= taps_per_kernel.min(KC), "tap table too short");
    // Saturating: a step that does not fit is never taken (one output row).
    let row_step = geo.stride_h.saturating_mul(row_stride);
    for (o, out_plane) in out.chunks_exact_mut(geo.out_pixels()).enumerate() {
        let kernel = &weight[o * taps_per_kernel..(o + 1) * taps_per_kernel];
        // Chunk by chunk over the whole plane: each output still takes its
        // chunks in order.
        for (chunk, ws) in kernel.chunks(KC).enumerate() {
            // Tap t = (u, v) reads `u·dh·row_stride + v·dw` past the window's corner.
            let (mut u, mut v) = ((chunk * KC) / geo.kw, (chunk * KC) % geo.kw);
            for (tap, &w) in taps.iter_mut().zip(ws) {
                *tap = (u * geo.dilation_h * row_stride + v * geo.dilation_w, w);
                v += 1;
                if v == geo.kw {
                    (u, v) = (u + 1, 0);
                }
            }
            let taps = &taps[..ws.len()];
            let first = chunk == 0;
            let mut oy = 0;
            while oy < geo.h_out {
                let rows = if oy + 4 <= geo.h_out { 4 } else { 1 };
                let out_rows = &mut out_plane[oy * geo.w_out..(oy + rows) * geo.w_out];
                let x = &padded[oy * row_step..];
                // SAFETY: CPU support is the caller's guarantee.
                unsafe {
                    if rows == 4 {
                        rows_chunk::<L, 4>(x, taps, row_step, geo.stride_w, out_rows, first);
                    } else {
                        rows_chunk::<L, 1>(x, taps, row_step, geo.stride_w, out_rows, first);
                    }
                }
                oy += rows;
            }
        }
        finish_plane(out_plane, bias.map(|b| b[o]), act);
    }
}

/// Bias, then activation, over a finished plane; each case a loop of its own
/// so it vectorises (the same `+` and `Activation::apply` as every path).
#[inline(always)]
fn finish_plane(plane: &mut [f32], bias: Option<f32>, act: Activation) {
    if let Some(b) = bias {
        plane.iter_mut().for_each(|v| *v += b);
    }
    match act {
        Activation::None => {}
        Activation::Relu => plane.iter_mut().for_each(|v| *v = Activation::Relu.apply(*v)),
        clamp => plane.iter_mut().for_each(|v| *v = clamp.apply(*v)),
    }
}
