//! Pooling against the direct f64 loops of `convgemm::reference`: random
//! shapes, strides, paddings, dilations, `ceil_mode` and `count_include_pad`;
//! ties and NaNs for max; backward against the reference and by adjointness;
//! pinned PyTorch cases; and the error paths, which leave the output untouched.

mod common;

use common::{assert_close, bits, canonical_bits, cases, relayout, values};
use convgemm::reference::{pool2d_backward_direct, pool2d_direct};
use convgemm::{
    ConvError, Layout, MAX_POOL_NO_INDEX, PoolParams, avg_pool2d, avg_pool2d_backward, global_avg_pool2d, max_pool2d,
    max_pool2d_backward, max_pool2d_with_indices, max_unpool2d, max_unpool2d_with_layout, pool2d_output_shape,
};
use proptest::prelude::*;

#[derive(Clone, Debug)]
struct PoolProblem {
    shape: [usize; 4],
    params: PoolParams,
    max: bool,
    /// Values on a coarse grid, so max windows hold ties.
    ties: bool,
    /// An input element set to NaN, or to −0 with `neg_zero` (max only), as
    /// an index modulo the length: planes where the scan order matters.
    nan_at: Option<usize>,
    neg_zero: bool,
    seed: u64,
}

fn pool_problem() -> impl Strategy<Value = PoolProblem> {
    // Widths up to 40 so that rows hold the 8+ interior windows the vector
    // kernels take (stride 2 needs about 17 columns for that).
    let dims = (0usize..3, 1usize..4, 1usize..12, 1usize..40);
    let window = (1usize..5, 1usize..5, 1usize..4, 1usize..4, 1usize..3, 1usize..3);
    let flags = (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>(), any::<[u8; 4]>());
    let special = (proptest::option::weighted(0.3, 0usize..10_000), any::<bool>());
    (dims, window, flags, special, any::<u64>()).prop_filter_map(
        "no output",
        |((n, c, h, w), (kh, kw, sh, sw, dh, dw), (max, ceil, include, ties, pads), (nan_at, neg_zero), seed)| {
            let (dh, dw) = if max { (dh, dw) } else { (1, 1) };
            let ext = [dh * (kh - 1) + 1, dw * (kw - 1) + 1];
            let mut params = PoolParams::new([kh, kw]);
            params.stride = [sh, sw];
            params.dilation = [dh, dw];
            params.padding = std::array::from_fn(|i| pads[i] as usize % (ext[i % 2] / 2 + 1));
            params.ceil_mode = ceil;
            params.count_include_pad = include;
            let shape = [n, c, h, w];
            pool2d_output_shape(shape, &params).ok()?;
            Some(PoolProblem { shape, params, max, ties, nan_at: nan_at.filter(|_| max), neg_zero, seed })
        },
    )
}

impl PoolProblem {
    fn input(&self) -> Vec<f32> {
        let len = self.shape.iter().product();
        let mut x = values(len, self.seed);
        if self.ties {
            x.iter_mut().for_each(|v| *v = (*v * 2.0).round());
        }
        if let Some(i) = self.nan_at.filter(|_| len > 0) {
            x[i % len] = if self.neg_zero { -0.0 } else { f32::NAN };
        }
        x
    }

    fn forward(&self, x: &[f32], out: &mut [f32]) -> Result<(), ConvError> {
        let f = if self.max { max_pool2d } else { avg_pool2d };
        f(x, self.shape, &self.params, out)
    }

