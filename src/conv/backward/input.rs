//! The gradient of `conv2d` with respect to its input: a convolution of
//! `grad_output` with the rotated kernels where the stride is 1 (windows),
//! else `col2im(Wᵀ · dY)` in blocks of output pixels (columns).

use std::ops::Range;

use rayon::prelude::*;

use super::{check_grad_output_shape, overwrite_gemm, thread_count};
use crate::activation::Activation;
use crate::check::{check_len, product};
use crate::conv::depthwise;
use crate::conv::forward::conv2d_with;
use crate::conv::implicit::ImageSource;
use crate::conv::options::{Algorithm, ConvOptions, Precision};
use crate::conv::select::winograd_pays;
use crate::conv::winograd::{self, TileSize, WinogradWeights};
use crate::error::ConvError;
use crate::gemm::{self, PanelSource, Panels, Parallelism, PrepackedSource, StridedSource};
use crate::geometry::{ConvGeometry, ConvParams};
use crate::im2col::valid_range;
use crate::layout::{Layout, Strides};
use crate::simd::Lanes;

/// The column block of `conv2d_backward_input` holds about this many floats
/// (1 MiB): twice Zen 3's 512 KiB L2, so the block the GEMM writes is still
/// in L2/L3 when the scatter reads it, and the buffer never grows with the image.
const COL_BLOCK_FLOATS: usize = 1 << 18;

/// The fewest output pixels per column block: four 16-wide B panels, so the
/// GEMM's tiles stay full even when the patch is long.
const COL_BLOCK_MIN_PIXELS: usize = 64;

