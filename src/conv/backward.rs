//! The backward pass of `conv2d`: the gradients with respect to the input,
//! the weights and the bias, each a fixed-order reduction run through the
//! crate's GEMM engine. Knows the convolution geometry and the engine's
//! `PanelSource` contract, not the kernels or the ISAs.

use std::ops::Range;

use rayon::prelude::*;

use super::forward::{ConvOptions, Threads};
use super::implicit::ImageSource;
use super::params::{ConvGeometry, ConvParams, check_len, product};
use crate::ConvError;
use crate::gemm::loops::{CMatrix, Epilogue, KC, PARALLEL_MIN_FLOPS, Parallelism};
use crate::gemm::pack::{PanelSource, PrepackedSource, StridedSource, with_panel_width};
use crate::gemm::{self, Activation, Isa};
use crate::im2col::valid_range;

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
/// - `grad_output`: `[n, c_out, h_out, w_out]`, the shape `conv2d_output_shape(input_shape, weight_shape, params)` gives.
/// - `weight`: `[c_out, c_in / groups, kh, kw]` (OIHW), as for `conv2d`.
/// - `grad_input`: `[n, c_in, h, w]` = `input_shape`; overwritten.
///
/// `dX[n, g·cg + c, iy, ix] = Σ W[o, c, u, v] · dY[n, o, oy, ox]` over the
/// `o` of group `g` and every `(u, v, oy, ox)` with
/// `iy = oy·sh + u·dh − pad_top`, `ix = ox·sw + v·dw − pad_left`
/// (`W` rotated by 180° per kernel when `params.flip`).
///
/// # Algorithm
/// One of two GEMM formulations per (image, group), chosen by the geometry
/// alone (never by threads, batch or ISA):
///
/// - **Windows (implicit)**, for stride 1 with no side padded by more than
///   `dilation·(k − 1)` (the usual "same" and "valid" layers): `dX` is itself
///   a convolution of `dY` with the kernels rotated by 180° and transposed,
///   run as one GEMM straight into `grad_input`: `M = c_in/groups`,
///   `N = h·w`, reduction over `(o, u', v')` (`c_out/groups · kh · kw`), B
///   packed straight from `dY` (the forward's implicit im2col, padding
///   `dilation·(k − 1) − pad`). No column buffer, the forward's flop count.
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
///
/// Either way the weights are packed once per call, as a forward plan's are.
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

/// [`conv2d_backward_input`] on a chosen path: `options.isa` and
/// `options.threads` are used (`algorithm` and `activation` are not: there
/// is one algorithm and no activation in a gradient).
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

/// The gradient of `conv2d` with respect to its weights (`params.flip` taken
/// into account): the sum over every image of the batch and every output
/// pixel (weight sharing).
///
/// - `input`: `[n, c_in, h, w]`, the forward's input.
/// - `grad_output`: `[n, c_out, h_out, w_out]`, as `conv2d_output_shape` gives.
/// - `grad_weight`: `[c_out, c_in / groups, kh, kw]` = `weight_shape`; overwritten.
///
/// `dW[o, c, u, v] = Σ_n Σ_oy Σ_ox dY[n, o, oy, ox] · X[n, g·cg + c, oy·sh + u·dh − pad_top, ox·sw + v·dw − pad_left]`
/// (`X = 0` in the padding; with `params.flip`, tap `(u, v)` reads the
/// image at `(kh−1−u, kw−1−v)` instead).
///
/// # Algorithm
/// Per group, one GEMM `dW_g = dY_g · colᵀ` with `M = c_out/groups`,
/// `N = (c_in/groups)·kh·kw` and the reduction over `n·h_out·w_out`: the
/// (image, output pixel) pairs of the whole batch, images in order, pixels
/// row-major. A is read straight from `grad_output` and B (`colᵀ`, one row
/// per output pixel, one column per kernel tap) is packed straight from the
/// image: no im2col buffer.
///
/// # Order of operations
/// Each element is the crate's chunked sum (see the crate docs) over that
/// concatenated (image, pixel) axis: chunks of 256 consecutive terms, which
/// may straddle two images, each summed from `+0.0` with fused multiply-adds
/// in order, then added in order. So the result is bit-identical for any
/// thread count and FMA path; it depends on the batch as a whole (summing
/// per-image calls rounds differently).
///
/// Everything is checked first; on `Err` `grad_weight` is untouched.
///
/// ```
/// use convgemm::{conv2d_backward_weight, ConvParams};
/// // 1x3 image [1, 2, 3], 1x2 kernel: outputs x0·w0 + x1·w1 and x1·w0 + x2·w1.
/// let mut grad_weight = vec![0.0f32; 2];
/// conv2d_backward_weight(&[1.0, 2.0, 3.0], [1, 1, 1, 3], &[1.0, 10.0], [1, 1, 1, 2],
///                        &ConvParams::default(), &mut grad_weight, [1, 1, 1, 2])?;
/// assert_eq!(grad_weight, [21.0, 32.0]); // 1·1 + 10·2, 1·2 + 10·3
/// # Ok::<(), convgemm::ConvError>(())
/// ```
pub fn conv2d_backward_weight(
    input: &[f32],
    input_shape: [usize; 4],
    grad_output: &[f32],
    grad_output_shape: [usize; 4],
    params: &ConvParams,
    grad_weight: &mut [f32],
    weight_shape: [usize; 4],
) -> Result<(), ConvError> {
    conv2d_backward_weight_with(
        &ConvOptions::default(),
        input,
        input_shape,
        grad_output,
        grad_output_shape,
        params,
        grad_weight,
        weight_shape,
    )
}