    fn backward(&self, x: &[f32], gy: &[f32], gx: &mut [f32]) -> Result<(), ConvError> {
        if self.max {
            max_pool2d_backward(x, self.shape, gy, &self.params, gx)
        } else {
            avg_pool2d_backward(self.shape, gy, &self.params, gx)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(1000)))]

    /// Channels-last: forward and backward give the NCHW results, permuted,
    /// bit for bit (NaN as NaN), ties, NaN and −0 included.
    #[test]
    fn channels_last_equals_nchw(p in pool_problem()) {
        let x = p.input();
        let out_shape = pool2d_output_shape(p.shape, &p.params).unwrap();
        let nhwc = PoolProblem { params: PoolParams { layout: Layout::Nhwc, ..p.params }, ..p.clone() };
        let to_nhwc = |v: &[f32], shape| relayout(v, shape, Layout::Nchw, Layout::Nhwc);
        let x_nhwc = to_nhwc(&x, p.shape);
        let (mut y, mut y_nhwc) = (vec![7.0; out_shape.iter().product()], vec![7.0; out_shape.iter().product()]);
        p.forward(&x, &mut y).unwrap();
        nhwc.forward(&x_nhwc, &mut y_nhwc).unwrap();
        prop_assert_eq!(canonical_bits(&y_nhwc), canonical_bits(&to_nhwc(&y, out_shape)));
        let gy = values(y.len(), p.seed ^ 0x51);
        let (mut gx, mut gx_nhwc) = (vec![7.0; x.len()], vec![7.0; x.len()]);
        p.backward(&x, &gy, &mut gx).unwrap();
        nhwc.backward(&x_nhwc, &to_nhwc(&gy, out_shape), &mut gx_nhwc).unwrap();
        prop_assert_eq!(canonical_bits(&gx_nhwc), canonical_bits(&to_nhwc(&gx, p.shape)));
        // The channels-last reference reads and writes channels-last.
        let (want, _) = pool2d_direct(&x_nhwc, p.shape, &nhwc.params, p.max).unwrap();
        if !p.max {
            assert_close("avg_pool2d NHWC", &want, &y_nhwc);
        }
        // Switches and unpooling: the NCHW ones permuted (indices are plane
        // positions in both; as floats, exact at these sizes).
        let n_out = y.len();
        let (mut ym, mut at) = (vec![7.0; n_out], vec![5usize; n_out]);
        let (mut ym2, mut at2) = (vec![7.0; n_out], vec![5usize; n_out]);
        max_pool2d_with_indices(&x, p.shape, &p.params, &mut ym, &mut at).unwrap();
        max_pool2d_with_indices(&x_nhwc, p.shape, &nhwc.params, &mut ym2, &mut at2).unwrap();
        prop_assert_eq!(canonical_bits(&ym2), canonical_bits(&to_nhwc(&ym, out_shape)));
        let as_f32 = |v: &[usize]| v.iter().map(|&i| i as f32).collect::<Vec<_>>();
        prop_assert_eq!(bits(&as_f32(&at2)), bits(&to_nhwc(&as_f32(&at), out_shape)));
        let (mut back, mut back2) = (vec![7.0; x.len()], vec![7.0; x.len()]);
        max_unpool2d(&ym, out_shape, &at, &mut back, p.shape).unwrap();
        max_unpool2d_with_layout(&ym2, out_shape, &at2, &mut back2, p.shape, Layout::Nhwc).unwrap();
        prop_assert_eq!(canonical_bits(&back2), canonical_bits(&to_nhwc(&back, p.shape)));
    }

    /// Forward: the shape matches the reference's own window count; max is
    /// exact (NaN where the reference has NaN), the average within REL.
    #[test]
    fn forward_matches_reference(p in pool_problem()) {
        let x = p.input();
        let (want, shape) = pool2d_direct(&x, p.shape, &p.params, p.max).unwrap();
        prop_assert_eq!(pool2d_output_shape(p.shape, &p.params).unwrap(), shape);
        let mut y = vec![7.0; shape.iter().product()];
        p.forward(&x, &mut y).unwrap();
        if p.max {
            for (i, (&got, &w)) in y.iter().zip(&want.value).enumerate() {
                // Bits, so that the sign of a zero maximum counts too.
                let same = got.is_nan() && w.is_nan() || got.to_bits() == (w as f32).to_bits();
                prop_assert!(same, "element {}: {} vs {}", i, got, w);
            }
        } else {
            assert_close("avg_pool2d", &want, &y);
        }
    }

    /// Backward against the reference (max: the first maximum, the last NaN),
    /// and by adjointness: <pool(x), gy> = <x, pool_backward(gy)>.
    #[test]
    fn backward_matches_reference(p in pool_problem()) {
        let x = p.input();
        let (fwd, shape) = pool2d_direct(&x, p.shape, &p.params, p.max).unwrap();
        let gy = values(shape.iter().product(), p.seed ^ 0x9e37);
        let mut gx = vec![7.0; x.len()];
        p.backward(&x, &gy, &mut gx).unwrap();
        let want = pool2d_backward_direct(&x, p.shape, &gy, &p.params, p.max).unwrap();
        assert_close("pool backward", &want, &gx);
        if x.iter().all(|v| v.is_finite()) && fwd.value.iter().all(|v| v.is_finite()) {
            let lhs: f64 = fwd.value.iter().zip(&gy).map(|(a, &b)| a * b as f64).sum();
            let rhs: f64 = x.iter().zip(&gx).map(|(&a, &b)| a as f64 * b as f64).sum();
            let scale: f64 = fwd.magnitude.iter().chain(&fwd.value).zip(gy.iter().cycle()).map(|(a, &b)| (a * b as f64).abs()).sum();
            prop_assert!((lhs - rhs).abs() <= 1e-5 * (scale + 1.0), "adjointness: {} vs {}", lhs, rhs);
        }
    }

    /// The switches: the output holds `max_pool2d`'s bits, and each index is
    /// the window's first maximum (last NaN) by the test's own window walk;
    /// unpooling scatters the values back to exactly those positions.
    #[test]
    fn indices_name_each_maximum_and_unpool_puts_it_back(p in pool_problem()) {
        let x = p.input();
        let out_shape = pool2d_output_shape(p.shape, &p.params).unwrap();
        let (out, plane_in) = (out_shape.iter().product(), p.shape[2] * p.shape[3]);
        let (mut y, mut at, mut plain) = (vec![7.0; out], vec![3; out], vec![7.0; out]);
        max_pool2d_with_indices(&x, p.shape, &p.params, &mut y, &mut at).unwrap();
        max_pool2d(&x, p.shape, &p.params, &mut plain).unwrap();
        prop_assert_eq!(bits(&y), bits(&plain));
        prop_assert_eq!(&at, &window_argmax(&x, p.shape, &p.params));
        let mut back = vec![7.0; x.len()];
        max_unpool2d(&y, out_shape, &at, &mut back, p.shape).unwrap();
        let mut want = vec![0.0f32; x.len()];
        for (k, (&v, &i)) in y.iter().zip(&at).enumerate() {
            if i != MAX_POOL_NO_INDEX {
                want[k / (out_shape[2] * out_shape[3]) * plane_in + i] = v;
            }
        }
        prop_assert_eq!(bits(&back), bits(&want));
    }

    /// Global average pooling is the mean of each plane.
    #[test]
    fn global_avg_is_the_plane_mean(n in 0usize..3, c in 1usize..5, h in 1usize..20, w in 1usize..20, seed in any::<u64>()) {
        let x = values(n * c * h * w, seed);
        let mut y = vec![0.0; n * c];
        global_avg_pool2d(&x, [n, c, h, w], &mut y).unwrap();
        for (i, plane) in x.chunks_exact(h * w).enumerate() {
            let mean = plane.iter().map(|&v| v as f64).sum::<f64>() / (h * w) as f64;
            prop_assert!((y[i] as f64 - mean).abs() <= 1e-7 * (1.0 + mean.abs()), "plane {}: {} vs {}", i, y[i], mean);
        }
    }
}

