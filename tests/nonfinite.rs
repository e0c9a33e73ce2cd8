//! NaN and infinities, on every path: they propagate as IEEE 754 arithmetic
//! on each output's defining sum says. A NaN input reaches exactly the
//! outputs whose sum reads it (a NaN weight: every output of its channel,
//! padding taps included, since `0·NaN` is NaN); `inf·0` is NaN; opposite
//! infinities in one sum give NaN; `beta == 0` never reads C. Which NaN comes
//! out (sign, payload) is not specified: paths may differ there, never in
//! whether a result is NaN. Small fixed inputs, so Miri can run this file.

mod common;

use common::{ALGORITHMS, ConvProblem, assert_close, for_each_isa, is_exact};
use convgemm::reference::input_tap;
use convgemm::{
    Activation, Algorithm, ConvOptions, ConvParams, Isa, Threads, conv2d_output_shape, conv2d_with, sgemm_with_isa,
};

/// A problem of this file: seeded data, no bias.
fn conv(input_shape: [usize; 4], weight_shape: [usize; 4], params: ConvParams) -> ConvProblem {
    ConvProblem::seeded(input_shape, weight_shape, params, false, 11)
}

/// The checks of this file on a convolution problem.
trait NonFinite {
    fn run_on(&self, isa: Isa, algorithm: Algorithm) -> Vec<f32>;
    fn check(&self) -> Vec<f32>;
    fn index(&self, at: [usize; 4]) -> usize;
    fn readers_of(&self, at: [usize; 4]) -> Vec<usize>;
}

impl NonFinite for ConvProblem {
    /// The output of one path, on the calling thread.
    fn run_on(&self, isa: Isa, algorithm: Algorithm) -> Vec<f32> {
        self.run(&ConvOptions { isa, algorithm, threads: Threads::Single, ..ConvOptions::default() }).unwrap()
    }

    /// Every path against the f64 reference: NaN exactly where it is NaN,
    /// the same infinities, finite values within the bound. Returns the
    /// portable result.
    fn check(&self) -> Vec<f32> {
        let reference = self.reference().unwrap();
        for_each_isa(|isa| {
            for algorithm in ALGORITHMS {
                assert_close(&format!("{} {algorithm:?}", isa.name()), &reference, &self.run_on(isa, algorithm));
            }
        });
        self.run_on(Isa::Portable, Algorithm::Im2col)
    }

    /// Output index `(n, o, i, j)` in NCHW order.
    fn index(&self, [n, o, i, j]: [usize; 4]) -> usize {
        let [_, c_out, h_out, w_out] = conv2d_output_shape(self.input_shape, self.weight_shape, &self.params).unwrap();
        ((n * c_out + o) * h_out + i) * w_out + j
    }

    /// The outputs whose defining sum reads input element `(n, c, y, x)`,
    /// found through the reference's one index formula (`input_tap`) on an
    /// input that is 1 there and 0 elsewhere.
    fn readers_of(&self, at: [usize; 4]) -> Vec<usize> {
        let [_, c_in, h, w] = self.input_shape;
        let mut probe = vec![0.0f32; self.input.len()];
        probe[((at[0] * c_in + at[1]) * h + at[2]) * w + at[3]] = 1.0;
        let [batch, c_out, h_out, w_out] =
            conv2d_output_shape(self.input_shape, self.weight_shape, &self.params).unwrap();
        let [_, cg_in, kh, kw] = self.weight_shape;
        let cg_out = c_out / self.params.groups;
        let mut readers = Vec::new();
        for n in 0..batch {
            for o in 0..c_out {
                for i in 0..h_out {
                    for j in 0..w_out {
                        let reads = (0..cg_in).any(|c| {
                            (0..kh).any(|u| {
                                (0..kw).any(|v| {
                                    let channel = o / cg_out * cg_in + c;
                                    input_tap(&probe, self.input_shape, &self.params, n, channel, i, j, u, v) != 0.0
                                })
                            })
                        });
                        if reads {
                            readers.push(self.index([n, o, i, j]));
                        }
                    }
                }
            }
        }
        readers
    }
}

fn nan_positions(v: &[f32]) -> Vec<usize> {
    (0..v.len()).filter(|&i| v[i].is_nan()).collect()
}