/// [`conv2d_backward_weight`] on a chosen path: `options.isa` and
/// `options.threads` are used (`algorithm` and `activation` are not).
/// `Err(IsaUnavailable)` if this CPU cannot run `options.isa`.
///
/// ```
/// use convgemm::{conv2d_backward_weight_with, ConvOptions, ConvParams, Isa, Threads};
/// let opts = ConvOptions { isa: Isa::Portable, threads: Threads::Single, ..ConvOptions::default() };
/// let mut grad_weight = vec![0.0f32; 1];
/// // Two images of one pixel each: dW = 2·3 + 4·5.
/// conv2d_backward_weight_with(&opts, &[2.0, 4.0], [2, 1, 1, 1], &[3.0, 5.0], [2, 1, 1, 1],
///                             &ConvParams::default(), &mut grad_weight, [1, 1, 1, 1])?;
/// assert_eq!(grad_weight, [26.0]);
/// # Ok::<(), convgemm::ConvError>(())
/// ```
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_weight_with(
    options: &ConvOptions,
    input: &[f32],
    input_shape: [usize; 4],
    grad_output: &[f32],
    grad_output_shape: [usize; 4],
    params: &ConvParams,
    grad_weight: &mut [f32],
    weight_shape: [usize; 4],
) -> Result<(), ConvError> {
    let geo = ConvGeometry::new(input_shape, weight_shape, params)?;
    check_grad_output_shape(&geo, grad_output_shape)?;
    check_len("input", input.len(), geo.input_len())?;
    check_len("grad_output", grad_output.len(), product(&geo.output_shape(), "output element count")?)?;
    check_len("grad_weight", grad_weight.len(), geo.weight_len())?;
    options.isa.tile()?;
    if !geo.is_compact() {
        // The packer indexes the padded plane with isize offsets.
        return Err(ConvError::BadParameter {
            name: "padding",
            value: geo.pad_top.max(geo.pad_left).max(geo.pad_bottom).max(geo.pad_right),
            requirement: "small enough that the padded input plane has at most 2^40 elements (weight gradient)",
        });
    }
    backward_weight_validated(&geo, options, input, grad_output, grad_weight);
    Ok(())
}