/// Each window's first maximum in row-major window order (a NaN wins, so the
/// last NaN), as a position in its plane, by the index formula of
/// `convgemm::reference`; `MAX_POOL_NO_INDEX` for a window with no input.
fn window_argmax(x: &[f32], shape: [usize; 4], p: &PoolParams) -> Vec<usize> {
    let [_, _, h, w] = shape;
    let [_, _, oh, ow] = pool2d_output_shape(shape, p).unwrap();
    let mut at = Vec::new();
    for plane in x.chunks_exact(h * w) {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut best: Option<usize> = None;
                for u in 0..p.kernel[0] {
                    for v in 0..p.kernel[1] {
                        let iy = (oy * p.stride[0] + u * p.dilation[0]) as isize - p.padding[0] as isize;
                        let ix = (ox * p.stride[1] + v * p.dilation[1]) as isize - p.padding[1] as isize;
                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                            continue;
                        }
                        let i = iy as usize * w + ix as usize;
                        if best.is_none_or(|b| plane[i].is_nan() || plane[i] > plane[b]) {
                            best = Some(i);
                        }
                    }
                }
                at.push(best.unwrap_or(MAX_POOL_NO_INDEX));
            }
        }
    }
    at
}

fn params(k: usize, s: usize, pad: usize, ceil: bool, include: bool) -> PoolParams {
    let mut p = PoolParams::new([k, k]);
    p.stride = [s, s];
    p.padding = [pad; 4];
    p.ceil_mode = ceil;
    p.count_include_pad = include;
    p
}