/// The gradient of `conv2d` with respect to its input (`params.flip` taken
/// into account): `grad_input = ∂L/∂input` given `grad_output = ∂L/∂output`.
///
/// - `grad_output`: `[n, c_out, h_out, w_out]`, the shape `conv2d_output_shape(input_shape, weight_shape, params)`
///   gives, in `params.layout`.
/// - `weight`: `[c_out, c_in / groups, kh, kw]` (OIHW), as for `conv2d`.
/// - `grad_input`: `[n, c_in, h, w]` = `input_shape`, in `params.layout`; overwritten.
///
/// `dX[n, g·cg + c, iy, ix] = Σ W[o, c, u, v] · dY[n, o, oy, ox]` over the
/// `o` of group `g` and every `(u, v, oy, ox)` with
/// `iy = oy·sh + u·dh − pad_top`, `ix = ox·sw + v·dw − pad_left`
/// (`W` rotated by 180° per kernel when `params.flip`).
///
/// # Algorithm
/// One of two GEMM formulations per (image, group), chosen by the geometry
/// alone (never by threads, batch or ISA), or Winograd under
/// [`Precision::Relaxed`](crate::Precision::Relaxed):
///
/// - **Windows (implicit)**, for stride 1 with no side padded by more than
///   `dilation·(k − 1)` (the usual "same" and "valid" layers): `dX` is itself
///   a convolution of `dY` with the kernels rotated by 180° and transposed,
///   run as one GEMM straight into `grad_input`: `M = c_in/groups`,
///   `N = h·w`, reduction over `(o, u', v')` (`c_out/groups · kh · kw`), B
///   packed straight from `dY` (the forward's implicit im2col, padding
///   `dilation·(k − 1) − pad`). No column buffer, the forward's flop count.
///   For a depthwise layer (one input and one output channel per group)
///   that convolution is itself depthwise, and runs on the forward's
///   depthwise kernels (their own bounded scratch in NCHW) with the same
///   sums in the same order, so the same bits as the GEMM.
/// - **Columns**, for everything else (stride > 1, over-padding):
///   `col2im(Wᵀ · dY)`. The GEMM `D = W_gᵀ · dY_g` (`M = (c_in/groups)·kh·kw`,
///   `N` = output pixels, reduction over the `c_out/groups` output channels)
///   writes blocks of about 2¹⁸ floats (at least 64 output pixels) of the
///   column matrix `D` into a reused buffer, and each block is scattered
///   into `grad_input` (col2im) before the next. With a stride `s > 1` the
///   windows formulation would multiply `(s² − 1)/s²` inserted zeros; this
///   one does exactly the forward's multiply-adds, and the block bounds its
///   buffer (1 MiB, or 64 pixels of the patch when that is more) whatever
///   the image size.
/// - **Winograd**, under `Precision::Relaxed` where the windows formulation
///   applies to a 3×3 undilated kernel where `Auto` would take it for that
///   convolution forward (`c_out/groups` → `c_in/groups` channels on the
///   input's plane, as [`Precision::Relaxed`](crate::Precision::Relaxed)
///   describes): the same convolution by F(m×m, 3×3), within `1e-5 · scale`
///   of the exact sums and bit-identical across threads and paths.
///
/// Either way the weights are packed once per call, as a forward plan's are.
/// Channels-last (`params.layout == Layout::Nhwc`) runs the same
/// formulations on the same values in the same order, reading
/// `grad_output` and writing `grad_input` through the layout's strides (no
/// transposed copy), so its result is the NCHW one's bits, permuted. (One
/// difference: its images, not its groups, are what two threads split.)
///
/// # Order of operations
/// Windows: each element of `grad_input` is the crate's chunked GEMM sum
/// (see the crate docs) over `(o, u', v')` in that order, `o` the output
/// channels of its group and `(u', v')` the taps of the rotated kernel,
/// row-major; terms whose `dY` position falls outside the output grid are
/// zeros in the sum (so, as with the forward's padding, an infinite or NaN
/// weight meeting one gives NaN; the columns formulation only ever sums the
/// terms of the definition). Columns: each element of `D` is the chunked GEMM sum over
/// the output channels of its group; each element of `grad_input` starts at
/// `+0.0` and adds, in f32, its terms of `D`: block by block (blocks of
/// consecutive output pixels, in increasing order), within a block by kernel
/// tap `(u, v)` in row-major order, then by output pixel in row-major order.
/// Nothing depends on threads, on the batch (each image is computed alone)
/// or on the FMA path.
///
/// Everything is checked first; on `Err` `grad_input` is untouched.
///
/// ```
/// use convgemm::{conv2d_backward_input, ConvParams};
/// // One 3x3 image, one 2x2 kernel of ones: dX counts the windows covering each pixel.
/// let grad_output = vec![1.0f32; 4]; // [1, 1, 2, 2]
/// let weight = vec![1.0f32; 4]; // [1, 1, 2, 2]
/// let mut grad_input = vec![0.0f32; 9];
/// conv2d_backward_input(&grad_output, [1, 1, 2, 2], &weight, [1, 1, 2, 2], &ConvParams::default(),
///                       &mut grad_input, [1, 1, 3, 3])?;
/// assert_eq!(grad_input, [1.0, 2.0, 1.0, 2.0, 4.0, 2.0, 1.0, 2.0, 1.0]);
/// # Ok::<(), convgemm::ConvError>(())
/// ```
pub fn conv2d_backward_input(
    grad_output: &[f32],
    grad_output_shape: [usize; 4],
    weight: &[f32],
    weight_shape: [usize; 4],
    params: &ConvParams,
    grad_input: &mut [f32],
    input_shape: [usize; 4],
) -> Result<(), ConvError> {
    conv2d_backward_input_with(
        &ConvOptions::default(),
        grad_output,
        grad_output_shape,
        weight,
        weight_shape,
        params,
        grad_input,
        input_shape,
    )
}

/// [`conv2d_backward_input`] on a chosen path: `options.isa`,
/// `options.threads` and `options.precision` are used (`algorithm` and
/// `activation` are not: the geometry picks the formulation, and a
/// gradient has no activation). Under
/// [`Precision::Relaxed`](crate::Precision::Relaxed) a 3×3 stride-1 layer
/// runs by Winograd where `Auto` would take it for the convolution that
/// computes the gradient (`c_out/groups` → `c_in/groups` channels on the
/// input's plane; see `Precision::Relaxed`).
/// `Err(IsaUnavailable)` if this CPU cannot run `options.isa`.
///
/// ```
/// use convgemm::{conv2d_backward_input_with, ConvOptions, ConvParams, Isa};
/// let opts = ConvOptions { isa: Isa::Portable, ..ConvOptions::default() };
/// let mut grad_input = vec![0.0f32; 2];
/// conv2d_backward_input_with(&opts, &[3.0], [1, 1, 1, 1], &[1.0, 2.0], [1, 1, 1, 2],
///                            &ConvParams::default(), &mut grad_input, [1, 1, 1, 2])?;
/// assert_eq!(grad_input, [3.0, 6.0]);
/// # Ok::<(), convgemm::ConvError>(())
/// ```
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_input_with(
    options: &ConvOptions,
    grad_output: &[f32],
    grad_output_shape: [usize; 4],
    weight: &[f32],
    weight_shape: [usize; 4],
    params: &ConvParams,
    grad_input: &mut [f32],
    input_shape: [usize; 4],
) -> Result<(), ConvError> {
    let geo = ConvGeometry::new(input_shape, weight_shape, params)?;
    check_grad_output_shape(&geo, grad_output_shape)?;
    check_len("grad_output", grad_output.len(), product(&geo.output_shape(), "output element count")?)?;
    check_len("weight", weight.len(), geo.weight_len())?;
    check_len("grad_input", grad_input.len(), geo.input_len())?;
    options.isa.tile()?;
    backward_input_validated(&geo, options, grad_output, weight, grad_input);
    Ok(())
}