/// The gradient of `conv2d` with respect to its bias: `grad_bias[o]` is the
/// sum of `grad_output[n, o, oy, ox]` over the batch and the output pixels.
///
/// `grad_output` is `[n, c_out, h_out, w_out]`, `grad_bias` holds `c_out`
/// floats and is overwritten. Each sum runs over (image, pixel) in order
/// (images in order, pixels row-major), in the crate's chunked order: chunks
/// of 256 terms each summed from `+0.0`, then added in order. Plain f32
/// additions, the same on every path and thread count.
///
/// ```
/// use convgemm::conv2d_backward_bias;
/// let grad_output = [1.0f32, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0, 40.0]; // [2, 2, 1, 2]
/// let mut grad_bias = [0.0f32; 2];
/// conv2d_backward_bias(&grad_output, [2, 2, 1, 2], &mut grad_bias)?;
/// assert_eq!(grad_bias, [1.0 + 2.0 + 10.0 + 20.0, 3.0 + 4.0 + 30.0 + 40.0]);
/// # Ok::<(), convgemm::ConvError>(())
/// ```
pub fn conv2d_backward_bias(
    grad_output: &[f32],
    grad_output_shape: [usize; 4],
    grad_bias: &mut [f32],
) -> Result<(), ConvError> {
    let [batch, c_out, h_out, w_out] = grad_output_shape;
    let len = product(&grad_output_shape, "grad_output element count")?;
    check_len("grad_output", grad_output.len(), len)?;
    check_len("grad_bias", grad_bias.len(), c_out)?;
    if len == 0 {
        grad_bias.fill(0.0);
        return Ok(());
    }
    let pixels = h_out * w_out; // a factor of `len`, which fits
    for (o, out) in grad_bias.iter_mut().enumerate() {
        // The first chunk's sum is stored as is, later ones added (as the GEMM stores).
        let mut total: Option<f32> = None;
        let mut acc = 0.0f32;
        let mut in_chunk = 0;
        for image in 0..batch {
            for &term in &grad_output[(image * c_out + o) * pixels..][..pixels] {
                acc += term;
                in_chunk += 1;
                if in_chunk == KC {
                    total = Some(total.map_or(acc, |t| t + acc));
                    (acc, in_chunk) = (0.0, 0);
                }
            }
        }
        if in_chunk > 0 || total.is_none() {
            total = Some(total.map_or(acc, |t| t + acc));
        }
        *out = total.unwrap_or(0.0);
    }
    Ok(())
}

/// `Err(ShapeMismatch)` naming the first dimension of `grad_output_shape`
/// that differs from the forward output shape.
pub(crate) fn check_grad_output_shape(geo: &ConvGeometry, found: [usize; 4]) -> Result<(), ConvError> {
    const NAMES: [&str; 4] = [
        "grad_output_shape[0] (batch)",
        "grad_output_shape[1] (output channels)",
        "grad_output_shape[2] (output height)",
        "grad_output_shape[3] (output width)",
    ];
    let expected = [geo.batch, geo.c_out, geo.h_out, geo.w_out];
    for ((what, e), f) in NAMES.into_iter().zip(expected).zip(found) {
        if e != f {
            return Err(ConvError::ShapeMismatch { what, expected: e, found: f });
        }
    }
    Ok(())
}

/// How many threads a call of `flops` may use.
fn thread_count(options: &ConvOptions, flops: f64) -> usize {
    match options.threads {
        Threads::Pool if flops >= PARALLEL_MIN_FLOPS => rayon::current_num_threads(),
        _ => 1,
    }
}

/// `c = a_t(k × m)ᵀ · b(k × n)`, overwriting `c` (row-major, row stride `rs`).
///
/// # Safety
/// `a_t` and `b` cover their extents; `c` addresses `m` rows of `rs ≥ n` floats
/// of which the first `n` are written.
#[allow(clippy::too_many_arguments)]
unsafe fn overwrite_gemm<A: PanelSource, B: PanelSource>(
    isa: Isa,
    par: Parallelism,
    (m, n, k): (usize, usize, usize),
    a_t: &A,
    b: &B,
    c: *mut f32,
    rs: usize,
) {
    let epi = Epilogue { alpha: 1.0, beta: 0.0, bias: std::ptr::null(), act: Activation::None };
    let c = CMatrix { ptr: c, rs: rs as isize, cs: 1 };
    // SAFETY: the caller's guarantees.
    let done = unsafe { gemm::gemm(isa, m, n, k, a_t, b, c, &epi, par) };
    debug_assert!(done.is_ok(), "the ISA was checked by the caller");
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
    let (mr, _) = options.isa.tile().expect("the ISA was checked by the caller");
    match windows_geometry(geo) {
        Some(windows) => backward_input_windows(geo, &windows, options, mr, grad_output, weight, grad_input),
        None => backward_input_columns(geo, options, mr, grad_output, weight, grad_input),
    }
}

