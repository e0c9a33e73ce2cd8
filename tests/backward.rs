//! The backward pass and transposed convolution: each gradient against the
//! direct f64 reference on every path and thread count, adjointness with
//! `conv2d`, finite differences that check the references themselves,
//! `conv_transpose2d` and its output shapes, and every error path.

mod common;

use common::{
    ConvProblem, REL, assert_close, bits, canonical_bits, cases, conv_problem, for_each_isa, is_exact, relayout, values,
};
use convgemm::reference::{
    Reference, conv_transpose2d_direct, conv2d_backward_bias_direct, conv2d_backward_bias_direct_with_layout,
    conv2d_backward_input_direct, conv2d_backward_weight_direct, conv2d_direct,
};
use convgemm::{
    ConvError, ConvOptions, ConvParams, ConvTransposeParams, Isa, Layout, Threads, conv_transpose2d,
    conv_transpose2d_output_shape, conv_transpose2d_with, conv2d, conv2d_backward_bias,
    conv2d_backward_bias_with_layout, conv2d_backward_input, conv2d_backward_input_with, conv2d_backward_weight,
    conv2d_backward_weight_with, conv2d_output_shape,
};
use proptest::prelude::*;

/// A convolution problem with a seeded output gradient.
struct Grad {
    p: ConvProblem,
    out_shape: [usize; 4],
    grad_output: Vec<f32>,
}

impl Grad {
    /// `None` when the problem has no output (the forward rejects it).
    fn new(p: ConvProblem, seed: u64) -> Option<Self> {
        let out_shape = conv2d_output_shape(p.input_shape, p.weight_shape, &p.params).ok()?;
        let grad_output = values(out_shape.iter().product(), seed);
        Some(Grad { p, out_shape, grad_output })
    }

    fn input_grad(&self, options: &ConvOptions) -> Vec<f32> {
        let mut out = vec![f32::NAN; self.p.input.len()];
        conv2d_backward_input_with(
            options,
            &self.grad_output,
            self.out_shape,
            &self.p.weight,
            self.p.weight_shape,
            &self.p.params,
            &mut out,
            self.p.input_shape,
        )
        .expect("valid problem");
        out
    }

    fn weight_grad(&self, options: &ConvOptions) -> Vec<f32> {
        let mut out = vec![f32::NAN; self.p.weight.len()];
        conv2d_backward_weight_with(
            options,
            &self.p.input,
            self.p.input_shape,
            &self.grad_output,
            self.out_shape,
            &self.p.params,
            &mut out,
            self.p.weight_shape,
        )
        .expect("valid problem");
        out
    }

    fn input_reference(&self) -> Reference {
        let p = &self.p;
        conv2d_backward_input_direct(
            &self.grad_output,
            self.out_shape,
            &p.weight,
            p.weight_shape,
            &p.params,
            p.input_shape,
        )
        .expect("valid problem")
    }

    fn weight_reference(&self) -> Reference {
        let p = &self.p;
        conv2d_backward_weight_direct(
            &p.input,
            p.input_shape,
            &self.grad_output,
            self.out_shape,
            &p.params,
            p.weight_shape,
        )
        .expect("valid problem")
    }

    /// The portable single-thread result is within the bound of the
    /// reference; every other path and thread setting equals it bit for bit
    /// (the unfused path: within the bound).
    fn check(&self, what: &str, reference: &Reference, run: impl Fn(&ConvOptions) -> Vec<f32> + Sync) {
        let portable = ConvOptions { isa: Isa::Portable, threads: Threads::Single, ..ConvOptions::default() };
        let want = run(&portable);
        assert_close(&format!("{what} portable {:?}", self.p), reference, &want);
        for_each_isa(|isa| {
            for threads in [Threads::Pool, Threads::Single] {
                let got = run(&ConvOptions { isa, threads, ..ConvOptions::default() });
                let name = format!("{what} {} {threads:?} {:?}", isa.name(), self.p);
                if is_exact(isa) {
                    assert_eq!(bits(&got), bits(&want), "{name}: differs from portable");
                } else {
                    assert_close(&name, reference, &got);
                }
            }
        });
        if is_exact(Isa::detect()) {
            for threads in [1, 2, 4] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
                let got = pool.install(|| run(&ConvOptions::default()));
                assert_eq!(bits(&got), bits(&want), "{what} with {threads} threads {:?}", self.p);
            }
        }
    }

    /// The same problem with its activations (input, `grad_output`) in `layout`.
    fn in_layout(&self, layout: Layout) -> Grad {
        let grad_output = relayout(&self.grad_output, self.out_shape, self.p.params.layout, layout);
        Grad { p: self.p.in_layout(layout), grad_output, ..*self }
    }

    /// NCHW, then channels-last: each against the reference on every path,
    /// and channels-last's gradient the NCHW one permuted, bit for bit.
    fn check_input(&self) {
        let nhwc = self.in_layout(Layout::Nhwc);
        for g in [self, &nhwc] {
            g.check("backward_input", &g.input_reference(), |o| g.input_grad(o));
        }
        let o = ConvOptions::default();
        let permuted = relayout(&self.input_grad(&o), self.p.input_shape, Layout::Nchw, Layout::Nhwc);
        assert_eq!(canonical_bits(&nhwc.input_grad(&o)), canonical_bits(&permuted), "NHWC vs NCHW {:?}", self.p);
    }

    /// As [`Grad::check_input`]; the weight gradient is OIHW in both layouts.
    fn check_weight(&self) {
        let nhwc = self.in_layout(Layout::Nhwc);
        for g in [self, &nhwc] {
            g.check("backward_weight", &g.weight_reference(), |o| g.weight_grad(o));
        }
        let o = ConvOptions::default();
        let (nchw, nhwc) = (self.weight_grad(&o), nhwc.weight_grad(&o));
        assert_eq!(canonical_bits(&nhwc), canonical_bits(&nchw), "NHWC vs NCHW {:?}", self.p);
    }
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

