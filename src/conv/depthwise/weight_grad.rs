//! `dwconv_weight_grad_channels_last_<isa>`: the weight gradient of a
//! depthwise convolution (multiplier 1) of a channels-last batch, with the
//! channels as the vector lanes. The GEMM formulation of the weight
//! gradient (`conv/backward/weight.rs`) runs one group at a time, a 1 × taps
//! tile per group, re-reading the whole batch per channel; here every
//! channel and tap is summed in one pass over the batch.
//!
//! The same arithmetic as that GEMM: element `(c, t)` sums, over the
//! (image, output pixel) pairs in order, `dY[pixel, c] · X[tap t of the
//! pixel, c]` (a zero where the tap falls in the padding, multiplied as the
//! GEMM's packed zeros are), in chunks of `KC` terms, each from `+0.0` by
//! fused multiply-adds, the first chunk's sum kept and the later ones added
//! in order. So the same bits.

use super::MAX_LANES;
use crate::gemm::KC;
use crate::geometry::ConvGeometry;
use crate::simd::{Lanes, WithLanes};

/// Whether the channels-last depthwise weight gradient takes `geo`:
/// channels-last, one input and one output channel per group.
pub(crate) fn applies(geo: &ConvGeometry) -> bool {
    geo.layout == crate::layout::Layout::Nhwc && geo.c_in_per_group() == 1 && geo.c_out_per_group() == 1
}

/// The gradient of a channels-last depthwise convolution with respect to
/// its `[c, 1, kh, kw]` weights, written into `grad_weight` (`c·kh·kw`
/// floats, overwritten). `input` and `grad_output` are the whole batch.
pub(crate) struct WeightGrad<'a> {
    pub geo: &'a ConvGeometry,
    pub input: &'a [f32],
    pub grad_output: &'a [f32],
    pub grad_weight: &'a mut [f32],
}

impl WithLanes for WeightGrad<'_> {
    type Output = ();

    #[inline(always)]
    fn run<L: Lanes>(self, _: L) {
        let WeightGrad { geo: g, input, grad_output, grad_weight } = self;
        let (c, taps) = (g.c_in, g.kh * g.kw);
        assert!(applies(g) && c == g.c_out && grad_weight.len() == c * taps);
        assert!(input.len() == g.input_len() && grad_output.len() == g.output_len());
        // Tap-major sums: `[taps][c]`, the chunk's and the total.
        let mut chunk = vec![0.0f32; taps * c];
        let mut total: Option<Vec<f32>> = None;
        let mut in_chunk = 0;
        let zeros = vec![0.0f32; c];
        let image_len = g.h_in * g.w_in * c;
        for image in 0..g.batch {
            let x = &input[image * image_len..][..image_len];
            for oy in 0..g.h_out {
                for ox in 0..g.w_out {
                    let pixel = (image * g.h_out + oy) * g.w_out + ox;
                    let dy = &grad_output[pixel * c..][..c];
                    for (t, acc) in chunk.chunks_exact_mut(c).enumerate() {
                        // The image position weight tap t multiplies (rotated with flip).
                        let (mut u, mut v) = (t / g.kw, t % g.kw);
                        if g.flip {
                            (u, v) = (g.kh - 1 - u, g.kw - 1 - v);
                        }
                        let iy = (oy * g.stride_h + u * g.dilation_h).checked_sub(g.pad_top).filter(|&y| y < g.h_in);
                        let ix = (ox * g.stride_w + v * g.dilation_w).checked_sub(g.pad_left).filter(|&x| x < g.w_in);
                        let xs = match (iy, ix) {
                            (Some(iy), Some(ix)) => &x[(iy * g.w_in + ix) * c..][..c],
                            _ => &zeros[..],
                        };
                        fma_into::<L>(acc, dy, xs);
                    }
                    in_chunk += 1;
                    if in_chunk == KC {
                        fold(&mut total, &mut chunk);
                        in_chunk = 0;
                    }
                }
            }
        }
        if in_chunk > 0 || total.is_none() {
            fold(&mut total, &mut chunk);
        }
        let total = total.expect("folded above");
        for (ch, out) in grad_weight.chunks_exact_mut(taps).enumerate() {
            for (t, o) in out.iter_mut().enumerate() {
                *o = total[t * c + ch];
            }
        }
    }
}

/// `acc[i] = fma(dy[i], x[i], acc[i])` for every `i`, on the lanes' FMA:
/// whole vectors, then the rest through vectors on the stack.
#[inline(always)]
fn fma_into<L: Lanes>(acc: &mut [f32], dy: &[f32], x: &[f32]) {
    let n = L::N;
    let whole = acc.len() / n * n;
    assert!(dy.len() >= acc.len() && x.len() >= acc.len() && n <= MAX_LANES);
    for i in (0..whole).step_by(n) {
        // SAFETY: the lanes' features are enabled (the caller runs under
        // their token); i + n <= whole <= the length of all three slices.
        unsafe {
            let v = L::fma(L::load(dy.as_ptr().add(i)), L::load(x.as_ptr().add(i)), L::load(acc.as_ptr().add(i)));
            L::store(acc.as_mut_ptr().add(i), v);
        }
    }
    let rest = acc.len() - whole;
    if rest > 0 {
        let mut parts = [[0.0f32; MAX_LANES]; 3];
        parts[0][..rest].copy_from_slice(&dy[whole..acc.len()]);
        parts[1][..rest].copy_from_slice(&x[whole..acc.len()]);
        parts[2][..rest].copy_from_slice(&acc[whole..]);
        // SAFETY: as above; each buffer holds MAX_LANES >= n floats.
        unsafe {
            let v = L::fma(L::load(parts[0].as_ptr()), L::load(parts[1].as_ptr()), L::load(parts[2].as_ptr()));
            L::store(parts[2].as_mut_ptr(), v);
        }
        acc[whole..].copy_from_slice(&parts[2][..rest]);
    }
}

/// Adds the chunk's sums into the total (or makes them the total), and
/// clears the chunk.
fn fold(total: &mut Option<Vec<f32>>, chunk: &mut [f32]) {
    match total {
        Some(t) => t.iter_mut().zip(chunk.iter()).for_each(|(t, &a)| *t += a),
        None => *total = Some(chunk.to_vec()),
    }
    chunk.fill(0.0);
}