/// Stride 2, asymmetric padding, dilation 2, two groups, two images.
fn strided_grouped() -> ConvProblem {
    let params =
        ConvParams { stride: [2, 1], padding: [1, 2, 0, 1], dilation: [2, 1], groups: 2, ..ConvParams::default() };
    conv([2, 4, 7, 6], [4, 2, 2, 3], params)
}

#[test]
#[cfg_attr(miri, ignore = "20-90 s under Miri; the smaller cases cover the same code")]
fn nan_input_reaches_exactly_the_windows_that_read_it() {
    // Stride 2 with dilation 2 reads input rows 1, 3, 5 only: a NaN in rows
    // 0, 2, 4, 6 is in no output's sum and reaches nothing.
    for (at, read) in [([0, 0, 0, 0], false), ([1, 3, 6, 5], false), ([0, 2, 3, 2], true), ([1, 3, 5, 5], true)] {
        let mut conv = strided_grouped();
        let [_, c_in, h, w] = conv.input_shape;
        conv.input[((at[0] * c_in + at[1]) * h + at[2]) * w + at[3]] = f32::NAN;
        let readers = conv.readers_of(at);
        assert_eq!(!readers.is_empty(), read, "input {at:?}");
        assert_eq!(nan_positions(&conv.check()), readers, "NaN at input {at:?}");
    }
}

#[test]
fn nan_input_in_a_depthwise_and_a_pointwise_layer() {
    // groups == channels: the direct path; 1×1 stride 1: the image is B.
    let depthwise = ConvParams { padding: [1, 1, 1, 1], groups: 3, ..ConvParams::default() };
    let pointwise = ConvParams::default();
    for (params, weight_shape) in [(depthwise, [3, 1, 3, 3]), (pointwise, [2, 3, 1, 1])] {
        let mut conv = conv([1, 3, 5, 5], weight_shape, params);
        conv.input[5 * 5 + 2 * 5 + 4] = f32::NAN; // channel 1, row 2, column 4
        let readers = conv.readers_of([0, 1, 2, 4]);
        assert_eq!(nan_positions(&conv.check()), readers, "{params:?}");
    }
}

#[test]
#[cfg_attr(miri, ignore = "20-90 s under Miri; the smaller cases cover the same code")]
fn nan_weight_poisons_its_whole_channel_padding_included() {
    let mut conv = strided_grouped();
    // Output channel 3 (group 1), tap (c 1, u 1, v 2): in some windows it reads
    // padding, where 0 · NaN is still NaN.
    let [_, cg, kh, kw] = conv.weight_shape;
    conv.weight[((3 * cg + 1) * kh + 1) * kw + 2] = f32::NAN;
    let out = conv.check();
    let [batch, c_out, h_out, w_out] = conv_shape(&conv);
    for n in 0..batch {
        for o in 0..c_out {
            for i in 0..h_out {
                for j in 0..w_out {
                    assert_eq!(out[conv.index([n, o, i, j])].is_nan(), o == 3, "output ({n}, {o}, {i}, {j})");
                }
            }
        }
    }
}

fn conv_shape(conv: &ConvProblem) -> [usize; 4] {
    conv2d_output_shape(conv.input_shape, conv.weight_shape, &conv.params).unwrap()
}

#[test]
#[cfg_attr(miri, ignore = "20-90 s under Miri; the smaller cases cover the same code")]
fn infinite_input_times_zero_weight_is_nan() {
    let mut conv = strided_grouped();
    let at = [0, 1, 3, 3];
    let [_, c_in, h, w] = conv.input_shape;
    conv.input[((at[0] * c_in + at[1]) * h + at[2]) * w + at[3]] = f32::INFINITY;
    // Input channel 1 is the second channel of group 0: its taps in output channels 0 and 1.
    let [_, cg, kh, kw] = conv.weight_shape;
    for o in 0..2 {
        for t in 0..kh * kw {
            conv.weight[(o * cg + 1) * kh * kw + t] = if o == 0 { 0.0 } else { 0.5 };
        }
    }
    let out = conv.check();
    let readers = conv.readers_of(at);
    assert!(!readers.is_empty());
    let [_, _, h_out, w_out] = conv_shape(&conv);
    for &r in &readers {
        let o = r / (h_out * w_out) % 4;
        match o {
            0 => assert!(out[r].is_nan(), "inf · 0 at output {r}: {}", out[r]),
            1 => assert_eq!(out[r], f32::INFINITY, "inf · 0.5 at output {r}"),
            _ => unreachable!("group 1 does not read input channel 1"),
        }
    }
    assert!(out.iter().enumerate().all(|(i, v)| readers.contains(&i) || v.is_finite()));
}