/// `conv2d_backward_input` on validated arguments. `geo.h_out × geo.w_out`
/// is the grid of `grad_output`; it may be smaller than the forward output
/// (`conv_transpose2d` with an `output_padding` of at least the stride): the
/// missing output pixels have a zero gradient.
pub(crate) fn backward_input_validated(
    geo: &ConvGeometry,
    options: &ConvOptions,
    grad_output: &[f32],
    weight: &[f32],
    grad_input: &mut [f32],
) {
    if grad_input.is_empty() {
        return;
    }
    let (group_len, m_group) = (geo.c_in_per_group() * geo.h_in * geo.w_in, geo.c_out_per_group());
    if group_len == 0 || m_group == 0 {
        grad_input.fill(0.0);
        return;
    }
    // Now batch, c_in, c_out >= 1, so the products below are factors of
    // counts `ConvGeometry` checked.
    let (patch, pixels) = (geo.patch_len(), geo.out_pixels());
    if patch == 0 || pixels == 0 {
        grad_input.fill(0.0);
        return;
    }
    match windows_geometry(geo) {
        Some(windows) if relaxed_winograd(geo, options) => {
            backward_input_winograd(geo, &windows, options, grad_output, weight, grad_input)
        }
        Some(windows) => match depthwise_windows(geo, &windows) {
            Some(params) => backward_input_depthwise(&windows, &params, options, grad_output, weight, grad_input),
            None => backward_input_windows(geo, &windows, options, grad_output, weight, grad_input),
        },
        None => backward_input_columns(geo, options, grad_output, weight, grad_input),
    }
}

/// Whether the input gradient runs by Winograd: `Precision::Relaxed`, a
/// 3×3 stride-1 undilated kernel, and channels where `Auto` takes it
/// forward (the windows convolution has `c_out/groups` input channels and
/// `c_in/groups` output channels).
fn relaxed_winograd(geo: &ConvGeometry, options: &ConvOptions) -> bool {
    options.precision == Precision::Relaxed
        && winograd::applies([geo.kh, geo.kw], [geo.stride_h, geo.stride_w], [geo.dilation_h, geo.dilation_w])
        && winograd_pays(geo.c_out_per_group(), geo.c_in_per_group(), geo.h_in, geo.w_in)
}

/// The windows convolution of [`backward_input_windows`] by Winograd, every
/// image and group in one call: `grad_output` (`[n, c_out, h_out, w_out]`)
/// convolved, group by group, with the kernels rotated by 180° and
/// transposed (`[c_in, c_out/groups, 3, 3]`), padded as `windows` says.
fn backward_input_winograd(
    geo: &ConvGeometry,
    windows: &ConvGeometry,
    options: &ConvOptions,
    grad_output: &[f32],
    weight: &[f32],
    grad_input: &mut [f32],
) {
    let (cg, m) = (geo.c_in_per_group(), geo.c_out_per_group());
    let taps = geo.kh * geo.kw;
    let mut rotated = vec![0.0f32; geo.c_in * m * taps];
    for g in 0..geo.groups {
        for c in 0..cg {
            for o in 0..m {
                let src = &weight[((g * m + o) * cg + c) * taps..][..taps];
                let dst = &mut rotated[((g * cg + c) * m + o) * taps..][..taps];
                for (t, d) in dst.iter_mut().enumerate() {
                    // Rotated by 180° unless the forward already flipped it.
                    *d = if geo.flip { src[t] } else { src[taps - 1 - t] };
                }
            }
        }
    }
    let params = ConvParams {
        stride: [1, 1],
        padding: [windows.pad_top, windows.pad_left, windows.pad_bottom, windows.pad_right],
        dilation: [1, 1],
        groups: geo.groups,
        flip: false,
        layout: geo.layout,
    };
    let shape = [geo.c_in, m, geo.kh, geo.kw];
    let full = ConvGeometry::new([geo.batch, geo.c_out, geo.h_out, geo.w_out], shape, &params)
        .expect("the windows geometry of each group is valid");
    let weights = WinogradWeights::new(rotated, shape, geo.groups, options.isa);
    let flops = 2.0 * (geo.batch * geo.c_in * geo.h_in * geo.w_in) as f64 * (m * taps) as f64;
    let threads = thread_count(options, flops);
    let tile = TileSize::choose(&full);
    let act = crate::activation::Activation::None;
    winograd::run(options.isa, &full, &weights, tile, grad_output, None, act, threads, grad_input);
}