/// Runs `job(index, out, par, scratch)` for every (image, group) `index`,
/// `out` that job's `[c_in/groups, h, w]` part of `grad_input`: in parallel
/// over the jobs when there are at least as many as threads, else one after
/// another with the threads inside each job. `flops` is the whole call's.
fn for_each_job(
    geo: &ConvGeometry,
    options: &ConvOptions,
    flops: f64,
    grad_input: &mut [f32],
    job: impl Fn(usize, &mut [f32], Parallelism, &mut Vec<f32>) + Sync,
) {
    let group_len = geo.c_in_per_group() * geo.h_in * geo.w_in;
    let jobs = geo.batch * geo.groups;
    let threads = thread_count(options, flops);
    if threads > 1 && jobs >= threads {
        grad_input
            .par_chunks_mut(group_len)
            .enumerate()
            .for_each_init(Vec::new, |scratch, (index, out)| job(index, out, Parallelism::Serial, scratch));
    } else {
        let par = if threads > 1 { Parallelism::Rayon } else { Parallelism::Serial };
        let mut scratch = Vec::new();
        for (index, out) in grad_input.chunks_mut(group_len).enumerate() {
            job(index, out, par, &mut scratch);
        }
    }
}

/// For stride 1 with no side padded by more than `dilation·(k − 1)`, the
/// input gradient is a convolution of `grad_output` (`[c_out/groups, h_out,
/// w_out]` per group, padded by `dilation·(k − 1) − pad`) with the kernels
/// rotated and transposed. This is that convolution's geometry, one group,
/// whose output is the `h × w` input grid; `None` for other shapes.
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
        groups: 1,
        flip: false,
    };
    let shape = [1, geo.c_out_per_group(), geo.h_out, geo.w_out];
    let windows =
        ConvGeometry::new(shape, [geo.c_in_per_group(), geo.c_out_per_group(), geo.kh, geo.kw], &params).ok()?;
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
    mr: usize,
    grad_output: &[f32],
    weight: &[f32],
    grad_input: &mut [f32],
) {
    let (cg, m_group, taps, pixels) = (geo.c_in_per_group(), geo.c_out_per_group(), geo.kh * geo.kw, geo.out_pixels());
    let (k, n) = (m_group * taps, geo.h_in * geo.w_in);
    let a_t: Vec<PrepackedSource> = (0..geo.groups)
        .map(|g| {
            let src = RotatedKernels {
                weight: &weight[g * m_group * cg * taps..][..m_group * cg * taps],
                cg,
                taps,
                rotate: !geo.flip,
            };
            PrepackedSource::new(&src, mr, k, cg, KC)
        })
        .collect();
    let job = |index: usize, out: &mut [f32], par: Parallelism, _: &mut Vec<f32>| {
        let (image, group) = (index / geo.groups, index % geo.groups);
        let dy = &grad_output[(image * geo.c_out + group * m_group) * pixels..][..m_group * pixels];
        let b = ImageSource::new(windows, dy);
        // SAFETY: `out` is cg × n row-major; the sources cover k × cg and k × n.
        unsafe { overwrite_gemm(options.isa, par, (cg, n, k), &a_t[group], &b, out.as_mut_ptr(), n) };
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
    fn pack(&self, panel: usize, k0: usize, kc: usize, j0: usize, w: usize, dst: &mut [f32]) {
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
    mr: usize,
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
            PrepackedSource::new(&src, mr, m_group, patch, KC)
        })
        .collect();
    let block = (COL_BLOCK_FLOATS / patch / 16 * 16).max(COL_BLOCK_MIN_PIXELS).min(pixels);
    let job = |index: usize, image_grad: &mut [f32], par: Parallelism, cols: &mut Vec<f32>| {
        let (image, group) = (index / geo.groups, index % geo.groups);
        let dy = &grad_output[(image * geo.c_out + group * m_group) * pixels..][..m_group * pixels];
        image_grad.fill(0.0);
        cols.resize(patch * block, 0.0);
        for j0 in (0..pixels).step_by(block) {
            let width = block.min(pixels - j0);
            // SAFETY: dy is m_group × pixels row-major; columns j0 .. j0 + width exist.
            let b = unsafe { StridedSource::new(dy[j0..].as_ptr(), pixels as isize, 1) };
            // SAFETY: `cols` holds patch × width floats (row stride width);
            // the sources cover m_group × patch and m_group × width.
            unsafe {
                overwrite_gemm(options.isa, par, (patch, width, m_group), &a_t[group], &b, cols.as_mut_ptr(), width)
            };
            scatter_columns(geo, &cols[..patch * width], j0..j0 + width, image_grad, par);
        }
    };
    let flops = 2.0 * (geo.batch * geo.groups) as f64 * patch as f64 * pixels as f64 * m_group as f64;
    for_each_job(geo, options, flops, grad_input, job);
}

