//! Channels-last (`Layout::Nhwc`) beyond the property tests of `conv.rs`
//! (which run every problem in both layouts): Winograd, plans across input
//! sizes, im2col / col2im, gradients of grouped layers in parallel, global
//! pooling and the bias gradient.

mod common;

use common::*;
use convgemm::reference::{Reference, nchw_to};
use convgemm::*;

fn nhwc(p: ConvParams) -> ConvParams {
    ConvParams { layout: Layout::Nhwc, ..p }
}

/// Winograd (forced, under Relaxed) gives in channels-last the NCHW bits,
/// permuted, on every path and thread setting; and stays within its bound.
/// Two groups; from 8 channels per group the channels-last transforms take
/// eight at a time (11 and 10: one eight and a rest; 16 and 12), and a
/// padding of 3 sends the output through its pixel-by-pixel path.
#[test]
fn winograd_channels_last_equals_nchw() {
    let pad = ConvParams { padding: [1, 0, 2, 1], groups: 2, ..ConvParams::default() };
    let wide = ConvParams { padding: [3, 1, 0, 2], ..pad };
    for (input_shape, c_out, pad) in [
        ([2, 8, 11, 13], 6, pad),
        ([1, 4, 30, 9], 4, pad),
        ([1, 2, 100, 97], 2, pad),
        ([2, 22, 15, 17], 20, pad),
        ([1, 32, 29, 30], 24, pad),
        ([1, 16, 7, 7], 32, pad),
        ([1, 22, 13, 12], 20, wide),
    ] {
        let p = ConvProblem::seeded(input_shape, [c_out, input_shape[1] / 2, 3, 3], pad, true, 7);
        let winograd =
            ConvOptions { algorithm: Algorithm::Winograd, precision: Precision::Relaxed, ..Default::default() };
        channels_last_gives_nchw_bits(&p, winograd, &format!("{input_shape:?}"), |reference, got| {
            // Loose: Winograd's bound is per tile (tests/winograd.rs); this
            // only shows the channels-last outputs are the right ones.
            assert!(reference.first_mismatch(got, 1e-3).is_none(), "{input_shape:?}");
        });
    }
}

/// `p` in channels-last under `options` on every exact path and thread
/// setting: the bits of its NCHW run, permuted; `check` then holds against
/// the f64 reference.
fn channels_last_gives_nchw_bits(
    p: &ConvProblem,
    options: ConvOptions,
    what: &str,
    check: impl Fn(&Reference, &[f32]),
) {
    let q = p.in_layout(Layout::Nhwc);
    let shape = p.output_shape().unwrap();
    let reference = q.reference().unwrap();
    for_each_isa(|isa| {
        if !is_exact(isa) {
            return;
        }
        for threads in [Threads::Pool, Threads::Single] {
            let opts = ConvOptions { isa, threads, ..options };
            let want = relayout(&p.run(&opts).unwrap(), shape, Layout::Nchw, Layout::Nhwc);
            let got = q.run(&opts).unwrap();
            assert_eq!(bits(&got), bits(&want), "{} {threads:?} {what}", isa.name());
            check(&reference, &got);
        }
    });
}

/// One channels-last plan on inputs of several sizes, each equal to a
/// one-shot call and within the bound of the reference.
#[test]
fn channels_last_plan_reused_across_sizes() {
    let params = nhwc(ConvParams { padding: [1; 4], stride: [2, 1], ..ConvParams::default() });
    let w = values(24 * 8 * 9, 3);
    let plan = Conv2dPlan::new(&w, [24, 8, 3, 3], None, &params, &ConvOptions::default()).unwrap();
    for (i, hw) in [5usize, 17, 33, 8].into_iter().enumerate() {
        let p = ConvProblem {
            input_shape: [2, 8, hw, hw + 3],
            weight_shape: [24, 8, 3, 3],
            params,
            input: values(2 * 8 * hw * (hw + 3), 10 + i as u64),
            weight: w.clone(),
            bias: None,
        };
        let mut out = vec![f32::NAN; p.output_len().unwrap()];
        plan.run(&p.input, p.input_shape, &mut out).unwrap();
        assert_eq!(bits(&out), bits(&p.run(&ConvOptions::default()).unwrap()));
        assert_close(&format!("{hw}"), &p.reference().unwrap(), &out);
    }
}