/// The windows convolution of a depthwise layer (one input and one output
/// channel per group) is itself depthwise, with the same `[c, 1, kh, kw]`
/// weights rotated by 180°, which is the forward's `flip` toggled: its
/// parameters when the depthwise kernels take it, else `None`.
fn depthwise_windows(geo: &ConvGeometry, windows: &ConvGeometry) -> Option<ConvParams> {
    if geo.c_in_per_group() != 1 || geo.c_out_per_group() != 1 {
        return None;
    }
    let params = ConvParams { flip: !geo.flip, ..windows.params() };
    let shape = [windows.c_out, 1, windows.kh, windows.kw];
    let dw = ConvGeometry::new([windows.batch, windows.c_in, windows.h_in, windows.w_in], shape, &params).ok()?;
    depthwise::applies(&dw).then_some(params)
}

/// The input gradient of a depthwise layer of stride 1 as the depthwise
/// convolution of `grad_output` with the rotated kernels, on the forward's
/// depthwise kernels (channels as lanes in channels-last, rolling rows in
/// NCHW). Each element sums the same terms in the same order as the windows
/// GEMM (taps of the rotated kernel row-major, zeros in the padding, from
/// +0 by fused multiply-adds, one K chunk): the same bits.
fn backward_input_depthwise(
    windows: &ConvGeometry,
    params: &ConvParams,
    options: &ConvOptions,
    grad_output: &[f32],
    weight: &[f32],
    grad_input: &mut [f32],
) {
    let options = ConvOptions { algorithm: Algorithm::Depthwise, activation: Activation::None, ..*options };
    let input_shape = [windows.batch, windows.c_in, windows.h_in, windows.w_in];
    let weight_shape = [windows.c_out, 1, windows.kh, windows.kw];
    let done = conv2d_with(&options, grad_output, input_shape, weight, weight_shape, None, params, grad_input);
    debug_assert!(done.is_ok(), "a valid depthwise geometry: {done:?}");
}

/// Runs `job(image, group, out, par, scratch)` for every (image, group).
/// `out` is the part of `grad_input` the job writes through
/// [`JobOutput`]: in NCHW the group's `[c_in/groups, h, w]` planes, in
/// NHWC the whole image (its groups' channels interleave, so one image's
/// groups run one after another on the same slice). In parallel over the
/// slices when there are at least as many as threads, else one after
/// another with the threads inside each job. `flops` is the whole call's.
fn for_each_job(
    geo: &ConvGeometry,
    options: &ConvOptions,
    flops: f64,
    grad_input: &mut [f32],
    job: impl Fn(usize, usize, &mut [f32], Parallelism, &mut Vec<f32>) + Sync,
) {
    let image_len = geo.c_in * geo.h_in * geo.w_in;
    // Slices and the groups each holds.
    let (len, groups_per_slice) = match geo.layout {
        Layout::Nchw => (image_len / geo.groups, 1),
        _ => (image_len, geo.groups),
    };
    let slices = grad_input.len() / len;
    let run = |index: usize, out: &mut [f32], par: Parallelism, scratch: &mut Vec<f32>| {
        for i in index * groups_per_slice..(index + 1) * groups_per_slice {
            job(i / geo.groups, i % geo.groups, out, par, scratch);
        }
    };
    let threads = thread_count(options, flops);
    if threads > 1 && slices >= threads {
        grad_input
            .par_chunks_mut(len)
            .enumerate()
            .for_each_init(Vec::new, |scratch, (index, out)| run(index, out, Parallelism::Serial, scratch));
    } else {
        let par = if threads > 1 { Parallelism::Rayon } else { Parallelism::Serial };
        let mut scratch = Vec::new();
        for (index, out) in grad_input.chunks_mut(len).enumerate() {
            run(index, out, par, &mut scratch);
        }
    }
}