/// col2im of a block of columns: adds `cols` (`patch × pixels.len()`, row
/// `(c, u, v)` = `D` for that tap, columns the output pixels `pixels`) into
/// `image` (`[c_in/groups, h, w]`), dropping the padding. Channels are
/// independent, so they may go to different threads (`par`); each pixel's
/// sum runs in the same order either way (see [`scatter_channel`]).
fn scatter_columns(geo: &ConvGeometry, cols: &[f32], pixels: Range<usize>, image: &mut [f32], par: Parallelism) {
    let plane = geo.h_in * geo.w_in;
    let rows = geo.kh * geo.kw * pixels.len();
    let one =
        |(c, channel): (usize, &mut [f32])| scatter_channel(geo, &cols[c * rows..][..rows], pixels.clone(), channel);
    if par == Parallelism::Rayon && image.len() > plane {
        image.par_chunks_mut(plane).enumerate().for_each(one);
    } else {
        image.chunks_mut(plane).enumerate().for_each(one);
    }
}

/// col2im of one channel: adds `cols` (`kh·kw × pixels.len()`, row `(u, v)`)
/// into `plane` (`h × w`). With `flip`, image tap `(u, v)` takes row
/// `(kh−1−u, kw−1−v)`. Order per pixel of `plane`: taps `(u, v)` row-major,
/// then output pixels in order.
fn scatter_channel(geo: &ConvGeometry, cols: &[f32], pixels: Range<usize>, plane: &mut [f32]) {
    let (h, w, w_out) = (geo.h_in, geo.w_in, geo.w_out);
    let width = pixels.len();
    let (oy_first, oy_last) = (pixels.start / w_out, (pixels.end - 1) / w_out);
    for u in 0..geo.kh {
        let (oy0, oy1) = valid_range(geo.h_out, h, geo.stride_h, u * geo.dilation_h, geo.pad_top);
        for v in 0..geo.kw {
            let (ox0, ox1) = valid_range(w_out, w, geo.stride_w, v * geo.dilation_w, geo.pad_left);
            let (ru, rv) = if geo.flip { (geo.kh - 1 - u, geo.kw - 1 - v) } else { (u, v) };
            let row = &cols[(ru * geo.kw + rv) * width..][..width];
            for oy in oy0.max(oy_first)..oy1.min(oy_last + 1) {
                let iy = oy * geo.stride_h + u * geo.dilation_h - geo.pad_top;
                let line = &mut plane[iy * w..(iy + 1) * w];
                // This output row's part of the block, as output columns.
                let row_start = oy * w_out;
                let lo = ox0.max(pixels.start.saturating_sub(row_start));
                let hi = ox1.min(pixels.end - row_start);
                if lo >= hi {
                    continue;
                }
                let src = &row[row_start + lo - pixels.start..row_start + hi - pixels.start];
                let first = lo * geo.stride_w + v * geo.dilation_w - geo.pad_left;
                if geo.stride_w == 1 {
                    for (dst, &d) in line[first..first + src.len()].iter_mut().zip(src) {
                        *dst += d;
                    }
                } else {
                    for (dst, &d) in line[first..].iter_mut().step_by(geo.stride_w).zip(src) {
                        *dst += d;
                    }
                }
            }
        }
    }
}

