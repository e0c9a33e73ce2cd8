//! Every crash or wrong result the fuzz targets (fuzz/) found, as a plain
//! test named by its case. Each doc says what went wrong before the fix;
//! those marked "debug builds" failed only under debug assertions (overflow
//! checks), as in `cargo test` without `--release` and the fuzz builds.

use convgemm::reference::conv2d_direct;
use convgemm::testing::relayout;
use convgemm::{Algorithm, ConvError, ConvOptions, ConvParams, Isa, Layout, Threads, conv2d, conv2d_with};

/// Input with no channels, 2×2 kernel: K = 0, so every output is its bias.
/// The implicit-im2col packer split its panel by `kc · P` = 0 and panicked
/// ("chunk size must be non-zero", src/conv/implicit.rs `pack_image`).
#[test]
fn conv_zero_input_channels_is_bias() {
    let params = ConvParams::default();
    let bias = [0.5f32, -2.0];
    for algorithm in [Algorithm::Auto, Algorithm::Implicit, Algorithm::Im2col, Algorithm::Depthwise] {
        for isa in Isa::available() {
            let opts = ConvOptions { isa, algorithm, threads: Threads::Single, ..ConvOptions::default() };
            let mut out = [f32::NAN; 2 * 2 * 2];
            conv2d_with(&opts, &[], [1, 0, 3, 3], &[], [2, 0, 2, 2], Some(&bias), &params, &mut out).unwrap();
            assert_eq!(out, [0.5, 0.5, 0.5, 0.5, -2.0, -2.0, -2.0, -2.0], "{} {algorithm:?}", isa.name());
        }
    }
    let mut out = [f32::NAN; 4];
    conv2d(&[], [1, 0, 3, 3], &[], [1, 0, 2, 2], None, &params, &mut out).unwrap();
    assert_eq!(out, [0.0; 4]);
}

/// Empty weights in a huge number of groups: valid calls with an empty
/// output, so `Ok` with nothing to do. `Conv2dPlan::new` built one packed
/// weight block per group, `(0..groups).map(..).collect()`: "capacity
/// overflow" here, an allocation failure (abort) or minutes of work for
/// groups around 2^30 (src/conv/plan.rs). Reached through `conv2d` too.
#[test]
fn plan_empty_weight_huge_groups() {
    let mut out: [f32; 0] = [];
    // No output channels.
    let params = ConvParams { groups: usize::MAX, ..ConvParams::default() };
    conv2d(&[], [1, 0, 1, 1], &[], [0, 0, 1, 1], None, &params, &mut out).unwrap();
    let plan = convgemm::Conv2dPlan::new(&[], [0, 0, 1, 1], None, &params, &ConvOptions::default()).unwrap();
    plan.run(&[], [3, 0, 2, 2], &mut out).unwrap();
    // 2^60 output channels with no input channels, on an empty batch.
    let groups = 1usize << 60;
    let params = ConvParams { groups, ..ConvParams::default() };
    conv2d(&[], [0, 0, 1, 1], &[], [groups, 0, 1, 1], None, &params, &mut out).unwrap();
}

/// Zero output channels with a long kernel: the weight is empty, so the plan
/// has nothing to pack. `Conv2dPlan::new` still multiplied out
/// `K = (c_in/groups)·kh·kw` unchecked (here 3·2^62: an overflow panic in
/// debug builds) and walked K in chunks of 256 (here about 2^54 empty
/// iterations in release: a hang), src/conv/plan.rs.
#[test]
fn plan_zero_output_channels_long_kernel() {
    let (done, wait) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let plan =
            convgemm::Conv2dPlan::new(&[], [0, 3, 1 << 62, 1], None, &ConvParams::default(), &ConvOptions::default());
        done.send(plan.map(|_| ())).unwrap();
    });
    let result = wait.recv_timeout(std::time::Duration::from_secs(5));
    assert_eq!(result, Ok(Ok(())), "Conv2dPlan::new on an empty weight: panicked or still running after 5 s");
}

/// Empty weights with dimensions near `usize::MAX`: `Conv2dPlan::new`
/// computed the taps per kernel `kh·kw` (to flip them) and the output
/// channels rounded up to the kernel tile unchecked, which the weight's
/// element count (0) does not bound: an overflow panic in debug builds.
/// Now `kh·kw` is checked (`Err(Overflow)`) and an empty weight packs nothing.
#[test]
fn plan_empty_weight_huge_dims() {
    let flip = ConvParams { flip: true, ..ConvParams::default() };
    let big = 1usize << 32;
    for isa in Isa::available() {
        let opts = ConvOptions { isa, ..ConvOptions::default() };
        let plan = convgemm::Conv2dPlan::new(&[], [1, 0, big, big], None, &flip, &opts);
        assert!(matches!(plan, Err(ConvError::Overflow { .. })), "{} kh·kw = 2^64: {plan:?}", isa.name());
        let plan = convgemm::Conv2dPlan::new(&[], [usize::MAX, 0, 1, 1], None, &ConvParams::default(), &opts);
        assert!(plan.is_ok(), "{} c_out = usize::MAX: {plan:?}", isa.name());
    }
}