/// Where one job of [`for_each_job`] writes: channel `c` of its group at
/// `first + c·strides.c` of its slice, pixel `(y, x)` `y·strides.y + x·strides.x` further.
struct JobOutput {
    first: usize,
    strides: Strides,
}

impl JobOutput {
    fn new(geo: &ConvGeometry, group: usize) -> Self {
        let strides = geo.input_strides();
        let first = match geo.layout {
            Layout::Nchw => 0,
            _ => group * geo.c_in_per_group(),
        };
        JobOutput { first, strides }
    }
}

/// For stride 1 with no side padded by more than `dilation·(k − 1)`, the
/// input gradient is a convolution of `grad_output` (`[c_out/groups, h_out,
/// w_out]` per group, padded by `dilation·(k − 1) − pad`) with the kernels
/// rotated and transposed. This is that convolution's geometry (the whole
/// batch, the same groups and layout), whose output is the `h × w` input
/// grid; `None` for other shapes.
fn windows_geometry(geo: &ConvGeometry) -> Option<ConvGeometry> {
    if geo.stride_h != 1 || geo.stride_w != 1 {
        return None;
    }
    let (reach_h, reach_w) = (geo.dilation_h * (geo.kh - 1), geo.dilation_w * (geo.kw - 1));
    // Output size h = h_out + top + bottom − reach_h, so bottom = h − h_out + pad_top.
    let top = reach_h.checked_sub(geo.pad_top)?;
    let left = reach_w.checked_sub(geo.pad_left)?;
    let bottom = (geo.h_in + geo.pad_top).checked_sub(geo.h_out)?;
    let right = (geo.w_in + geo.pad_left).checked_sub(geo.w_out)?;
    if bottom > reach_h || right > reach_w {
        return None;
    }
    let params = ConvParams {
        stride: [1, 1],
        padding: [top, left, bottom, right],
        dilation: [geo.dilation_h, geo.dilation_w],
        groups: geo.groups,
        flip: false,
        layout: geo.layout,
    };
    let shape = [geo.batch, geo.c_out, geo.h_out, geo.w_out];
    let windows = ConvGeometry::new(shape, [geo.c_in, geo.c_out_per_group(), geo.kh, geo.kw], &params).ok()?;
    // The implicit packer needs a compact geometry (isize offsets).
    (windows.h_out == geo.h_in && windows.w_out == geo.w_in && windows.is_compact()).then_some(windows)
}

/// The input gradient as one GEMM per (image, group) straight into
/// `grad_input`: `dX_g (cg × h·w) = Ŵ_g (cg × m·kh·kw) · B`, with B the
/// implicit im2col matrix of `grad_output` in the `windows` geometry, row
/// `(o, u', v')` reading tap `(kh−1−u', kw−1−v')` of the forward kernel.
#[allow(clippy::too_many_arguments)]
fn backward_input_windows(
    geo: &ConvGeometry,
    windows: &ConvGeometry,
    options: &ConvOptions,
    grad_output: &[f32],
    weight: &[f32],
    grad_input: &mut [f32],
) {
    let (cg, m_group, taps) = (geo.c_in_per_group(), geo.c_out_per_group(), geo.kh * geo.kw);
    let (k, n) = (m_group * taps, geo.h_in * geo.w_in);
    let a_t: Vec<PrepackedSource> = (0..geo.groups)
        .map(|g| {
            let src = RotatedKernels {
                weight: &weight[g * m_group * cg * taps..][..m_group * cg * taps],
                cg,
                taps,
                rotate: !geo.flip,
            };
            gemm::prepack(options.isa, &src, Panels::A, k, cg).expect("the ISA was checked by the caller")
        })
        .collect();
    let job = |image: usize, group: usize, out: &mut [f32], par: Parallelism, _: &mut Vec<f32>| {
        let b = ImageSource::new(windows, windows.group_input(grad_output, image, group));
        let at = JobOutput::new(geo, group);
        assert!(at.first + at.strides.span(cg, geo.h_in, geo.w_in) <= out.len());
        // SAFETY: the cg × n elements `first + c·strides.c + pixel·strides.x`
        // (pixels row-major, so `pixel·x` = `y·strides.y + x·strides.x`) lie
        // in `out` (asserted) and are distinct; the sources cover k × cg and k × n.
        unsafe {
            overwrite_gemm(
                options.isa,
                par,
                (cg, n, k),
                &a_t[group],
                &b,
                out[at.first..].as_mut_ptr(),
                (at.strides.c, at.strides.x),
            )
        };
    };
    let flops = 2.0 * (geo.batch * geo.groups) as f64 * cg as f64 * n as f64 * k as f64;
    for_each_job(geo, options, flops, grad_input, job);
}