fn abs(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(200)))]

    #[test]
    fn backward_input_matches_reference_on_every_path(p in conv_problem(), seed in any::<u64>()) {
        if let Some(g) = Grad::new(p, seed) {
            g.check_input();
        }
    }

    #[test]
    fn backward_weight_matches_reference_on_every_path(p in conv_problem(), seed in any::<u64>()) {
        if let Some(g) = Grad::new(p, seed) {
            g.check_weight();
        }
    }

    /// ⟨conv2d(x, w), y⟩ = ⟨x, backward_input(y, w)⟩ = ⟨w, backward_weight(x, y)⟩,
    /// within the rounding bound of the three f32 computations.
    #[test]
    fn gradients_are_adjoint_to_conv2d(p in conv_problem(), seed in any::<u64>()) {
        let Some(g) = Grad::new(ConvProblem { bias: None, ..p }, seed) else { return Ok(()) };
        let p = &g.p;
        let mut z = vec![0.0f32; g.grad_output.len()];
        conv2d(&p.input, p.input_shape, &p.weight, p.weight_shape, None, &p.params, &mut z).unwrap();
        let mut z_abs = vec![0.0f32; z.len()];
        conv2d(&abs(&p.input), p.input_shape, &abs(&p.weight), p.weight_shape, None, &p.params, &mut z_abs).unwrap();
        // Σ |x|·|w|·|y| over every term: each inner product errs by at most a few REL of it.
        let bound = 4.0 * REL * dot(&z_abs, &abs(&g.grad_output)) + 1e-30;
        let options = ConvOptions::default();
        let forward = dot(&z, &g.grad_output);
        let through_input = dot(&p.input, &g.input_grad(&options));
        let through_weight = dot(&p.weight, &g.weight_grad(&options));
        prop_assert!((forward - through_input).abs() <= bound, "{forward} vs {through_input} (bound {bound:e}) {p:?}");
        prop_assert!((forward - through_weight).abs() <= bound, "{forward} vs {through_weight} (bound {bound:e}) {p:?}");
    }

    #[test]
    fn backward_bias_matches_reference(shape in [1usize..=3, 0usize..=5, 1usize..=30, 1usize..=30], seed in any::<u64>()) {
        let dy = values(shape.iter().product(), seed);
        let mut got = vec![f32::NAN; shape[1]];
        conv2d_backward_bias(&dy, shape, &mut got).unwrap();
        assert_close("backward_bias", &conv2d_backward_bias_direct(&dy, shape).unwrap(), &got);
        // Channels-last: against its own reference, and the same bits.
        let dy_nhwc = relayout(&dy, shape, Layout::Nchw, Layout::Nhwc);
        let mut nhwc = vec![f32::NAN; shape[1]];
        conv2d_backward_bias_with_layout(&dy_nhwc, shape, Layout::Nhwc, &mut nhwc).unwrap();
        let reference = conv2d_backward_bias_direct_with_layout(&dy_nhwc, shape, Layout::Nhwc).unwrap();
        assert_close("backward_bias NHWC", &reference, &nhwc);
        assert_eq!(bits(&nhwc), bits(&got));
    }
}

#[test]
fn backward_bias_sums_in_the_gemm_order() {
    // dW of a 1×1 kernel over an all-ones image is Σ dY through the GEMM
    // engine; the bias gradient sums in the same chunked order, bit for bit.
    // 3 images × 110 pixels: the chunks of 256 straddle images.
    let (batch, c_out, h, w) = (3, 5, 10, 11);
    let mut dy = values(batch * c_out * h * w, 31);
    dy[4] = -0.0;
    let ones = vec![1.0f32; batch * h * w];
    let mut via_gemm = vec![f32::NAN; c_out];
    let params = ConvParams::default();
    conv2d_backward_weight(
        &ones,
        [batch, 1, h, w],
        &dy,
        [batch, c_out, h, w],
        &params,
        &mut via_gemm,
        [c_out, 1, 1, 1],
    )
    .unwrap();
    let mut got = vec![f32::NAN; c_out];
    conv2d_backward_bias(&dy, [batch, c_out, h, w], &mut got).unwrap();
    assert_eq!(bits(&got), bits(&via_gemm));
}

/// `Σ reference(x)·y` in f64: the linear functional whose gradient the
/// gradient references must be.
fn functional(p: &ConvProblem, y: &[f32]) -> f64 {
    let z = conv2d_direct(&p.input, p.input_shape, &p.weight, p.weight_shape, None, &p.params).unwrap();
    z.value.iter().zip(y).map(|(&z, &y)| z * y as f64).sum()
}

