//! `Conv2dPlan`: the weights validated and packed into the kernel's A panels
//! once, then run on any number of inputs. `conv2d` builds a plan per call;
//! both run `execute`, the one loop over (image, group).

use std::cell::RefCell;
use std::sync::OnceLock;

use rayon::prelude::*;

use super::forward::{Algorithm, ConvOptions, Threads, flip_kernels};
use super::implicit::ImageSource;
use super::params::{ConvGeometry, ConvParams, check_len, check_params};
use crate::ConvError;
use crate::gemm::loops::{CMatrix, Epilogue, KC, PARALLEL_MIN_FLOPS, Parallelism};
use crate::gemm::pack::{PanelSource, PrepackedSource, StridedSource};
use crate::gemm::{self, Isa, dispatch};
use crate::im2col::im2col_image;

/// A convolution prepared for repeated inference: parameters checked, the
/// weights packed into the GEMM kernel's layout once, bias and activation
/// fused into the output stores. [`Conv2dPlan::run`] then convolves any input
/// with the plan's channel count, allocating nothing in steady state (the
/// packing buffers are per thread and reused).
///
/// ```
/// use convgemm::{Conv2dPlan, ConvOptions, ConvParams};
/// let params = ConvParams { padding: [1, 1, 1, 1], ..ConvParams::default() };
/// let weight = vec![0.1f32; 8 * 3 * 3 * 3];
/// let plan = Conv2dPlan::new(&weight, [8, 3, 3, 3], None, &params, &ConvOptions::default())?;
/// let input = vec![1.0f32; 2 * 3 * 16 * 16];
/// let shape = plan.output_shape([2, 3, 16, 16])?;
/// let mut output = vec![0.0f32; shape.iter().product()];
/// for _ in 0..3 {
///     plan.run(&input, [2, 3, 16, 16], &mut output)?;
/// }
/// # Ok::<(), convgemm::ConvError>(())
/// ```
pub struct Conv2dPlan {
    weight_shape: [usize; 4],
    params: ConvParams,
    options: ConvOptions,
    /// Per group, the weights in NR panels for the direct path, when the
    /// plan prefers it (`run` takes it wherever the input allows).
    weights_nr: Option<Vec<PrepackedSource>>,
    /// Per group, Aᵀ (`K × c_out/groups`) packed in MR panels for every K
    /// chunk (the GEMM paths): packed by `new` unless the plan prefers the
    /// direct path, else repacked from `weights_nr` on first need (an input
    /// the direct path does not take). One form is kept, not both.
    weights: OnceLock<Vec<PrepackedSource>>,
    /// The (flipped if asked) weights as given, kept for the direct path
    /// when each group has one input channel.
    direct_weights: Option<Vec<f32>>,
    bias: Option<Vec<f32>>,
}

impl std::fmt::Debug for Conv2dPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conv2dPlan")
            .field("weight_shape", &self.weight_shape)
            .field("params", &self.params)
            .field("options", &self.options)
            .field("bias", &self.bias.is_some())
            .finish_non_exhaustive()
    }
}

impl Conv2dPlan {
    /// Checks the parameters and weights (`[c_out, c_in / groups, kh, kw]`,
    /// OIHW) and packs the weights (flipped when `params.flip`). Input sizes
    /// are checked by each `run`.
    pub fn new(
        weight: &[f32],
        weight_shape: [usize; 4],
        bias: Option<&[f32]>,
        params: &ConvParams,
        options: &ConvOptions,
    ) -> Result<Self, ConvError> {
        check_params(weight_shape, params)?;
        check_len("weight", weight.len(), weight_shape.iter().product())?;
        if let Some(b) = bias {
            check_len("bias", b.len(), weight_shape[0])?;
        }
        let (mr, nr) = options.isa.tile()?;
        let flipped;
        let weight = if params.flip {
            flipped = flip_kernels(weight, weight_shape[2] * weight_shape[3]);
            &flipped[..]
        } else {
            weight
        };
        let m = weight_shape[0] / params.groups;
        let k = weight_shape[1] * weight_shape[2] * weight_shape[3];
        // An empty weight (no output channels, or K = 0) packs nothing: every
        // output is then its bias, whatever the number of groups.
        let groups = if weight.is_empty() { 0 } else { params.groups };
        // The input is checked per run (`direct::applies`).
        let prefers_direct = dispatch::direct_takes_weights(options.isa, weight_shape[1], m, k)
            && match options.algorithm {
                Algorithm::Direct => true,
                Algorithm::Auto => k >= DIRECT_MIN_K,
                _ => false,
            };
        let packed: Vec<_> = (0..groups)
            .map(|g| {
                let w = &weight[g * m * k..][..m * k];
                // SAFETY: `w` is m × k row-major, read as its transpose (k × m).
                let a_t = unsafe { StridedSource::new(w.as_ptr(), 1, k as isize) };
                PrepackedSource::new(&a_t, if prefers_direct { nr } else { mr }, k, m, KC)
            })
            .collect();
        let (weights, weights_nr) =
            if prefers_direct { (OnceLock::new(), Some(packed)) } else { (OnceLock::from(packed), None) };
        let direct_weights = (weight_shape[1] == 1).then(|| weight.to_vec());
        Ok(Conv2dPlan {
            weight_shape,
            params: *params,
            options: *options,
            weights_nr,
            weights,
            direct_weights,
            bias: bias.map(<[f32]>::to_vec),
        })
    }