/// Shapes PyTorch gives (torch.nn.functional.max_pool2d / avg_pool2d).
#[test]
fn output_shapes_match_pytorch() {
    let cases = [
        // (size, kernel, stride, pad, ceil) -> out
        (112, 3, 2, 1, false, 56), // ResNet-50 stem
        (55, 3, 2, 0, false, 27),  // AlexNet
        (224, 2, 2, 0, false, 112),
        (5, 2, 2, 0, false, 2),
        (5, 2, 2, 0, true, 3),
        (5, 2, 2, 1, true, 3), // the 4th window would start in the padding: dropped
        (6, 3, 3, 1, true, 3),
        (28, 2, 2, 0, true, 14),
        (1, 1, 1, 0, false, 1),
    ];
    for (size, k, s, pad, ceil, out) in cases {
        let shape = pool2d_output_shape([2, 3, size, size], &params(k, s, pad, ceil, true)).unwrap();
        assert_eq!(shape, [2, 3, out, out], "size {size} k{k} s{s} p{pad} ceil {ceil}");
    }
}

/// `count_include_pad` in ceil mode: the divisor is the window clipped to
/// the padded input (PyTorch's `avg_pool2d(ones(1,1,3,3), 2, 2, 1, True)`).
#[test]
fn avg_divisors_match_pytorch() {
    let x = [1.0; 9];
    let mut y = [0.0; 4];
    avg_pool2d(&x, [1, 1, 3, 3], &params(2, 2, 1, true, true), &mut y).unwrap();
    assert_eq!(y, [0.25, 0.5, 0.5, 1.0]);
    avg_pool2d(&x, [1, 1, 3, 3], &params(2, 2, 1, true, false), &mut y).unwrap();
    assert_eq!(y, [1.0; 4]);
    // ceil mode without padding: the last window overruns the input and is
    // clipped, so it divides by what it covers even with count_include_pad.
    avg_pool2d(&x, [1, 1, 3, 3], &params(2, 2, 0, true, true), &mut y).unwrap();
    assert_eq!(y, [1.0; 4]);
}

#[test]
fn max_ties_go_to_the_first_and_nan_wins() {
    let x = [3.0, 1.0, 3.0, 3.0];
    let mut gx = [9.0; 4];
    max_pool2d_backward(&x, [1, 1, 2, 2], &[1.0], &PoolParams::new([2, 2]), &mut gx).unwrap();
    assert_eq!(gx, [1.0, 0.0, 0.0, 0.0]);
    let x = [3.0, f32::NAN, 5.0, f32::NAN];
    let mut y = [0.0];
    max_pool2d(&x, [1, 1, 2, 2], &PoolParams::new([2, 2]), &mut y).unwrap();
    assert!(y[0].is_nan());
    max_pool2d_backward(&x, [1, 1, 2, 2], &[1.0], &PoolParams::new([2, 2]), &mut gx).unwrap();
    assert_eq!(gx, [0.0, 0.0, 0.0, 1.0]);
}

/// A dilated window that falls between the input's elements has no
/// input: its max is -inf and it passes no gradient.
#[test]
fn empty_dilated_window() {
    let mut p = PoolParams::new([2, 2]);
    p.dilation = [3, 3];
    p.padding = [2; 4];
    p.stride = [1, 1];
    let shape = pool2d_output_shape([1, 1, 1, 1], &p).unwrap();
    assert_eq!(shape, [1, 1, 2, 2]); // taps at (-2, 1) and (-1, 2): none inside
    let mut y = [0.0; 4];
    max_pool2d(&[4.0], [1, 1, 1, 1], &p, &mut y).unwrap();
    assert_eq!(y, [f32::NEG_INFINITY; 4]);
    let mut gx = [9.0];
    max_pool2d_backward(&[4.0], [1, 1, 1, 1], &[1.0; 4], &p, &mut gx).unwrap();
    assert_eq!(gx, [0.0]);
}