/// Central differences of `functional` in each coordinate of `coords(p)`.
/// The functional is linear, so the difference quotient is its derivative up
/// to f64 rounding, with the step actually taken in f32.
fn central_differences(p: &ConvProblem, y: &[f32], weight: bool) -> Vec<f64> {
    let len = if weight { p.weight.len() } else { p.input.len() };
    (0..len)
        .map(|i| {
            let mut plus = p.clone();
            let mut minus = p.clone();
            let (hi, lo) = if weight {
                plus.weight[i] += 0.25;
                minus.weight[i] -= 0.25;
                (plus.weight[i], minus.weight[i])
            } else {
                plus.input[i] += 0.25;
                minus.input[i] -= 0.25;
                (plus.input[i], minus.input[i])
            };
            (functional(&plus, y) - functional(&minus, y)) / (hi as f64 - lo as f64)
        })
        .collect()
}

#[test]
fn finite_differences_confirm_the_references() {
    let cases = [
        ([1, 2, 5, 6], [3, 2, 3, 2], ConvParams::default()),
        (
            [2, 4, 7, 6],
            [4, 2, 3, 3],
            ConvParams { stride: [2, 1], padding: [1, 0, 2, 1], groups: 2, ..Default::default() },
        ),
        (
            [1, 3, 8, 7],
            [2, 3, 2, 3],
            ConvParams { dilation: [2, 2], padding: [0, 2, 1, 0], flip: true, ..Default::default() },
        ),
        (
            [2, 2, 6, 9],
            [2, 1, 3, 2],
            ConvParams {
                stride: [3, 2],
                dilation: [1, 3],
                padding: [2, 1, 0, 3],
                groups: 2,
                flip: true,
                ..Default::default()
            },
        ),
    ];
    for (seed, (input_shape, weight_shape, params)) in cases.into_iter().enumerate() {
        let p = ConvProblem::seeded(input_shape, weight_shape, params, false, seed as u64);
        let out_shape = conv2d_output_shape(input_shape, weight_shape, &params).unwrap();
        let y = values(out_shape.iter().product(), 100 + seed as u64);
        let dx = conv2d_backward_input_direct(&y, out_shape, &p.weight, weight_shape, &params, input_shape).unwrap();
        let dw = conv2d_backward_weight_direct(&p.input, input_shape, &y, out_shape, &params, weight_shape).unwrap();
        for (what, reference, fd) in
            [("input", &dx, central_differences(&p, &y, false)), ("weight", &dw, central_differences(&p, &y, true))]
        {
            for (i, (&want, &got)) in fd.iter().zip(&reference.value).enumerate() {
                assert!(
                    (want - got).abs() <= 1e-9 * (1.0 + reference.magnitude[i]),
                    "{what} {i}: {got} vs fd {want} {p:?}"
                );
            }
        }
    }
}

#[test]
fn backward_reductions_cross_k_chunks_and_column_blocks() {
    // Weight gradient: 3 images × 100 pixels, so the second K chunk (from
    // term 256) starts inside image 2; groups 2 and flip.
    let params = ConvParams { padding: [1, 0, 1, 2], groups: 2, flip: true, ..ConvParams::default() };
    Grad::new(ConvProblem::seeded([3, 4, 10, 8], [6, 2, 3, 3], params, false, 5), 6).unwrap().check_weight();
    // Input gradient with 260 output channels: the GEMM reduction has two chunks.
    let params = ConvParams { stride: [2, 2], padding: [1, 1, 1, 1], ..ConvParams::default() };
    Grad::new(ConvProblem::seeded([1, 3, 6, 5], [260, 3, 3, 3], params, false, 7), 8).unwrap().check_input();
    // A patch of 300·9 taps: column blocks of 96 pixels, the second starting mid-row.
    let params = ConvParams { stride: [2, 2], padding: [1, 1, 1, 1], dilation: [1, 2], ..ConvParams::default() };
    Grad::new(ConvProblem::seeded([1, 300, 23, 25], [4, 300, 3, 3], params, false, 9), 10).unwrap().check_input();
}

/// The gradients of depthwise layers (the input gradient of stride 1 on
/// the forward's depthwise kernels, the channels-last weight gradient with
/// the channels as lanes): kernels 3, 5 and 7, dilation, asymmetric and
/// over-wide padding, flip, wide rows (batches past a chunk of 256 pixels)
/// and channel counts around the vector widths, in both layouts, against
/// the reference on every path and as the NCHW bits.
#[test]
fn backward_of_depthwise_layers() {
    let cases: [(usize, usize, [usize; 4], usize, bool); 6] = [
        (16, 3, [1, 1, 1, 1], 1, false),
        (17, 3, [1, 1, 1, 1], 1, true),
        (8, 5, [2, 1, 0, 2], 1, false),
        (33, 5, [2, 2, 2, 2], 2, true),
        (5, 7, [3, 3, 3, 3], 1, false),
        (24, 3, [0, 0, 0, 0], 1, false),
    ];
    for (i, (c, k, padding, dilation, flip)) in cases.into_iter().enumerate() {
        let params = ConvParams { padding, dilation: [dilation; 2], groups: c, flip, ..ConvParams::default() };
        let p = ConvProblem::seeded([2, c, 9, 29], [c, 1, k, k], params, false, 40 + i as u64);
        let g = Grad::new(p, 50 + i as u64).expect("valid");
        g.check_input();
        g.check_weight();
    }
    // Strides 2 and (1, 2): the weight gradient (the input gradient takes the columns formulation).
    for (i, stride) in [[2, 2], [1, 2]].into_iter().enumerate() {
        let params = ConvParams { stride, padding: [1, 2, 1, 0], groups: 20, ..ConvParams::default() };
        let p = ConvProblem::seeded([3, 20, 11, 25], [20, 1, 3, 3], params, false, 70 + i as u64);
        let g = Grad::new(p, 80 + i as u64).expect("valid");
        g.check_weight();
        g.check_input();
    }
}