#[test]
fn opposite_infinities_in_one_sum_are_nan() {
    let mut conv = conv([1, 1, 4, 4], [2, 1, 2, 2], ConvParams::default());
    conv.weight = vec![1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0];
    conv.input[5] = f32::INFINITY; // (1, 1)
    conv.input[6] = f32::NEG_INFINITY; // (1, 2)
    let out = conv.check();
    // Channel 0 sums whole 2×2 windows (3×3 outputs): the windows at (0, 1)
    // and (1, 1) hold both infinities, their neighbours one each.
    assert!(out[1].is_nan() && out[4].is_nan());
    assert_eq!((out[0], out[2], out[3], out[5]), (f32::INFINITY, f32::NEG_INFINITY, f32::INFINITY, f32::NEG_INFINITY));
    // Channel 1 weighs each window's top-left pixel by 1, the rest by 0:
    // at (1, 1) that is inf·1 + (−inf)·0 = NaN, at (1, 2) −inf·1 + finite·0.
    assert!(out[9 + 4].is_nan());
    assert_eq!(out[9 + 5], f32::NEG_INFINITY);
}

#[test]
fn infinite_weight_over_padding_is_nan() {
    // A 3×3 kernel with padding 1: the corner tap reads padding (0) for the
    // first row and column of outputs, so inf · 0 = NaN there, ±inf elsewhere.
    let params = ConvParams { padding: [1, 1, 1, 1], ..ConvParams::default() };
    let mut conv = conv([1, 1, 4, 4], [1, 1, 3, 3], params);
    conv.input.iter_mut().for_each(|x| *x = x.abs() + 0.5);
    conv.weight[0] = f32::INFINITY;
    let out = conv.check();
    for i in 0..4 {
        for j in 0..4 {
            let v = out[i * 4 + j];
            if i == 0 || j == 0 {
                assert!(v.is_nan(), "({i}, {j}) reads padding: {v}");
            } else {
                assert_eq!(v, f32::INFINITY, "({i}, {j})");
            }
        }
    }
}

#[test]
#[cfg_attr(miri, ignore = "20-90 s under Miri; the smaller cases cover the same code")]
fn nan_and_infinite_bias() {
    let mut conv = strided_grouped();
    conv.bias = Some(vec![f32::NAN, 1.0, f32::NEG_INFINITY, -0.0]);
    let out = conv.check();
    let [batch, c_out, h_out, w_out] = conv_shape(&conv);
    for n in 0..batch {
        for o in 0..c_out {
            for p in 0..h_out * w_out {
                let v = out[((n * c_out + o) * h_out * w_out) + p];
                match o {
                    0 => assert!(v.is_nan()),
                    2 => assert_eq!(v, f32::NEG_INFINITY),
                    _ => assert!(v.is_finite()),
                }
            }
        }
    }
}

#[test]
#[cfg_attr(miri, ignore = "20-90 s under Miri; the smaller cases cover the same code")]
fn fused_activations_keep_nan_and_clamp_infinities() {
    let mut conv = strided_grouped();
    conv.bias = Some(vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0]);
    let shape = conv_shape(&conv);
    let len: usize = shape.iter().product();
    for act in [Activation::Relu, Activation::Clamp { min: -1.0, max: 2.0 }] {
        for_each_isa(|isa| {
            for algorithm in ALGORITHMS {
                let mut out = vec![0.0; len];
                let opts = ConvOptions { isa, algorithm, activation: act, ..ConvOptions::default() };
                conv2d_with(
                    &opts,
                    &conv.input,
                    conv.input_shape,
                    &conv.weight,
                    conv.weight_shape,
                    conv.bias.as_deref(),
                    &conv.params,
                    &mut out,
                )
                .unwrap();
                let per_channel = len / 2 / 4;
                let channel =
                    |o: usize| (0..2).flat_map(move |n| (0..per_channel).map(move |p| (n * 4 + o) * per_channel + p));
                let what = format!("{} {algorithm:?} {act:?}", isa.name());
                assert!(channel(0).all(|i| out[i].is_nan()), "{what}: NaN kept");
                let top = if act == Activation::Relu { f32::INFINITY } else { 2.0 };
                let bottom = if act == Activation::Relu { 0.0 } else { -1.0 };
                assert!(channel(1).all(|i| out[i] == top), "{what}: +inf");
                assert!(channel(2).all(|i| out[i] == bottom), "{what}: -inf");
            }
        });
    }
}