/// im2col reads a channels-last image into the same columns (rows `(c, u, v)`,
/// columns output pixels) as its NCHW copy; col2im adds them back in the layout.
#[test]
fn im2col_and_col2im_read_either_layout() {
    let params = ConvParams { padding: [2, 0, 1, 1], stride: [2, 1], dilation: [1, 2], ..ConvParams::default() };
    let shape = [2, 3, 9, 8];
    let x = values(shape.iter().product(), 5);
    let len = im2col_len(shape, [3, 2], &params).unwrap();
    let (mut a, mut b) = (vec![0.0; len], vec![0.0; len]);
    im2col(&x, shape, [3, 2], &params, &mut a).unwrap();
    im2col(&relayout(&x, shape, Layout::Nchw, Layout::Nhwc), shape, [3, 2], &nhwc(params), &mut b).unwrap();
    assert_eq!(bits(&a), bits(&b));
    let cols = values(len, 6);
    let (mut y1, mut y2) = (vec![0.0; x.len()], vec![0.0; x.len()]);
    col2im(&cols, shape, [3, 2], &params, &mut y1).unwrap();
    col2im(&cols, shape, [3, 2], &nhwc(params), &mut y2).unwrap();
    assert_eq!(bits(&y2), bits(&relayout(&y1, shape, Layout::Nchw, Layout::Nhwc)));
}

/// The reference's permutation agrees with the tests' (two independent
/// index formulas).
#[test]
fn reference_permutation_is_relayout() {
    let shape = [2, 3, 4, 5];
    let v = values(120, 1);
    let want = relayout(&v, shape, Layout::Nchw, Layout::Nhwc);
    let got = nchw_to(Layout::Nhwc, v.iter().map(|&x| x as f64).collect(), shape);
    assert_eq!(got, want.iter().map(|&x| x as f64).collect::<Vec<_>>());
}

/// Global average pooling and the bias gradient (which take a layout, not
/// params) give in channels-last the NCHW bits.
#[test]
fn global_pool_and_bias_gradient_read_channels_last() {
    // 300 pixels: the bias gradient's chunks of 256 terms straddle images;
    // 70 channels: the global pool's blocks of 64 channels and a rest.
    for shape in [[2, 5, 15, 20], [3, 70, 3, 5]] {
        let (planes, c) = (shape[0] * shape[1], shape[1]);
        let x = values(shape.iter().product(), 4);
        let x_nhwc = relayout(&x, shape, Layout::Nchw, Layout::Nhwc);
        let (mut a, mut b) = (vec![f32::NAN; planes], vec![f32::NAN; planes]);
        global_avg_pool2d(&x, shape, &mut a).unwrap();
        global_avg_pool2d_with_layout(&x_nhwc, shape, Layout::Nhwc, &mut b).unwrap();
        assert_eq!(bits(&a), bits(&b));
        let window = PoolParams::new([shape[2], shape[3]]);
        let reference = convgemm::reference::pool2d_direct(&x, shape, &window, false).unwrap().0;
        assert_close("global_avg_pool2d NHWC", &reference, &b);
        let (mut a, mut b) = (vec![f32::NAN; c], vec![f32::NAN; c]);
        conv2d_backward_bias(&x, shape, &mut a).unwrap();
        conv2d_backward_bias_with_layout(&x_nhwc, shape, Layout::Nhwc, &mut b).unwrap();
        assert_eq!(bits(&a), bits(&b));
        let reference = convgemm::reference::conv2d_backward_bias_direct(&x, shape).unwrap();
        assert_close("conv2d_backward_bias", &reference, &a);
        // Errors name the buffer and leave the output untouched.
        let mut out = vec![7.0f32; planes];
        let e = global_avg_pool2d_with_layout(&x_nhwc[1..], shape, Layout::Nhwc, &mut out).unwrap_err();
        assert!(e.to_string().contains("input") && out.iter().all(|&v| v == 7.0), "{e}");
    }
}