#[test]
fn backward_on_many_threads_is_bit_identical() {
    // Large enough (> 4 MFLOP) to fork: batch 2 (parallel over images) and
    // batch 1 with one group (parallel inside each GEMM).
    for (input_shape, weight_shape) in [([2, 16, 20, 20], [32, 16, 3, 3]), ([1, 32, 24, 24], [24, 32, 3, 3])] {
        let params = ConvParams { padding: [1, 1, 1, 1], ..ConvParams::default() };
        let g = Grad::new(ConvProblem::seeded(input_shape, weight_shape, params, false, 11), 12).unwrap();
        g.check_input();
        g.check_weight();
    }
}

#[test]
fn backward_input_does_not_depend_on_the_batch() {
    let params =
        ConvParams { stride: [2, 1], padding: [1, 2, 0, 1], dilation: [2, 1], groups: 2, ..Default::default() };
    let g = Grad::new(ConvProblem::seeded([3, 4, 9, 8], [6, 2, 3, 3], params, false, 13), 14).unwrap();
    let whole = g.input_grad(&ConvOptions::default());
    let (image_in, image_out) = (g.p.input.len() / 3, g.grad_output.len() / 3);
    for image in 0..3 {
        let one = Grad {
            p: ConvProblem {
                input_shape: [1, 4, 9, 8],
                input: g.p.input[image * image_in..][..image_in].to_vec(),
                ..g.p.clone()
            },
            out_shape: [1, g.out_shape[1], g.out_shape[2], g.out_shape[3]],
            grad_output: g.grad_output[image * image_out..][..image_out].to_vec(),
        };
        let alone = one.input_grad(&ConvOptions::default());
        assert_eq!(bits(&alone), bits(&whole[image * image_in..][..image_in]), "image {image}");
    }
}

#[test]
fn backward_handles_empty_batches_and_channels() {
    // No images: the weight gradient is zero, the input gradient empty.
    let mut dw = vec![f32::NAN; 2 * 3 * 2 * 2];
    conv2d_backward_weight(&[], [0, 3, 4, 4], &[], [0, 2, 3, 3], &ConvParams::default(), &mut dw, [2, 3, 2, 2])
        .unwrap();
    assert!(dw.iter().all(|&v| v == 0.0));
    conv2d_backward_input(&[], [0, 2, 3, 3], &dw, [2, 3, 2, 2], &ConvParams::default(), &mut [], [0, 3, 4, 4]).unwrap();
    // No output channels: the input gradient is zero.
    let mut dx = vec![f32::NAN; 3 * 16];
    conv2d_backward_input(&[], [1, 0, 3, 3], &[], [0, 3, 2, 2], &ConvParams::default(), &mut dx, [1, 3, 4, 4]).unwrap();
    assert!(dx.iter().all(|&v| v == 0.0));
}

#[test]
fn backward_propagates_nan_and_infinity() {
    let params = ConvParams { padding: [1, 1, 1, 1], ..ConvParams::default() };
    let mut g = Grad::new(ConvProblem::seeded([1, 2, 5, 5], [3, 2, 3, 3], params, false, 15), 16).unwrap();
    g.grad_output[7] = f32::INFINITY;
    g.p.input[3] = f32::NAN;
    let portable = ConvOptions { isa: Isa::Portable, ..ConvOptions::default() };
    g.check("backward_input with inf", &g.input_reference(), |o| g.input_grad(o));
    g.check("backward_weight with inf and NaN", &g.weight_reference(), |o| g.weight_grad(o));
    assert!(g.weight_grad(&portable).iter().any(|v| v.is_nan()));
}

// ---------------------------------------------------------------- transposed

/// One transposed-convolution problem.
#[derive(Clone, Debug)]
struct TransposeProblem {
    input_shape: [usize; 4],
    weight_shape: [usize; 4],
    params: ConvTransposeParams,
    input: Vec<f32>,
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
}

impl TransposeProblem {
    fn new(
        input_shape: [usize; 4],
        weight_shape: [usize; 4],
        params: ConvTransposeParams,
        bias: bool,
        seed: u64,
    ) -> Self {
        let c_out = weight_shape[1] * params.groups;
        TransposeProblem {
            input_shape,
            weight_shape,
            params,
            input: values(input_shape.iter().product(), seed),
            weight: values(weight_shape.iter().product(), seed + 1),
            bias: bias.then(|| values(c_out, seed + 2)),
        }
    }

    fn run(&self, options: &ConvOptions, len: usize) -> Result<Vec<f32>, ConvError> {
        let mut out = vec![f32::NAN; len];
        conv_transpose2d_with(
            options,
            &self.input,
            self.input_shape,
            &self.weight,
            self.weight_shape,
            self.bias.as_deref(),
            &self.params,
            &mut out,
        )?;
        Ok(out)
    }

    /// PyTorch's output size per axis, in signed arithmetic.
    fn pytorch_shape(&self) -> [i64; 2] {
        let p = &self.params;
        [0, 1].map(|a| {
            let (size, k) = (self.input_shape[2 + a] as i64, self.weight_shape[2 + a] as i64);
            (size - 1) * p.stride[a] as i64 - p.padding[a] as i64 - p.padding[a + 2] as i64
                + p.dilation[a] as i64 * (k - 1)
                + p.output_padding[a] as i64
                + 1
        })
    }

