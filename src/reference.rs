//! Slow, obviously correct oracles, accumulating in f64, written straight from
//! the defining sums. Tests, benches and fuzz targets share them; nothing in
//! the fast paths calls them. They validate shapes like the fast paths do but
//! are not tuned: keep the sizes small.

use crate::conv::params::{ConvGeometry, check_len};
use crate::{ConvError, ConvParams};

/// A reference result: the f64 value of every output element and the
/// magnitude of its defining sum, `Σ |term|` (bias included), which scales
/// the rounding error an f32 computation may make.
#[derive(Clone, Debug)]
pub struct Reference {
    /// The exact-ish (f64) value of each element, in the output's layout.
    pub value: Vec<f64>,
    /// `Σ |term|` over the terms of each element's sum (bias included).
    pub magnitude: Vec<f64>,
}

impl Reference {
    /// The first index where `got` is farther from the reference than
    /// `rel · magnitude` (NaN and infinities must match exactly in kind),
    /// with both values, or `None` when every element is within the bound.
    pub fn first_mismatch(&self, got: &[f32], rel: f64) -> Option<(usize, f64, f32)> {
        assert_eq!(got.len(), self.value.len(), "length of result vs reference");
        (0..got.len()).find_map(|i| {
            let (want, g) = (self.value[i], got[i] as f64);
            let ok = if want.is_nan() || g.is_nan() {
                want.is_nan() && g.is_nan()
            } else if want.is_infinite() || g.is_infinite() {
                want == g
            } else {
                (want - g).abs() <= rel * self.magnitude[i]
            };
            (!ok).then_some((i, want, got[i]))
        })
    }
}

/// `X[n, c, iy, ix]` for the input position that kernel tap `(u, v)` of output
/// `(oy, ox)` reads, or 0 where that position falls in the zero padding. This
/// is the one place the index formula of cross-correlation is written down:
/// `iy = oy·stride_h + u·dilation_h − pad_top`, `ix = ox·stride_w + v·dilation_w − pad_left`.
#[allow(clippy::too_many_arguments)]
pub fn input_tap(
    input: &[f32],
    input_shape: [usize; 4],
    params: &ConvParams,
    n: usize,
    c: usize,
    oy: usize,
    ox: usize,
    u: usize,
    v: usize,
) -> f32 {
    let [_, c_in, h, w] = input_shape;
    let iy = (oy * params.stride[0] + u * params.dilation[0]) as isize - params.padding[0] as isize;
    let ix = (ox * params.stride[1] + v * params.dilation[1]) as isize - params.padding[1] as isize;
    if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= w {
        return 0.0;
    }
    input[((n * c_in + c) * h + iy as usize) * w + ix as usize]
}

/// The direct convolution of `conv2d`, in f64:
/// `Z[n,o,i,j] = bias[o] + Σ_c Σ_u Σ_v W[o,c,u',v'] · X[n, g·cg + c, i·sh + u·dh − pt, j·sw + v·dw − pl]`
/// where `g = o / (c_out/groups)`, `cg = c_in/groups`, and `(u', v') = (u, v)`
/// for cross-correlation or `(kh−1−u, kw−1−v)` when `params.flip`.
pub fn conv2d_direct(
    input: &[f32],
    input_shape: [usize; 4],
    weight: &[f32],
    weight_shape: [usize; 4],
    bias: Option<&[f32]>,
    params: &ConvParams,
) -> Result<Reference, ConvError> {
    let geo = ConvGeometry::new(input_shape, weight_shape, params)?;
    check_len("input", input.len(), geo.input_len())?;
    check_len("weight", weight.len(), geo.weight_len())?;
    if let Some(b) = bias {
        check_len("bias", b.len(), geo.c_out)?;
    }
    let [batch, c_out, h_out, w_out] = geo.output_shape();
    let (cg_in, cg_out, kh, kw) = (geo.c_in_per_group(), geo.c_out_per_group(), geo.kh, geo.kw);
    let mut value = Vec::with_capacity(geo.output_len());
    let mut magnitude = Vec::with_capacity(geo.output_len());
    for n in 0..batch {
        for o in 0..c_out {
            let g = o / cg_out;
            for i in 0..h_out {
                for j in 0..w_out {
                    let b = bias.map_or(0.0, |b| b[o] as f64);
                    let (mut sum, mut mag) = (b, b.abs());
                    for c in 0..cg_in {
                        for u in 0..kh {
                            for v in 0..kw {
                                let (wu, wv) = if params.flip { (kh - 1 - u, kw - 1 - v) } else { (u, v) };
                                let w = weight[((o * cg_in + c) * kh + wu) * kw + wv] as f64;
                                let x = input_tap(input, input_shape, params, n, g * cg_in + c, i, j, u, v) as f64;
                                sum += w * x;
                                mag += (w * x).abs();
                            }
                        }
                    }
                    value.push(sum);
                    magnitude.push(mag);
                }
            }
        }
    }
    Ok(Reference { value, magnitude })
}

/// The naive matrix product in f64: `Σ_l a(i, l) · b(l, j)` for an m×k `a`
/// and a k×n `b` given as element functions; row-major m×n result.
pub fn gemm_naive(
    m: usize,
    k: usize,
    n: usize,
    a: impl Fn(usize, usize) -> f32,
    b: impl Fn(usize, usize) -> f32,
) -> Reference {
    let mut value = Vec::with_capacity(m * n);
    let mut magnitude = Vec::with_capacity(m * n);
    for i in 0..m {
        for j in 0..n {
            let (mut sum, mut mag) = (0.0f64, 0.0f64);
            for l in 0..k {
                let t = a(i, l) as f64 * b(l, j) as f64;
                sum += t;
                mag += t.abs();
            }
            value.push(sum);
            magnitude.push(mag);
        }
    }
    Reference { value, magnitude }
}
