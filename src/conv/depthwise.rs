//! Direct convolution for groups with one input channel (depthwise, channel
//! multipliers, single-channel inputs), where a GEMM tile would be mostly
//! empty (M = channel multiplier, often 1). Vectorised over output columns;
//! each output still sums its taps in the order of the reproducibility rule,
//! so it is bit-identical to the GEMM paths.

use super::params::ConvGeometry;
use crate::gemm::Activation;
use crate::gemm::loops::KC;

/// Multiply-adds over lanes of output columns. `fma(a, b, c)` is `a·b + c`
/// rounded once, like `f32::mul_add`.
pub(crate) trait Lanes: Copy {
    const N: usize;
    type V: Copy;
    /// # Safety
    /// The CPU supports the lanes' instructions.
    unsafe fn splat(x: f32) -> Self::V;
    /// # Safety
    /// `p .. p + N` readable.
    unsafe fn load(p: *const f32) -> Self::V;
    /// # Safety
    /// `p .. p + N` writable.
    unsafe fn store(p: *mut f32, v: Self::V);
    /// # Safety
    /// The CPU supports the lanes' instructions.
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
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

/// The direct convolution of one (image, group) with one input channel:
/// `out` is `[m, h_out, w_out]` for the group's `m` output channels, `weight`
/// their `[m, kh·kw]` taps, `bias` their `m` biases.
///
/// # Safety
/// `L`'s instructions are available.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn depthwise_group<L: Lanes>(
    geo: &ConvGeometry,
    plane: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    out: &mut [f32],
    padded: &mut Vec<f32>,
) {
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

/// The body of [`depthwise_group`], from the padded plane (rows
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

/// Plain `f32::mul_add`, one lane: the portable path.
#[derive(Clone, Copy)]
pub(crate) struct Scalar;

impl Lanes for Scalar {
    const N: usize = 1;
    type V = f32;
    unsafe fn splat(x: f32) -> f32 {
        x
    }
    unsafe fn load(p: *const f32) -> f32 {
        // SAFETY: the caller guarantees `p` is readable.
        unsafe { *p }
    }
    unsafe fn store(p: *mut f32, v: f32) {
        // SAFETY: the caller guarantees `p` is writable.
        unsafe { *p = v }
    }
    unsafe fn fma(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

#[cfg(target_arch = "x86_64")]
/// The x86-64 lanes: AVX2 (8 floats) and AVX-512 (16), with the depthwise
/// kernels compiled for each.
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    use super::rolling::{MaskedLanes, rolling_group};
    use super::{ConvGeometry, Lanes, depthwise_group};
    use crate::gemm::Activation;

    /// [`depthwise_group`] with 8-lane AVX2 FMAs.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn depthwise_group_avx2(
        geo: &ConvGeometry,
        plane: &[f32],
        weight: &[f32],
        bias: Option<&[f32]>,
        act: Activation,
        out: &mut [f32],
        padded: &mut Vec<f32>,
    ) {
        // SAFETY: AVX2 and FMA are enabled here.
        unsafe { depthwise_group::<Avx2>(geo, plane, weight, bias, act, out, padded) }
    }

    /// [`rolling_group`] with 8-lane AVX2 FMAs and `vmaskmovps`.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn rolling_group_avx2(
        geo: &ConvGeometry,
        plane: &[f32],
        weight: &[f32],
        bias: Option<&[f32]>,
        act: Activation,
        out: &mut [f32],
    ) {
        // SAFETY: AVX2 and FMA are enabled here.
        unsafe { rolling_group::<Avx2>(geo, plane, weight, bias, act, out) }
    }

    #[derive(Clone, Copy)]
    pub(crate) struct Avx2;

    impl MaskedLanes for Avx2 {
        const REGS: usize = 16;
        type M = __m256i;
        #[inline(always)]
        unsafe fn mask(lo: usize, hi: usize) -> __m256i {
            // SAFETY: the caller guarantees AVX2.
            unsafe {
                let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
                let from = _mm256_cmpgt_epi32(lane, _mm256_set1_epi32(lo as i32 - 1));
                _mm256_and_si256(from, _mm256_cmpgt_epi32(_mm256_set1_epi32(hi as i32), lane))
            }
        }
        #[inline(always)]
        unsafe fn load_masked(m: __m256i, p: *const f32) -> __m256 {
            // SAFETY: the caller guarantees AVX and the masked lanes readable;
            // `vmaskmovps` does not access the others.
            unsafe { _mm256_maskload_ps(p, m) }
        }
        #[inline(always)]
        unsafe fn store_masked(m: __m256i, p: *mut f32, v: __m256) {
            // SAFETY: the caller guarantees AVX and the masked lanes writable.
            unsafe { _mm256_maskstore_ps(p, m, v) }
        }
        #[inline(always)]
        unsafe fn add(a: __m256, b: __m256) -> __m256 {
            // SAFETY: the caller guarantees AVX.
            unsafe { _mm256_add_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn activate(act: Activation, v: __m256) -> __m256 {
            // SAFETY: the caller guarantees AVX2 and FMA.
            unsafe { crate::gemm::kernel::avx2::activate(act, v) }
        }
    }

    /// [`rolling_group`] with 16-lane AVX-512 FMAs and masked loads.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn rolling_group_avx512(
        geo: &ConvGeometry,
        plane: &[f32],
        weight: &[f32],
        bias: Option<&[f32]>,
        act: Activation,
        out: &mut [f32],
    ) {
        // SAFETY: AVX-512F is enabled here.
        unsafe { rolling_group::<Avx512>(geo, plane, weight, bias, act, out) }
    }

    #[derive(Clone, Copy)]
    pub(crate) struct Avx512;

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

    impl MaskedLanes for Avx512 {
        const REGS: usize = 32;
        type M = __mmask16;
        #[inline(always)]
        unsafe fn mask(lo: usize, hi: usize) -> __mmask16 {
            (((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as __mmask16
        }
        #[inline(always)]
        unsafe fn load_masked(m: __mmask16, p: *const f32) -> __m512 {
            // SAFETY: the caller guarantees AVX-512F and the masked lanes
            // readable; the others are not accessed.
            unsafe { _mm512_maskz_loadu_ps(m, p) }
        }
        #[inline(always)]
        unsafe fn store_masked(m: __mmask16, p: *mut f32, v: __m512) {
            // SAFETY: the caller guarantees AVX-512F and the masked lanes writable.
            unsafe { _mm512_mask_storeu_ps(p, m, v) }
        }
        #[inline(always)]
        unsafe fn add(a: __m512, b: __m512) -> __m512 {
            // SAFETY: the caller guarantees AVX-512F.
            unsafe { _mm512_add_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn activate(act: Activation, v: __m512) -> __m512 {
            // SAFETY: the caller guarantees AVX-512F.
            unsafe { crate::gemm::kernel::avx512::activate(act, v) }
        }
    }

    impl Lanes for Avx2 {
        const N: usize = 8;
        type V = __m256;
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m256 {
            // SAFETY: the caller guarantees AVX.
            unsafe { _mm256_set1_ps(x) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m256 {
            // SAFETY: the caller guarantees AVX and 8 readable floats.
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m256) {
            // SAFETY: the caller guarantees AVX and 8 writable floats.
            unsafe { _mm256_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
            // SAFETY: the caller guarantees FMA.
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }
    }
}

/// Depthwise rows by rolling accumulators ([`rolling::rolling_group`]), on
/// lanes with masked loads: x86-64's AVX2 and AVX-512.
#[cfg(target_arch = "x86_64")]
pub(crate) mod rolling {
    use super::{ConvGeometry, Lanes};
    use crate::gemm::Activation;

    /// [`Lanes`] with masked loads and stores, for [`rolling_group`].
    pub(crate) trait MaskedLanes: Lanes {
        /// Vector registers: the accumulators, the input vectors, a broadcast
        /// weight and a mask must fit in them.
        const REGS: usize;
        type M: Copy;
        /// The lanes `lo .. hi` (`lo <= hi <= N`).
        ///
        /// # Safety
        /// The CPU supports the lanes' instructions.
        unsafe fn mask(lo: usize, hi: usize) -> Self::M;
        /// Lane `j` of `m` is `p[j]`, the others `0.0` and not read (slower
        /// than [`Lanes::load`]).
        ///
        /// # Safety
        /// `p + j` readable for the lanes `j` of `m`; CPU support.
        unsafe fn load_masked(m: Self::M, p: *const f32) -> Self::V;
        /// # Safety
        /// `p + j` writable for the lanes `j` of `m`; CPU support.
        unsafe fn store_masked(m: Self::M, p: *mut f32, v: Self::V);
        /// # Safety
        /// The CPU supports the lanes' instructions.
        unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
        /// [`Activation::apply`] on every lane, bit for bit.
        ///
        /// # Safety
        /// The CPU supports the lanes' instructions.
        unsafe fn activate(act: Activation, v: Self::V) -> Self::V;
    }

    /// Most vectors of output columns in one block of [`rolling_group`].
    const ROLLING_MAX_C: usize = 4;

    /// Whether [`rolling_group`] takes this geometry: stride 1 both ways, a
    /// 3 × 3 or 5 × 5 kernel, no vertical dilation.
    pub(crate) fn rolling_takes(geo: &ConvGeometry) -> bool {
        geo.stride_h == 1 && geo.stride_w == 1 && geo.dilation_h == 1 && geo.kh == geo.kw && matches!(geo.kh, 3 | 5)
    }

    /// The convolution of one (image, group) with one input channel, as
    /// [`depthwise_group`](super::depthwise_group) computes it (the same outputs, bit for bit), for a
    /// geometry [`rolling_takes`] accepts, without a padded copy of the plane:
    /// each input row is loaded once per kernel column and feeds the `k`
    /// output rows it belongs to. The zero padding comes from masked loads
    /// (masked lanes read as `0.0`), so every output still does its `kh·kw`
    /// FMAs in tap order from `+0.0`; bias and activation are applied to each
    /// finished row before it is stored.
    ///
    /// # Safety
    /// `L`'s instructions are available.
    #[inline(always)]
    pub(crate) unsafe fn rolling_group<L: MaskedLanes>(
        geo: &ConvGeometry,
        plane: &[f32],
        weight: &[f32],
        bias: Option<&[f32]>,
        act: Activation,
        out: &mut [f32],
    ) {
        assert!(rolling_takes(geo) && plane.len() >= geo.h_in * geo.w_in, "a plane of a geometry rolling_group takes");
        let taps = geo.kh * geo.kw;
        // Vectors per row: `k·C` accumulators, `C` input vectors, a weight and
        // a mask fit in the registers.
        let max_c = ((L::REGS - 2) / (geo.kh + 1)).min(ROLLING_MAX_C);
        for (o, out_plane) in out.chunks_exact_mut(geo.out_pixels()).enumerate() {
            let block = |x0, cols| Block {
                geo,
                plane,
                kernel: &weight[o * taps..(o + 1) * taps],
                bias: bias.map(|b| b[o]),
                act,
                x0,
                cols,
            };
            let mut x0 = 0;
            while x0 < geo.w_out {
                let cols = (geo.w_out - x0).min(L::N * max_c);
                let b = block(x0, cols);
                // SAFETY: CPU support is the caller's; the block's columns fit
                // its `C` vectors.
                unsafe {
                    match (geo.kh, cols.div_ceil(L::N)) {
                        (3, 1) => b.rows::<L, 3, 1>(out_plane),
                        (3, 2) => b.rows::<L, 3, 2>(out_plane),
                        (3, 3) => b.rows::<L, 3, 3>(out_plane),
                        (3, _) => b.rows::<L, 3, 4>(out_plane),
                        (_, 1) => b.rows::<L, 5, 1>(out_plane),
                        (_, 2) => b.rows::<L, 5, 2>(out_plane),
                        (_, 3) => b.rows::<L, 5, 3>(out_plane),
                        (_, _) => b.rows::<L, 5, 4>(out_plane),
                    }
                }
                x0 += cols;
            }
        }
    }

    /// Output columns `x0 .. x0 + cols` of one output plane of [`rolling_group`].
    struct Block<'a> {
        geo: &'a ConvGeometry,
        plane: &'a [f32],
        kernel: &'a [f32],
        bias: Option<f32>,
        act: Activation,
        x0: usize,
        cols: usize,
    }

    impl Block<'_> {
        /// Every output row of the block, `C` vectors wide, for a `K × K`
        /// kernel. After input row `i` (of the padded frame), `acc[u]` holds
        /// output row `i - u`, which has had the taps of kernel rows `0..=u`;
        /// `acc[K - 1]` is then complete.
        ///
        /// # Safety
        /// `L`'s instructions are available.
        #[inline(always)]
        unsafe fn rows<L: MaskedLanes, const K: usize, const C: usize>(&self, out: &mut [f32]) {
            let (geo, n) = (self.geo, L::N);
            assert!(K == geo.kh && K == geo.kw && self.cols <= n * C && self.x0 + self.cols <= geo.w_out);
            assert!(self.plane.len() >= geo.h_in * geo.w_in && self.kernel.len() >= K * K);
            assert!(out.len() >= geo.out_pixels());
            // Load (c, v) reads the input columns `start[c] + v·dw ..+ N`; its
            // mask keeps the lanes inside the row (the rest is the zero padding).
            // (Plain loops, not closures: a closure would not inherit the
            // caller's target features, and the mask intrinsics would become calls.)
            let mut start = [0isize; C];
            for (c, s) in start.iter_mut().enumerate() {
                *s = (self.x0 + n * c) as isize - geo.pad_left as isize;
            }
            // SAFETY: CPU support is the caller's.
            let (zero, bias, empty) = unsafe { (L::splat(0.0), L::splat(self.bias.unwrap_or(0.0)), L::mask(0, 0)) };
            // Each load's mask, and whether vector c has a load with lanes
            // outside the row (an edge). A vector with none loads unmasked,
            // which is faster (AVX-512 res. AVX2 on MobileNetV2's layer: 72
            // against 76 µs, 110 against 139 µs).
            let (mut masks, none) = ([[empty; C]; K], [[empty; C]; K]);
            let (mut stores, mut edge) = ([empty; C], [false; C]);
            for c in 0..C {
                for (v, row) in masks.iter_mut().enumerate() {
                    let s = start[c] + (v * geo.dilation_w) as isize;
                    let lo = (-s).clamp(0, n as isize) as usize;
                    let hi = (geo.w_in as isize - s).clamp(0, n as isize) as usize;
                    // SAFETY: as above.
                    row[c] = unsafe { L::mask(lo, hi.max(lo)) };
                    edge[c] |= lo != 0 || hi != n;
                }
                // SAFETY: as above.
                stores[c] = unsafe { L::mask(0, self.cols.saturating_sub(n * c).min(n)) };
            }
            let mut shifts = [0isize; K];
            for (v, s) in shifts.iter_mut().enumerate() {
                *s = (v * geo.dilation_w) as isize;
            }
            let mut wv = [[zero; K]; K];
            for (u, row) in wv.iter_mut().enumerate() {
                for (v, w) in row.iter_mut().enumerate() {
                    // SAFETY: CPU support as above.
                    *w = unsafe { L::splat(self.kernel[u * K + v]) };
                }
            }
            let mut acc = [[zero; C]; K];
            for i in 0..geo.h_out + K - 1 {
                let iy = i as isize - geo.pad_top as isize;
                let masks_are_none = !(0..geo.h_in as isize).contains(&iy);
                let masks = if masks_are_none { &none } else { &masks };
                // Only read through where inside the plane: outside, every mask is empty.
                let row = self.plane.as_ptr().wrapping_offset(iy.wrapping_mul(geo.w_in as isize));
                for c in 0..C {
                    let masked = edge[c] || masks_are_none;
                    for v in 0..K {
                        let p = row.wrapping_offset(start[c] + shifts[v]);
                        // SAFETY: the masks keep only the lanes inside row `iy`
                        // of the plane (unmasked: every lane of every shift
                        // is); CPU support as above.
                        let x = unsafe { if masked { L::load_masked(masks[v][c], p) } else { L::load(p) } };
                        for u in 0..K {
                            // SAFETY: CPU support as above.
                            acc[u][c] = unsafe { L::fma(wv[u][v], x, acc[u][c]) };
                        }
                    }
                }
                if let Some(r) = (i + 1).checked_sub(K).filter(|&r| r < geo.h_out) {
                    let dst = out[r * geo.w_out + self.x0..].as_mut_ptr();
                    for (c, &a) in acc[K - 1].iter().enumerate() {
                        // SAFETY: the store mask keeps the columns
                        // `x0 + N·c + j < x0 + cols <= w_out` of row `r`; CPU as above.
                        unsafe {
                            let a = if self.bias.is_some() { L::add(a, bias) } else { a };
                            L::store_masked(stores[c], dst.add(n * c), L::activate(self.act, a));
                        }
                    }
                }
                for u in (1..K).rev() {
                    acc[u] = acc[u - 1];
                }
                acc[0] = [zero; C];
            }
        }
    }
}

#[cfg(target_arch = "aarch64")]
pub(crate) mod neon {
    use std::arch::aarch64::*;

    use super::{ConvGeometry, Lanes, depthwise_group};
    use crate::gemm::Activation;

    /// [`depthwise_group`] with 4-lane NEON FMAs.
    ///
    /// # Safety
    /// The CPU has NEON.
    #[target_feature(enable = "neon")]
    pub(crate) unsafe fn depthwise_group_neon(
        geo: &ConvGeometry,
        plane: &[f32],
        weight: &[f32],
        bias: Option<&[f32]>,
        act: Activation,
        out: &mut [f32],
        padded: &mut Vec<f32>,
    ) {
        // SAFETY: NEON is enabled here.
        unsafe { depthwise_group::<Neon>(geo, plane, weight, bias, act, out, padded) }
    }

    #[derive(Clone, Copy)]
    pub(crate) struct Neon;

    impl Lanes for Neon {
        const N: usize = 4;
        type V = float32x4_t;
        #[inline(always)]
        unsafe fn splat(x: f32) -> float32x4_t {
            // SAFETY: the caller guarantees NEON.
            unsafe { vdupq_n_f32(x) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> float32x4_t {
            // SAFETY: the caller guarantees NEON and 4 readable floats.
            unsafe { vld1q_f32(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: float32x4_t) {
            // SAFETY: the caller guarantees NEON and 4 writable floats.
            unsafe { vst1q_f32(p, v) }
        }
        #[inline(always)]
        unsafe fn fma(a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
            // SAFETY: the caller guarantees NEON; vfmaq_f32(c, a, b) = c + a·b, fused.
            unsafe { vfmaq_f32(c, a, b) }
        }
    }
}
