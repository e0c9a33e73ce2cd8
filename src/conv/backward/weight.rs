//! The gradient of `conv2d` with respect to its weights: per group one GEMM
//! `dY_g · colᵀ` over the whole batch, both operands packed straight from
//! `grad_output` and the image.

use rayon::prelude::*;

use super::{check_grad_output_shape, overwrite_gemm, thread_count};
use crate::check::{check_len, product};
use crate::conv::depthwise::weight_grad;
use crate::conv::options::ConvOptions;
use crate::error::ConvError;
use crate::gemm::{PanelSource, Parallelism, with_panel_width};
use crate::geometry::{ConvGeometry, ConvParams};
use crate::layout::Layout;
use crate::simd::{self, Lanes};

/// The gradient of `conv2d` with respect to its weights (`params.flip` taken
/// into account): the sum over every image of the batch and every output
/// pixel (weight sharing).
///
/// - `input`: `[n, c_in, h, w]`, the forward's input, in `params.layout`.
/// - `grad_output`: `[n, c_out, h_out, w_out]`, as `conv2d_output_shape` gives, in `params.layout`.
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
/// image: no im2col buffer. A channels-last depthwise layer (one input and
/// one output channel per group) is summed instead in one pass over the
/// batch with the channels as vector lanes, by the same operations in the
/// same order as its GEMMs (so the same bits).
///
/// # Order of operations
/// Each element is the crate's chunked sum (see the crate docs) over that
/// concatenated (image, pixel) axis: chunks of 256 consecutive terms, which
/// may straddle two images, each summed from `+0.0` with fused multiply-adds
/// in order, then added in order. So the result is bit-identical for any
/// thread count and FMA path; it depends on the batch as a whole (summing
/// per-image calls rounds differently).
///
/// Channels-last reads both operands through the layout's strides and sums
/// the same terms in the same order: the same bits as NCHW.
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
            requirement: "small enough that the padded input plane (times c_in in channels-last, the step from one \
                          pixel to the next) has at most 2^40 elements (weight gradient)",
        });
    }
    backward_weight_validated(&geo, options, input, grad_output, grad_weight);
    Ok(())
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
    if weight_grad::applies(geo) {
        // Channels-last depthwise: every channel and tap in one pass, the channels as lanes.
        let work = weight_grad::WeightGrad { geo, input, grad_output, grad_weight };
        simd::dispatch(options.isa, work).expect("the ISA was checked by the caller");
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
        unsafe { overwrite_gemm(options.isa, par, (m_group, patch, terms), &a_t, &b, out.as_mut_ptr(), (patch, 1)) };
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

/// Aᵀ of the weight gradient of one group: `grad_output` (in the geometry's
/// layout) read as the `(n·h_out·w_out) × (c_out/groups)` matrix whose row
/// `image·P + pixel` holds `dY[image, g·m + o, pixel]` in column `o`
/// (`P` = output pixels).
struct GradOutputSource<'a> {
    geo: &'a ConvGeometry,
    grad_output: &'a [f32],
    group: usize,
}

impl PanelSource for GradOutputSource<'_> {
    fn pack<L: Lanes>(&self, _: L, panel: usize, k0: usize, kc: usize, j0: usize, w: usize, dst: &mut [f32]) {
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
        if g.layout == Layout::Nhwc {
            // Row `image·P + pixel` is that pixel's channels, contiguous:
            // the batch is (n·h_out·w_out) × c_out row-major.
            for (kk, row) in panel.chunks_exact_mut(P).enumerate() {
                let start = (k0 + kk) * g.c_out + first_channel + jp;
                row[..wp].copy_from_slice(&src.grad_output[start..start + wp]);
                row[wp..].fill(0.0);
            }
            continue;
        }
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
/// the whole batch (read in the geometry's layout), never materialised. Row `image·P + oy·w_out + ox`,
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
    fn pack<L: Lanes>(&self, _: L, panel: usize, k0: usize, kc: usize, j0: usize, w: usize, dst: &mut [f32]) {
        with_panel_width!(panel, pack_patch_rows(self, k0, kc, j0, w, dst))
    }
}

fn pack_patch_rows<const P: usize>(src: &PatchRowsSource, k0: usize, kc: usize, j0: usize, w: usize, dst: &mut [f32]) {
    let g = src.geo;
    let (h_in, w_in) = (g.h_in as isize, g.w_in as isize);
    let image_len = g.c_in * g.h_in * g.w_in;
    let s = g.input_strides();
    let (sy, sx) = (s.y as isize, s.x as isize);
    let group_start = src.group * g.c_in_per_group() * s.c;
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
            offset[jj] = (c * s.c) as isize + dy[jj] * sy + dx[jj] * sx;
        }
        let (dy_lo, dy_hi) = dy[..wp].iter().fold((isize::MAX, isize::MIN), |(lo, hi), &d| (lo.min(d), hi.max(d)));
        let (dx_lo, dx_hi) = dx[..wp].iter().fold((isize::MAX, isize::MIN), |(lo, hi), &d| (lo.min(d), hi.max(d)));
        let (mut image, pixel) = (k0 / g.out_pixels(), k0 % g.out_pixels());
        let (mut oy, mut ox) = (pixel / g.w_out, pixel % g.w_out);
        for row in panel.chunks_exact_mut(P) {
            let (top, left) = ((oy * g.stride_h) as isize, (ox * g.stride_w) as isize);
            let base = (image * image_len + group_start) as isize + top * sy + left * sx;
            let inside = top + dy_lo >= 0 && top + dy_hi < h_in && left + dx_lo >= 0 && left + dx_hi < w_in;
            if inside && wp == P {
                // The common case, a full row of taps all inside the image: P loads, no checks.
                let row: &mut [f32; P] = row.try_into().expect("P floats");
                for (out, &off) in row.iter_mut().zip(&offset) {
                    // SAFETY: `inside` puts every tap's (row, column) inside the
                    // h_in × w_in plane of a channel of this group and image
                    // (offsets by the layout's strides), and `x` holds the
                    // whole batch (checked by the caller).
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
