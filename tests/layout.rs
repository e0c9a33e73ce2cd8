//! Channels-last (`Layout::Nhwc`) beyond the property tests of `conv.rs`
//! (which run every problem in both layouts): Winograd, plans across input
//! sizes, im2col / col2im, and the functions that do not read it yet.

mod common;

use common::*;
use convgemm::reference::nchw_to;
use convgemm::*;

fn nhwc(p: ConvParams) -> ConvParams {
    ConvParams { layout: Layout::Nhwc, ..p }
}

/// Winograd (forced, under Relaxed) gives in channels-last the NCHW bits,
/// permuted, on every path and thread setting; and stays within its bound.
#[test]
fn winograd_channels_last_equals_nchw() {
    let pad = ConvParams { padding: [1, 0, 2, 1], groups: 2, ..ConvParams::default() };
    for (input_shape, c_out) in [([2, 8, 11, 13], 6), ([1, 4, 30, 9], 4), ([1, 2, 100, 97], 2)] {
        let p = ConvProblem::seeded(input_shape, [c_out, input_shape[1] / 2, 3, 3], pad, true, 7);
        let q = p.in_layout(Layout::Nhwc);
        let shape = p.output_shape().unwrap();
        let reference = q.reference().unwrap();
        for_each_isa(|isa| {
            if !is_exact(isa) {
                return;
            }
            for threads in [Threads::Pool, Threads::Single] {
                let opts = ConvOptions {
                    isa,
                    threads,
                    algorithm: Algorithm::Winograd,
                    precision: Precision::Relaxed,
                    ..ConvOptions::default()
                };
                let want = relayout(&p.run(&opts).unwrap(), shape, Layout::Nchw, Layout::Nhwc);
                let got = q.run(&opts).unwrap();
                assert_eq!(bits(&got), bits(&want), "{} {threads:?} {input_shape:?}", isa.name());
                // Loose: Winograd's bound is per tile (tests/winograd.rs); this
                // only shows the channels-last outputs are the right ones.
                assert!(reference.first_mismatch(&got, 1e-3).is_none(), "{input_shape:?}");
            }
        });
    }
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

/// Gradients, transposed convolution and the pooling switches do not read
/// channels-last yet: each says so, and writes nothing.
#[test]
fn functions_without_channels_last_reject_it_untouched() {
    let p = nhwc(ConvParams { padding: [1; 4], ..ConvParams::default() });
    let (x, w, dy) = (values(2 * 4 * 4, 1), values(2 * 2 * 9, 2), values(2 * 4 * 4, 3));
    let mut out = vec![7.0f32; 64];
    let untouched = |out: &[f32]| out.iter().all(|&v| v == 7.0);
    let is_layout = |e: ConvError| matches!(e, ConvError::BadParameter { name: "layout", .. });
    let e = conv2d_backward_input(&dy, [1, 2, 4, 4], &w, [2, 2, 3, 3], &p, &mut out[..32], [1, 2, 4, 4]);
    assert!(is_layout(e.unwrap_err()) && untouched(&out));
    let e = conv2d_backward_weight(&x, [1, 2, 4, 4], &dy, [1, 2, 4, 4], &p, &mut out[..36], [2, 2, 3, 3]);
    assert!(is_layout(e.unwrap_err()) && untouched(&out));
    let t = ConvTransposeParams { padding: [1; 4], layout: Layout::Nhwc, ..Default::default() };
    let e = conv_transpose2d(&x, [1, 2, 4, 4], &w, [2, 2, 3, 3], None, &t, &mut out[..32]);
    assert!(is_layout(e.unwrap_err()) && untouched(&out));
    let pool = PoolParams { layout: Layout::Nhwc, ..PoolParams::new([2, 2]) };
    let mut at = vec![5usize; 8];
    let e = max_pool2d_with_indices(&x, [1, 2, 4, 4], &pool, &mut out[..8], &mut at);
    assert!(is_layout(e.unwrap_err()) && untouched(&out) && at.iter().all(|&i| i == 5));
    let msg = conv2d_backward_input(&dy, [1, 2, 4, 4], &w, [2, 2, 3, 3], &p, &mut out[..32], [1, 2, 4, 4])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("layout") && msg.contains("Nchw"), "{msg}");
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
/// matrix-vector kernel, which reads NCHW), Winograd under Relaxed.
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
    assert!(!plan.kernel_name([1, 32, 1, 1]).unwrap().starts_with("gemv"));
    let relaxed = ConvOptions { precision: Precision::Relaxed, ..opts };
    let plan = Conv2dPlan::new(&values(64 * 64 * 9, 3), [64, 64, 3, 3], None, &dw_dense(), &relaxed).unwrap();
    assert_eq!(plan.algorithm([1, 64, 28, 28]).unwrap(), Algorithm::Winograd);
}

fn dw_dense() -> ConvParams {
    nhwc(ConvParams { padding: [1; 4], ..ConvParams::default() })
}
