//! The C entry points, called as C would call them, against the f64
//! references of `convgemm::reference` (random shapes, strides, padding,
//! dilation, groups, flip, both layouts), and the promises the header makes:
//! untouched outputs on failure, one plan on many threads, the same bits
//! whatever the thread setting. (The C programs in `tests/c/` check the
//! error paths from C itself, under the sanitizers.)

use std::ffi::CStr;

use convgemm::reference::{
    Reference, conv_transpose2d_direct, conv2d_backward_bias_direct_with_layout, conv2d_backward_input_direct,
    conv2d_backward_weight_direct, conv2d_direct, gemm_naive, input_tap, pool2d_backward_direct, pool2d_direct,
};
use convgemm::testing::{bits, values};
use convgemm::{ConvParams, ConvTransposeParams, Layout, PoolParams};
use convgemm_capi::*;
use proptest::prelude::*;

const TOLERANCE: f64 = 1e-5;

fn last_error() -> String {
    // SAFETY: cg_last_error returns a NUL-terminated string that lives until
    // this thread's next failing call.
    unsafe { CStr::from_ptr(cg_last_error()) }.to_string_lossy().into_owned()
}

#[track_caller]
fn ok(status: cg_status) {
    assert_eq!(status, cg_status::CG_OK, "{}", last_error());
}

#[track_caller]
fn close(reference: &Reference, got: &[f32], what: &str) {
    if let Some((i, want, got)) = reference.first_mismatch(got, TOLERANCE) {
        panic!("{what}: element {i} is {got}, the f64 reference says {want}");
    }
}

fn layout_arg(layout: Layout) -> LayoutArg {
    LayoutArg(if layout == Layout::Nhwc { 1 } else { 0 })
}

fn c_params(p: &ConvParams, relu: bool, relaxed: bool) -> cg_conv2d_params {
    cg_conv2d_params {
        stride: p.stride,
        padding: p.padding,
        dilation: p.dilation,
        groups: p.groups,
        flip: p.flip as i32,
        layout: layout_arg(p.layout),
        activation: ActivationArg(relu as i32),
        precision: PrecisionArg(relaxed as i32),
    }
}

/// A random valid convolution: shapes, parameters, layout.
#[derive(Clone, Debug)]
struct Case {
    x_shape: [usize; 4],
    w_shape: [usize; 4],
    params: ConvParams,
    bias: bool,
    relu: bool,
    seed: u64,
}

