//! conv2d against the direct f64 reference, on every path; output shapes;
//! flip; im2col / col2im; pinned edge cases.

mod common;

use common::{
    Check, ConvProblem, assert_close, bits, cases, conv_problem, conv_problem_wide, depthwise_problem,
    depthwise_problem_blocks, depthwise_problem_row_blocks, depthwise_problem_stride_2, depthwise_problem_strided,
    for_each_isa, pointwise_problem_tiny, values,
};
use convgemm::reference::input_tap;
use convgemm::{
    Activation, Algorithm, Conv2dPlan, ConvError, ConvOptions, ConvParams, Isa, col2im, conv2d, conv2d_output_shape,
    im2col, im2col_len,
};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(1000)))]

    #[test]
    fn conv2d_matches_reference_on_every_path(p in conv_problem()) {
        p.check();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(150)))]

    #[test]
    fn conv2d_with_many_channels_matches_reference_on_every_path(p in conv_problem_wide()) {
        p.check();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(150)))]

    #[test]
    fn depthwise_matches_reference_on_every_path(p in depthwise_problem()) {
        p.check();
    }

    #[test]
    fn strided_depthwise_matches_reference_on_every_path(p in depthwise_problem_strided()) {
        p.check();
    }

    #[test]
    fn stride_2_depthwise_matches_reference_on_every_path(p in depthwise_problem_stride_2()) {
        p.check();
    }

    #[test]
    fn tiny_plane_pointwise_matches_reference_on_every_path(p in pointwise_problem_tiny()) {
        p.check();
    }

    #[test]
    fn blocked_depthwise_matches_reference_on_every_path(p in depthwise_problem_blocks()) {
        p.check();
    }

    #[test]
    fn rolling_row_blocks_depthwise_matches_reference_on_every_path(p in depthwise_problem_row_blocks()) {
        p.check();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(200)))]

    #[test]
    fn plan_reused_equals_one_shot_calls(p in conv_problem(), relu in any::<bool>()) {
        let options = ConvOptions {
            activation: if relu { Activation::Relu } else { Activation::None },
            ..ConvOptions::default()
        };
        let Ok(len) = p.output_len() else { return Ok(()) };
        let plan = Conv2dPlan::new(&p.weight, p.weight_shape, p.bias.as_deref(), &p.params, &options).unwrap();
        let other = ConvProblem { input: values(p.input.len(), 99), ..p.clone() };
        for q in [&p, &other, &p, &other] {
            let mut out = vec![f32::NAN; len];
            plan.run(&q.input, q.input_shape, &mut out).unwrap();
            prop_assert_eq!(bits(&out), bits(&q.run(&options).unwrap()));
        }
    }
}

#[test]
fn plan_checks_input_against_its_weights() {
    let plan =
        Conv2dPlan::new(&[0.0; 2 * 3 * 9], [2, 3, 3, 3], None, &ConvParams::default(), &Default::default()).unwrap();
    let mut out = vec![5.0f32; 2 * 4 * 4];
    let err = plan.run(&[0.0; 4 * 36], [1, 4, 6, 6], &mut out).unwrap_err();
    assert!(matches!(err, ConvError::ShapeMismatch { expected: 4, found: 3, .. }), "{err:?}");
    assert!(out.iter().all(|&v| v == 5.0));
    assert_eq!(plan.output_shape([1, 3, 6, 6]).unwrap(), [1, 2, 4, 4]);
    assert!(Conv2dPlan::new(&[0.0; 5], [2, 3, 3, 3], None, &ConvParams::default(), &Default::default()).is_err());
}

fn params(stride: usize, pad: usize, dilation: usize, groups: usize) -> ConvParams {
    ConvParams {
        stride: [stride, stride],
        padding: [pad; 4],
        dilation: [dilation, dilation],
        groups,
        ..ConvParams::default()
    }
}