/// The gradients on a channels-last plan's geometry with groups, batch and
/// threads: the NCHW bits, permuted (the property tests cover small shapes).
#[test]
fn channels_last_gradients_of_a_grouped_layer_in_parallel() {
    // Stride 1 "same" (the windows formulation) and stride 2 (columns), 2 groups.
    for stride in [1, 2] {
        let params = ConvParams { stride: [stride; 2], padding: [1; 4], groups: 2, ..ConvParams::default() };
        let p = ConvProblem::seeded([3, 24, 20, 18], [32, 12, 3, 3], params, false, 9);
        let out_shape = conv2d_output_shape(p.input_shape, p.weight_shape, &params).unwrap();
        let dy = values(out_shape.iter().product(), 10);
        let q = p.in_layout(Layout::Nhwc);
        let dy_nhwc = relayout(&dy, out_shape, Layout::Nchw, Layout::Nhwc);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        pool.install(|| {
            let (mut a, mut b) = (vec![f32::NAN; p.input.len()], vec![f32::NAN; p.input.len()]);
            conv2d_backward_input(&dy, out_shape, &p.weight, p.weight_shape, &params, &mut a, p.input_shape).unwrap();
            conv2d_backward_input(&dy_nhwc, out_shape, &q.weight, q.weight_shape, &q.params, &mut b, q.input_shape)
                .unwrap();
            assert_eq!(
                bits(&b),
                bits(&relayout(&a, p.input_shape, Layout::Nchw, Layout::Nhwc)),
                "input, stride {stride}"
            );
            let (mut a, mut b) = (vec![f32::NAN; p.weight.len()], vec![f32::NAN; p.weight.len()]);
            conv2d_backward_weight(&p.input, p.input_shape, &dy, out_shape, &params, &mut a, p.weight_shape).unwrap();
            conv2d_backward_weight(&q.input, q.input_shape, &dy_nhwc, out_shape, &q.params, &mut b, q.weight_shape)
                .unwrap();
            assert_eq!(bits(&b), bits(&a), "weight, stride {stride}");
        });
    }
}

/// Found by fuzzing: an empty input plane (outputs from the padding alone),
/// in channels-last, with groups past the first.
#[test]
fn channels_last_empty_planes() {
    let params = nhwc(ConvParams { padding: [2; 4], groups: 2, ..ConvParams::default() });
    let w = values(2 * 2 * 9, 1);
    for options in [
        ConvOptions::default(),
        ConvOptions { algorithm: Algorithm::Winograd, precision: Precision::Relaxed, ..ConvOptions::default() },
    ] {
        let mut out = vec![f32::NAN; 2 * 2 * 5];
        conv2d_with(&options, &[], [1, 4, 0, 3], &w, [2, 2, 3, 3], Some(&[1.0, 2.0]), &params, &mut out).unwrap();
        // Each output is its channel's bias, channels innermost.
        assert_eq!(out, [1.0, 2.0].repeat(10), "{options:?}");
    }
}