    /// The output shape for an input of `input_shape`, or why that input is rejected.
    pub fn output_shape(&self, input_shape: [usize; 4]) -> Result<[usize; 4], ConvError> {
        ConvGeometry::new(input_shape, self.weight_shape, &self.params).map(|g| g.output_shape())
    }

    /// Convolves `input` (`[n, c_in, h, w]`) into `output` (the shape
    /// [`Conv2dPlan::output_shape`] gives), overwriting it. Checks everything
    /// first: on `Err` nothing was written.
    pub fn run(&self, input: &[f32], input_shape: [usize; 4], output: &mut [f32]) -> Result<(), ConvError> {
        let geo = ConvGeometry::new(input_shape, self.weight_shape, &self.params)?;
        check_len("input", input.len(), geo.input_len())?;
        check_len("output", output.len(), geo.output_len())?;
        let weights = match &self.weights_nr {
            Some(nr_form) if dispatch::direct_applies(self.options.isa, &geo) => {
                Weights { packed: &[], packed_nr: Some(nr_form), direct: None }
            }
            _ => {
                let mr = || {
                    let (mr, _) = self.options.isa.tile().expect("the plan's ISA was checked when it was built");
                    let nr_form = self.weights_nr.as_ref().expect("one form is packed by `new`");
                    nr_form.iter().map(|w| w.repacked(mr)).collect()
                };
                Weights {
                    packed: self.weights.get_or_init(mr),
                    packed_nr: None,
                    direct: self.direct_weights.as_deref(),
                }
            }
        };
        execute(&geo, &self.options, input, &weights, self.bias.as_deref(), output);
        Ok(())
    }
}

/// The weights in the forms the algorithms read.
pub(crate) struct Weights<'a> {
    /// Per group, packed A panels (GEMM paths); empty on the direct path.
    pub packed: &'a [PrepackedSource],
    /// Per group, the same in the kernel's NR panels, when the direct path runs.
    pub packed_nr: Option<&'a [PrepackedSource]>,
    /// As given (OIHW, flipped if asked), when each group has one input channel.
    pub direct: Option<&'a [f32]>,
}