#[test]
fn output_shape_of_known_layers() {
    let lenet = conv2d_output_shape([1, 1, 32, 32], [6, 1, 5, 5], &ConvParams::default()).unwrap();
    assert_eq!(lenet, [1, 6, 28, 28]);
    let alexnet = conv2d_output_shape([1, 3, 227, 227], [96, 3, 11, 11], &params(4, 0, 1, 1)).unwrap();
    assert_eq!(alexnet, [1, 96, 55, 55]);
    let resnet = conv2d_output_shape([1, 3, 224, 224], [64, 3, 7, 7], &params(2, 3, 1, 1)).unwrap();
    assert_eq!(resnet, [1, 64, 112, 112]);
    // Asymmetric padding and dilation: h: (17 + 1 + 2 - 5) / 2 + 1 = 8, w: (19 + 0 + 1 - 5) / 2 + 1 = 8.
    let mut p = params(2, 0, 2, 2);
    p.padding = [1, 0, 2, 1];
    assert_eq!(conv2d_output_shape([1, 8, 17, 19], [12, 4, 3, 3], &p).unwrap(), [1, 12, 8, 8]);
}

// Pinned cases from the edge list of STYLE.md, each through every path.
#[test]
fn conv_one_by_one() {
    ConvProblem::seeded([2, 5, 7, 9], [3, 5, 1, 1], ConvParams::default(), true, 1).check();
}
/// A vertical dilation of 40,000 (and padding to match): the implicit
/// packer's band of the few windows would span 40,005 rows, so the block
/// takes the in-place gather path instead (a fuzzed call with a band of
/// 91 GB ran out of memory). Every path against the reference.
#[test]
fn huge_dilation_takes_the_in_place_packer() {
    let params = ConvParams { padding: [20_000, 1, 20_000, 1], dilation: [40_000, 1], ..ConvParams::default() };
    ConvProblem::seeded([1, 2, 5, 6], [3, 2, 2, 2], params, true, 7).check();
}

/// Plans that prefer the direct path (32 output channels, K = 6·5·5 = 150)
/// keep only its form of the weights. On an input the path does not take
/// (a huge dilation makes its band too big) the GEMM path runs on weights
/// repacked from that form; on one it takes, the direct path runs. Both
/// equal the one-shot calls, which `check` holds to the reference.
#[test]
fn direct_plan_falls_back_on_inputs_it_does_not_take() {
    let dilated = ConvParams { padding: [20_000, 2, 20_000, 2], dilation: [10_000, 1], ..ConvParams::default() };
    let far = ConvProblem::seeded([1, 6, 5, 9], [32, 6, 5, 5], dilated, true, 21);
    let near = ConvProblem::seeded([2, 6, 9, 9], [32, 6, 5, 5], ConvParams::default(), true, 22);
    for p in [&far, &near] {
        p.check();
        let plan =
            Conv2dPlan::new(&p.weight, p.weight_shape, p.bias.as_deref(), &p.params, &Default::default()).unwrap();
        for _ in 0..2 {
            let mut out = vec![f32::NAN; p.output_len().unwrap()];
            plan.run(&p.input, p.input_shape, &mut out).unwrap();
            assert_eq!(bits(&out), bits(&p.run(&Default::default()).unwrap()));
        }
    }
}

/// Unpadded problems with stride 1 along rows, where the direct path reads
/// the input in place as its band: several row blocks (60 × 40 × 20
/// outputs), two K chunks (300 channels of a 1 × 1 kernel on a 7 × 7 image,
/// whose tiles run across output rows), LeNet's conv2 on a batch, a
/// dilated 3 × 1 kernel, and stride 2 down the columns (2 × 3 and 2 × 1). Every path and ISA
/// against the reference.
#[test]
fn direct_reads_unpadded_inputs_in_place() {
    let strided = ConvParams { stride: [2, 1], ..ConvParams::default() };
    let dilated = ConvParams { dilation: [2, 1], ..ConvParams::default() };
    for (i, (input, weight, params)) in [
        ([1, 12, 60, 40], [20, 12, 3, 3], ConvParams::default()),
        ([1, 300, 7, 7], [40, 300, 1, 1], ConvParams::default()),
        ([2, 6, 14, 14], [16, 6, 5, 5], ConvParams::default()),
        ([1, 8, 6, 9], [17, 8, 3, 1], dilated),
        ([1, 5, 11, 13], [18, 5, 2, 3], strided),
        ([1, 5, 11, 13], [18, 5, 2, 1], strided),
    ]
    .into_iter()
    .enumerate()
    {
        ConvProblem::seeded(input, weight, params, i % 2 == 0, 30 + i as u64).check();
    }
}