/// Channels-last pooling large enough to run its rows and images in
/// parallel: the NCHW bits, permuted, on a 2-thread pool.
#[test]
fn channels_last_pooling_in_parallel() {
    let shape = [2, 64, 33, 31];
    let x = values(shape.iter().product(), 9);
    let x_nhwc = relayout(&x, shape, Layout::Nchw, Layout::Nhwc);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let mut p = PoolParams::new([3, 3]);
    (p.stride, p.padding) = ([2, 2], [1; 4]);
    let q = PoolParams { layout: Layout::Nhwc, ..p };
    let out_shape = pool2d_output_shape(shape, &p).unwrap();
    let n: usize = out_shape.iter().product();
    let gy = values(n, 10);
    let gy_nhwc = relayout(&gy, out_shape, Layout::Nchw, Layout::Nhwc);
    pool.install(|| {
        for max in [true, false] {
            let f = if max { max_pool2d } else { avg_pool2d };
            let (mut y, mut y2) = (vec![0.0; n], vec![0.0; n]);
            f(&x, shape, &p, &mut y).unwrap();
            f(&x_nhwc, shape, &q, &mut y2).unwrap();
            assert_eq!(bits(&y2), bits(&relayout(&y, out_shape, Layout::Nchw, Layout::Nhwc)), "max {max}");
            let (mut gx, mut gx2) = (vec![0.0; x.len()], vec![0.0; x.len()]);
            if max {
                max_pool2d_backward(&x, shape, &gy, &p, &mut gx).unwrap();
                max_pool2d_backward(&x_nhwc, shape, &gy_nhwc, &q, &mut gx2).unwrap();
            } else {
                avg_pool2d_backward(shape, &gy, &p, &mut gx).unwrap();
                avg_pool2d_backward(shape, &gy_nhwc, &q, &mut gx2).unwrap();
            }
            assert_eq!(bits(&gx2), bits(&relayout(&gx, shape, Layout::Nchw, Layout::Nhwc)), "backward, max {max}");
        }
    });
}

/// What a channels-last plan says it runs: the depthwise kernel of its
/// layout, the direct path for a 1×1 layer on a tiny plane (no
/// matrix-vector kernel, which reads NCHW) but the matrix-vector kernel
/// on a 1×1 plane (where both layouts are `[n][c]`), Winograd under Relaxed.
#[test]
fn channels_last_plans_name_their_kernels() {
    let isa = Isa::detect();
    let opts = ConvOptions { isa, ..ConvOptions::default() };
    let dw = nhwc(ConvParams { padding: [1; 4], groups: 32, ..ConvParams::default() });
    let plan = Conv2dPlan::new(&values(32 * 9, 1), [32, 1, 3, 3], None, &dw, &opts).unwrap();
    assert_eq!(plan.algorithm([1, 32, 10, 10]).unwrap(), Algorithm::Depthwise);
    assert!(plan.kernel_name([1, 32, 10, 10]).unwrap().starts_with("dwconv_channels_last_"));
    let se = nhwc(ConvParams::default());
    let plan = Conv2dPlan::new(&values(64 * 32, 2), [64, 32, 1, 1], None, &se, &opts).unwrap();
    assert!(!plan.kernel_name([1, 32, 2, 2]).unwrap().starts_with("gemv"));
    if isa != Isa::Portable {
        assert!(plan.kernel_name([1, 32, 1, 1]).unwrap().starts_with("gemv"), "{isa:?}");
    }
    let relaxed = ConvOptions { precision: Precision::Relaxed, ..opts };
    let plan = Conv2dPlan::new(&values(64 * 64 * 9, 3), [64, 64, 3, 3], None, &dw_dense(), &relaxed).unwrap();
    assert_eq!(plan.algorithm([1, 64, 28, 28]).unwrap(), Algorithm::Winograd);
    // ShuffleNet's grouped 1×1 (6 input, 28 output channels a group): every
    // group of a strip of pixels a call, on x86's masked lanes.
    let shuffle = nhwc(ConvParams { groups: 4, ..ConvParams::default() });
    for (isa, name) in [(Isa::Avx512, "grouped_1x1_avx512"), (Isa::Avx2Fma, "grouped_1x1_avx2")] {
        if isa.is_available() {
            let opts = ConvOptions { isa, ..ConvOptions::default() };
            let plan = Conv2dPlan::new(&values(112 * 6, 4), [112, 6, 1, 1], None, &shuffle, &opts).unwrap();
            assert_eq!(plan.algorithm([1, 24, 56, 56]).unwrap(), Algorithm::Direct);
            assert_eq!(plan.kernel_name([1, 24, 56, 56]).unwrap(), name);
        }
    }
}

fn dw_dense() -> ConvParams {
    nhwc(ConvParams { padding: [1; 4], ..ConvParams::default() })
}