#[test]
fn paths_agree_on_nan_even_where_they_pick_different_nans() {
    // Each sum meets two different NaNs: an input NaN and the default NaN of
    // inf · 0. Which one comes out is IEEE's choice per path; that one does is not.
    let mut conv = conv([1, 2, 3, 3], [2, 2, 2, 2], ConvParams::default());
    conv.input[0] = f32::INFINITY;
    conv.input[9] = f32::from_bits(0x7fc0_1234);
    conv.weight[0] = 0.0;
    let portable = conv.check();
    for_each_isa(|isa| {
        for algorithm in ALGORITHMS {
            let got = conv.run_on(isa, algorithm);
            let nan = |v: &[f32]| v.iter().map(|x| x.is_nan()).collect::<Vec<_>>();
            assert_eq!(nan(&got), nan(&portable), "{} {algorithm:?}", isa.name());
            if is_exact(isa) {
                for (g, p) in got.iter().zip(&portable).filter(|(g, _)| !g.is_nan()) {
                    assert_eq!(g.to_bits(), p.to_bits(), "{} {algorithm:?}", isa.name());
                }
            }
        }
    });
}

/// sgemm on a 3 × 2 times 2 × 4 product into a C with a guard float on
/// each side; returns the whole C buffer.
fn gemm(isa: Isa, a: &[f32; 6], b: &[f32; 8], alpha: f32, beta: f32, c: &[f32; 14]) -> [f32; 14] {
    let mut c = *c;
    // SAFETY: A is 3 × 2 row-major, B 2 × 4 row-major, C 3 × 4 row-major at
    // c[1..13]; all in bounds, C separate from A and B.
    unsafe {
        sgemm_with_isa(isa, 3, 2, 4, alpha, a.as_ptr(), 2, 1, b.as_ptr(), 4, 1, beta, c.as_mut_ptr().add(1), 4, 1)
            .unwrap();
    }
    c
}

#[test]
fn gemm_beta_zero_overwrites_nan_and_infinity_in_c() {
    let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let b = [1.0, 0.0, -1.0, 2.0, 0.5, 1.0, 0.0, -2.0];
    let mut c = [f32::NAN; 14];
    c[3] = f32::INFINITY;
    c[7] = f32::NEG_INFINITY;
    for_each_isa(|isa| {
        let out = gemm(isa, &a, &b, 1.0, 0.0, &c);
        assert!(out[0].is_nan() && out[13].is_nan(), "{}: guards", isa.name());
        let want = [2.0, 2.0, -1.0, -2.0, 5.0, 4.0, -3.0, -2.0, 8.0, 6.0, -5.0, -2.0];
        assert_eq!(out[1..13], want, "{}", isa.name());
    });
}

#[test]
fn gemm_beta_nonzero_keeps_nan_in_c_where_it_is() {
    let a = [1.0; 6];
    let b = [1.0; 8];
    let mut c = [1.0f32; 14];
    c[2] = f32::NAN; // C(0, 1)
    c[12] = f32::INFINITY; // C(2, 3)
    for_each_isa(|isa| {
        let out = gemm(isa, &a, &b, 1.0, 0.5, &c);
        for (i, v) in out[1..13].iter().enumerate() {
            match i {
                1 => assert!(v.is_nan(), "{}", isa.name()),
                11 => assert_eq!(*v, f32::INFINITY, "{}", isa.name()),
                _ => assert_eq!(*v, 2.5, "{} element {i}", isa.name()),
            }
        }
    });
}