/// Aᵀ of the windows formulation for one group: the `(m·kh·kw) × cg` matrix
/// whose row `(o, t)`, column `c` is `W_g[o, c, taps−1−t]` (`rotate`) or
/// `W_g[o, c, t]`, `t` the tap's row-major index in the kernel.
struct RotatedKernels<'a> {
    /// The group's `[m, cg, kh, kw]` weights.
    weight: &'a [f32],
    cg: usize,
    taps: usize,
    rotate: bool,
}

impl PanelSource for RotatedKernels<'_> {
    fn pack<L: Lanes>(&self, _: L, panel: usize, k0: usize, kc: usize, j0: usize, w: usize, dst: &mut [f32]) {
        for (p, panel_rows) in dst.chunks_exact_mut(kc * panel).take(w.div_ceil(panel)).enumerate() {
            let jp = j0 + p * panel;
            for (kk, row) in panel_rows.chunks_exact_mut(panel).enumerate() {
                let (o, t) = ((k0 + kk) / self.taps, (k0 + kk) % self.taps);
                let t = if self.rotate { self.taps - 1 - t } else { t };
                for (jj, out) in row.iter_mut().enumerate() {
                    let c = jp + jj;
                    *out = if c < j0 + w { self.weight[(o * self.cg + c) * self.taps + t] } else { 0.0 };
                }
            }
        }
    }
}

/// The input gradient as `col2im(Wᵀ · dY)` per (image, group), in blocks of
/// output pixels: the GEMM writes a `patch × block` slice of the column
/// matrix into a reused buffer, which is scattered into `grad_input` before
/// the next block.
fn backward_input_columns(
    geo: &ConvGeometry,
    options: &ConvOptions,
    grad_output: &[f32],
    weight: &[f32],
    grad_input: &mut [f32],
) {
    let (patch, pixels, m_group) = (geo.patch_len(), geo.out_pixels(), geo.c_out_per_group());
    // Per group, Aᵀ = W_g (m_group × patch, row-major) packed once.
    let a_t: Vec<PrepackedSource> = (0..geo.groups)
        .map(|g| {
            let w = &weight[g * m_group * patch..][..m_group * patch];
            // SAFETY: `w` is m_group × patch row-major.
            let src = unsafe { StridedSource::new(w.as_ptr(), patch as isize, 1) };
            gemm::prepack(options.isa, &src, Panels::A, m_group, patch).expect("the ISA was checked by the caller")
        })
        .collect();
    let block = (COL_BLOCK_FLOATS / patch / 16 * 16).max(COL_BLOCK_MIN_PIXELS).min(pixels);
    // dY of one (image, group): output channel `o`, pixel `p` at `o·os.c + p·os.x`.
    let os = geo.output_strides();
    let job = |image: usize, group: usize, image_grad: &mut [f32], par: Parallelism, cols: &mut Vec<f32>| {
        let dy = &grad_output[image * geo.c_out * pixels + group * m_group * os.c..];
        assert!(os.span(m_group, geo.h_out, geo.w_out) <= dy.len());
        let at = JobOutput::new(geo, group);
        if group == 0 || geo.layout == Layout::Nchw {
            image_grad.fill(0.0);
        }
        cols.resize(patch * block, 0.0);
        for j0 in (0..pixels).step_by(block) {
            let width = block.min(pixels - j0);
            // SAFETY: `dy` holds the m_group × pixels elements `o·os.c + p·os.x` (asserted);
            // columns j0 .. j0 + width exist.
            let b = unsafe { StridedSource::new(dy[j0 * os.x..].as_ptr(), os.c as isize, os.x as isize) };
            // SAFETY: `cols` holds patch × width floats (row stride width);
            // the sources cover m_group × patch and m_group × width.
            unsafe {
                overwrite_gemm(
                    options.isa,
                    par,
                    (patch, width, m_group),
                    &a_t[group],
                    &b,
                    cols.as_mut_ptr(),
                    (width, 1),
                )
            };
            scatter_columns(geo, &cols[..patch * width], j0..j0 + width, image_grad, &at, par);
        }
    };
    let flops = 2.0 * (geo.batch * geo.groups) as f64 * patch as f64 * pixels as f64 * m_group as f64;
    for_each_job(geo, options, flops, grad_input, job);
}