/// Depthwise kernels of more taps than the direct path's small tap table
/// (32): 6×6 and 7×7, padded and dilated, through every path and ISA.
#[test]
fn depthwise_large_kernels_match_reference() {
    for (k, pad, dilation) in [(6, 2, 1), (7, 3, 1), (7, 3, 2)] {
        let params = ConvParams { padding: [pad; 4], dilation: [dilation; 2], groups: 4, ..ConvParams::default() };
        ConvProblem::seeded([1, 4, 19, 23], [4, 1, k, k], params, true, k as u64).check();
    }
}

/// Kernels of 64 taps (the band's tap pattern on the stack) and more (on
/// the heap), over several K chunks (9×9 and 5×5: chunks that start inside
/// a channel), padded, dilated and at stride 2: every path and ISA.
#[test]
fn dense_large_kernels_match_reference() {
    for (k, stride, pad, dilation) in [(8, 1, 3, 1), (9, 1, 4, 1), (9, 2, 2, 1), (5, 1, 4, 2)] {
        let params =
            ConvParams { stride: [stride; 2], padding: [pad; 4], dilation: [dilation; 2], ..ConvParams::default() };
        ConvProblem::seeded([1, 7, 13, 15], [18, 7, k, k], params, true, 20 + k as u64).check();
    }
}

#[test]
fn conv_kernel_equals_input() {
    ConvProblem::seeded([1, 3, 5, 4], [2, 3, 5, 4], ConvParams::default(), true, 2).check();
}
#[test]
fn conv_stride_larger_than_kernel() {
    ConvProblem::seeded([1, 2, 13, 11], [3, 2, 2, 2], params(4, 0, 1, 1), false, 3).check();
}
#[test]
fn conv_dilation_with_padding() {
    ConvProblem::seeded([1, 3, 9, 10], [4, 3, 3, 3], params(1, 2, 2, 1), true, 4).check();
}
#[test]
fn conv_asymmetric_padding() {
    let p = ConvParams { padding: [0, 3, 2, 1], ..ConvParams::default() };
    ConvProblem::seeded([1, 2, 6, 7], [3, 2, 3, 2], p, true, 5).check();
}
#[test]
fn conv_one_by_one_output() {
    ConvProblem::seeded([1, 4, 3, 3], [5, 4, 3, 3], ConvParams::default(), true, 6).check();
}
#[test]
fn conv_depthwise_dilated() {
    ConvProblem::seeded([2, 6, 11, 12], [6, 1, 3, 3], params(1, 2, 2, 6), true, 7).check();
}
#[test]
fn conv_groups_two_batch_three() {
    ConvProblem::seeded([3, 4, 8, 8], [6, 2, 3, 3], params(2, 1, 1, 2), true, 8).check();
}
#[test]
fn conv_k_past_one_chunk() {
    // K = 40·3·3 = 360 > 256: two chunks, with a pixel count past NR.
    ConvProblem::seeded([1, 40, 9, 9], [13, 40, 3, 3], params(1, 1, 1, 1), true, 9).check();
}
#[test]
fn conv_many_output_channels() {
    // M = 400 rows of prepacked weights: more than the L2 budget, so the
    // engine takes the classic jc/pc/ic loop order with prepacked A.
    ConvProblem::seeded([1, 3, 9, 7], [400, 3, 3, 3], params(1, 1, 1, 1), true, 14).check();
}
#[test]
fn conv_empty_batch_and_zero_channels() {
    ConvProblem::seeded([0, 3, 5, 5], [2, 3, 3, 3], ConvParams::default(), true, 10).check();
    ConvProblem::seeded([1, 3, 5, 5], [0, 3, 3, 3], ConvParams::default(), true, 11).check();
}
#[test]
fn conv_edge_layer_of_the_suite() {
    let mut p = params(2, 0, 2, 2);
    p.padding = [1, 0, 2, 1];
    ConvProblem::seeded([1, 8, 17, 19], [12, 4, 3, 3], p, true, 12).check();
}

#[test]
fn flip_equals_cross_correlation_with_rotated_kernel() {
    let mut p = ConvProblem::seeded([2, 4, 9, 8], [6, 2, 3, 4], params(2, 1, 2, 2), true, 13);
    p.params.flip = true;
    let flipped = p.run(&Default::default()).unwrap();
    // Rotate each kh × kw kernel by 180 degrees by hand: (u, v) -> (kh-1-u, kw-1-v).
    let [c_out, cg, kh, kw] = p.weight_shape;
    let mut rotated = vec![0.0; p.weight.len()];
    for o in 0..c_out * cg {
        for u in 0..kh {
            for v in 0..kw {
                rotated[(o * kh + u) * kw + v] = p.weight[(o * kh + kh - 1 - u) * kw + kw - 1 - v];
            }
        }
    }
    p.params.flip = false;
    p.weight = rotated;
    assert_eq!(bits(&flipped), bits(&p.run(&Default::default()).unwrap()));
}