/// Empty batches whose per-image sizes do not fit `usize`. The overflow
/// checks covered only whole-tensor products (0 here), and
/// `ConvGeometry::out_pixels` (`h_out·w_out`) and the image length `c_in·h·w`
/// in `im2col`/`col2im` were multiplied unchecked: an overflow panic in debug
/// builds. Now every derived size is checked on its own: `Err(Overflow)`,
/// the output untouched.
#[test]
fn conv_empty_batch_huge_plane() {
    let big = 1usize << 33;
    let p = ConvParams::default();
    let overflow = |r: Result<(), ConvError>| assert!(matches!(r, Err(ConvError::Overflow { .. })), "{r:?}");
    assert!(matches!(
        convgemm::conv2d_output_shape([0, 0, big, big], [1, 0, 1, 1], &p),
        Err(ConvError::Overflow { .. })
    ));
    overflow(conv2d(&[], [0, 0, big, big], &[], [1, 0, 1, 1], None, &p, &mut []));
    assert!(matches!(convgemm::im2col_len([0, 0, big, big], [1, 1], &p), Err(ConvError::Overflow { .. })));
    overflow(convgemm::im2col(&[], [0, 0, big, big], [1, 1], &p, &mut []));
    // 2^62 channels of 8×1 read with stride 8: 2^65 input floats per image.
    let strided = ConvParams { stride: [8, 1], ..ConvParams::default() };
    assert!(matches!(convgemm::im2col_len([0, 1 << 62, 8, 1], [1, 1], &strided), Err(ConvError::Overflow { .. })));
    overflow(convgemm::im2col(&[], [0, 1 << 62, 8, 1], [1, 1], &strided, &mut []));
    overflow(convgemm::col2im(&[], [0, 1 << 62, 8, 1], [1, 1], &strided, &mut []));
}

/// A one-channel 1×2 image, 1×1 kernel, vertical stride 2^63: one output
/// row, `[3·1, 3·2]`. The depthwise path computed the step between output
/// rows, `stride_h·row_length`, unchecked: an overflow panic in debug builds
/// (release wraps, and with one output row the step is never used),
/// src/conv/depthwise.rs.
#[test]
fn conv_depthwise_huge_stride() {
    for stride_h in [1usize << 63, usize::MAX] {
        let params = ConvParams { stride: [stride_h, 1], ..ConvParams::default() };
        for isa in Isa::available() {
            let opts = ConvOptions { isa, algorithm: Algorithm::Depthwise, ..ConvOptions::default() };
            let mut out = [f32::NAN; 2];
            conv2d_with(&opts, &[1.0, 2.0], [1, 1, 1, 2], &[3.0], [1, 1, 1, 1], None, &params, &mut out).unwrap();
            assert_eq!(out, [3.0, 6.0], "{} stride {stride_h}", isa.name());
        }
    }
}

/// Top padding and vertical stride `isize::MAX` on a 2-channel 2×2 image,
/// 2×2 kernel: two output rows, the first all padding (0), the second the
/// whole image (Σ x·w = 204). The implicit-im2col packer turned padding and
/// offsets into `isize` and multiplied `dy·w_in` unchecked: an overflow
/// panic in debug builds; in release the arithmetic wrapped (src/conv/implicit.rs
/// `pack_image`). Every path must give `[0, 204]`.
#[test]
fn conv_implicit_padding_near_isize_max() {
    let max = isize::MAX as usize;
    let params = ConvParams { stride: [max, 1], padding: [max, 0, 0, 0], ..ConvParams::default() };
    assert_eq!(convgemm::conv2d_output_shape([1, 2, 2, 2], [1, 2, 2, 2], &params), Ok([1, 1, 2, 1]));
    let x: Vec<f32> = (1..=8).map(|v| v as f32).collect();
    for isa in Isa::available() {
        for algorithm in [Algorithm::Auto, Algorithm::Implicit, Algorithm::Im2col] {
            let opts = ConvOptions { isa, algorithm, ..ConvOptions::default() };
            let mut out = [f32::NAN; 2];
            conv2d_with(&opts, &x, [1, 2, 2, 2], &x, [1, 2, 2, 2], None, &params, &mut out).unwrap();
            assert_eq!(out, [0.0, 204.0], "{} {algorithm:?}", isa.name());
        }
    }
}