/// Found by fuzzing: a stride past the image (one valid column per row) in
/// channels-last's col2im, whose step `stride · c_in` overflowed (a panic in
/// debug builds; in release, a step that wrapped to 0 made `step_by` panic).
#[test]
fn channels_last_input_gradient_with_a_stride_past_the_image() {
    // (stride, channels): 2^63 · 2 wraps to 0.
    for (stride, c) in [((1usize << 63) + 3, 3), (1 << 63, 2)] {
        let params = nhwc(ConvParams {
            stride: [stride; 2],
            padding: [3; 4],
            dilation: [3, 3],
            groups: c,
            flip: true,
            ..ConvParams::default()
        });
        let (x_shape, w_shape, dy_shape) = ([3, c, 3, 3], [c, 1, 3, 3], [3, c, 1, 1]);
        let (weight, dy) = (values(c * 9, 1), values(3 * c, 2));
        let mut dx = vec![f32::NAN; 27 * c];
        conv2d_backward_input(&dy, dy_shape, &weight, w_shape, &params, &mut dx, x_shape).unwrap();
        let reference =
            convgemm::reference::conv2d_backward_input_direct(&dy, dy_shape, &weight, w_shape, &params, x_shape)
                .unwrap();
        assert_close("backward_input, huge stride", &reference, &dx);
    }
}

/// Channels-last depthwise on wide rows (the unchecked path of windows
/// inside the image, 8 pixels at a time) for channel counts below, at and
/// between whole vectors (up to 4½ AVX-512 vectors, where the border pixels
/// take several channel blocks at once), inputs at every alignment of a
/// 64-byte line, strides 1 and 2, 3×3 and 5×5 kernels and a dilated height
/// (stride 1 across takes the row-rolling block), with bias: on every path and thread
/// setting the NCHW bits, permuted, and within the bound of the reference.
#[test]
fn channels_last_depthwise_on_wide_rows_at_every_alignment() {
    // Widths 37 and 47: the inside columns end in groups of 8, then of 4 and 1.
    let kernels = [(3, [1, 1], 1), (5, [1, 1], 2), (3, [2, 1], 2)];
    for (c, width) in [5, 8, 16, 24, 32, 40, 48, 72].into_iter().flat_map(|c| [(c, 37), (c, 47)]) {
        for (stride, (k, dilation, pad)) in [1, 2].into_iter().flat_map(|s| kernels.map(|kd| (s, kd))) {
            let params =
                ConvParams { stride: [stride; 2], padding: [pad; 4], dilation, groups: c, ..ConvParams::default() };
            let p = ConvProblem::seeded([2, c, 7, width], [c, 1, k, k], params, true, c as u64);
            let q = p.in_layout(Layout::Nhwc);
            let shape = conv2d_output_shape(p.input_shape, p.weight_shape, &params).unwrap();
            let what = format!("c {c} width {width} stride {stride} {k}x{k} {dilation:?}");
            depthwise_channels_last_at_shifts(&p, &q, shape, 0..16, &what);
        }
    }
}

/// Channels-last depthwise on the row-rolling code where windows reach the
/// padding (its checked variant): planes 1 to 17 pixels wide (single
/// pixels, groups of 4 and 8, a last group overlapping the one before),
/// asymmetric padding, strides 1 and (2, 1), 3×3 and 5×5, channel counts
/// at and between whole vectors, aligned and not: on every path and thread
/// setting the NCHW bits, permuted, and within the bound of the reference.
#[test]
fn channels_last_depthwise_row_rolling_through_the_padding() {
    let pads = [[1, 2, 0, 1], [2, 2, 2, 2], [0, 1, 2, 0]];
    for (c, width) in [16, 24, 72, 100].into_iter().flat_map(|c| [1, 2, 3, 5, 7, 9, 12, 14, 17].map(|w| (c, w))) {
        for (k, padding, stride) in
            [(3, pads[0], [1, 1]), (5, pads[1], [1, 1]), (3, pads[2], [2, 1]), (5, pads[0], [2, 1])]
        {
            let params = ConvParams { stride, padding, groups: c, ..ConvParams::default() };
            let Ok(shape) = conv2d_output_shape([2, c, 5, width], [c, 1, k, k], &params) else { continue };
            let p = ConvProblem::seeded([2, c, 5, width], [c, 1, k, k], params, true, (c * width) as u64);
            let q = p.in_layout(Layout::Nhwc);
            let what = format!("c {c} width {width} {k}x{k} pad {padding:?} stride {stride:?}");
            depthwise_channels_last_at_shifts(&p, &q, shape, [0, 5], &what);
        }
    }
}