#[test]
fn flip_on_one_channel_is_textbook_convolution() {
    // Textbook 2-D convolution, "full" sum restricted to the valid region:
    // y[i, j] = Σ_u Σ_v x[i + kh-1 - u, j + kw-1 - v] · k[u, v].
    let x: Vec<f32> = (0..20).map(|v| v as f32).collect(); // 4 × 5
    let kernel = [1.0f32, 2.0, 0.0, -1.0, 0.5, 3.0]; // 2 × 3, asymmetric
    let p = ConvParams { flip: true, ..ConvParams::default() };
    let mut y = vec![0.0f32; 3 * 3];
    conv2d(&x, [1, 1, 4, 5], &kernel, [1, 1, 2, 3], None, &p, &mut y).unwrap();
    for i in 0..3 {
        for j in 0..3 {
            let mut want = 0.0f32;
            for u in 0..2 {
                for v in 0..3 {
                    want += x[(i + 1 - u) * 5 + (j + 2 - v)] * kernel[u * 3 + v];
                }
            }
            assert_eq!(y[i * 3 + j], want, "({i}, {j})");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(200)))]

    #[test]
    fn im2col_matches_the_defining_formula(p in conv_problem()) {
        let kernel = [p.weight_shape[2], p.weight_shape[3]];
        let Ok(len) = im2col_len(p.input_shape, kernel, &p.params) else { return Ok(()) };
        let mut cols = vec![f32::NAN; len];
        im2col(&p.input, p.input_shape, kernel, &p.params, &mut cols).unwrap();
        let [batch, c_in, ..] = p.input_shape;
        let [_, _, h_out, w_out] = conv2d_output_shape(p.input_shape, p.weight_shape, &p.params).unwrap();
        let mut idx = 0;
        for n in 0..batch {
            for c in 0..c_in {
                for u in 0..kernel[0] {
                    for v in 0..kernel[1] {
                        for oy in 0..h_out {
                            for ox in 0..w_out {
                                let want = input_tap(&p.input, p.input_shape, &p.params, n, c, oy, ox, u, v);
                                prop_assert_eq!(cols[idx].to_bits(), want.to_bits(), "index {}", idx);
                                idx += 1;
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn col2im_of_im2col_counts_windows(p in conv_problem()) {
        let kernel = [p.weight_shape[2], p.weight_shape[3]];
        let Ok(len) = im2col_len(p.input_shape, kernel, &p.params) else { return Ok(()) };
        // With x = all ones, im2col then col2im gives each pixel's window count;
        // with x arbitrary it gives x times that count.
        let ones = vec![1.0f32; p.input.len()];
        let mut cols = vec![0.0; len];
        let mut counts = vec![0.0; p.input.len()];
        im2col(&ones, p.input_shape, kernel, &p.params, &mut cols).unwrap();
        col2im(&cols, p.input_shape, kernel, &p.params, &mut counts).unwrap();
        // Count windows per pixel independently, from the tap formula on an index image.
        let index_image: Vec<f32> = (0..p.input.len()).map(|i| i as f32 + 1.0).collect();
        let [batch, c_in, ..] = p.input_shape;
        let [_, _, h_out, w_out] = conv2d_output_shape(p.input_shape, p.weight_shape, &p.params).unwrap();
        let mut want = vec![0.0f32; p.input.len()];
        for n in 0..batch {
            for c in 0..c_in {
                for u in 0..kernel[0] {
                    for v in 0..kernel[1] {
                        for oy in 0..h_out {
                            for ox in 0..w_out {
                                let t = input_tap(&index_image, p.input_shape, &p.params, n, c, oy, ox, u, v);
                                if t != 0.0 {
                                    want[t as usize - 1] += 1.0;
                                }
                            }
                        }
                    }
                }
            }
        }
        prop_assert_eq!(&counts, &want);
        let mut back = vec![0.0; p.input.len()];
        im2col(&p.input, p.input_shape, kernel, &p.params, &mut cols).unwrap();
        col2im(&cols, p.input_shape, kernel, &p.params, &mut back).unwrap();
        for i in 0..back.len() {
            let expect = p.input[i] * want[i];
            prop_assert!((back[i] - expect).abs() <= 1e-6 * want[i] * (1.0 + expect.abs()), "pixel {}", i);
        }
    }
}

#[test]
fn quickstart_scale_layer_matches_reference() {
    // An AlexNet conv2-like layer at reduced size, K = 48·25 = 1200 (five chunks).
    let p = ConvProblem::seeded([1, 48, 13, 13], [32, 48, 5, 5], params(1, 2, 1, 1), true, 21);
    let got = p.run(&Default::default()).unwrap();
    assert_close("alexnet-like", &p.reference().unwrap(), &got);
}

/// A plan names the algorithm and the kernel it runs, in the crate's
/// kernel names (the strings of the source and the bench ids).
#[test]
fn plan_names_its_algorithm_and_kernel() {
    let depthwise = ConvParams { padding: [1; 4], groups: 8, ..ConvParams::default() };
    let strided = ConvParams { stride: [2, 2], ..depthwise };
    let same = ConvParams { padding: [1; 4], ..ConvParams::default() };
    for_each_isa(|isa| {
        let opts = ConvOptions { isa, ..ConvOptions::default() };
        let dw = Conv2dPlan::new(&values(72, 1), [8, 1, 3, 3], None, &depthwise, &opts).unwrap();
        let dw_s2 = Conv2dPlan::new(&values(72, 1), [8, 1, 3, 3], None, &strided, &opts).unwrap();
        assert_eq!(dw.algorithm([1, 8, 20, 20]).unwrap(), Algorithm::Depthwise);
        assert_eq!(dw_s2.algorithm([1, 8, 20, 20]).unwrap(), Algorithm::Depthwise);
        let (rolling, plane) = match isa {
            Isa::Avx512 => ("dwconv_3x3_rolling_avx512", "dwconv_blocked_avx512"),
            Isa::Avx2Fma => ("dwconv_blocked_avx2", "dwconv_blocked_avx2"),
            Isa::Neon => ("dwconv_blocked_neon", "dwconv_blocked_neon"),
            Isa::Portable => ("dwconv_plane_portable", "dwconv_plane_portable"),
            _ => ("dwconv_plane_portable_unfused", "dwconv_plane_portable_unfused"),
        };
        assert_eq!(dw.kernel_name([1, 8, 20, 20]).unwrap(), rolling, "{}", isa.name());
        // At stride 2: AVX-512's rolling rows on rows of more than 8
        // outputs (20 wide: 10), its paired rows on rows of 4 to 7 (12
        // wide: 6), the blocks of channels on the other paths.
        let (rolling_s2, paired_s2) =
            if isa == Isa::Avx512 { (rolling, "dwconv_paired_rows_avx512") } else { (plane, plane) };
        assert_eq!(dw_s2.kernel_name([1, 8, 20, 20]).unwrap(), rolling_s2, "{}", isa.name());
        assert_eq!(dw_s2.kernel_name([1, 8, 12, 12]).unwrap(), paired_s2, "{}", isa.name());
        let dense = Conv2dPlan::new(&values(64 * 64 * 9, 2), [64, 64, 3, 3], None, &same, &opts).unwrap();
        let want = if isa == Isa::Avx512 { Algorithm::Direct } else { Algorithm::Implicit };
        assert_eq!(dense.algorithm([1, 64, 14, 14]).unwrap(), want, "{}", isa.name());
        assert_eq!(dense.kernel_name([1, 64, 14, 14]).unwrap(), isa.kernel_name());
        let one = Conv2dPlan::new(&values(64 * 64, 3), [64, 64, 1, 1], None, &ConvParams::default(), &opts).unwrap();
        assert_eq!(one.algorithm([1, 64, 14, 14]).unwrap(), Algorithm::Pointwise, "{}", isa.name());
        // A 1×1 convolution on a 1×1 plane (squeeze-and-excite): matrix-vector products.
        let gemv = match isa {
            Isa::Avx512 | Isa::Avx2Fma => "gemv_avx2",
            Isa::Neon => "gemv_neon",
            _ => "gemv_portable",
        };
        assert_eq!(one.algorithm([1, 64, 1, 1]).unwrap(), Algorithm::Pointwise, "{}", isa.name());
        assert_eq!(one.kernel_name([1, 64, 1, 1]).unwrap(), gemv, "{}", isa.name());
        let wide = Conv2dPlan::new(&values(64 * 256, 3), [64, 256, 1, 1], None, &ConvParams::default(), &opts).unwrap();
        assert_eq!(wide.algorithm([1, 256, 1, 1]).unwrap(), Algorithm::Pointwise, "{}", isa.name());
        assert!(matches!(dense.algorithm([1, 63, 14, 14]), Err(ConvError::ShapeMismatch { .. })));
    });
}

/// Classifier heads (1024 → 1000 on 1×1 and 2×1 planes, 4 MB of weights):
/// the matrix-vector path splits the weights' panels among the threads
/// (three here, so the parts differ in size); every path and thread count
/// gives the portable path's bits, within the reference's bound.
#[test]
fn classifier_heads_split_among_threads() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
    for (i, hw) in [[1, 1], [2, 1]].into_iter().enumerate() {
        let p = ConvProblem::seeded(
            [1, 1024, hw[0], hw[1]],
            [1000, 1024, 1, 1],
            ConvParams::default(),
            true,
            70 + i as u64,
        );
        pool.install(|| p.check());
    }
}

/// Grouped 1×1 layers of batch 1 in fewer than 4 groups a thread, on
/// planes of at least 256 pixels a part (ShuffleNet's 24 → 112 in 4
/// groups, 3 of an odd width, planes whose rows do not split evenly, 2
/// groups on fewer rows than the parts): the pointwise GEMMs run in
/// parts of their rows, each item every group of its rows (NCHW;
/// channels-last keeps a group a job); on 2 and 3 threads every path's
/// bits, within the reference's bound, in both layouts. (A 7² plane, too
/// small for parts, runs a group an item.)
#[test]
fn grouped_pointwise_in_parts_of_rows() {
    // (Each past the 1 MFLOP from which a layer's jobs go to threads; all
    // but the 7² case past 4 · 3 · 256 pixels.)
    let cases = [
        ([1, 24, 56, 60], [112, 6, 1, 1], 4),
        ([1, 24, 57, 63], [81, 8, 1, 1], 3),
        ([1, 16, 5, 640], [64, 8, 1, 1], 2),
        ([1, 272, 7, 7], [272, 68, 1, 1], 4),
    ];
    for threads in [2, 3] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        for (i, (x, w, groups)) in cases.into_iter().enumerate() {
            let params = ConvParams { groups, ..ConvParams::default() };
            let p = ConvProblem::seeded(x, w, params, i % 2 == 0, 110 + i as u64);
            pool.install(|| p.check());
        }
    }
}

/// Channels-last grouped 1×1 layers of up to 64 input and 48 output
/// channels a group run every group of a strip of pixels a call: one to
/// three AVX-512 vectors of output channels a group, the last a half one
/// or not, one to four AVX2 ones, a last group and a last pixel on their
/// own, 64 input channels, a batch of two; every path's bits, on 1 and 3
/// threads.
#[test]
fn grouped_pointwise_channels_last_every_register_block() {
    let cases = [
        ([1, 16, 9, 11], [48, 4, 1, 1], 4),
        ([2, 40, 13, 7], [40, 20, 1, 1], 2),
        ([1, 128, 6, 9], [64, 64, 1, 1], 2),
        ([1, 15, 5, 7], [5, 3, 1, 1], 5),
        ([1, 68, 7, 9], [68, 34, 1, 1], 2),
        ([1, 12, 6, 5], [90, 6, 1, 1], 2),
    ];
    let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
    for (i, (x, w, groups)) in cases.into_iter().enumerate() {
        let params = ConvParams { groups, ..ConvParams::default() };
        let p = ConvProblem::seeded(x, w, params, i % 2 == 1, 130 + i as u64);
        p.check();
        pool.install(|| p.check());
    }
}

/// Weights beyond L2 (3 MiB, and 1.7 MiB: past Zen's 1 MiB) on small planes: the direct path
/// takes blocks as large as half of L2 holds, so every row of the plane
/// lies in one block; its bits are still every other path's, on 1 and 3
/// threads (`check` runs both).
#[test]
fn wide_weights_on_small_planes() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
    let one_by_one = ConvProblem::seeded([1, 384, 5, 4], [2048, 384, 1, 1], ConvParams::default(), true, 80);
    let padded = ConvProblem::seeded([1, 96, 4, 5], [512, 96, 3, 3], params(1, 1, 1, 1), true, 81);
    for p in [one_by_one, padded] {
        pool.install(|| p.check());
    }
}

/// One panel of output channels (at most the kernel's 32) on a plane that
/// fits one block (DenseNet's 128 → 32 3×3 on 7², 832 → 32 1×1 on 7², a
/// 2-row plane): the direct path shares the rows among the threads; 2 and
/// 3 threads give every other path's bits, within the reference's bound.
#[test]
fn one_panel_small_planes_share_rows_among_threads() {
    let dense = ConvProblem::seeded([1, 128, 7, 7], [32, 128, 3, 3], params(1, 1, 1, 1), true, 95);
    let one_by_one = ConvProblem::seeded([1, 832, 7, 7], [32, 832, 1, 1], ConvParams::default(), true, 96);
    let two_rows = ConvProblem::seeded([1, 160, 2, 9], [24, 160, 3, 3], params(1, 1, 1, 1), false, 97);
    for threads in [2, 3] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        for p in [&dense, &one_by_one, &two_rows] {
            pool.install(|| p.check());
        }
    }
}

/// First layers large enough that the in-place band path (`Implicit` on 1
/// to 4 input channels) cuts the image into several blocks of output rows,
/// shared among 3 threads: a 3×3 stride-2 layer and a 7×7 stride-2 one
/// with asymmetric padding on a batch of two; every path's bits, within the
/// reference's bound.
#[test]
fn first_layers_in_blocks_of_rows() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
    let three = ConvProblem::seeded([1, 3, 300, 301], [16, 3, 3, 3], params(2, 1, 1, 1), true, 90);
    let mut p = params(2, 0, 1, 1);
    p.padding = [3, 2, 1, 3];
    let seven = ConvProblem::seeded([2, 3, 131, 140], [8, 3, 7, 7], p, false, 91);
    for p in [three, seven] {
        pool.install(|| p.check());
    }
}

/// 1×1 layers on planes of at most 64 output pixels, whose direct path
/// reads a pixel-major copy of the NCHW input: K past one chunk with a
/// channel count off the 8 × 8 transposes (300), padding on every side
/// (the copy's rows then go one by one, zeros around them), blocks
/// wholly in the padding, and strides past 1.
/// The direct path on a plane of one block of rows whose panels do not
/// share out evenly over two threads (3 panels of 80 channels): the
/// threads' shares of (panel, row) units meet inside a panel.
#[test]
fn small_planes_split_by_panels_and_rows() {
    ConvProblem::seeded([1, 64, 7, 7], [80, 64, 3, 3], params(1, 1, 1, 1), true, 101).check();
}

#[test]
fn one_by_one_on_small_planes_reads_a_transposed_copy() {
    let chunks = ConvProblem::seeded([2, 300, 7, 7], [40, 300, 1, 1], ConvParams::default(), true, 95);
    let mut p = params(1, 0, 1, 1);
    p.padding = [1, 0, 2, 1];
    let padded = ConvProblem::seeded([1, 20, 6, 5], [24, 20, 1, 1], p, false, 96);
    // Blocks of one output row (4096 channels) under a top padding of two:
    // the first blocks' copies are all padding (found in review).
    let mut p = params(1, 0, 1, 1);
    p.padding = [2, 0, 2, 0];
    let tall_padding = ConvProblem::seeded([1, 8, 1, 8], [4096, 8, 1, 1], p, true, 97);
    // Strides past 1 (ResNet's projections): a copy of only the pixels the
    // windows read (channels-last without padding: read in place), with
    // two K chunks, with padding, with groups.
    let strided = ConvProblem::seeded([2, 300, 13, 14], [40, 300, 1, 1], params(2, 0, 1, 1), true, 98);
    let mut p = params(1, 0, 1, 1);
    (p.stride, p.padding) = ([2, 3], [1, 0, 2, 1]);
    let strided_padded = ConvProblem::seeded([1, 20, 9, 8], [24, 20, 1, 1], p, false, 99);
    let strided_groups = ConvProblem::seeded([1, 64, 10, 10], [48, 16, 1, 1], params(2, 0, 1, 4), true, 100);
    for p in [chunks, padded, tall_padding, strided, strided_padded, strided_groups] {
        p.check();
    }
}