/// A one-channel input with padding 2^32 on two sides and stride 2^32: two
/// output pixels, `[w·x, 0]`. The depthwise path copied the plane with its
/// padding, `(h + pad_top + pad_bottom)·(w + pad_left + pad_right)` floats,
/// computed unchecked: here (2^32 − 1)·(2^32 + 1) = usize::MAX ("capacity
/// overflow" panic in release, an overflow panic in debug); with padding
/// near 2^17 per side it was a 64 GiB allocation (abort), for an output of
/// a few floats (src/conv/depthwise.rs `padded_plane`).
#[test]
fn conv_depthwise_huge_padding_huge_stride() {
    let big = 1usize << 32;
    let params = ConvParams { stride: [big, big], padding: [0, 0, big - 2, big], ..ConvParams::default() };
    assert_eq!(convgemm::conv2d_output_shape([1, 1, 1, 1], [1, 1, 1, 1], &params), Ok([1, 1, 1, 2]));
    for isa in Isa::available() {
        for algorithm in [Algorithm::Auto, Algorithm::Depthwise, Algorithm::Implicit, Algorithm::Im2col] {
            let opts = ConvOptions { isa, algorithm, ..ConvOptions::default() };
            let mut out = [f32::NAN; 2];
            conv2d_with(&opts, &[3.0], [1, 1, 1, 1], &[0.5], [1, 1, 1, 1], None, &params, &mut out).unwrap();
            assert_eq!(out, [1.5, 0.0], "{} {algorithm:?}", isa.name());
        }
    }
}

/// An input of width 0 that padding makes valid: every window reads only
/// padding, so every output is its bias. The direct (depthwise) path built
/// its padded plane without the rows of a zero-width input, which kept the
/// thread's scratch contents from an earlier call, and returned those
/// instead (fuzz `api_hostile`, after the padded plane was rewritten to
/// write each float once).
#[test]
fn conv_zero_width_input_is_bias_after_a_dirty_scratch() {
    let params = ConvParams { padding: [1, 2, 6, 2], flip: true, ..ConvParams::default() };
    let bias = [-0.5f32, 0.75];
    let weight = [0.25f32, 3.5, -1.0, 2.0, 0.5, -0.75, 1.5, -2.0];
    for isa in Isa::available() {
        let opts = ConvOptions { isa, threads: Threads::Single, ..ConvOptions::default() };
        // Fill this thread's scratch with non-zero values first (an
        // unpadded plane: its first rows are input, not zeros).
        let big = vec![1.5f32; 40 * 40];
        let mut big_out = vec![0.0f32; 2 * 39 * 39];
        let unpadded = ConvParams::default();
        conv2d_with(&opts, &big, [1, 1, 40, 40], &weight, [2, 1, 2, 2], None, &unpadded, &mut big_out).unwrap();
        let mut out = [f32::NAN; 2 * 10 * 3];
        conv2d_with(&opts, &[], [1, 1, 4, 0], &weight, [2, 1, 2, 2], Some(&bias), &params, &mut out).unwrap();
        let want: Vec<f32> = bias.iter().flat_map(|&b| [b; 30]).collect();
        assert_eq!(out.to_vec(), want, "{}", isa.name());
    }
}

/// A depthwise layer of channel multiplier 1 on an input of width 0 that
/// padding makes valid: every output is its bias. The channel-blocked
/// kernel counted its channels by dividing the input's length by the
/// (empty) plane's, a division by zero.
#[test]
fn conv_depthwise_blocks_of_empty_planes_are_bias() {
    let params = ConvParams { padding: [1, 2, 3, 2], groups: 9, ..ConvParams::default() };
    let bias: Vec<f32> = (0..9).map(|c| c as f32 - 4.5).collect();
    let weight = vec![0.25f32; 9 * 3 * 3];
    let shape = convgemm::conv2d_output_shape([1, 9, 5, 0], [9, 1, 3, 3], &params).unwrap();
    assert_eq!(shape, [1, 9, 7, 2]);
    for isa in Isa::available() {
        for algorithm in [Algorithm::Auto, Algorithm::Depthwise, Algorithm::Im2col] {
            let opts = ConvOptions { isa, algorithm, ..ConvOptions::default() };
            let mut out = [f32::NAN; 9 * 14];
            conv2d_with(&opts, &[], [1, 9, 5, 0], &weight, [9, 1, 3, 3], Some(&bias), &params, &mut out).unwrap();
            let want: Vec<f32> = bias.iter().flat_map(|&b| [b; 14]).collect();
            assert_eq!(out.to_vec(), want, "{} {algorithm:?}", isa.name());
        }
    }
}

