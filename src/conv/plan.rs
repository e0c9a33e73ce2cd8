//! `Conv2dPlan`: the weights validated and packed into the kernel's panels
//! once, then run on any number of inputs. `conv2d` builds a plan per call;
//! both run `select::execute`, the one loop over (image, group).

use std::sync::OnceLock;

use super::options::{Algorithm, ConvOptions, Precision};
use super::select::{self, Weights, execute, prefers_direct, winograd_channels_pay, winograd_pays};
use super::winograd::{self, TileSize, WinogradWeights};
use super::{direct, grouped, pointwise};
use crate::check::check_len;
use crate::error::ConvError;
use crate::gemm::{self, Panels, PrepackedSource, StridedSource};
use crate::geometry::{ConvGeometry, ConvParams, check_params};
use crate::layout::Layout;

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
    /// The (flipped if asked) weights, kept for the depthwise path when each
    /// group has one input channel: as given (OIHW) for NCHW, tap-major
    /// (`[kh·kw][c_out]`, the channels as lanes) for channels-last.
    direct_weights: Option<Vec<f32>>,
    /// The filters Winograd transforms (for each tile size on first need),
    /// when the plan may run it: forced, or left to `Auto` under
    /// `Precision::Relaxed`, on 3×3 stride-1 kernels.
    winograd: Option<WinogradWeights>,
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
        options.isa.tile()?;
        let winograd_applies = winograd::applies([weight_shape[2], weight_shape[3]], params.stride, params.dilation);
        if options.algorithm == Algorithm::Winograd && !winograd_applies {
            return Err(ConvError::AlgorithmNotApplicable {
                algorithm: "Winograd",
                requirement: winograd::REQUIREMENT,
            });
        }
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
        let prefers_direct = prefers_direct(options.isa, options.algorithm, params.layout, weight_shape[1], m, k)
            || select::prefers_grouped(options.isa, options.algorithm, params, weight_shape);
        let panels = if prefers_direct { Panels::B } else { Panels::A };
        let packed = (0..groups)
            .map(|g| {
                let w = &weight[g * m * k..][..m * k];
                // SAFETY: `w` is m × k row-major, read as its transpose (k × m).
                let a_t = unsafe { StridedSource::new(w.as_ptr(), 1, k as isize) };
                gemm::prepack(options.isa, &a_t, panels, k, m)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (weights, weights_nr) =
            if prefers_direct { (OnceLock::new(), Some(packed)) } else { (OnceLock::from(packed), None) };
        let direct_weights = (weight_shape[1] == 1).then(|| match params.layout {
            Layout::Nchw => weight.to_vec(),
            _ => tap_major(weight, weight_shape[2] * weight_shape[3]),
        });
        let may_winograd = winograd_applies
            && groups > 0
            && match options.algorithm {
                Algorithm::Winograd => true,
                Algorithm::Auto => options.precision == Precision::Relaxed && winograd_channels_pay(weight_shape[1], m),
                _ => false,
            };
        let winograd = may_winograd.then(|| WinogradWeights::new(weight.to_vec(), weight_shape, groups, options.isa));
        Ok(Conv2dPlan {
            weight_shape,
            params: *params,
            options: *options,
            weights_nr,
            weights,
            direct_weights,
            winograd,
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
        let geo = self.geometry(input_shape)?;
        check_len("input", input.len(), geo.input_len())?;
        check_len("output", output.len(), geo.output_len())?;
        let mut weights = self.forms(&geo);
        if weights.packed_nr.is_none() {
            let mr = || {
                let nr_form = self.weights_nr.as_ref().expect("one form is packed by `new`");
                let (k, m) = (
                    self.weight_shape[1] * self.weight_shape[2] * self.weight_shape[3],
                    self.weight_shape[0] / self.params.groups,
                );
                nr_form
                    .iter()
                    .map(|w| gemm::prepack(self.options.isa, w, Panels::A, k, m))
                    .collect::<Result<_, _>>()
                    .expect("the plan's ISA was checked when it was built")
            };
            weights.packed = self.weights.get_or_init(mr);
        }
        execute(&geo, &self.options, input, &weights, self.bias.as_deref(), output);
        Ok(())
    }
}

impl Conv2dPlan {
    /// The algorithm [`Conv2dPlan::run`] takes for an input of
    /// `input_shape` (what [`Algorithm::Auto`] resolves to), or why that
    /// input is rejected.
    ///
    /// ```
    /// use convgemm::{Algorithm, Conv2dPlan, ConvOptions, ConvParams};
    /// let plan = Conv2dPlan::new(&[0.5; 8 * 4], [8, 4, 1, 1], None, &ConvParams::default(), &ConvOptions::default())?;
    /// assert_eq!(plan.algorithm([1, 4, 10, 10])?, Algorithm::Pointwise); // 1×1: the image is the matrix
    /// # Ok::<(), convgemm::ConvError>(())
    /// ```
    pub fn algorithm(&self, input_shape: [usize; 4]) -> Result<Algorithm, ConvError> {
        let geo = self.geometry(input_shape)?;
        Ok(select::choose(&geo, self.options.algorithm, &self.forms(&geo)))
    }

    /// The kernel that does the arithmetic of [`Conv2dPlan::run`] on an
    /// input of `input_shape`, as tests and bench ids spell it: a GEMM
    /// microkernel (`avx512_8x32`, also the direct path's; its channels-last
    /// grouped 1×1 form `grouped_1x1_avx512`) or a depthwise
    /// kernel (`dwconv_3x3_rolling_avx512`, `dwconv_blocked_avx2`, …) or the
    /// matrix-vector one of 1×1 convolutions on tiny planes (`gemv_avx2`).
    pub fn kernel_name(&self, input_shape: [usize; 4]) -> Result<&'static str, ConvError> {
        let geo = self.geometry(input_shape)?;
        Ok(select::kernel_name(&geo, &self.options, &self.forms(&geo)))
    }

    /// The geometry of a run on an input of `input_shape`. A 1×1 kernel
    /// mapping 1×1 planes to 1×1 planes (squeeze-and-excite, classifier
    /// heads) runs as NCHW whatever the layout: both lay the tensors out
    /// alike (`[n][c]`), and the plan's weights are the same in either (a
    /// one-tap kernel is its own tap-major form), so a channels-last caller
    /// gets the matrix-vector path (Zen 5, 1 thread: 672 -> 28 1.9 -> 0.7 µs).
    fn geometry(&self, input_shape: [usize; 4]) -> Result<ConvGeometry, ConvError> {
        let mut geo = ConvGeometry::new(input_shape, self.weight_shape, &self.params)?;
        // (Each side compared, not products: a shape with an empty batch
        // or channel count may have sides whose product overflows.)
        let ones = |a: usize, b: usize| a == 1 && b == 1;
        if ones(geo.kh, geo.kw) && ones(geo.h_in, geo.w_in) && ones(geo.h_out, geo.w_out) {
            geo.layout = Layout::Nchw;
        }
        Ok(geo)
    }

    /// The forms of the weights a run on `geo` reads, the GEMM's A panels
    /// left empty (`run` fills them in, packing them on first need).
    fn forms(&self, geo: &ConvGeometry) -> Weights<'_> {
        // A 1×1 convolution of a few pixels left to `Auto` (NCHW): the
        // matrix-vector path beats the direct one's mostly empty tiles.
        let narrow = self.options.algorithm == Algorithm::Auto
            && pointwise::applies(geo)
            && geo.out_pixels() <= gemm::NARROW_N
            && geo.layout == Layout::Nchw;
        // A wide 1×1 convolution left to `Auto` (NCHW), where the GEMM on
        // the image in place beats the direct path (see `pointwise_wins`).
        let gemm_form = narrow || (self.options.algorithm == Algorithm::Auto && select::pointwise_wins(geo));
        let winograd = self.winograd.as_ref().filter(|_| {
            self.options.algorithm == Algorithm::Winograd
                || winograd_pays(geo.c_in_per_group(), geo.c_out_per_group(), geo.h_out, geo.w_out)
        });
        let winograd = winograd.map(|w| (w, TileSize::choose(geo)));
        match &self.weights_nr {
            Some(nr_form)
                if (direct::applies(self.options.isa, geo) || grouped::applies(self.options.isa, geo))
                    && !gemm_form =>
            {
                Weights { packed: &[], packed_nr: Some(nr_form), direct: None, winograd }
            }
            _ => Weights { packed: &[], packed_nr: None, direct: self.direct_weights.as_deref(), winograd },
        }
    }
}

/// `[c_out][taps]` weights as `[taps][c_out]`.
fn tap_major(weight: &[f32], taps: usize) -> Vec<f32> {
    let c_out = weight.len() / taps.max(1);
    (0..taps * c_out).map(|i| weight[(i % c_out) * taps + i / c_out]).collect()
}

/// Each `kh × kw` kernel rotated by 180 degrees: true convolution as
/// cross-correlation.
fn flip_kernels(weight: &[f32], taps: usize) -> Vec<f32> {
    let mut out = weight.to_vec();
    for kernel in out.chunks_exact_mut(taps.max(1)) {
        kernel.reverse();
    }
    out
}