/// The direct path reading a channels-last input in place (no padding: the
/// kernel steps `stride · c_in` floats from pixel to pixel) or from a
/// pixel-major copy of its rows (padding): 1 × 1 to 7 × 7 kernels, strides
/// 1 to 4 (windows that skip input too), dilation, groups (on two threads
/// split by rows), two K chunks, output channels a few past a panel (the
/// wide tiles), on every path and thread setting the NCHW bits, permuted,
/// and within the reference's bound.
#[test]
fn channels_last_direct_reads_inputs_in_place_or_pixel_major() {
    let cases: [([usize; 4], [usize; 4], ConvParams); 19] = [
        ([1, 16, 9, 30], [16, 16, 1, 1], ConvParams::default()),
        ([2, 40, 9, 21], [24, 40, 3, 3], ConvParams { stride: [2, 2], ..ConvParams::default() }),
        ([1, 32, 11, 19], [48, 32, 3, 3], ConvParams { stride: [1, 3], ..ConvParams::default() }),
        ([1, 36, 10, 17], [40, 18, 3, 3], ConvParams { dilation: [2, 2], groups: 2, ..ConvParams::default() }),
        ([1, 64, 8, 12], [16, 64, 3, 3], ConvParams { stride: [2, 1], ..ConvParams::default() }),
        ([3, 3, 12, 40], [16, 3, 5, 5], ConvParams::default()),
        // Padded: a pixel-major copy of the rows (all channels, a group's, a K chunk's).
        ([1, 3, 15, 33], [16, 3, 3, 3], ConvParams { stride: [2, 2], padding: [1, 1, 1, 1], ..ConvParams::default() }),
        ([2, 36, 9, 14], [40, 18, 3, 3], ConvParams { padding: [1, 2, 0, 1], groups: 2, ..ConvParams::default() }),
        ([1, 40, 8, 11], [24, 40, 3, 3], ConvParams { padding: [2; 4], dilation: [2, 1], ..ConvParams::default() }),
        ([1, 8, 10, 26], [32, 8, 7, 7], ConvParams { stride: [1, 3], padding: [3; 4], ..ConvParams::default() }),
        // Groups on two threads, split by rows (each thread every group of
        // its rows): ShuffleNet-like, and a plane one row high.
        ([2, 24, 20, 30], [112, 6, 1, 1], ConvParams { groups: 4, ..ConvParams::default() }),
        ([1, 64, 1, 300], [64, 16, 1, 3], ConvParams { padding: [0, 1, 0, 1], groups: 4, ..ConvParams::default() }),
        // Windows that skip input (kernel extent below the stride), read in
        // place: ResNet's 1×1 stride-2 projections, a 3×3 with stride 4.
        ([1, 40, 9, 13], [24, 40, 1, 1], ConvParams { stride: [2, 2], ..ConvParams::default() }),
        ([2, 40, 10, 11], [32, 20, 1, 1], ConvParams { stride: [3, 2], groups: 2, ..ConvParams::default() }),
        ([1, 16, 17, 18], [16, 16, 3, 3], ConvParams { stride: [4, 4], ..ConvParams::default() }),
        // 1 to 8 channels past a panel of 32, with that panel in one wide
        // tile (AVX-512: 8 × 40) of 7 or 8 pixels, or of 5 (two tiles):
        // in place, padded, past a first whole panel (72 = 32 + 40), in groups.
        ([1, 24, 9, 28], [40, 24, 1, 1], ConvParams::default()),
        ([2, 16, 5, 14], [33, 16, 3, 3], ConvParams { padding: [1; 4], ..ConvParams::default() }),
        ([1, 40, 6, 5], [72, 40, 3, 3], ConvParams { padding: [1; 4], ..ConvParams::default() }),
        ([1, 136, 7, 8], [136, 34, 1, 1], ConvParams { groups: 4, ..ConvParams::default() }),
    ];
    for (i, (x_shape, w_shape, params)) in cases.into_iter().enumerate() {
        let p = ConvProblem::seeded(x_shape, w_shape, params, true, 60 + i as u64);
        let q = p.in_layout(Layout::Nhwc);
        let shape = conv2d_output_shape(p.input_shape, p.weight_shape, &params).unwrap();
        let want = relayout(&p.run(&ConvOptions::default()).unwrap(), shape, Layout::Nchw, Layout::Nhwc);
        let reference = q.reference().unwrap();
        // The direct path runs where the kernel reads A in place (AVX-512's
        // 8 × 32, AVX2's 6 × 16), and `Auto` takes it for channels-last.
        for isa in [Isa::Avx512, Isa::Avx2Fma].into_iter().filter(|isa| isa.is_available()) {
            for algorithm in [Algorithm::Direct, Algorithm::Auto] {
                let opts = ConvOptions { isa, algorithm, ..ConvOptions::default() };
                let plan = Conv2dPlan::new(&q.weight, q.weight_shape, q.bias.as_deref(), &q.params, &opts).unwrap();
                assert_eq!(plan.algorithm(q.input_shape).unwrap(), Algorithm::Direct, "case {i} {isa:?}");
            }
        }
        for_each_isa(|isa| {
            for threads in [Threads::Single, Threads::Pool] {
                let opts = ConvOptions { isa, threads, algorithm: Algorithm::Direct, ..ConvOptions::default() };
                let got = q.run(&opts).unwrap();
                let what = format!("case {i} {}", isa.name());
                assert_close(&what, &reference, &got);
                if is_exact(isa) {
                    assert_eq!(bits(&got), bits(&want), "{what}");
                }
            }
        });
    }
}