fn cases() -> impl Strategy<Value = Case> {
    (
        (1usize..3, 1usize..4, 1usize..4, 1usize..3),
        (1usize..4, 1usize..4, 1usize..3, 1usize..3),
        (0usize..3, 0usize..3, 0usize..2, 0usize..2),
        (2usize..12, 2usize..12, any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
        any::<u64>(),
    )
        .prop_filter_map(
            "the kernel fits",
            |((n, groups, cg_in, cg_out), (kh, kw, sh, dh), (pt, pl, pb, pr), (h, w, flip, nhwc, bias, relu), seed)| {
                let params = ConvParams {
                    stride: [sh, 1 + (seed % 2) as usize],
                    padding: [pt, pl, pb, pr],
                    dilation: [dh, 1],
                    groups,
                    flip,
                    layout: if nhwc { Layout::Nhwc } else { Layout::Nchw },
                };
                let x_shape = [n, groups * cg_in, h, w];
                let w_shape = [groups * cg_out, cg_in, kh, kw];
                convgemm::conv2d_output_shape(x_shape, w_shape, &params).ok()?;
                Some(Case { x_shape, w_shape, params, bias, relu, seed: seed % 1000 })
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// cg_conv2d and a plan's run agree with the direct f64 convolution
    /// (ReLU applied to it), in both layouts; a relaxed call stays within the
    /// bound too.
    #[test]
    fn conv2d_and_plans_match_the_reference(case in cases()) {
        let Case { x_shape, w_shape, params, bias, relu, seed } = case;
        let x = values(x_shape.iter().product(), seed);
        let w = values(w_shape.iter().product(), seed + 1);
        let b = bias.then(|| values(w_shape[0], seed + 2));
        let mut reference = conv2d_direct(&x, x_shape, &w, w_shape, b.as_deref(), &params).unwrap();
        if relu {
            reference.value.iter_mut().for_each(|v| *v = v.max(0.0));
        }
        let p = c_params(&params, relu, false);
        let mut y_shape = [0usize; 4];
        // SAFETY: every pointer addresses what its length says.
        ok(unsafe { cg_conv2d_output_shape(x_shape.as_ptr(), w_shape.as_ptr(), &p, y_shape.as_mut_ptr()) });
        let len = y_shape.iter().product();
        let (b_ptr, b_len) = b.as_ref().map_or((std::ptr::null(), 0), |b| (b.as_ptr(), b.len()));
        let mut y = vec![f32::NAN; len];
        // SAFETY: as above.
        ok(unsafe {
            cg_conv2d(x.as_ptr(), x.len(), x_shape.as_ptr(), w.as_ptr(), w.len(), w_shape.as_ptr(), b_ptr, b_len, &p,
                      y.as_mut_ptr(), len)
        });
        close(&reference, &y, "cg_conv2d");

        let mut plan = std::ptr::null_mut();
        let mut y_plan = vec![f32::NAN; len];
        // SAFETY: as above; the plan is destroyed once, after its last run.
        unsafe {
            ok(cg_conv2d_plan_create(w.as_ptr(), w.len(), w_shape.as_ptr(), b_ptr, b_len, &p, &mut plan));
            ok(cg_conv2d_plan_run(plan, x.as_ptr(), x.len(), x_shape.as_ptr(), y_plan.as_mut_ptr(), len));
            cg_conv2d_plan_destroy(plan);
        }
        prop_assert_eq!(bits(&y), bits(&y_plan), "a plan gives cg_conv2d's bits");

        let relaxed = c_params(&params, relu, true);
        // SAFETY: as above.
        ok(unsafe {
            cg_conv2d(x.as_ptr(), x.len(), x_shape.as_ptr(), w.as_ptr(), w.len(), w_shape.as_ptr(), b_ptr, b_len,
                      &relaxed, y.as_mut_ptr(), len)
        });
        // Winograd's bound is per tile (README): the layers here are tiny,
        // so the largest scale of the output plane stands in for it.
        let plane_max = reference.magnitude.iter().cloned().fold(0.0, f64::max);
        let loose = Reference { value: reference.value.clone(), magnitude: vec![plane_max; len] };
        close(&loose, &y, "cg_conv2d, relaxed");
    }

    /// The three gradients and the transposed convolution against their
    /// f64 definitions, in both layouts.
    #[test]
    fn gradients_and_transposed_match_the_reference(case in cases()) {
        let Case { x_shape, w_shape, params, seed, .. } = case;
        let y_shape = convgemm::conv2d_output_shape(x_shape, w_shape, &params).unwrap();
        let x = values(x_shape.iter().product(), seed);
        let w = values(w_shape.iter().product(), seed + 1);
        let dy = values(y_shape.iter().product(), seed + 2);
        let p = c_params(&params, false, false);

        let mut dx = vec![f32::NAN; x.len()];
        let mut dw = vec![f32::NAN; w.len()];
        let mut db = vec![f32::NAN; w_shape[0]];
        // SAFETY: every pointer addresses what its length says.
        unsafe {
            ok(cg_conv2d_backward_input(dy.as_ptr(), dy.len(), y_shape.as_ptr(), w.as_ptr(), w.len(),
                                        w_shape.as_ptr(), &p, dx.as_mut_ptr(), dx.len(), x_shape.as_ptr()));
            ok(cg_conv2d_backward_weight(x.as_ptr(), x.len(), x_shape.as_ptr(), dy.as_ptr(), dy.len(),
                                         y_shape.as_ptr(), &p, dw.as_mut_ptr(), dw.len(), w_shape.as_ptr()));
            ok(cg_conv2d_backward_bias(dy.as_ptr(), dy.len(), y_shape.as_ptr(), layout_arg(params.layout),
                                       db.as_mut_ptr(), db.len()));
        }
        close(&conv2d_backward_input_direct(&dy, y_shape, &w, w_shape, &params, x_shape).unwrap(), &dx, "input gradient");
        close(&conv2d_backward_weight_direct(&x, x_shape, &dy, y_shape, &params, w_shape).unwrap(), &dw, "weight gradient");
        close(&conv2d_backward_bias_direct_with_layout(&dy, y_shape, params.layout).unwrap(), &db, "bias gradient");

        // The transposed convolution of dy by a [c_out, c_in/groups, kh, kw] weight.
        let tp = ConvTransposeParams {
            stride: params.stride, padding: params.padding, output_padding: [0, 0], dilation: params.dilation,
            groups: params.groups, layout: params.layout,
        };
        let tw_shape = [w_shape[0], w_shape[1], w_shape[2], w_shape[3]];
        let bias = values(w_shape[1] * params.groups, seed + 3);
        let c_tp = cg_conv_transpose2d_params {
            stride: tp.stride,
            padding: tp.padding,
            dilation: tp.dilation,
            groups: tp.groups,
            layout: layout_arg(tp.layout),
            ..cg_conv_transpose2d_params::default()
        };
        let mut t_shape = [0usize; 4];
        // SAFETY: as above.
        let status = unsafe {
            cg_conv_transpose2d_output_shape(y_shape.as_ptr(), tw_shape.as_ptr(), &c_tp, t_shape.as_mut_ptr())
        };
        let want = convgemm::conv_transpose2d_output_shape(y_shape, tw_shape, &tp);
        prop_assert_eq!(status == cg_status::CG_OK, want.is_ok(), "{}", last_error());
        if let Ok(shape) = want {
            prop_assert_eq!(t_shape, shape);
            let mut t = vec![f32::NAN; shape.iter().product()];
            // SAFETY: as above.
            ok(unsafe {
                cg_conv_transpose2d(dy.as_ptr(), dy.len(), y_shape.as_ptr(), w.as_ptr(), w.len(), tw_shape.as_ptr(),
                                    bias.as_ptr(), bias.len(), &c_tp, t.as_mut_ptr(), t.len())
            });
            close(&conv_transpose2d_direct(&dy, y_shape, &w, tw_shape, Some(&bias), &tp).unwrap(), &t, "transposed");
        }
    }

    /// Max and average pooling, forward and backward, and global average
    /// pooling, against the f64 definitions in both layouts.
    #[test]
    fn pooling_matches_the_reference(
        (n, c, h, w) in (1usize..3, 1usize..5, 2usize..10, 2usize..10),
        (k, s, pad, ceil, nhwc) in (1usize..4, 1usize..3, 0usize..2, any::<bool>(), any::<bool>()),
        seed in 0u64..1000,
    ) {
        let layout = if nhwc { Layout::Nhwc } else { Layout::Nchw };
        let params = PoolParams {
            kernel: [k, k], stride: [s, s], padding: [pad.min(k / 2); 4], dilation: [1, 1], ceil_mode: ceil,
            count_include_pad: true, layout,
        };
        let x_shape = [n, c, h, w];
        let Ok(y_shape) = convgemm::pool2d_output_shape(x_shape, &params) else { return Ok(()) };
        let x = values(x_shape.iter().product(), seed);
        let dy = values(y_shape.iter().product(), seed + 1);
        let mut cp = cg_pool2d_params::new([k, k]);
        cp.stride = params.stride;
        cp.padding = params.padding;
        cp.ceil_mode = ceil as i32;
        cp.layout = layout_arg(layout);
        let mut shape = [0usize; 4];
        // SAFETY: every pointer addresses what its length says.
        ok(unsafe { cg_pool2d_output_shape(x_shape.as_ptr(), &cp, shape.as_mut_ptr()) });
        prop_assert_eq!(shape, y_shape);
        for max in [true, false] {
            let mut y = vec![f32::NAN; dy.len()];
            let mut dx = vec![f32::NAN; x.len()];
            // SAFETY: as above.
            unsafe {
                if max {
                    ok(cg_max_pool2d(x.as_ptr(), x.len(), x_shape.as_ptr(), &cp, y.as_mut_ptr(), y.len()));
                    ok(cg_max_pool2d_backward(x.as_ptr(), x.len(), x_shape.as_ptr(), dy.as_ptr(), dy.len(), &cp,
                                              dx.as_mut_ptr(), dx.len()));
                } else {
                    ok(cg_avg_pool2d(x.as_ptr(), x.len(), x_shape.as_ptr(), &cp, y.as_mut_ptr(), y.len()));
                    ok(cg_avg_pool2d_backward(dy.as_ptr(), dy.len(), x_shape.as_ptr(), &cp, dx.as_mut_ptr(),
                                              dx.len()));
                }
            }
            close(&pool2d_direct(&x, x_shape, &params, max).unwrap().0, &y, "pooling");
            close(&pool2d_backward_direct(&x, x_shape, &dy, &params, max).unwrap(), &dx, "pooling gradient");
        }
        // Global average pooling is average pooling with the whole plane as window.
        let global = PoolParams { kernel: [h, w], stride: [h, w], padding: [0; 4], ceil_mode: false, ..params };
        let dg = values(n * c, seed + 2);
        let (mut g, mut dgx) = (vec![f32::NAN; n * c], vec![f32::NAN; x.len()]);
        // SAFETY: as above.
        unsafe {
            ok(cg_global_avg_pool2d(x.as_ptr(), x.len(), x_shape.as_ptr(), layout_arg(layout), g.as_mut_ptr(), g.len()));
            ok(cg_global_avg_pool2d_backward(dg.as_ptr(), dg.len(), x_shape.as_ptr(), layout_arg(layout),
                                             dgx.as_mut_ptr(), dgx.len()));
        }
        close(&pool2d_direct(&x, x_shape, &global, false).unwrap().0, &g, "global pooling");
        close(&pool2d_backward_direct(&x, x_shape, &dg, &global, false).unwrap(), &dgx, "global pooling gradient");
    }

    /// cg_sgemm on row- and column-major operands with padded strides,
    /// against the f64 product; beta = 0 overwrites NaN.
    #[test]
    fn sgemm_matches_the_reference(
        (m, k, n) in (0usize..20, 0usize..20, 0usize..20),
        (ta, tb, tc) in (any::<bool>(), any::<bool>(), any::<bool>()),
        pad in 0usize..3,
        seed in 0u64..1000,
    ) {
        let strides = |rows: usize, cols: usize, t: bool| -> (isize, isize, usize) {
            if t { (1, (rows + pad) as isize, (rows + pad) * cols) } else { ((cols + pad) as isize, 1, (cols + pad) * rows) }
        };
        let (rsa, csa, a_len) = strides(m, k, ta);
        let (rsb, csb, b_len) = strides(k, n, tb);
        let (rsc, csc, c_len) = strides(m, n, tc);
        let a = values(a_len, seed);
        let b = values(b_len, seed + 1);
        let mut c = vec![f32::NAN; c_len];
        // SAFETY: every pointer addresses what its length says.
        ok(unsafe {
            cg_sgemm(m, k, n, 1.0, a.as_ptr(), a_len, rsa, csa, b.as_ptr(), b_len, rsb, csb, 0.0, c.as_mut_ptr(),
                     c_len, rsc, csc)
        });
        let at = |i: usize, j: usize, rs: isize, cs: isize| i * rs as usize + j * cs as usize;
        let reference = gemm_naive(m, k, n, |i, l| a[at(i, l, rsa, csa)], |l, j| b[at(l, j, rsb, csb)]);
        let got: Vec<f32> = (0..m * n).map(|e| c[at(e / n, e % n, rsc, csc)]).collect();
        close(&reference, &got, "cg_sgemm");
        // The padding between C's rows or columns is not C: still NaN.
        let written: std::collections::HashSet<usize> = (0..m * n).map(|e| at(e / n, e % n, rsc, csc)).collect();
        prop_assert!((0..c_len).filter(|i| !written.contains(i)).all(|i| c[i].is_nan()), "wrote C's padding");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// cg_im2col puts in each column the input tap the definition names
    /// (zeros in the padding); cg_col2im is its adjoint: <im2col(x), c> =
    /// <x, col2im(c)>, summed in f64.
    #[test]
    fn im2col_and_col2im_follow_the_definition(case in cases()) {
        let Case { x_shape, w_shape, params, seed, .. } = case;
        let [n, c, _, _] = x_shape;
        let kernel = [w_shape[2], w_shape[3]];
        let [_, _, oh, ow] = convgemm::conv2d_output_shape(x_shape, [1, c, kernel[0], kernel[1]],
                                                           &ConvParams { groups: 1, ..params }).unwrap();
        let p = c_params(&ConvParams { groups: 1, ..params }, false, false);
        let x = values(x_shape.iter().product(), seed);
        let mut len = 0usize;
        // SAFETY: every pointer addresses what its length says.
        ok(unsafe { cg_im2col_len(x_shape.as_ptr(), kernel.as_ptr(), &p, &mut len) });
        prop_assert_eq!(len, n * c * kernel[0] * kernel[1] * oh * ow);
        let mut cols = vec![f32::NAN; len];
        // SAFETY: as above.
        ok(unsafe { cg_im2col(x.as_ptr(), x.len(), x_shape.as_ptr(), kernel.as_ptr(), &p, cols.as_mut_ptr(), len) });
        let params1 = ConvParams { groups: 1, ..params };
        let mut i = 0;
        for b in 0..n {
            for ch in 0..c {
                for u in 0..kernel[0] {
                    for v in 0..kernel[1] {
                        for oy in 0..oh {
                            for ox in 0..ow {
                                let want = input_tap(&x, x_shape, &params1, b, ch, oy, ox, u, v);
                                prop_assert_eq!(cols[i].to_bits(), want.to_bits(), "column entry {}", i);
                                i += 1;
                            }
                        }
                    }
                }
            }
        }
        let y = values(len, seed + 1);
        let mut back = vec![f32::NAN; x.len()];
        // SAFETY: as above.
        ok(unsafe { cg_col2im(y.as_ptr(), len, x_shape.as_ptr(), kernel.as_ptr(), &p, back.as_mut_ptr(), back.len()) });
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>();
        let mag = y.iter().map(|v| v.abs() as f64).sum::<f64>() * 2.0;
        prop_assert!((dot(&cols, &y) - dot(&x, &back)).abs() <= 1e-5 * mag.max(1.0),
                     "adjoint: {} vs {}", dot(&cols, &y), dot(&x, &back));
    }

    /// Max pooling with indices: cg_max_pool2d's bits, each index inside its
    /// plane at an element equal to the maximum; cg_max_unpool2d puts each
    /// value back there and zeros elsewhere.
    #[test]
    fn pooling_indices_and_unpooling(
        (n, c, h, w) in (1usize..3, 1usize..5, 2usize..9, 2usize..9),
        (k, s, nhwc) in (1usize..4, 1usize..3, any::<bool>()),
        seed in 0u64..1000,
    ) {
        let layout = if nhwc { Layout::Nhwc } else { Layout::Nchw };
        let x_shape = [n, c, h, w];
        let cp = cg_pool2d_params { stride: [s, s], layout: layout_arg(layout), ..cg_pool2d_params::new([k, k]) };
        let params = PoolParams { stride: [s, s], layout, ..PoolParams::new([k, k]) };
        let Ok(y_shape) = convgemm::pool2d_output_shape(x_shape, &params) else { return Ok(()) };
        let x = values(x_shape.iter().product(), seed);
        let len: usize = y_shape.iter().product();
        let (mut y, mut y_plain, mut at) = (vec![f32::NAN; len], vec![f32::NAN; len], vec![7usize; len]);
        // SAFETY: every pointer addresses what its length says.
        unsafe {
            ok(cg_max_pool2d_with_indices(x.as_ptr(), x.len(), x_shape.as_ptr(), &cp, y.as_mut_ptr(), len,
                                          at.as_mut_ptr(), len));
            ok(cg_max_pool2d(x.as_ptr(), x.len(), x_shape.as_ptr(), &cp, y_plain.as_mut_ptr(), len));
        }
        prop_assert_eq!(bits(&y), bits(&y_plain));
        let at_of = |b: usize, ch: usize, pos: usize| convgemm::reference::offset(layout, x_shape, b, ch, pos / w, pos % w);
        let out_of = |b: usize, ch: usize, p: usize| convgemm::reference::offset(layout, y_shape, b, ch, p / y_shape[3], p % y_shape[3]);
        for b in 0..n {
            for ch in 0..c {
                for p in 0..y_shape[2] * y_shape[3] {
                    let i = out_of(b, ch, p);
                    prop_assert!(at[i] < h * w, "index {} outside its plane", at[i]);
                    prop_assert_eq!(x[at_of(b, ch, at[i])].to_bits(), y[i].to_bits());
                }
            }
        }
        let mut un = vec![f32::NAN; x.len()];
        // SAFETY: as above.
        ok(unsafe {
            cg_max_unpool2d(y.as_ptr(), len, y_shape.as_ptr(), at.as_ptr(), len, layout_arg(layout), un.as_mut_ptr(),
                            un.len(), x_shape.as_ptr())
        });
        let mut want = vec![0f32; x.len()];
        for b in 0..n {
            for ch in 0..c {
                for p in 0..y_shape[2] * y_shape[3] {
                    let i = out_of(b, ch, p);
                    want[at_of(b, ch, at[i])] = y[i];
                }
            }
        }
        prop_assert_eq!(bits(&un), bits(&want));
    }
}

/// A rejected call writes nothing: every output keeps its bits.
#[test]
fn failures_leave_outputs_untouched() {
    let x_shape = [1usize, 2, 5, 5];
    let w_shape = [3usize, 2, 3, 3];
    let x = values(50, 1);
    let w = values(54, 2);
    let mut y = vec![7.5f32; 27];
    let mut p = cg_conv2d_params::default();
    let good = p;
    let call = |p: &cg_conv2d_params, y: &mut [f32], len: usize| {
        // SAFETY: every pointer addresses what its length says (`len <= y.len()`).
        unsafe {
            cg_conv2d(
                x.as_ptr(),
                50,
                x_shape.as_ptr(),
                w.as_ptr(),
                54,
                w_shape.as_ptr(),
                std::ptr::null(),
                0,
                p,
                y.as_mut_ptr(),
                len,
            )
        }
    };
    for (what, status) in [
        ("padding beyond the address space", {
            p.padding[0] = usize::MAX;
            call(&p, &mut y, 27)
        }),
        ("groups 0", {
            p = good;
            p.groups = 0;
            call(&p, &mut y, 27)
        }),
        ("a short output", call(&good, &mut y, 26)),
    ] {
        assert_ne!(status, cg_status::CG_OK, "{what}");
        assert!(!last_error().is_empty(), "{what}: a message");
        assert!(y.iter().all(|&v| v == 7.5), "{what}: the output was written");
    }
    assert_eq!(call(&good, &mut y, 27), cg_status::CG_OK);
    assert!(y.iter().any(|&v| v != 7.5));
}

/// One plan shared by eight threads, under each thread setting, gives the
/// bits of a lone run.
#[test]
fn one_plan_on_many_threads_gives_the_same_bits() {
    let x_shape = [2usize, 24, 17, 19];
    let w_shape = [40usize, 24, 3, 3];
    let x = values(x_shape.iter().product(), 3);
    let w = values(w_shape.iter().product(), 4);
    let b = values(40, 5);
    let mut p = c_params(&ConvParams { padding: [1; 4], ..ConvParams::default() }, true, false);
    p.activation = ActivationArg(2);
    let mut plan = std::ptr::null_mut();
    // SAFETY: every pointer addresses what its length says.
    ok(unsafe { cg_conv2d_plan_create(w.as_ptr(), w.len(), w_shape.as_ptr(), b.as_ptr(), 40, &p, &mut plan) });
    let len = 2 * 40 * 17 * 19;
    struct Shared(*mut cg_conv2d_plan);
    // SAFETY: the header promises that a plan may run on many threads at once.
    unsafe impl Sync for Shared {}
    let plan = Shared(plan);
    let run = |plan: &Shared| {
        let mut y = vec![f32::NAN; len];
        // SAFETY: a live plan and buffers of the lengths given.
        ok(unsafe { cg_conv2d_plan_run(plan.0, x.as_ptr(), x.len(), x_shape.as_ptr(), y.as_mut_ptr(), len) });
        bits(&y)
    };
    let lone = run(&plan);
    let reference =
        conv2d_direct(&x, x_shape, &w, w_shape, Some(&b), &ConvParams { padding: [1; 4], ..ConvParams::default() })
            .unwrap();
    let clamped = Reference {
        value: reference.value.iter().map(|v| v.clamp(0.0, 6.0)).collect(),
        magnitude: reference.magnitude.clone(),
    };
    close(&clamped, &lone.iter().map(|&u| f32::from_bits(u)).collect::<Vec<_>>(), "ReLU6 plan");
    for threads in [1, 3, 0] {
        ok(cg_set_num_threads(threads));
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..8).map(|_| s.spawn(|| (0..4).map(|_| run(&plan)).collect::<Vec<_>>())).collect();
            for h in handles {
                for got in h.join().unwrap() {
                    assert!(got == lone, "a concurrent run with {threads} threads differs");
                }
            }
        });
    }
    // SAFETY: the plan is destroyed once, after every run.
    unsafe { cg_conv2d_plan_destroy(plan.0) };
}

/// The `_default` functions write what a C caller reads in the header, over
/// whatever the struct held; NULL is ignored.
#[test]
fn defaults_overwrite_every_field() {
    let garbage = |p: *mut u8, len: usize| {
        // SAFETY: `p` addresses `len` bytes of a local struct of plain integers.
        unsafe { std::ptr::write_bytes(p, 0xa5, len) }
    };
    let mut c = cg_conv2d_params::default();
    garbage((&mut c as *mut cg_conv2d_params).cast(), std::mem::size_of_val(&c));
    // SAFETY: a valid pointer to a local struct; then NULL, which is ignored.
    unsafe {
        cg_conv2d_params_default(&mut c);
        cg_conv2d_params_default(std::ptr::null_mut());
    }
    assert_eq!(format!("{c:?}"), format!("{:?}", cg_conv2d_params::default()));
    assert_eq!((c.stride, c.padding, c.dilation, c.groups, c.flip), ([1, 1], [0; 4], [1, 1], 1, 0));
    assert_eq!((c.layout.0, c.activation.0, c.precision.0), (0, 0, 0));

    let mut t = cg_conv_transpose2d_params::default();
    garbage((&mut t as *mut cg_conv_transpose2d_params).cast(), std::mem::size_of_val(&t));
    // SAFETY: a valid pointer to a local struct.
    unsafe { cg_conv_transpose2d_params_default(&mut t) };
    assert_eq!(
        (t.stride, t.padding, t.output_padding, t.dilation, t.groups, t.layout.0),
        ([1, 1], [0; 4], [0; 2], [1, 1], 1, 0)
    );

    let mut p = cg_pool2d_params::new([1, 1]);
    garbage((&mut p as *mut cg_pool2d_params).cast(), std::mem::size_of_val(&p));
    // SAFETY: a valid pointer to a local struct.
    unsafe { cg_pool2d_params_default(&mut p, 3, 2) };
    assert_eq!((p.kernel, p.stride, p.padding, p.dilation), ([3, 2], [3, 2], [0; 4], [1, 1]));
    assert_eq!((p.ceil_mode, p.count_include_pad, p.layout.0), (0, 1, 0));
}

/// CG_PRECISION_RELAXED reaches convgemm: on a layer where `Auto` takes
/// Winograd (128 channels each way, 3×3, 8×8 outputs: F(2×2)) the result keeps the
/// bound of the f64 reference (per plane, the tile bound's stand-in), has the
/// bits of the Rust call under `Precision::Relaxed`, and is not the exact
/// path's result; the input gradient likewise.
#[test]
fn relaxed_precision_runs_winograd_within_the_bound() {
    let params = ConvParams { padding: [1; 4], ..ConvParams::default() };
    let (x_shape, w_shape, y_shape) = ([1usize, 128, 8, 8], [128usize, 128, 3, 3], [1usize, 128, 8, 8]);
    let x = values(128 * 64, 21);
    let w = values(128 * 128 * 9, 22);
    let relaxed = convgemm::ConvOptions { precision: convgemm::Precision::Relaxed, ..convgemm::ConvOptions::default() };
    let run = |p: &cg_conv2d_params| {
        let mut y = vec![f32::NAN; 128 * 64];
        // SAFETY: every pointer addresses what its length says.
        ok(unsafe {
            cg_conv2d(
                x.as_ptr(),
                x.len(),
                x_shape.as_ptr(),
                w.as_ptr(),
                w.len(),
                w_shape.as_ptr(),
                std::ptr::null(),
                0,
                p,
                y.as_mut_ptr(),
                y.len(),
            )
        });
        y
    };
    let (y_relaxed, y_exact) = (run(&c_params(&params, false, true)), run(&c_params(&params, false, false)));
    let mut y_rust = vec![f32::NAN; 128 * 64];
    convgemm::conv2d_with(&relaxed, &x, x_shape, &w, w_shape, None, &params, &mut y_rust).unwrap();
    assert_eq!(bits(&y_relaxed), bits(&y_rust), "the Rust call under Relaxed");
    assert_ne!(bits(&y_relaxed), bits(&y_exact), "Relaxed ran the exact path");
    let reference = conv2d_direct(&x, x_shape, &w, w_shape, None, &params).unwrap();
    let plane_bound = |r: &Reference| {
        let mut loose = r.clone();
        for plane in loose.magnitude.chunks_mut(64) {
            let top = plane.iter().cloned().fold(0.0, f64::max);
            plane.fill(top);
        }
        loose
    };
    close(&plane_bound(&reference), &y_relaxed, "relaxed cg_conv2d");

    let dy = values(128 * 64, 23);
    let mut dx = vec![f32::NAN; 128 * 64];
    // SAFETY: as above.
    ok(unsafe {
        cg_conv2d_backward_input(
            dy.as_ptr(),
            dy.len(),
            y_shape.as_ptr(),
            w.as_ptr(),
            w.len(),
            w_shape.as_ptr(),
            &c_params(&params, false, true),
            dx.as_mut_ptr(),
            dx.len(),
            x_shape.as_ptr(),
        )
    });
    let mut dx_rust = vec![f32::NAN; 128 * 64];
    convgemm::conv2d_backward_input_with(&relaxed, &dy, y_shape, &w, w_shape, &params, &mut dx_rust, x_shape).unwrap();
    assert_eq!(bits(&dx), bits(&dx_rust), "the relaxed input gradient");
    let dx_reference = conv2d_backward_input_direct(&dy, y_shape, &w, w_shape, &params, x_shape).unwrap();
    close(&plane_bound(&dx_reference), &dx, "relaxed input gradient");
}