#[test]
fn gemm_nan_and_infinity_in_a_and_b() {
    // Row 0 of A holds NaN: row 0 of C is NaN. A(1, 0) = inf meets B(0, j):
    // B(0, 0) = 0 gives NaN, B(0, 1) > 0 gives +inf, B(0, 2) < 0 gives -inf.
    let a = [f32::NAN, 1.0, f32::INFINITY, 1.0, 1.0, 1.0];
    let b = [0.0, 2.0, -3.0, 1.0, 1.0, 1.0, 1.0, f32::NEG_INFINITY];
    let c = [0.0; 14];
    for_each_isa(|isa| {
        let out = gemm(isa, &a, &b, 1.0, 0.0, &c);
        let name = isa.name();
        assert!(out[1..5].iter().all(|v| v.is_nan()), "{name}: NaN row");
        assert!(out[5].is_nan(), "{name}: inf · 0");
        assert_eq!((out[6], out[7]), (f32::INFINITY, f32::NEG_INFINITY), "{name}");
        // Column 3 of B holds -inf: rows 1 (inf + -inf) is NaN, row 2 is -inf.
        assert!(out[8].is_nan(), "{name}: inf + -inf");
        assert_eq!(&out[9..13], &[1.0, 3.0, -2.0, f32::NEG_INFINITY], "{name}");
    });
}

#[test]
fn gemm_alpha_zero_still_multiplies_infinities() {
    // alpha · (A B) with alpha = 0: an infinite product gives 0 · inf = NaN.
    let a = [f32::INFINITY, 0.0, 1.0, 1.0, 1.0, 1.0];
    let b = [1.0; 8];
    let c = [5.0; 14];
    for_each_isa(|isa| {
        let out = gemm(isa, &a, &b, 0.0, 1.0, &c);
        assert!(out[1..5].iter().all(|v| v.is_nan()), "{}: {out:?}", isa.name());
        assert!(out[5..13].iter().all(|&v| v == 5.0), "{}: {out:?}", isa.name());
    });
}

#[test]
fn gemm_k_zero_beta_zero_writes_zeros_over_nan() {
    let mut c = [f32::NAN; 6];
    for_each_isa(|isa| {
        // SAFETY: k == 0, so A and B are never read; C is 2 × 3 row-major in `c`.
        unsafe {
            let dangling = std::ptr::NonNull::<f32>::dangling().as_ptr();
            sgemm_with_isa(isa, 2, 0, 3, 1.0, dangling, 0, 0, dangling, 0, 0, 0.0, c.as_mut_ptr(), 3, 1).unwrap();
        }
        assert_eq!(c, [0.0; 6], "{}", isa.name());
        c = [f32::NAN; 6];
    });
}

#[test]
fn gemm_beta_zero_ignores_nan_in_strided_c() {
    // A 5 × 3 column-major, B 3 × 9 with both strides > 1 (neither rows nor
    // columns contiguous), C 5 × 9 with a negative column stride and a gap
    // between columns, NaN everywhere in and around C: partial tiles on every
    // path, each packing branch, and C written only where it lies.
    let (m, k, n) = (5usize, 3usize, 9usize);
    let a: Vec<f32> = (0..m * k).map(|i| i as f32 - 7.0).collect(); // (i, l) at i + l·m
    let b: Vec<f32> = (0..k * n * 6).map(|i| (i % 5) as f32 * 0.5).collect(); // (l, j) at 2l + 6j
    let (rsb, csb) = (2isize, 6isize);
    let (rsc, csc) = (1isize, -(m as isize + 2));
    let c_len = (n - 1) * (m + 2) + m;
    for_each_isa(|isa| {
        let mut c = vec![f32::NAN; c_len];
        // SAFETY: A(i, l) = a[i + l·m] < m·k; B(l, j) = b[2l + 6j] <= 2·2 + 6·8 < b.len();
        // C(i, j) = c[(n−1)(m+2) + i − j(m+2)], inside c_len and distinct.
        unsafe {
            let c0 = c.as_mut_ptr().add((n - 1) * (m + 2));
            sgemm_with_isa(isa, m, k, n, 1.0, a.as_ptr(), 1, m as isize, b.as_ptr(), rsb, csb, 0.0, c0, rsc, csc)
                .unwrap();
        }
        for (idx, v) in c.iter().enumerate() {
            let col_from_end = idx / (m + 2);
            let i = idx % (m + 2);
            if i < m {
                let j = n - 1 - col_from_end;
                let want: f32 = (0..k).map(|l| a[i + l * m] * b[2 * l + 6 * j]).sum();
                assert_eq!(*v, want, "{} C({i}, {j})", isa.name());
            } else {
                assert!(v.is_nan(), "{}: wrote into the gap at {idx}", isa.name());
            }
        }
    });
}