/// Wide dilated rows, at and past the reach of the vector kernels: the
/// last tap 16 or 17 columns on with stride 1, 32 or 33 with stride 2
/// (beyond a block of 16 windows and the next), each padded and not.
#[test]
fn wide_dilated_rows_match_reference() {
    for (stride, kernel, dilation) in
        [(1, 5, 4), (1, 3, 8), (1, 2, 16), (1, 2, 17), (1, 4, 5), (2, 3, 16), (2, 2, 32), (2, 2, 33), (2, 5, 8)]
    {
        for width in [34, 49, 70] {
            for pad in [0, dilation * (kernel - 1) / 2] {
                let mut p = PoolParams::new([2, kernel]);
                p.stride = [1, stride];
                p.dilation = [1, dilation];
                p.padding = [0, pad, 0, pad];
                let shape = [1, 2, 3, width];
                let x = values(shape.iter().product(), width as u64);
                let (want, out_shape) = pool2d_direct(&x, shape, &p, true).unwrap();
                let mut y = vec![0.0; out_shape.iter().product()];
                max_pool2d(&x, shape, &p, &mut y).unwrap();
                let case = format!("stride {stride} kernel {kernel} dilation {dilation} width {width} pad {pad}");
                assert_eq!(bits(&y), bits(&want.value.iter().map(|&v| v as f32).collect::<Vec<_>>()), "{case}");
            }
        }
    }
}

/// Large enough to take the parallel path: same bits as on one thread.
#[test]
fn threads_do_not_change_bits() {
    let shape = [2, 16, 40, 40];
    let x = values(shape.iter().product(), 3);
    let p = params(3, 2, 1, true, false);
    let out: usize = pool2d_output_shape(shape, &p).unwrap().iter().product();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let (mut a, mut b, mut g) = (vec![0.0; out], vec![0.0; out], vec![0.0; x.len()]);
            max_pool2d(&x, shape, &p, &mut a).unwrap();
            avg_pool2d(&x, shape, &p, &mut b).unwrap();
            max_pool2d_backward(&x, shape, &a, &p, &mut g).unwrap();
            let (mut c, mut at) = (vec![0.0; out], vec![0; out]);
            max_pool2d_with_indices(&x, shape, &p, &mut c, &mut at).unwrap();
            let mut u = vec![0.0; x.len()];
            max_unpool2d(&c, pool2d_output_shape(shape, &p).unwrap(), &at, &mut u, shape).unwrap();
            [bits(&a), bits(&b), bits(&g), bits(&c), at.iter().map(|&i| i as u32).collect(), bits(&u)]
        })
    };
    assert_eq!(run(1), run(3));
}

#[test]
fn errors_name_the_problem_and_leave_output_untouched() {
    let x = vec![1.0; 2 * 3 * 8 * 8];
    let shape = [2, 3, 8, 8];
    let mut y = vec![5.0; 2 * 3 * 4 * 4];
    let mut check = |p: PoolParams, shape: [usize; 4], x: &[f32], max: bool, what: &str| {
        let f = if max { max_pool2d } else { avg_pool2d };
        let e = f(x, shape, &p, &mut y).unwrap_err();
        assert!(e.to_string().contains(what), "{e} should mention {what}");
        assert!(y.iter().all(|&v| v == 5.0), "output written on error: {e}");
    };
    let ok = PoolParams::new([2, 2]);
    check(PoolParams { kernel: [0, 2], ..ok }, shape, &x, true, "kernel[0]");
    check(PoolParams { stride: [2, 0], ..ok }, shape, &x, true, "stride[1]");
    check(PoolParams { dilation: [0, 1], ..ok }, shape, &x, true, "dilation[0]");
    check(PoolParams { dilation: [1, 2], ..ok }, shape, &x, false, "dilation[1]");
    check(PoolParams { padding: [0, 0, 2, 0], ..ok }, shape, &x, true, "padding[2] (bottom)");
    check(PoolParams { kernel: [9, 2], stride: [1, 1], ..ok }, shape, &x, true, "height");
    check(ok, [2, 3, 0, 8], &[], true, "input_shape[2]");
    check(ok, shape, &x[1..], true, "input buffer");
    check(ok, [usize::MAX, 3, 8, 8], &x, true, "overflow");
    // An empty batch does not excuse a plane too large to index (fuzz-found).
    check(ok, [0, 0, usize::MAX / 4, 5], &[], true, "overflow");
    let e = max_pool2d(&x, shape, &ok, &mut y[1..]).unwrap_err();
    assert!(matches!(e, ConvError::BufferLength { buffer: "output", .. }), "{e}");
    let mut gx = vec![5.0; x.len()];
    let e = max_pool2d_backward(&x, shape, &y[1..], &ok, &mut gx).unwrap_err();
    assert!(matches!(e, ConvError::BufferLength { buffer: "grad_output", .. }), "{e}");
    let e = avg_pool2d_backward(shape, &y, &ok, &mut gx[1..]).unwrap_err();
    assert!(matches!(e, ConvError::BufferLength { buffer: "grad_input", .. }), "{e}");
    assert!(gx.iter().all(|&v| v == 5.0));
    let e = global_avg_pool2d(&x, shape, &mut y[..5]).unwrap_err();
    assert!(matches!(e, ConvError::BufferLength { buffer: "output", .. }), "{e}");
}