/// col2im of a block of columns: adds `cols` (`patch × pixels.len()`, row
/// `(c, u, v)` = `D` for that tap, columns the output pixels `pixels`) into
/// the job's slice `image` at `at`, dropping the padding. Channels are
/// independent, so in NCHW (each channel a plane of its own) they may go to
/// different threads (`par`); each pixel's sum runs in the same order
/// either way (see [`scatter_channel`]).
fn scatter_columns(
    geo: &ConvGeometry,
    cols: &[f32],
    pixels: Range<usize>,
    image: &mut [f32],
    at: &JobOutput,
    par: Parallelism,
) {
    let rows = geo.kh * geo.kw * pixels.len();
    let channel_cols = |c: usize| &cols[c * rows..][..rows];
    match geo.layout {
        Layout::Nchw => {
            let plane = geo.h_in * geo.w_in;
            let one = |(c, channel): (usize, &mut [f32])| {
                scatter_channel(geo, channel_cols(c), pixels.clone(), channel, 0, at.strides)
            };
            if par == Parallelism::Rayon && image.len() > plane {
                image.par_chunks_mut(plane).enumerate().for_each(one);
            } else {
                image.chunks_mut(plane).enumerate().for_each(one);
            }
        }
        _ => {
            for c in 0..geo.c_in_per_group() {
                scatter_channel(geo, channel_cols(c), pixels.clone(), image, at.first + c * at.strides.c, at.strides);
            }
        }
    }
}

/// col2im of one channel: adds `cols` (`kh·kw × pixels.len()`, row `(u, v)`)
/// into the channel whose pixel `(y, x)` is `out[first + y·s.y + x·s.x]`.
/// With `flip`, image tap `(u, v)` takes row `(kh−1−u, kw−1−v)`. Order per
/// pixel: taps `(u, v)` row-major, then output pixels in order (the same in
/// either layout).
fn scatter_channel(geo: &ConvGeometry, cols: &[f32], pixels: Range<usize>, out: &mut [f32], first: usize, s: Strides) {
    let (h, w, w_out) = (geo.h_in, geo.w_in, geo.w_out);
    let width = pixels.len();
    let (oy_first, oy_last) = (pixels.start / w_out, (pixels.end - 1) / w_out);
    // (Saturating: with a stride past the image each row has one valid column, and the step is never taken.)
    let step = geo.stride_w.saturating_mul(s.x);
    for u in 0..geo.kh {
        let (oy0, oy1) = valid_range(geo.h_out, h, geo.stride_h, u * geo.dilation_h, geo.pad_top);
        for v in 0..geo.kw {
            let (ox0, ox1) = valid_range(w_out, w, geo.stride_w, v * geo.dilation_w, geo.pad_left);
            let (ru, rv) = if geo.flip { (geo.kh - 1 - u, geo.kw - 1 - v) } else { (u, v) };
            let row = &cols[(ru * geo.kw + rv) * width..][..width];
            for oy in oy0.max(oy_first)..oy1.min(oy_last + 1) {
                let iy = oy * geo.stride_h + u * geo.dilation_h - geo.pad_top;
                // This output row's part of the block, as output columns.
                let row_start = oy * w_out;
                let lo = ox0.max(pixels.start.saturating_sub(row_start));
                let hi = ox1.min(pixels.end - row_start);
                if lo >= hi {
                    continue;
                }
                let src = &row[row_start + lo - pixels.start..row_start + hi - pixels.start];
                let ix = lo * geo.stride_w + v * geo.dilation_w - geo.pad_left;
                let start = first + iy * s.y + ix * s.x;
                if step == 1 {
                    for (dst, &d) in out[start..start + src.len()].iter_mut().zip(src) {
                        *dst += d;
                    }
                } else {
                    for (dst, &d) in out[start..].iter_mut().step_by(step).zip(src) {
                        *dst += d;
                    }
                }
            }
        }
    }
}
