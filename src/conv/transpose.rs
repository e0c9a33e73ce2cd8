//! Transposed convolution (PyTorch `ConvTranspose2d`, ONNX `ConvTranspose`):
//! its parameters, output-size math and validation, computed as the input
//! gradient of the convolution it transposes (`backward.rs`).

use super::backward::backward_input_validated;
use super::options::ConvOptions;
use crate::check::{check_len, product};
use crate::error::ConvError;
use crate::geometry::{ConvGeometry, ConvParams, check_params};
use crate::layout::Layout;

/// How a transposed convolution spreads each input pixel over its output:
/// the [`ConvParams`] of the convolution it transposes, plus `output_padding`.
///
/// Build it from the default and change what differs:
///
/// ```
/// use convgemm::ConvTransposeParams;
/// let mut p = ConvTransposeParams::default();
/// p.stride = [2, 2];
/// p.padding = [1, 1, 1, 1];
/// p.output_padding = [1, 1];
/// assert_eq!(p.groups, 1);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvTransposeParams {
    /// `[stride_h, stride_w]`, each at least 1: input pixels land this far apart.
    pub stride: [usize; 2],
    /// `[top, left, bottom, right]`: rows and columns cropped from each side
    /// of the full output (PyTorch's `padding`, ONNX's `pads`).
    pub padding: [usize; 4],
    /// `[extra_h, extra_w]` rows and columns added at the bottom and right
    /// (PyTorch's and ONNX's `output_padding`): each less than its stride or
    /// less than its dilation.
    pub output_padding: [usize; 2],
    /// `[dilation_h, dilation_w]`, each at least 1.
    pub dilation: [usize; 2],
    /// Number of groups: at least 1, divides `c_in` and `c_out`.
    pub groups: usize,
    /// The layout of input and output: [`Layout::Nchw`] (the default) or
    /// channels-last [`Layout::Nhwc`]. The weight is `[c_in, c_out/groups,
    /// kh, kw]` in both.
    pub layout: Layout,
}

impl Default for ConvTransposeParams {
    /// Stride 1, no padding, no output padding, dilation 1, one group.
    fn default() -> Self {
        ConvTransposeParams {
            stride: [1, 1],
            padding: [0; 4],
            output_padding: [0; 2],
            dilation: [1, 1],
            groups: 1,
            layout: Layout::Nchw,
        }
    }
}

impl ConvTransposeParams {
    /// The parameters of the convolution this one transposes.
    fn conv_params(&self) -> ConvParams {
        ConvParams {
            stride: self.stride,
            padding: self.padding,
            dilation: self.dilation,
            groups: self.groups,
            flip: false,
            layout: self.layout,
        }
    }
}

/// The shape of a transposed convolution's output, `[n, c_out, h_out, w_out]`,
/// for an input `[n, c_in, h, w]` and a weight `[c_in, c_out / groups, kh, kw]`.
///
/// Per spatial axis, PyTorch's formula:
/// `out = (in − 1)·stride − pad_a − pad_b + dilation·(k − 1) + output_padding + 1`.
/// Errors: a parameter out of range, `weight_shape[0] != c_in`, an input
/// axis of size 0, an `output_padding` not less than its stride nor its
/// dilation, padding that crops the whole output, and overflow.
///
/// ```
/// use convgemm::{conv_transpose2d_output_shape, ConvTransposeParams};
/// // PyTorch's docs: ConvTranspose2d(16, 33, (3, 5), stride=(2, 1), padding=(4, 2)) on 50x100.
/// let p = ConvTransposeParams { stride: [2, 1], padding: [4, 2, 4, 2], ..ConvTransposeParams::default() };
/// let shape = conv_transpose2d_output_shape([20, 16, 50, 100], [16, 33, 3, 5], &p)?;
/// assert_eq!(shape, [20, 33, 93, 100]);
/// # Ok::<(), convgemm::ConvError>(())
/// ```
pub fn conv_transpose2d_output_shape(
    input_shape: [usize; 4],
    weight_shape: [usize; 4],
    params: &ConvTransposeParams,
) -> Result<[usize; 4], ConvError> {
    let geo = transpose_geometry(input_shape, weight_shape, params)?;
    Ok([geo.batch, geo.c_in, geo.h_in, geo.w_in])
}

