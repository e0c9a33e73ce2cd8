//! The forward convolution: validate everything, then one GEMM per
//! (image, group) with the weights as A and the image, read as its im2col
//! matrix, as B. Chooses the B source; the engine does the rest.

use super::implicit::ImageSource;
use super::params::{ConvGeometry, ConvParams, check_len};
use crate::ConvError;
use crate::gemm::loops::{CMatrix, Epilogue, Parallelism};
use crate::gemm::pack::{PanelSource, StridedSource};
use crate::gemm::{self, Activation, Isa};
use crate::im2col::im2col_image;

/// How the image reaches the GEMM as its B operand.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// The fastest applicable: [`Algorithm::Pointwise`] for 1×1 stride-1
    /// unpadded kernels, else [`Algorithm::Implicit`].
    #[default]
    Auto,
    /// Build the explicit `K × N` im2col matrix of each (image, group), then
    /// multiply: the simple path the others are tested against.
    Im2col,
    /// Pack B straight from the image (implicit im2col): no `K × N` buffer.
    Implicit,
    /// 1×1 kernel, stride 1, no padding: the image itself is B. Falls back to
    /// `Implicit` for other shapes.
    Pointwise,
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
/// or a fused activation. `Err(IsaUnavailable)` if this CPU cannot run `options.isa`.
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
    check_len("weight", weight.len(), geo.weight_len())?;
    if let Some(b) = bias {
        check_len("bias", b.len(), geo.c_out)?;
    }
    check_len("output", output.len(), geo.output_len())?;
    if !options.isa.is_available() {
        return Err(ConvError::IsaUnavailable { isa: options.isa.name() });
    }
    let flipped;
    let weight = if geo.flip {
        flipped = flip_kernels(weight, geo.kh * geo.kw);
        &flipped[..]
    } else {
        weight
    };
    forward(&geo, options, input, weight, bias, output)
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

/// The validated forward pass (weights already cross-correlation ordered).
fn forward(
    geo: &ConvGeometry,
    options: &ConvOptions,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    output: &mut [f32],
) -> Result<(), ConvError> {
    let (m, k, n) = (geo.c_out_per_group(), geo.patch_len(), geo.out_pixels());
    let image_len = geo.c_in * geo.h_in * geo.w_in;
    let group_len = geo.c_in_per_group() * geo.h_in * geo.w_in;
    let pointwise =
        geo.kh == 1 && geo.kw == 1 && geo.stride_h == 1 && geo.stride_w == 1 && geo.params().padding == [0; 4];
    let algorithm = match options.algorithm {
        Algorithm::Auto | Algorithm::Pointwise if pointwise => Algorithm::Pointwise,
        Algorithm::Auto | Algorithm::Pointwise => Algorithm::Implicit,
        other => other,
    };
    let par = match options.threads {
        Threads::Pool => Parallelism::Rayon,
        Threads::Single => Parallelism::Serial,
    };
    let mut cols = match algorithm {
        Algorithm::Im2col => vec![0.0f32; k * n],
        _ => Vec::new(),
    };
    for image in 0..geo.batch {
        for group in 0..geo.groups {
            let channels = &input[image * image_len + group * group_len..][..group_len];
            let w = &weight[group * m * k..][..m * k];
            let out = &mut output[(image * geo.c_out + group * m) * n..][..m * n];
            let bias = bias.map(|b| &b[group * m..][..m]);
            match algorithm {
                Algorithm::Im2col => {
                    im2col_image(geo, channels, 0..geo.c_in_per_group(), &mut cols);
                    // SAFETY: `cols` is K × N row-major.
                    let b = unsafe { StridedSource::new(cols.as_ptr(), n as isize, 1) };
                    group_gemm(options, par, m, n, k, w, &b, bias, out)?;
                }
                Algorithm::Pointwise => {
                    // SAFETY: with a 1×1 stride-1 unpadded kernel, the group's
                    // channels are the K × N matrix, row-major.
                    let b = unsafe { StridedSource::new(channels.as_ptr(), n as isize, 1) };
                    group_gemm(options, par, m, n, k, w, &b, bias, out)?;
                }
                _ => group_gemm(options, par, m, n, k, w, &ImageSource::new(geo, channels), bias, out)?,
            }
        }
    }
    Ok(())
}

/// `out (m × n) = w (m × k) · B (k × n) + bias`, then the activation.
#[allow(clippy::too_many_arguments)]
fn group_gemm<B: PanelSource>(
    options: &ConvOptions,
    par: Parallelism,
    m: usize,
    n: usize,
    k: usize,
    w: &[f32],
    b: &B,
    bias: Option<&[f32]>,
    out: &mut [f32],
) -> Result<(), ConvError> {
    // SAFETY: `w` is m × k row-major, read as its transpose (k × m).
    let a_t = unsafe { StridedSource::new(w.as_ptr(), 1, k as isize) };
    let epi = Epilogue {
        alpha: 1.0,
        beta: 0.0,
        bias: bias.map_or(std::ptr::null(), <[f32]>::as_ptr),
        act: options.activation,
    };
    let c = CMatrix { ptr: out.as_mut_ptr(), rs: n as isize, cs: 1 };
    // SAFETY: `out` holds m × n floats, `bias` m, and the sources cover k × m and k × n.
    unsafe { gemm::gemm(options.isa, m, n, k, &a_t, b, c, &epi, par) }
}
