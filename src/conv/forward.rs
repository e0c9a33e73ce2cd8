//! The one-call forward convolution: validate everything, then run a plan
//! built for this call (see `plan.rs`).

use super::options::ConvOptions;
use super::plan::Conv2dPlan;
use crate::check::check_len;
use crate::error::ConvError;
use crate::geometry::{ConvGeometry, ConvParams};

/// A 2-D convolution (cross-correlation, or true convolution with
/// `params.flip`) of a batch, written into `output`.
///
/// - `input`: `[n, c_in, h, w]`, contiguous, NCHW or channels-last as
///   `params.layout` says ([`Layout`](crate::Layout)); `output` in the same layout.
/// - `weight`: `[c_out, c_in / groups, kh, kw]` (OIHW, PyTorch's `Conv2d.weight`).
/// - `bias`: `c_out` values, or `None`.
/// - `output`: `[n, c_out, h_out, w_out]` as [`conv2d_output_shape`](crate::conv2d_output_shape) gives it; overwritten.
///
/// `Z[n,o,i,j] = bias[o] + Σ_c Σ_u Σ_v W[o,c,u,v] · X[n, g·cg + c, i·sh + u·dh − pad_top, j·sw + v·dw − pad_left]`
/// with `g` the group of `o`, `cg = c_in / groups`, and `X = 0` in the padding.
///
/// Every argument is checked first; on `Err` nothing has been written.
/// The result does not depend on the thread count, the batch size or the
/// instruction set (see the crate docs on reproducibility).
///
/// ```
/// use convgemm::{conv2d, conv2d_output_shape, ConvParams};
/// // One 4x4 image, one 3x3 box filter, padding 1: each output sums a 3x3 window.
/// let input = vec![1.0f32; 16];
/// let weight = vec![1.0f32; 9];
/// let mut p = ConvParams::default();
/// p.padding = [1, 1, 1, 1];
/// let shape = conv2d_output_shape([1, 1, 4, 4], [1, 1, 3, 3], &p)?;
/// assert_eq!(shape, [1, 1, 4, 4]);
/// let mut out = vec![0.0f32; 16];
/// conv2d(&input, [1, 1, 4, 4], &weight, [1, 1, 3, 3], Some(&[0.5]), &p, &mut out)?;
/// assert_eq!(&out[..4], &[4.5, 6.5, 6.5, 4.5]); // corner windows see 4 pixels, edges 6
/// # Ok::<(), convgemm::ConvError>(())
/// ```
pub fn conv2d(
    input: &[f32],
    input_shape: [usize; 4],
    weight: &[f32],
    weight_shape: [usize; 4],
    bias: Option<&[f32]>,
    params: &ConvParams,
    output: &mut [f32],
) -> Result<(), ConvError> {
    conv2d_with(&ConvOptions::default(), input, input_shape, weight, weight_shape, bias, params, output)
}

/// [`conv2d`] with [`ConvOptions`]: a chosen instruction set or algorithm,
/// or a fused activation. For repeated calls with the same weights, a
/// [`Conv2dPlan`] packs them once. `Err(IsaUnavailable)` if this CPU cannot run `options.isa`.
///
/// ```
/// use convgemm::{conv2d_with, Activation, ConvOptions, ConvParams};
/// let opts = ConvOptions { activation: Activation::Relu, ..ConvOptions::default() };
/// let mut out = [0.0f32; 2];
/// conv2d_with(&opts, &[1.0, -2.0], [1, 1, 1, 2], &[1.0], [1, 1, 1, 1], None, &ConvParams::default(), &mut out)?;
/// assert_eq!(out, [1.0, 0.0]);
/// # Ok::<(), convgemm::ConvError>(())
/// ```
#[allow(clippy::too_many_arguments)]
pub fn conv2d_with(
    options: &ConvOptions,
    input: &[f32],
    input_shape: [usize; 4],
    weight: &[f32],
    weight_shape: [usize; 4],
    bias: Option<&[f32]>,
    params: &ConvParams,
    output: &mut [f32],
) -> Result<(), ConvError> {
    let geo = ConvGeometry::new(input_shape, weight_shape, params)?;
    check_len("input", input.len(), geo.input_len())?;
    check_len("output", output.len(), geo.output_len())?;
    let plan = Conv2dPlan::new(weight, weight_shape, bias, params, options)?;
    plan.run(input, input_shape, output)
}