    /// NCHW, then the same problem channels-last: each against the
    /// reference on every path, and channels-last's output the NCHW one
    /// permuted, bit for bit.
    fn check(&self) {
        self.check_layout();
        let nhwc = TransposeProblem {
            input: relayout(&self.input, self.input_shape, Layout::Nchw, Layout::Nhwc),
            params: ConvTransposeParams { layout: Layout::Nhwc, ..self.params },
            ..self.clone()
        };
        nhwc.check_layout();
        if let Ok(shape) = conv_transpose2d_output_shape(self.input_shape, self.weight_shape, &self.params) {
            let len = shape.iter().product();
            let (a, b) =
                (self.run(&ConvOptions::default(), len).unwrap(), nhwc.run(&ConvOptions::default(), len).unwrap());
            let permuted = relayout(&a, shape, Layout::Nchw, Layout::Nhwc);
            assert_eq!(canonical_bits(&b), canonical_bits(&permuted), "NHWC vs NCHW {self:?}");
        }
    }

    fn check_layout(&self) {
        let shape = conv_transpose2d_output_shape(self.input_shape, self.weight_shape, &self.params);
        let op_ok = (0..2).all(|a| {
            let p = &self.params;
            p.output_padding[a] < p.stride[a] || p.output_padding[a] < p.dilation[a]
        });
        let [oh, ow] = self.pytorch_shape();
        let shape = match shape {
            Ok(shape) => shape,
            Err(e) => {
                assert!(!op_ok || oh <= 0 || ow <= 0, "rejected {self:?}: {e}");
                let sentinel = vec![1.5f32; 7];
                let mut out = sentinel.clone();
                let got = conv_transpose2d(
                    &self.input,
                    self.input_shape,
                    &self.weight,
                    self.weight_shape,
                    self.bias.as_deref(),
                    &self.params,
                    &mut out,
                );
                assert_eq!(got, Err(e));
                assert_eq!(bits(&out), bits(&sentinel));
                return;
            }
        };
        assert!(op_ok);
        let c_out = self.weight_shape[1] * self.params.groups;
        assert_eq!(shape, [self.input_shape[0], c_out, oh as usize, ow as usize], "{self:?}");
        let reference = conv_transpose2d_direct(
            &self.input,
            self.input_shape,
            &self.weight,
            self.weight_shape,
            self.bias.as_deref(),
            &self.params,
        )
        .unwrap();
        let len = shape.iter().product();
        let portable = ConvOptions { isa: Isa::Portable, ..ConvOptions::default() };
        let want = self.run(&portable, len).unwrap();
        assert_close(&format!("conv_transpose2d {self:?}"), &reference, &want);
        for_each_isa(|isa| {
            for threads in [Threads::Pool, Threads::Single] {
                let got = self.run(&ConvOptions { isa, threads, ..ConvOptions::default() }, len).unwrap();
                if is_exact(isa) {
                    assert_eq!(bits(&got), bits(&want), "{} {self:?}", isa.name());
                } else {
                    assert_close(isa.name(), &reference, &got);
                }
            }
        });
    }
}

fn transpose_problem() -> impl Strategy<Value = TransposeProblem> {
    (
        (1usize..=2, 1usize..=3, 1usize..=3, 1usize..=3),
        (1usize..=8, 1usize..=8, 1usize..=4, 1usize..=4),
        ([1usize..=3, 1usize..=3], [0usize..=3, 0usize..=3, 0usize..=3, 0usize..=3], [0usize..=3, 0usize..=3]),
        ([1usize..=3, 1usize..=3], any::<bool>(), any::<u64>()),
    )
        .prop_map(
            |(
                (n, groups, cg_in, cg_out),
                (h, w, kh, kw),
                (stride, padding, output_padding),
                (dilation, bias, seed),
            )| {
                let params =
                    ConvTransposeParams { stride, padding, output_padding, dilation, groups, ..Default::default() };
                TransposeProblem::new([n, groups * cg_in, h, w], [groups * cg_in, cg_out, kh, kw], params, bias, seed)
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(200)))]

    #[test]
    fn conv_transpose2d_matches_reference_and_pytorch_shapes(p in transpose_problem()) {
        p.check();
    }
}

#[test]
fn conv_transpose2d_pinned_cases() {
    // PyTorch's docs example, shape only.
    let p = ConvTransposeParams { stride: [2, 1], padding: [4, 2, 4, 2], ..ConvTransposeParams::default() };
    assert_eq!(conv_transpose2d_output_shape([20, 16, 50, 100], [16, 33, 3, 5], &p).unwrap(), [20, 33, 93, 100]);
    // The usual 2x upsampling: k 3, s 2, p 1, output_padding 1 doubles the size.
    let p = ConvTransposeParams { stride: [2, 2], padding: [1; 4], output_padding: [1, 1], ..Default::default() };
    assert_eq!(conv_transpose2d_output_shape([1, 8, 7, 5], [8, 4, 3, 3], &p).unwrap(), [1, 4, 14, 10]);
    TransposeProblem::new([1, 8, 7, 5], [8, 4, 3, 3], p, true, 1).check();
    // output_padding >= stride is allowed when it is below the dilation.
    let p =
        ConvTransposeParams { dilation: [3, 2], output_padding: [2, 1], padding: [0, 1, 2, 0], ..Default::default() };
    TransposeProblem::new([2, 3, 5, 4], [3, 2, 2, 3], p, true, 2).check();
    // Groups and asymmetric everything, large enough to fork.
    let p = ConvTransposeParams {
        stride: [2, 3],
        padding: [2, 0, 1, 3],
        output_padding: [1, 2],
        dilation: [1, 2],
        groups: 2,
        ..Default::default()
    };
    TransposeProblem::new([2, 32, 16, 12], [32, 16, 3, 3], p, false, 3).check();
    // 1x1 input, ones everywhere: the output is the kernel plus bias.
    let mut out = vec![0.0; 4];
    let w = [1.0, 2.0, 3.0, 4.0];
    conv_transpose2d(&[2.0], [1, 1, 1, 1], &w, [1, 1, 2, 2], Some(&[1.0]), &Default::default(), &mut out).unwrap();
    assert_eq!(out, [3.0, 5.0, 7.0, 9.0]);
}