/// One spatial axis of the transposed output, checked.
#[allow(clippy::too_many_arguments)]
fn axis_output(
    names: [&'static str; 3],
    size: usize,
    stride: usize,
    pads: [usize; 2],
    kernel: usize,
    dilation: usize,
    output_padding: usize,
) -> Result<usize, ConvError> {
    let [size_name, pad_name, output_padding_name] = names;
    if size == 0 {
        return Err(ConvError::BadParameter { name: size_name, value: 0, requirement: "at least 1" });
    }
    if output_padding >= stride && output_padding >= dilation {
        return Err(ConvError::BadParameter {
            name: output_padding_name,
            value: output_padding,
            requirement: "less than the stride or less than the dilation of its axis",
        });
    }
    let overflow = ConvError::Overflow { what: "transposed convolution output size" };
    let full = (size - 1)
        .checked_mul(stride)
        .and_then(|v| v.checked_add(dilation.checked_mul(kernel - 1)?))
        .and_then(|v| v.checked_add(output_padding))
        .and_then(|v| v.checked_add(1))
        .ok_or(overflow.clone())?;
    let cropped = pads[0].checked_add(pads[1]).ok_or(overflow)?;
    if cropped >= full {
        return Err(ConvError::BadParameter {
            name: pad_name,
            value: cropped,
            requirement: "less than the uncropped output size (in - 1)·stride + dilation·(k - 1) + output_padding + 1",
        });
    }
    Ok(full - cropped)
}

/// The geometry of the convolution this one transposes: its input is our
/// output, its weight our weight, and its output grid our input (`h_out`,
/// `w_out` set to our input's; when `output_padding >= stride` the
/// convolution's own grid has one more row or column, whose gradient is 0).
fn transpose_geometry(
    input_shape: [usize; 4],
    weight_shape: [usize; 4],
    params: &ConvTransposeParams,
) -> Result<ConvGeometry, ConvError> {
    let conv = params.conv_params();
    check_params(weight_shape, &conv)?;
    let [batch, c_in, h, w] = input_shape;
    if weight_shape[0] != c_in {
        return Err(ConvError::ShapeMismatch {
            what: "weight_shape[0] (input channels)",
            expected: c_in,
            found: weight_shape[0],
        });
    }
    let [pad_top, pad_left, pad_bottom, pad_right] = params.padding;
    let h_out = axis_output(
        ["input_shape[2] (height)", "padding[0] + padding[2]", "output_padding[0]"],
        h,
        params.stride[0],
        [pad_top, pad_bottom],
        weight_shape[2],
        params.dilation[0],
        params.output_padding[0],
    )?;
    let w_out = axis_output(
        ["input_shape[3] (width)", "padding[1] + padding[3]", "output_padding[1]"],
        w,
        params.stride[1],
        [pad_left, pad_right],
        weight_shape[3],
        params.dilation[1],
        params.output_padding[1],
    )?;
    let c_out = product(&[weight_shape[1], params.groups], "output channels")?;
    let mut geo = ConvGeometry::new([batch, c_out, h_out, w_out], weight_shape, &conv)?;
    debug_assert!(geo.h_out >= h && geo.w_out >= w, "output_padding < stride gives back the input size");
    (geo.h_out, geo.w_out) = (h, w);
    product(&input_shape, "input element count")?;
    Ok(geo)
}

/// A transposed convolution (PyTorch's `ConvTranspose2d`, ONNX's
/// `ConvTranspose`), written into `output`.
///
/// - `input`: `[n, c_in, h, w]`, in `params.layout`.
/// - `weight`: `[c_in, c_out / groups, kh, kw]` (PyTorch's `ConvTranspose2d.weight`).
/// - `bias`: `c_out` values, or `None`.
/// - `output`: `[n, c_out, h_out, w_out]` as [`conv_transpose2d_output_shape`] gives it, in
///   `params.layout`; overwritten.
///
/// `Z[n, g·cg + o, oy, ox] = bias[g·cg + o] + Σ X[n, i, iy, ix] · W[i, o, u, v]`
/// over the input channels `i` of group `g` (`cg = c_out / groups`) and every
/// `(iy, ix, u, v)` with `oy = iy·sh + u·dh − pad_top`, `ox = ix·sw + v·dw − pad_left`.
///
/// This is the input gradient of the convolution with the same weight and
/// parameters whose output is `input`, and it runs as that
/// (see [`conv2d_backward_input`](crate::conv2d_backward_input) for the
/// algorithm and the order of operations); the bias is added last.
/// Everything is checked first; on `Err` `output` is untouched.
///
/// ```
/// use convgemm::{conv_transpose2d, ConvTransposeParams};
/// // A 2x2 input, a 2x2 kernel of ones, stride 2: each pixel becomes a 2x2 block.
/// let p = ConvTransposeParams { stride: [2, 2], ..ConvTransposeParams::default() };
/// let mut out = vec![0.0f32; 16];
/// conv_transpose2d(&[1.0, 2.0, 3.0, 4.0], [1, 1, 2, 2], &[1.0; 4], [1, 1, 2, 2], None, &p, &mut out)?;
/// assert_eq!(&out[..8], &[1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0]);
/// # Ok::<(), convgemm::ConvError>(())
/// ```
pub fn conv_transpose2d(
    input: &[f32],
    input_shape: [usize; 4],
    weight: &[f32],
    weight_shape: [usize; 4],
    bias: Option<&[f32]>,
    params: &ConvTransposeParams,
    output: &mut [f32],
) -> Result<(), ConvError> {
    conv_transpose2d_with(&ConvOptions::default(), input, input_shape, weight, weight_shape, bias, params, output)
}

/// [`conv_transpose2d`] on a chosen path: `options.isa` and `options.threads`
/// are used (`algorithm` and `activation` are not).
/// `Err(IsaUnavailable)` if this CPU cannot run `options.isa`.
///
/// ```
/// use convgemm::{conv_transpose2d_with, ConvOptions, ConvTransposeParams, Isa};
/// let opts = ConvOptions { isa: Isa::Portable, ..ConvOptions::default() };
/// let mut out = vec![0.0f32; 3];
/// // 1x2 input [1, 2], 1x2 kernel [1, 10]: [1, 10 + 2, 20], plus bias 0.5.
/// conv_transpose2d_with(&opts, &[1.0, 2.0], [1, 1, 1, 2], &[1.0, 10.0], [1, 1, 1, 2], Some(&[0.5]),
///                       &ConvTransposeParams::default(), &mut out)?;
/// assert_eq!(out, [1.5, 12.5, 20.5]);
/// # Ok::<(), convgemm::ConvError>(())
/// ```
#[allow(clippy::too_many_arguments)]
pub fn conv_transpose2d_with(
    options: &ConvOptions,
    input: &[f32],
    input_shape: [usize; 4],
    weight: &[f32],
    weight_shape: [usize; 4],
    bias: Option<&[f32]>,
    params: &ConvTransposeParams,
    output: &mut [f32],
) -> Result<(), ConvError> {
    let geo = transpose_geometry(input_shape, weight_shape, params)?;
    check_len("input", input.len(), product(&geo.output_shape(), "input element count")?)?;
    check_len("weight", weight.len(), geo.weight_len())?;
    if let Some(b) = bias {
        check_len("bias", b.len(), geo.c_in)?;
    }
    check_len("output", output.len(), geo.input_len())?;
    options.isa.tile()?;
    backward_input_validated(&geo, options, input, weight, output);
    match bias {
        Some(b) if geo.c_in > 0 && geo.h_in * geo.w_in > 0 => match geo.layout {
            Layout::Nchw => {
                for (index, channel) in output.chunks_exact_mut(geo.h_in * geo.w_in).enumerate() {
                    let value = b[index % geo.c_in];
                    channel.iter_mut().for_each(|z| *z += value);
                }
            }
            _ => {
                for pixel in output.chunks_exact_mut(geo.c_in) {
                    pixel.iter_mut().zip(b).for_each(|(z, &value)| *z += value);
                }
            }
        },
        _ => {}
    }
    Ok(())
}