/// One GEMM per (image, group), `out = W_g · B + bias`, then the activation,
/// with B the image as `options.algorithm` feeds it. Arguments are validated.
/// Parallel over (image, group) when there are at least as many of those as
/// threads, else inside each GEMM; either way bit-identical.
pub(crate) fn execute(
    geo: &ConvGeometry,
    options: &ConvOptions,
    input: &[f32],
    weights: &Weights,
    bias: Option<&[f32]>,
    output: &mut [f32],
) {
    let (m, k, n) = (geo.c_out_per_group(), geo.patch_len(), geo.out_pixels());
    if output.is_empty() {
        return;
    }
    if k == 0 {
        // No input channels: each output is its bias, then the activation.
        for (index, plane) in output.chunks_exact_mut(n).enumerate() {
            let b = bias.map_or(0.0, |b| b[index % geo.c_out]);
            plane.fill(options.activation.apply(b));
        }
        return;
    }
    let pointwise =
        geo.kh == 1 && geo.kw == 1 && geo.stride_h == 1 && geo.stride_w == 1 && geo.params().padding == [0; 4];
    // The direct path copies the padded plane: only where that copy is
    // bounded by the buffers the caller gave.
    let plane_budget = 4 * (geo.h_in * geo.w_in + n) + 4096;
    let padded_len = (geo.h_in + geo.pad_top + geo.pad_bottom).checked_mul(geo.w_in + geo.pad_left + geo.pad_right);
    let direct =
        weights.direct.filter(|_| geo.c_in_per_group() == 1 && padded_len.is_some_and(|len| len <= plane_budget));
    let algorithm = match options.algorithm {
        Algorithm::Auto | Algorithm::Depthwise if direct.is_some() => Algorithm::Depthwise,
        Algorithm::Auto | Algorithm::Direct if weights.packed_nr.is_some() => Algorithm::Direct,
        Algorithm::Auto | Algorithm::Pointwise if pointwise => Algorithm::Pointwise,
        _ if !geo.is_compact() => Algorithm::Im2col,
        Algorithm::Auto | Algorithm::Pointwise | Algorithm::Depthwise | Algorithm::Direct => Algorithm::Implicit,
        other => other,
    };
    let image_len = geo.c_in * geo.h_in * geo.w_in;
    let group_len = geo.c_in_per_group() * geo.h_in * geo.w_in;
    let job = |index: usize, out: &mut [f32], par: Parallelism, cols: &mut Vec<f32>| {
        let (image, group) = (index / geo.groups, index % geo.groups);
        let channels = &input[image * image_len + group * group_len..][..group_len];
        let bias = bias.map(|b| &b[group * m..][..m]);
        let a_t = || &weights.packed[group];
        match algorithm {
            Algorithm::Depthwise => {
                let w = &direct.expect("direct weights chosen above")[group * m * k..][..m * k];
                let done = dispatch::depthwise(options.isa, geo, channels, w, bias, options.activation, out, cols);
                debug_assert!(done.is_ok(), "the plan's ISA was checked when it was built");
            }
            Algorithm::Direct => {
                let w = &weights.packed_nr.expect("NR weights chosen above")[group];
                let done = dispatch::direct(options.isa, geo, channels, w, bias, options.activation, out, par);
                debug_assert!(done.is_ok(), "the plan's ISA was checked when it was built");
            }
            Algorithm::Im2col => {
                cols.resize(k * n, 0.0);
                im2col_image(geo, channels, 0..geo.c_in_per_group(), cols);
                // SAFETY: `cols` is K × N row-major.
                let b = unsafe { StridedSource::new(cols.as_ptr(), n as isize, 1) };
                group_gemm(options.isa, par, (m, n, k), a_t(), &b, bias, options, out);
            }
            Algorithm::Pointwise => {
                // SAFETY: with a 1×1 stride-1 unpadded kernel the group's
                // channels are the K × N matrix, row-major.
                let b = unsafe { StridedSource::new(channels.as_ptr(), n as isize, 1) };
                group_gemm(options.isa, par, (m, n, k), a_t(), &b, bias, options, out);
            }
            _ => group_gemm(options.isa, par, (m, n, k), a_t(), &ImageSource::new(geo, channels), bias, options, out),
        }
    };
    let jobs = geo.batch * geo.groups;
    let total_flops = 2.0 * jobs as f64 * m as f64 * n as f64 * k as f64;
    let threads = match options.threads {
        Threads::Pool if total_flops >= JOBS_PARALLEL_MIN_FLOPS => rayon::current_num_threads(),
        _ => 1,
    };
    if threads > 1 && jobs >= threads {
        output
            .par_chunks_mut(m * n)
            .enumerate()
            .for_each(|(index, out)| with_scratch(|cols| job(index, out, Parallelism::Serial, cols)));
    } else {
        // The GEMM forks only past its own threshold (PARALLEL_MIN_FLOPS).
        let par =
            if threads > 1 && total_flops >= PARALLEL_MIN_FLOPS { Parallelism::Rayon } else { Parallelism::Serial };
        with_scratch(|cols| {
            for (index, out) in output.chunks_mut(m * n).enumerate() {
                job(index, out, par, cols);
            }
        });
    }
}

/// `Algorithm::Auto` takes the direct path from this many multiply-adds per
/// output (K) up: each tile then runs long enough to repay its store and the
/// transpose of the output. Measured on Zen 5 (1 thread): ResNet res2 1×1
/// (K = 64) 560 µs direct against 440 µs pointwise, VGG conv1_1 (K = 27)
/// even; LeNet conv2 (K = 150) 4.0 against 6.1 µs, res5 1×1 (K = 2048)
/// 495 against 550 µs.
const DIRECT_MIN_K: usize = 128;

/// Below this many flops a call stays on the calling thread. Whole (image,
/// group) jobs split with no repacking, so a fork pays off earlier than the
/// GEMM's split (`PARALLEL_MIN_FLOPS`): at ~30 GFLOP/s, 1 MFLOP is ~33 µs of
/// work against a rayon fork-join of a few µs.
const JOBS_PARALLEL_MIN_FLOPS: f64 = 1.0e6;

thread_local! {
    /// Per-thread scratch of the convolution paths (the explicit im2col
    /// matrix, the padded plane of the direct path), reused across calls.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's scratch vector (or a fresh one if it is in use).
fn with_scratch<R>(f: impl FnOnce(&mut Vec<f32>) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) => f(&mut v),
        Err(_) => f(&mut Vec::new()),
    })
}

/// `out (m × n) = A · B + bias`, then the activation, for one (image, group).
#[allow(clippy::too_many_arguments)]
fn group_gemm<B: PanelSource>(
    isa: Isa,
    par: Parallelism,
    (m, n, k): (usize, usize, usize),
    a_t: &PrepackedSource,
    b: &B,
    bias: Option<&[f32]>,
    options: &ConvOptions,
    out: &mut [f32],
) {
    let epi = Epilogue {
        alpha: 1.0,
        beta: 0.0,
        bias: bias.map_or(std::ptr::null(), <[f32]>::as_ptr),
        act: options.activation,
    };
    let c = CMatrix { ptr: out.as_mut_ptr(), rs: n as isize, cs: 1 };
    // SAFETY: `out` holds m × n floats, `bias` m; the sources cover k × m and k × n.
    let done = unsafe { gemm::gemm(isa, m, n, k, a_t, b, c, &epi, par) };
    debug_assert!(done.is_ok(), "the plan's ISA was checked when it was built");
}