#[test]
fn conv_transpose2d_is_backward_input() {
    // Same weight, same parameters: the transposed convolution of dY is the input gradient.
    let conv =
        ConvParams { stride: [2, 2], padding: [1, 0, 0, 1], dilation: [1, 2], groups: 2, ..ConvParams::default() };
    let g = Grad::new(ConvProblem::seeded([2, 4, 9, 10], [6, 2, 3, 3], conv, false, 21), 22).unwrap();
    let t = ConvTransposeParams {
        stride: conv.stride,
        padding: conv.padding,
        dilation: conv.dilation,
        groups: 2,
        output_padding: [0, 0],
        ..Default::default()
    };
    let shape = conv_transpose2d_output_shape(g.out_shape, g.p.weight_shape, &t);
    // The convolution's 4×4 output reaches back to 8×10 rows: output_padding restores the ninth row.
    let [h, w] = [2, 3].map(|a| g.p.input_shape[a]);
    let Ok(shape) = shape else { panic!("{shape:?}") };
    let op = [h - shape[2], w - shape[3]];
    let t = ConvTransposeParams { output_padding: op, ..t };
    let mut out = vec![f32::NAN; g.p.input.len()];
    conv_transpose2d(&g.grad_output, g.out_shape, &g.p.weight, g.p.weight_shape, None, &t, &mut out).unwrap();
    assert_eq!(bits(&out), bits(&g.input_grad(&ConvOptions::default())));
    // The two references, written from two definitions (a scatter and a gather), agree.
    let scatter =
        conv_transpose2d_direct(&g.grad_output, g.out_shape, &g.p.weight, g.p.weight_shape, None, &t).unwrap();
    let gather = g.input_reference();
    for (i, (a, b)) in scatter.value.iter().zip(&gather.value).enumerate() {
        assert!((a - b).abs() <= 1e-12 * (1.0 + gather.magnitude[i]), "element {i}: {a} vs {b}");
    }
}

// -------------------------------------------------------------------- errors

/// A valid backward call: 2 images of 4×6×6, 6 kernels of 2×3×3 in 2 groups,
/// stride 2, padding 1 → grad_output 2×6×3×3.
struct Call {
    input_shape: [usize; 4],
    weight_shape: [usize; 4],
    grad_output_shape: [usize; 4],
    params: ConvParams,
    input_len: usize,
    weight_len: usize,
    grad_output_len: usize,
    options: ConvOptions,
}

impl Call {
    fn valid() -> Self {
        Call {
            input_shape: [2, 4, 6, 6],
            weight_shape: [6, 2, 3, 3],
            grad_output_shape: [2, 6, 3, 3],
            params: ConvParams { stride: [2, 2], padding: [1, 1, 1, 1], groups: 2, ..ConvParams::default() },
            input_len: 2 * 4 * 36,
            weight_len: 6 * 2 * 9,
            grad_output_len: 2 * 6 * 9,
            options: ConvOptions::default(),
        }
    }

    /// Runs both gradients on sentinel-filled buffers; both must fail with
    /// the buffers untouched. Returns (input error, weight error).
    fn expect_err(&self) -> (ConvError, ConvError) {
        let sentinel = |len: usize| -> Vec<f32> { (0..len).map(|i| f32::from_bits(0x7fc0_1234 + i as u32)).collect() };
        let (x, w, dy) = (vec![1.0; self.input_len], vec![1.0; self.weight_len], vec![1.0; self.grad_output_len]);
        let mut dx = sentinel(self.input_len);
        let e_in = conv2d_backward_input_with(
            &self.options,
            &dy,
            self.grad_output_shape,
            &w,
            self.weight_shape,
            &self.params,
            &mut dx,
            self.input_shape,
        )
        .expect_err("backward_input must reject");
        assert_eq!(bits(&dx), bits(&sentinel(self.input_len)), "grad_input changed on Err({e_in})");
        let mut dw = sentinel(self.weight_len);
        let e_w = conv2d_backward_weight_with(
            &self.options,
            &x,
            self.input_shape,
            &dy,
            self.grad_output_shape,
            &self.params,
            &mut dw,
            self.weight_shape,
        )
        .expect_err("backward_weight must reject");
        assert_eq!(bits(&dw), bits(&sentinel(self.weight_len)), "grad_weight changed on Err({e_w})");
        assert!(!e_in.to_string().is_empty() && !e_w.to_string().is_empty());
        (e_in, e_w)
    }
}

