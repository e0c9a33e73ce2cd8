//! The one-call forward convolution and its options: validate everything,
//! then run a plan built for this call (see `plan.rs`).

use super::params::{ConvGeometry, ConvParams, check_len};
use super::plan::Conv2dPlan;
use crate::ConvError;
use crate::gemm::{Activation, Isa};

/// How the image reaches the GEMM as its B operand.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// The fastest applicable: [`Algorithm::Depthwise`] for groups with one
    /// input channel, [`Algorithm::Direct`] where it applies and each output
    /// sums at least 128 products, [`Algorithm::Pointwise`] for 1×1 stride-1
    /// unpadded kernels, else [`Algorithm::Implicit`].
    #[default]
    Auto,
    /// Build the explicit `K × N` im2col matrix of each (image, group), then
    /// multiply: the simple path the others are tested against.
    Im2col,
    /// Pack B from the image (implicit im2col), through a zero-padded copy
    /// of the input rows one block of output reads, for the K chunk's
    /// channels: no `K × N` buffer.
    Implicit,
    /// 1×1 kernel, stride 1, no padding: the image itself is B. Falls back to
    /// `Implicit` for other shapes.
    Pointwise,
    /// The image read where it lies, from a zero-padded copy of the rows a
    /// block of output reads: the kernel broadcasts image values and takes
    /// output channels as its vector lanes, so no im2col element is copied.
    /// For groups with several input channels and at least 16 output
    /// channels, on a path whose kernel has it (AVX-512); falls back to
    /// `Implicit` elsewhere.
    Direct,
    /// Direct convolution, vectorised over output columns, for groups with
    /// one input channel (depthwise, channel multipliers, single-channel
    /// images), where a GEMM tile would be mostly empty. Falls back to
    /// `Implicit` for other shapes.
    Depthwise,
}

/// Options of a convolution call beyond [`ConvParams`]: which instruction set
/// and which algorithm run, and the activation fused into the output.
/// Every combination gives bit-identical results (except
/// [`Isa::PortableUnfused`], which rounds differently).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConvOptions {
    /// The instruction-set path; [`Isa::detect`] by default.
    pub isa: Isa,
    /// How B is fed to the engine.
    pub algorithm: Algorithm,
    /// Applied to each output after the bias.
    pub activation: Activation,
    /// Whether the call may use the threads of the current rayon pool.
    pub threads: Threads,
}

/// Whether a call may fork onto the caller's rayon pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Threads {
    /// Use the current rayon pool (`ThreadPool::install` chooses it) when the
    /// work is large enough to repay a fork.
    #[default]
    Pool,
    /// Stay on the calling thread.
    Single,
}

impl Default for ConvOptions {
    fn default() -> Self {
        ConvOptions {
            isa: Isa::detect(),
            algorithm: Algorithm::Auto,
            activation: Activation::None,
            threads: Threads::Pool,
        }
    }
}

/// A 2-D convolution (cross-correlation, or true convolution with
/// `params.flip`) of an NCHW batch, written into `output`.
///
/// - `input`: `[n, c_in, h, w]`, NCHW, contiguous.
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

/// Each `kh × kw` kernel rotated by 180 degrees: true convolution as
/// cross-correlation.
pub(crate) fn flip_kernels(weight: &[f32], taps: usize) -> Vec<f32> {
    let mut out = weight.to_vec();
    for kernel in out.chunks_exact_mut(taps.max(1)) {
        kernel.reverse();
    }
    out
}