/// A 1×1 layer on 1×1 planes (squeeze-and-excite) runs in channels-last as
/// in NCHW, the tensors being the same `[n][c]`: the same bits on every
/// path and thread setting, within the reference's bound, with a bias, a
/// batch of 3, and groups.
#[test]
fn channels_last_one_pixel_planes_run_as_nchw() {
    for (i, (x_shape, w_shape, groups)) in
        [([3, 40, 1, 1], [24, 40, 1, 1], 1), ([2, 12, 1, 1], [36, 4, 1, 1], 3)].into_iter().enumerate()
    {
        let params = ConvParams { groups, ..ConvParams::default() };
        let p = ConvProblem::seeded(x_shape, w_shape, params, true, 90 + i as u64);
        let q = p.in_layout(Layout::Nhwc);
        let reference = q.reference().unwrap();
        for_each_isa(|isa| {
            for threads in [Threads::Single, Threads::Pool] {
                let opts = ConvOptions { isa, threads, ..ConvOptions::default() };
                let (want, got) = (p.run(&opts).unwrap(), q.run(&opts).unwrap());
                let what = format!("case {i} {}", isa.name());
                assert_close(&what, &reference, &got);
                assert_eq!(bits(&got), bits(&want), "{what}");
            }
        });
    }
}

/// The depthwise path on `q` (`p` in channels-last) with its input `shift`
/// floats into a larger buffer for each of `shifts`: on every path and
/// thread setting the NCHW bits of `p`, permuted, and within the bound of
/// the reference.
fn depthwise_channels_last_at_shifts(
    p: &ConvProblem,
    q: &ConvProblem,
    shape: [usize; 4],
    shifts: impl IntoIterator<Item = usize>,
    what: &str,
) {
    let want = relayout(&p.run(&ConvOptions::default()).unwrap(), shape, Layout::Nchw, Layout::Nhwc);
    let reference = q.reference().unwrap();
    for shift in shifts {
        let mut shifted = vec![f32::NAN; shift];
        shifted.extend_from_slice(&q.input);
        for_each_isa(|isa| {
            for threads in [Threads::Single, Threads::Pool] {
                let opts = ConvOptions { isa, threads, algorithm: Algorithm::Depthwise, ..ConvOptions::default() };
                let mut out = vec![f32::NAN; want.len()];
                conv2d_with(
                    &opts,
                    &shifted[shift..],
                    q.input_shape,
                    &q.weight,
                    q.weight_shape,
                    q.bias.as_deref(),
                    &q.params,
                    &mut out,
                )
                .unwrap();
                let what = format!("{what} shift {shift} {}", isa.name());
                assert_close(&what, &reference, &out);
                if is_exact(isa) {
                    assert_eq!(bits(&out), bits(&want), "{what}");
                }
            }
        });
    }
}