/// `conv2d_backward_weight` on validated arguments.
fn backward_weight_validated(
    geo: &ConvGeometry,
    options: &ConvOptions,
    input: &[f32],
    grad_output: &[f32],
    grad_weight: &mut [f32],
) {
    if grad_weight.is_empty() {
        return;
    }
    if geo.batch == 0 {
        grad_weight.fill(0.0);
        return;
    }
    // Now batch, c_out and the patch are >= 1, so these are factors of
    // counts `ConvGeometry` checked.
    let (patch, m_group) = (geo.patch_len(), geo.c_out_per_group());
    let (terms, group_len) = (geo.batch * geo.out_pixels(), m_group * patch);
    let flops = 2.0 * geo.groups as f64 * group_len as f64 * terms as f64;
    let threads = thread_count(options, flops);
    let job = |group: usize, out: &mut [f32], par: Parallelism| {
        let a_t = GradOutputSource { geo, grad_output, group };
        let b = PatchRowsSource::new(geo, input, group);
        // SAFETY: `out` is m_group × patch, row-major; the sources cover
        // terms × m_group and terms × patch.
        unsafe { overwrite_gemm(options.isa, par, (m_group, patch, terms), &a_t, &b, out.as_mut_ptr(), patch) };
    };
    if threads > 1 && geo.groups >= threads {
        grad_weight.par_chunks_mut(group_len).enumerate().for_each(|(g, out)| job(g, out, Parallelism::Serial));
    } else {
        let par = if threads > 1 { Parallelism::Rayon } else { Parallelism::Serial };
        for (g, out) in grad_weight.chunks_mut(group_len).enumerate() {
            job(g, out, par);
        }
    }
}

/// Aᵀ of the weight gradient of one group: `grad_output` read as the
/// `(n·h_out·w_out) × (c_out/groups)` matrix whose row `image·P + pixel`
/// holds `dY[image, g·m + o, pixel]` in column `o` (`P` = output pixels).
struct GradOutputSource<'a> {
    geo: &'a ConvGeometry,
    grad_output: &'a [f32],
    group: usize,
}

impl PanelSource for GradOutputSource<'_> {
    fn pack(&self, panel: usize, k0: usize, kc: usize, j0: usize, w: usize, dst: &mut [f32]) {
        with_panel_width!(panel, pack_grad_output(self, k0, kc, j0, w, dst))
    }
}

fn pack_grad_output<const P: usize>(
    src: &GradOutputSource,
    k0: usize,
    kc: usize,
    j0: usize,
    w: usize,
    dst: &mut [f32],
) {
    let g = src.geo;
    let pixels = g.out_pixels();
    let first_channel = src.group * g.c_out_per_group();
    for (p, panel) in dst.chunks_exact_mut(kc * P).take(w.div_ceil(P)).enumerate() {
        let jp = j0 + p * P;
        let wp = P.min(j0 + w - jp);
        // Rows k0 .. k0 + kc, cut where they cross from one image to the next.
        let mut kk = 0;
        while kk < kc {
            let (image, pixel) = ((k0 + kk) / pixels, (k0 + kk) % pixels);
            let len = (pixels - pixel).min(kc - kk);
            let rows = &mut panel[kk * P..(kk + len) * P];
            for jj in 0..P {
                if jj < wp {
                    let start = (image * g.c_out + first_channel + jp + jj) * pixels + pixel;
                    let column = &src.grad_output[start..start + len];
                    for (row, &value) in rows.chunks_exact_mut(P).zip(column) {
                        row[jj] = value;
                    }
                } else {
                    rows.chunks_exact_mut(P).for_each(|row| row[jj] = 0.0);
                }
            }
            kk += len;
        }
    }
}

/// B of the weight gradient of one group: the transposed im2col matrix of
/// the whole batch, never materialised. Row `image·P + oy·w_out + ox`,
/// column `(c·kh + u)·kw + v` is
/// `X[image, g·cg + c, oy·sh + u'·dh − pad_top, ox·sw + v'·dw − pad_left]`
/// or 0 in the padding, with `(u', v') = (u, v)`, or `(kh−1−u, kw−1−v)`
/// when the geometry flips.
struct PatchRowsSource<'a> {
    geo: &'a ConvGeometry,
    input: &'a [f32],
    group: usize,
}