#[test]
fn backward_valid_call_succeeds() {
    let c = Call::valid();
    let (mut dx, mut dw) = (vec![0.0; c.input_len], vec![0.0; c.weight_len]);
    let dy = vec![1.0; c.grad_output_len];
    conv2d_backward_input(
        &dy,
        c.grad_output_shape,
        &vec![1.0; c.weight_len],
        c.weight_shape,
        &c.params,
        &mut dx,
        c.input_shape,
    )
    .unwrap();
    conv2d_backward_weight(
        &vec![1.0; c.input_len],
        c.input_shape,
        &dy,
        c.grad_output_shape,
        &c.params,
        &mut dw,
        c.weight_shape,
    )
    .unwrap();
}

#[test]
fn backward_rejects_grad_output_shapes_inconsistent_with_the_forward() {
    for (dim, found) in [(0, 3), (1, 4), (2, 4), (3, 2)] {
        let mut c = Call::valid();
        c.grad_output_shape[dim] = found;
        c.grad_output_len = c.grad_output_shape.iter().product();
        let (a, b) = c.expect_err();
        for e in [a, b] {
            assert!(matches!(e, ConvError::ShapeMismatch { found: f, .. } if f == found), "{e:?}");
        }
    }
}

#[test]
fn backward_rejects_bad_lengths() {
    let c = Call { grad_output_len: 2 * 6 * 9 - 1, ..Call::valid() };
    let (a, b) = c.expect_err();
    assert!(matches!(a, ConvError::BufferLength { buffer: "grad_output", .. }), "{a:?}");
    assert!(matches!(b, ConvError::BufferLength { buffer: "grad_output", .. }), "{b:?}");
    let c = Call { input_len: 2 * 4 * 36 + 1, ..Call::valid() };
    let (a, b) = c.expect_err();
    assert!(matches!(a, ConvError::BufferLength { buffer: "grad_input", .. }), "{a:?}");
    assert!(matches!(b, ConvError::BufferLength { buffer: "input", .. }), "{b:?}");
    let c = Call { weight_len: 6 * 2 * 9 + 3, ..Call::valid() };
    let (a, b) = c.expect_err();
    assert!(matches!(a, ConvError::BufferLength { buffer: "weight", .. }), "{a:?}");
    assert!(matches!(b, ConvError::BufferLength { buffer: "grad_weight", .. }), "{b:?}");
}

#[test]
fn backward_rejects_bad_parameters_and_shapes() {
    let bad = [
        Call { params: ConvParams { stride: [0, 2], ..Call::valid().params }, ..Call::valid() },
        Call { params: ConvParams { dilation: [1, 0], ..Call::valid().params }, ..Call::valid() },
        Call { params: ConvParams { groups: 3, ..Call::valid().params }, ..Call::valid() },
        Call { weight_shape: [6, 3, 3, 3], weight_len: 6 * 3 * 9, ..Call::valid() },
        Call { weight_shape: [6, 2, 9, 3], weight_len: 6 * 2 * 27, ..Call::valid() }, // no output
        Call { input_shape: [usize::MAX / 2, 4, 6, 6], grad_output_shape: [usize::MAX / 2, 6, 3, 3], ..Call::valid() },
    ];
    let kinds: Vec<_> = bad.iter().map(|c| c.expect_err()).collect();
    assert!(matches!(kinds[0].0, ConvError::BadParameter { name: "stride[0]", .. }));
    assert!(matches!(kinds[3].0, ConvError::ShapeMismatch { .. }));
    assert!(matches!(kinds[4].0, ConvError::NoOutput { axis: "height", .. }));
    assert!(matches!(kinds[5].0, ConvError::Overflow { .. }));
    if !Isa::Neon.is_available() {
        let (a, b) =
            Call { options: ConvOptions { isa: Isa::Neon, ..ConvOptions::default() }, ..Call::valid() }.expect_err();
        assert!(matches!(a, ConvError::IsaUnavailable { .. }) && matches!(b, ConvError::IsaUnavailable { .. }));
    }
}

#[test]
fn backward_bias_rejects_bad_lengths_and_overflow() {
    let mut db = [7.0f32; 3];
    let dy = vec![1.0; 2 * 3 * 4];
    assert!(matches!(
        conv2d_backward_bias(&dy, [2, 3, 2, 2], &mut db[..2]),
        Err(ConvError::BufferLength { buffer: "grad_bias", .. })
    ));
    assert!(matches!(
        conv2d_backward_bias(&dy[1..], [2, 3, 2, 2], &mut db),
        Err(ConvError::BufferLength { buffer: "grad_output", .. })
    ));
    assert!(matches!(conv2d_backward_bias(&[], [2, 3, usize::MAX, 3], &mut db), Err(ConvError::Overflow { .. })));
    assert_eq!(db, [7.0; 3]);
    conv2d_backward_bias(&dy, [2, 3, 2, 2], &mut db).unwrap();
    assert_eq!(db, [8.0; 3]);
    // An empty batch of huge planes is valid: the sums are empty.
    conv2d_backward_bias(&[], [0, 3, usize::MAX, 3], &mut db).unwrap();
    assert_eq!(db, [0.0; 3]);
}

