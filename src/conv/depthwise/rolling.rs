//! `dwconv_3x3_rolling_<isa>` and `dwconv_5x5_rolling_<isa>`: depthwise rows
//! by rolling accumulators, on lanes with masked loads (x86-64's AVX2 and
//! AVX-512): each input row is loaded once per kernel column and feeds the
//! `k` output rows it belongs to; masked loads supply the zero padding.

use super::Depthwise;
use crate::activation::Activation;
use crate::geometry::ConvGeometry;
use crate::simd::MaskedLanes;

/// Most vectors of output columns in one block of [`dwconv_rolling`].
const ROLLING_MAX_C: usize = 4;

/// Whether [`dwconv_rolling`] takes this geometry: stride 1 both ways, a
/// 3 × 3 or 5 × 5 kernel, no vertical dilation.
pub(super) fn takes(geo: &ConvGeometry) -> bool {
    geo.stride_h == 1 && geo.stride_w == 1 && geo.dilation_h == 1 && geo.kh == geo.kw && matches!(geo.kh, 3 | 5)
}

/// The convolution of one (image, group) with one input channel, as
/// `dwconv_plane` computes it (the same outputs, bit for bit), for a
/// geometry [`takes`] accepts, without a padded copy of the plane:
/// each input row is loaded once per kernel column and feeds the `k`
/// output rows it belongs to. The zero padding comes from masked loads
/// (masked lanes read as `0.0`), so every output still does its `kh·kw`
/// FMAs in tap order from `+0.0`; bias and activation are applied to each
/// finished row before it is stored.
///
/// # Safety
/// `L`'s instructions are available.
#[inline(always)]
pub(super) unsafe fn dwconv_rolling<L: MaskedLanes>(job: Depthwise<'_>) {
    let Depthwise { geo, plane, weight, bias, act, out, .. } = job;
    assert!(takes(geo) && plane.len() >= geo.h_in * geo.w_in, "a plane of a geometry dwconv_rolling takes");
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

/// Output columns `x0 .. x0 + cols` of one output plane of [`dwconv_rolling`].
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