impl<'a> PatchRowsSource<'a> {
    fn new(geo: &'a ConvGeometry, input: &'a [f32], group: usize) -> Self {
        assert_eq!(input.len(), geo.input_len(), "the caller checked the input length");
        PatchRowsSource { geo, input, group }
    }
}

impl PanelSource for PatchRowsSource<'_> {
    fn pack(&self, panel: usize, k0: usize, kc: usize, j0: usize, w: usize, dst: &mut [f32]) {
        with_panel_width!(panel, pack_patch_rows(self, k0, kc, j0, w, dst))
    }
}

fn pack_patch_rows<const P: usize>(src: &PatchRowsSource, k0: usize, kc: usize, j0: usize, w: usize, dst: &mut [f32]) {
    let g = src.geo;
    let (h_in, w_in) = (g.h_in as isize, g.w_in as isize);
    let (plane, image_len) = (g.h_in * g.w_in, g.c_in * g.h_in * g.w_in);
    let group_start = src.group * g.c_in_per_group() * plane;
    let x = src.input;
    for (p, panel) in dst.chunks_exact_mut(kc * P).take(w.div_ceil(P)).enumerate() {
        let jp = j0 + p * P;
        let wp = P.min(j0 + w - jp);
        // The panel's taps as offsets (dy, dx) from a window's top-left corner
        // and as input offsets from it (channel included).
        let mut dy = [0isize; P];
        let mut dx = [0isize; P];
        let mut offset = [0isize; P];
        for jj in 0..wp {
            let t = jp + jj;
            let (c, r) = (t / (g.kh * g.kw), t % (g.kh * g.kw));
            let (mut u, mut v) = (r / g.kw, r % g.kw);
            if g.flip {
                (u, v) = (g.kh - 1 - u, g.kw - 1 - v);
            }
            dy[jj] = (u * g.dilation_h) as isize - g.pad_top as isize;
            dx[jj] = (v * g.dilation_w) as isize - g.pad_left as isize;
            offset[jj] = (c * plane) as isize + dy[jj] * w_in + dx[jj];
        }
        let (dy_lo, dy_hi) = dy[..wp].iter().fold((isize::MAX, isize::MIN), |(lo, hi), &d| (lo.min(d), hi.max(d)));
        let (dx_lo, dx_hi) = dx[..wp].iter().fold((isize::MAX, isize::MIN), |(lo, hi), &d| (lo.min(d), hi.max(d)));
        let (mut image, pixel) = (k0 / g.out_pixels(), k0 % g.out_pixels());
        let (mut oy, mut ox) = (pixel / g.w_out, pixel % g.w_out);
        for row in panel.chunks_exact_mut(P) {
            let (top, left) = ((oy * g.stride_h) as isize, (ox * g.stride_w) as isize);
            let base = (image * image_len + group_start) as isize + top * w_in + left;
            let inside = top + dy_lo >= 0 && top + dy_hi < h_in && left + dx_lo >= 0 && left + dx_hi < w_in;
            if inside && wp == P {
                // The common case, a full row of taps all inside the image: P loads, no checks.
                let row: &mut [f32; P] = row.try_into().expect("P floats");
                for (out, &off) in row.iter_mut().zip(&offset) {
                    // SAFETY: `inside` puts every tap's (row, column) inside the
                    // h_in × w_in plane of a channel of this group and image,
                    // and `x` holds the whole batch (checked by the caller).
                    *out = unsafe { *x.get_unchecked((base + off) as usize) };
                }
            } else if inside {
                for (out, &off) in row.iter_mut().zip(&offset[..wp]) {
                    *out = x[(base + off) as usize];
                }
            } else {
                for jj in 0..wp {
                    let (iy, ix) = (top + dy[jj], left + dx[jj]);
                    row[jj] = if iy >= 0 && iy < h_in && ix >= 0 && ix < w_in {
                        x[(base + offset[jj]) as usize]
                    } else {
                        0.0
                    };
                }
            }
            row[wp..].fill(0.0);
            ox += 1;
            if ox == g.w_out {
                (oy, ox) = (oy + 1, 0);
                if oy == g.h_out {
                    (image, oy) = (image + 1, 0);
                }
            }
        }
    }
}