#[test]
fn conv_transpose2d_rejects_bad_arguments() {
    let valid = ConvTransposeParams { stride: [2, 2], padding: [1; 4], output_padding: [1, 0], ..Default::default() };
    let (x_shape, w_shape) = ([1, 4, 5, 5], [4, 3, 3, 3]); // output [1, 3, 10, 9]
    assert_eq!(conv_transpose2d_output_shape(x_shape, w_shape, &valid).unwrap(), [1, 3, 10, 9]);
    let x = vec![1.0f32; 100];
    let w = vec![1.0f32; 108];
    let sentinel = vec![-3.0f32; 270];
    let run = |x: &[f32],
               xs: [usize; 4],
               w: &[f32],
               ws: [usize; 4],
               b: Option<&[f32]>,
               p: &ConvTransposeParams,
               len: usize| {
        let mut out = sentinel[..len].to_vec();
        let e = conv_transpose2d(x, xs, w, ws, b, p, &mut out).expect_err("must reject");
        assert_eq!(bits(&out), bits(&sentinel[..len]), "output changed on Err({e})");
        e
    };
    let with = |f: fn(&mut ConvTransposeParams)| {
        let mut p = valid;
        f(&mut p);
        p
    };
    let e = run(&x, x_shape, &w, w_shape, None, &with(|p| p.output_padding = [2, 0]), 270);
    assert!(matches!(e, ConvError::BadParameter { name: "output_padding[0]", value: 2, .. }), "{e:?}");
    let e = run(&x, x_shape, &w, w_shape, None, &with(|p| p.output_padding = [0, 2]), 270);
    assert!(matches!(e, ConvError::BadParameter { name: "output_padding[1]", .. }), "{e:?}");
    let e = run(&x, x_shape, &w, w_shape, None, &with(|p| p.stride = [1, 0]), 270);
    assert!(matches!(e, ConvError::BadParameter { name: "stride[1]", .. }), "{e:?}");
    let e = run(&x, x_shape, &w, w_shape, None, &with(|p| p.groups = 3), 270);
    assert!(matches!(e, ConvError::BadParameter { name: "groups", .. }), "{e:?}");
    let e = run(&x, x_shape, &w, w_shape, None, &with(|p| p.padding = [6, 1, 6, 1]), 270);
    assert!(matches!(e, ConvError::BadParameter { name: "padding[0] + padding[2]", .. }), "{e:?}");
    let e = run(&x, [1, 4, 0, 5], &w, w_shape, None, &valid, 270);
    assert!(matches!(e, ConvError::BadParameter { name: "input_shape[2] (height)", .. }), "{e:?}");
    let e = run(&x, [1, 5, 5, 4], &w, w_shape, None, &valid, 270);
    assert!(matches!(e, ConvError::ShapeMismatch { what: "weight_shape[0] (input channels)", .. }), "{e:?}");
    let e = run(&x[1..], x_shape, &w, w_shape, None, &valid, 270);
    assert!(matches!(e, ConvError::BufferLength { buffer: "input", .. }), "{e:?}");
    let e = run(&x, x_shape, &w[1..], w_shape, None, &valid, 270);
    assert!(matches!(e, ConvError::BufferLength { buffer: "weight", .. }), "{e:?}");
    let e = run(&x, x_shape, &w, w_shape, Some(&[0.0; 4]), &valid, 270);
    assert!(matches!(e, ConvError::BufferLength { buffer: "bias", .. }), "{e:?}");
    let e = run(&x, x_shape, &w, w_shape, None, &valid, 269);
    assert!(matches!(e, ConvError::BufferLength { buffer: "output", .. }), "{e:?}");
    let e = run(&x, [1, 4, usize::MAX / 4, 5], &w, w_shape, None, &valid, 270);
    assert!(matches!(e, ConvError::Overflow { .. }), "{e:?}");
    let mut out = sentinel.clone();
    conv_transpose2d(&x, x_shape, &w, w_shape, Some(&[0.0; 3]), &valid, &mut out).unwrap();
}

#[test]
fn backward_accepts_degenerate_empty_calls() {
    // No images but planes of 2^66 pixels: every partial product of a shape
    // must fit usize, so these are overflow errors (never panics), even empty.
    let big = 1usize << 33;
    let p = ConvParams::default();
    let e = conv2d_backward_input(&[], [0, 1, big, big], &[], [1, 0, 1, 1], &p, &mut [], [0, 0, big, big]);
    assert!(matches!(e, Err(ConvError::Overflow { .. })), "{e:?}");
    let mut dw = [f32::NAN; 0];
    let e = conv2d_backward_weight(&[], [0, 0, big, big], &[], [0, 1, big, big], &p, &mut dw, [1, 0, 1, 1]);
    assert!(matches!(e, Err(ConvError::Overflow { .. })), "{e:?}");
    // Empty weights in a huge number of groups.
    let p = ConvParams { groups: usize::MAX, ..ConvParams::default() };
    conv2d_backward_input(&[], [1, 0, 1, 1], &[], [0, 0, 1, 1], &p, &mut [], [1, 0, 1, 1]).unwrap();
    conv2d_backward_weight(&[], [1, 0, 1, 1], &[], [1, 0, 1, 1], &p, &mut [], [0, 0, 1, 1]).unwrap();
    // No output channels and a long kernel: the input gradient is zero.
    let mut dx = [f32::NAN; 3];
    let p = ConvParams { padding: [0, 0, 9, 0], ..ConvParams::default() };
    conv2d_backward_input(&[], [1, 0, 1, 1], &[], [0, 3, 10, 1], &p, &mut dx, [1, 3, 1, 1]).unwrap();
    assert_eq!(dx, [0.0; 3]);
    // A transposed convolution with no input channels is its bias.
    let mut out = [f32::NAN; 4];
    let t = ConvTransposeParams::default();
    conv_transpose2d(&[], [1, 0, 2, 2], &[], [0, 1, 1, 1], Some(&[0.5]), &t, &mut out).unwrap();
    assert_eq!(out, [0.5; 4]);
}