/// Channels-last depthwise 3×3 and 5×5 at strides 1 and 2 rolling its sums down the rows
/// (`dwconv_channels_last_rows_<isa>`): planes taller and wider than a few
/// strips (rows shared among threads, items crossing from one image of the
/// batch to the next), channel counts at and between whole vectors, widths
/// whose columns end in a partial strip, every padding side on its own,
/// inputs at several floats past a vector boundary (where, at stride 1,
/// blocks start aligned and the last of each pixel runs into the next): the NCHW bits,
/// permuted, on every path and thread setting, and within the bound of
/// the reference.
#[test]
fn channels_last_depthwise_rolling_down_the_rows() {
    let cases = [
        (16, 30, 19, [1, 1, 1, 1]),
        (32, 21, 23, [0, 2, 1, 0]),
        (48, 13, 61, [1, 1, 1, 1]),
        (72, 17, 18, [2, 0, 0, 2]),
        (64, 6, 5, [1, 0, 1, 1]),
        (32, 40, 6, [0, 0, 0, 0]),
    ];
    let kernels = [(3, 1), (5, 1), (3, 2), (5, 2)];
    for ((c, h, w, padding), (k, stride)) in cases.into_iter().flat_map(|case| kernels.map(|ks| (case, ks))) {
        let params = ConvParams { stride: [stride; 2], padding, groups: c, ..ConvParams::default() };
        let p = ConvProblem::seeded([2, c, h, w], [c, 1, k, k], params, true, (c + h) as u64);
        let q = p.in_layout(Layout::Nhwc);
        let shape = conv2d_output_shape(p.input_shape, p.weight_shape, &params).unwrap();
        if Isa::detect() == Isa::Avx512 && shape[3] >= if k == 3 || stride == 2 { 4 } else { 14 } {
            // (Rows narrower than a strip of 4, or 14 for 5×5 at stride 1, take the other kernel.)
            let opts = ConvOptions { algorithm: Algorithm::Depthwise, ..ConvOptions::default() };
            let plan = Conv2dPlan::new(&q.weight, q.weight_shape, q.bias.as_deref(), &q.params, &opts).unwrap();
            assert_eq!(plan.kernel_name(q.input_shape).unwrap(), "dwconv_channels_last_rows_avx512");
        }
        let what = format!("c {c} {h}×{w} {k}×{k} stride {stride} pad {padding:?}");
        depthwise_channels_last_at_shifts(&p, &q, shape, [0, 1, 4, 7, 12], &what);
    }
}

/// Channels-last depthwise 3×3 and 5×5 at stride 1 over more channels than
/// one slice of the row-rolling code takes (its weights in a quarter of
/// L1: at most 448 channels of 3×3 and 160 of 5×5 for an L1 of up to 64
/// KiB), aligned or not, padded or not: the NCHW bits, permuted, on every
/// exact path, and within the bound of the reference.
#[test]
fn depthwise_channels_last_in_slices() {
    for (c, k, hw, padding) in [(520, 3, 9, [1, 1, 1, 1]), (200, 5, 12, [2, 2, 2, 2]), (347, 5, 10, [0, 2, 1, 0])] {
        let params = ConvParams { padding, groups: c, ..ConvParams::default() };
        let p = ConvProblem::seeded([1, c, hw, hw + 5], [c, 1, k, k], params, true, 11);
        let what = format!("{c} channels {k}×{k}");
        channels_last_gives_nchw_bits(&p, ConvOptions::default(), &what, |reference, got| {
            assert_close(&what, reference, got)
        });
    }
}