/// A multiplier-1 depthwise layer with stride 2^61 and one output pixel:
/// the channel-blocked kernel multiplied the stride by its lanes before
/// knowing it is never taken, an overflow panic (fuzz `api_hostile`).
#[test]
fn conv_depthwise_blocks_with_huge_stride() {
    let huge = 1usize << 61;
    let params = ConvParams { stride: [huge, huge], groups: 8, ..ConvParams::default() };
    let x: Vec<f32> = (0..8 * 9).map(|i| i as f32 * 0.5).collect();
    let weight: Vec<f32> = (0..8 * 9).map(|i| (i % 5) as f32 - 2.0).collect();
    // Each channel's one output: its window (the whole 3×3 plane) · its kernel.
    let want: Vec<f32> =
        (0..8).map(|c| (0..9).map(|t| x[c * 9 + t] as f64 * weight[c * 9 + t] as f64).sum::<f64>() as f32).collect();
    for isa in Isa::available() {
        for algorithm in [Algorithm::Auto, Algorithm::Depthwise, Algorithm::Im2col] {
            let opts = ConvOptions { isa, algorithm, ..ConvOptions::default() };
            let mut out = [f32::NAN; 8];
            conv2d_with(&opts, &x, [1, 8, 3, 3], &weight, [8, 1, 3, 3], None, &params, &mut out).unwrap();
            assert_eq!(out.to_vec(), want, "{} {algorithm:?}", isa.name());
        }
    }
}

/// Padding of 3·2^30 below and right of a one-pixel input with stride 2^40:
/// one output, `w·x`. The depthwise path's scratch size,
/// `2·(hq·wq + slack)`, overflowed while `Auto` asked whether it applies
/// (fuzz `api_hostile`); every step of it is checked now.
#[test]
fn conv_depthwise_scratch_size_of_huge_padding() {
    let (big, stride) = (3usize << 30, 1usize << 40);
    let params = ConvParams { stride: [stride, stride], padding: [0, 0, big, big], ..ConvParams::default() };
    assert_eq!(convgemm::conv2d_output_shape([1, 1, 1, 1], [1, 1, 1, 1], &params), Ok([1, 1, 1, 1]));
    for isa in Isa::available() {
        for algorithm in [Algorithm::Auto, Algorithm::Depthwise, Algorithm::Implicit, Algorithm::Im2col] {
            let opts = ConvOptions { isa, algorithm, ..ConvOptions::default() };
            let mut out = [f32::NAN; 1];
            conv2d_with(&opts, &[3.0], [1, 1, 1, 1], &[0.5], [1, 1, 1, 1], None, &params, &mut out).unwrap();
            assert_eq!(out, [1.5], "{} {algorithm:?}", isa.name());
        }
    }
}

/// A depthwise 1×3 kernel (one row) with a row dilation of 2^62, which a
/// one-row kernel never applies: the channel-blocked kernel's step between
/// window rows, `dilation_h · padded row`, overflowed (debug builds; fuzz
/// `api_hostile`), and so did the channels-last row kernel's.
#[test]
fn conv_depthwise_one_row_kernel_huge_row_dilation() {
    let (c, h, w) = (16, 4, 10);
    let params = ConvParams { dilation: [1 << 62, 1], groups: c, ..ConvParams::default() };
    let x: Vec<f32> = (0..c * h * w).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
    let weight: Vec<f32> = (0..c * 3).map(|i| ((i * 5) % 7) as f32 * 0.25 - 0.75).collect();
    let (h_out, w_out) = (h, w - 2);
    for layout in [Layout::Nchw, Layout::Nhwc] {
        let params = ConvParams { layout, ..params };
        let x = relayout(&x, [1, c, h, w], Layout::Nchw, layout);
        // Sums of three small products of quarters: exact in f32, so every
        // path must give the f64 reference's values exactly.
        let reference = conv2d_direct(&x, [1, c, h, w], &weight, [c, 1, 1, 3], None, &params).unwrap();
        let want: Vec<f32> = reference.value.iter().map(|&v| v as f32).collect();
        for isa in Isa::available() {
            for algorithm in [Algorithm::Auto, Algorithm::Depthwise] {
                let opts = ConvOptions { isa, algorithm, threads: Threads::Single, ..ConvOptions::default() };
                let mut out = vec![f32::NAN; c * h_out * w_out];
                conv2d_with(&opts, &x, [1, c, h, w], &weight, [c, 1, 1, 3], None, &params, &mut out).unwrap();
                assert_eq!(out, want, "{} {algorithm:?} {layout:?}", isa.name());
            }
        }
    }
}