/// Several NaNs in a window: the switch names the last, as the gradient does.
#[test]
fn switches_take_the_last_nan() {
    let x = [3.0, f32::NAN, 5.0, f32::NAN];
    let (mut y, mut at) = ([0.0; 1], [0; 1]);
    max_pool2d_with_indices(&x, [1, 1, 1, 4], &PoolParams::new([1, 4]), &mut y, &mut at).unwrap();
    assert!(y[0].is_nan() && at[0] == 3, "{y:?} {at:?}");
}

/// The switches and the unpooling reject what does not fit, before writing.
#[test]
fn index_errors_leave_outputs_untouched() {
    let shape = [2, 3, 8, 8];
    let x = values(2 * 3 * 8 * 8, 1);
    let ok = PoolParams::new([2, 2]);
    let (mut y, mut at) = (vec![5.0; 2 * 3 * 4 * 4], vec![9; 2 * 3 * 4 * 4]);
    let e = max_pool2d_with_indices(&x, shape, &ok, &mut y, &mut at[1..]).unwrap_err();
    assert!(matches!(e, ConvError::BufferLength { buffer: "indices", .. }), "{e}");
    let e = max_pool2d_with_indices(&x, shape, &PoolParams { stride: [0, 1], ..ok }, &mut y, &mut at).unwrap_err();
    assert!(e.to_string().contains("stride[0]"), "{e}");
    assert!(y.iter().all(|&v| v == 5.0) && at.iter().all(|&i| i == 9));

    max_pool2d_with_indices(&x, shape, &ok, &mut y, &mut at).unwrap();
    let pooled = [2, 3, 4, 4];
    let mut back = vec![5.0; x.len()];
    let mut check = |y: &[f32], in_shape, at: &[usize], out_shape, back_len: usize, what: &str| {
        let e = max_unpool2d(y, in_shape, at, &mut back[..back_len], out_shape).unwrap_err();
        assert!(e.to_string().contains(what), "{e} should mention {what}");
        assert!(back.iter().all(|&v| v == 5.0), "output written on error: {e}");
    };
    let n = x.len();
    check(&y, pooled, &at, [2, 2, 8, 8], 2 * 2 * 64, "output_shape[1] (channels)");
    check(&y, pooled, &at, [1, 3, 8, 8], 3 * 64, "output_shape[0] (batch)");
    check(&y[1..], pooled, &at, shape, n, "input buffer");
    check(&y, pooled, &at[1..], shape, n, "indices buffer");
    check(&y, pooled, &at, shape, n - 1, "output buffer");
    check(&y, pooled, &at, [2, 3, usize::MAX, 2], n, "overflow");
    let mut bad = at.clone();
    bad[40] = 64;
    check(&y, pooled, &bad, shape, n, "indices = 64");
    // The same indices name positions of a larger plane: valid there.
    let mut wide = vec![5.0; 2 * 3 * 8 * 9];
    max_unpool2d(&y, pooled, &bad, &mut wide, [2, 3, 8, 9]).unwrap();
    assert_eq!(wide[2 * 72 + 64], y[40]);
}

/// An empty batch with a plane of 2^61 columns (fuzz-found): the max-pool
/// gradient is empty and returns at once, where it used to build a table
/// with one entry per output column and panic on the capacity.
#[test]
fn max_pool_backward_of_an_empty_batch_with_huge_planes() {
    let params = PoolParams::new([1, 1]);
    for shape in [[0, 3, 1, 1 << 61], [2, 0, 1, 1 << 61]] {
        let mut gx: Vec<f32> = Vec::new();
        max_pool2d_backward(&[], shape, &[], &params, &mut gx).unwrap();
    }
}
