//! Winograd F(m×m, 3×3) (`Algorithm::Winograd`, `Precision::Relaxed`):
//! within `1e-5 · Σ|w·x|` of the f64 reference (the largest such scale of
//! the output's tile), bit-identical across
//! paths, thread counts and batch splits; what `Auto` picks under each
//! precision; the errors of a forced call; non-finite inputs; the input
//! gradient under `Relaxed`. (Each tile size against the reference, forced,
//! is a unit test of `conv::winograd`.)

mod common;

use common::{ConvProblem, REL, bits, cases, for_each_isa, is_exact, values};
use convgemm::reference::{Reference, conv2d_backward_input_direct};
use convgemm::{
    Activation, Algorithm, Conv2dPlan, ConvError, ConvOptions, ConvParams, Isa, Layout, Precision, Threads,
    conv_transpose2d_with, conv2d_backward_input_with,
};
use proptest::prelude::*;

fn winograd(isa: Isa, threads: Threads) -> ConvOptions {
    ConvOptions { isa, threads, algorithm: Algorithm::Winograd, ..ConvOptions::default() }
}

/// 3×3 stride-1 problems: batch 1..3, groups 1..2, 1..12 channels per
/// group each way, planes 1..20 a side (partial tiles, planes smaller than
/// a tile), each side padded 0..3, flip, bias.
fn winograd_problem() -> impl Strategy<Value = ConvProblem> {
    (
        (1usize..=3, 1usize..=2, 1usize..=12, 1usize..=12),
        (1usize..=20, 1usize..=20),
        [0usize..=3, 0usize..=3, 0usize..=3, 0usize..=3],
        (any::<bool>(), any::<bool>(), any::<u64>()),
    )
        .prop_map(|((n, groups, cg_in, cg_out), (h, w), padding, (flip, bias, seed))| {
            let params = ConvParams { padding, groups, flip, ..ConvParams::default() };
            ConvProblem::seeded([n, groups * cg_in, h, w], [groups * cg_out, cg_in, 3, 3], params, bias, seed)
        })
}

/// The tile size (outputs a side) a forced Winograd takes for `p`.
fn tile_size(p: &ConvProblem) -> usize {
    let options = winograd(Isa::detect(), Threads::Pool);
    let plan = Conv2dPlan::new(&p.weight, p.weight_shape, p.bias.as_deref(), &p.params, &options).unwrap();
    match plan.kernel_name(p.input_shape).unwrap() {
        "winograd_f2x2" => 2,
        "winograd_f4x4" => 4,
        "winograd_f6x6" => 6,
        other => panic!("{other}"),
    }
}

/// The reference with each output's magnitude raised to the largest of its
/// tile (the `m × m` outputs of one channel computed together): the scale
/// `Precision::Relaxed` promises its bound against.
fn tile_scaled(mut reference: Reference, shape: [usize; 4], m: usize) -> Reference {
    let [n, c, h, w] = shape;
    let mut scaled = reference.magnitude.clone();
    for plane in 0..n * c {
        for ty in (0..h).step_by(m) {
            for tx in (0..w).step_by(m) {
                let cells = || (ty..h.min(ty + m)).flat_map(move |y| (tx..w.min(tx + m)).map(move |x| (y, x)));
                let top = cells().map(|(y, x)| reference.magnitude[(plane * h + y) * w + x]).fold(0.0, f64::max);
                for (y, x) in cells() {
                    scaled[(plane * h + y) * w + x] = top;
                }
            }
        }
    }
    reference.magnitude = scaled;
    reference
}

/// Every path and thread setting gives the portable path's bits, which are
/// within the bound of the reference (scaled by the tile); a fused clamp is
/// the clamp of the plain result.
fn check(p: &ConvProblem) {
    let want = match p.run(&winograd(Isa::Portable, Threads::Single)) {
        Ok(v) => v,
        Err(e) => {
            assert!(matches!(e, ConvError::NoOutput { .. }), "{e} for {p:?}");
            return;
        }
    };
    let reference = tile_scaled(p.reference().expect("valid"), p.output_shape().unwrap(), tile_size(p));
    if let Some((i, r, g)) = reference.first_mismatch(&want, REL) {
        panic!("winograd portable: element {i} is {g}, reference {r} (bound {:e}) {p:?}", REL * reference.magnitude[i]);
    }
    for_each_isa(|isa| {
        for threads in [Threads::Pool, Threads::Single] {
            let got = p.run(&winograd(isa, threads)).expect("valid");
            if is_exact(isa) {
                assert_eq!(bits(&got), bits(&want), "{} {threads:?} {p:?}", isa.name());
            } else if let Some((i, r, g)) = reference.first_mismatch(&got, REL) {
                panic!("{}: element {i} is {g}, reference {r}", isa.name());
            }
        }
        let act = Activation::Clamp { min: -0.25, max: 0.5 };
        let fused = p.run(&ConvOptions { activation: act, ..winograd(isa, Threads::Pool) }).expect("valid");
        let plain = p.run(&winograd(isa, Threads::Pool)).expect("valid");
        let applied: Vec<f32> = plain.iter().map(|&x| act.apply(x)).collect();
        assert_eq!(bits(&fused), bits(&applied), "{} fused clamp {p:?}", isa.name());
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(200)))]

    #[test]
    fn winograd_matches_reference_on_every_path(p in winograd_problem()) {
        check(&p);
    }

    /// Each image of a batch alone gives the bits it has in the batch.
    #[test]
    fn winograd_bits_do_not_depend_on_the_batch(p in winograd_problem()) {
        let Ok(shape) = p.output_shape() else { return Ok(()) };
        let opts = winograd(Isa::detect(), Threads::Pool);
        let whole = p.run(&opts).unwrap();
        let (n, image_in, image_out) = (p.input_shape[0], p.input.len() / p.input_shape[0], whole.len() / shape[0]);
        for i in 0..n {
            let one = ConvProblem {
                input_shape: [1, p.input_shape[1], p.input_shape[2], p.input_shape[3]],
                input: p.input[i * image_in..][..image_in].to_vec(),
                ..p.clone()
            };
            prop_assert_eq!(bits(&one.run(&opts).unwrap()), bits(&whole[i * image_out..][..image_out]));
        }
    }
}

/// Layers with many channels and planes of several sizes (F(2×2) below
/// 8×8 outputs, F(4×4) or F(6×6) above), through a plan reused across
/// sizes (forced for the 7×9 plane, which `Auto` leaves to the exact paths
/// at 64 channels).
#[test]
fn wide_layers_and_a_plan_reused_across_sizes() {
    let params = ConvParams { padding: [1, 1, 1, 1], ..ConvParams::default() };
    let weight_shape = [72, 64, 3, 3];
    let w = values(72 * 64 * 9, 7);
    let b = values(72, 8);
    let relaxed = ConvOptions { precision: Precision::Relaxed, ..ConvOptions::default() };
    let auto = Conv2dPlan::new(&w, weight_shape, Some(&b), &params, &relaxed).unwrap();
    let forced = ConvOptions { algorithm: Algorithm::Winograd, ..relaxed };
    let forced = Conv2dPlan::new(&w, weight_shape, Some(&b), &params, &forced).unwrap();
    let sizes = [(2, [7, 9], "winograd_f2x2"), (2, [23, 17], "winograd_f4x4"), (1, [9, 70], "winograd_f6x6")];
    for (i, (n, hw, kernel)) in sizes.into_iter().chain([(1, [97, 96], "winograd_f6x6")]).enumerate() {
        let input_shape = [n, 64, hw[0], hw[1]];
        let p = ConvProblem::seeded(input_shape, weight_shape, params, true, 40 + i as u64);
        let p = ConvProblem { weight: w.clone(), bias: Some(b.clone()), ..p };
        let by_auto = hw[0].min(hw[1]) >= 8;
        assert_eq!(auto.algorithm(input_shape).unwrap() == Algorithm::Winograd, by_auto, "{hw:?}");
        let plan = if by_auto { &auto } else { &forced };
        assert_eq!(plan.algorithm(input_shape).unwrap(), Algorithm::Winograd);
        assert_eq!(plan.kernel_name(input_shape).unwrap(), kernel);
        let mut out = vec![f32::NAN; p.output_len().unwrap()];
        plan.run(&p.input, input_shape, &mut out).unwrap();
        let forced = p.run(&winograd(Isa::detect(), Threads::Pool)).unwrap();
        assert_eq!(bits(&out), bits(&forced), "plan vs one call {hw:?}");
        check(&p);
    }
}

/// `Exact` (the default) never picks Winograd; `Relaxed` does on a layer
/// with enough channels (or fewer one way on a large plane, or 16 one way
/// and 64 together on a plane of 48 a side and more), and not on a
/// 5×5 kernel, a strided or a narrow one, a plane under 8×8 with fewer
/// than 128 channels, or a 5×5 plane, where it gives exactly the `Exact`
/// bits.
#[test]
fn auto_picks_winograd_only_under_relaxed() {
    let pad = ConvParams { padding: [1, 1, 1, 1], ..ConvParams::default() };
    let relaxed = ConvOptions { precision: Precision::Relaxed, ..ConvOptions::default() };
    let w = values(128 * 128 * 9, 1);
    let plan = |shape: [usize; 4], params: &ConvParams, options: &ConvOptions| {
        Conv2dPlan::new(&w[..shape.iter().product()], shape, None, params, options).unwrap()
    };
    let wide = [64, 64, 3, 3];
    assert_ne!(plan(wide, &pad, &ConvOptions::default()).algorithm([1, 64, 20, 20]).unwrap(), Algorithm::Winograd);
    assert_eq!(plan(wide, &pad, &relaxed).algorithm([1, 64, 20, 20]).unwrap(), Algorithm::Winograd);
    assert!(plan(wide, &pad, &relaxed).kernel_name([1, 64, 20, 20]).unwrap().starts_with("winograd_f"));
    let dense = [32, 128, 3, 3];
    assert_eq!(plan(dense, &pad, &relaxed).algorithm([1, 128, 24, 24]).unwrap(), Algorithm::Winograd);
    // Fewer than 48 channels one way on a small plane: only with a small
    // `U` (128→32, not 32→256); 48 each way count as wide (48→192).
    assert_eq!(plan(dense, &pad, &relaxed).algorithm([1, 128, 14, 14]).unwrap(), Algorithm::Winograd);
    // Small planes by the multiplications the chosen tiles save: 64
    // channels need 2.4 times fewer (13² in F(4×4): 2.6), 128 need 1.2
    // (10² in F(2×2), whose 25 tiles fill two vectors: 1.76; 6², 9 tiles
    // in one vector: 1.27; not 5²: 0.88).
    assert_eq!(plan(wide, &pad, &relaxed).kernel_name([1, 64, 13, 13]).unwrap(), "winograd_f4x4");
    assert_eq!(plan([128, 128, 3, 3], &pad, &relaxed).kernel_name([1, 128, 10, 10]).unwrap(), "winograd_f2x2");
    assert_eq!(plan([128, 128, 3, 3], &pad, &relaxed).kernel_name([1, 128, 6, 6]).unwrap(), "winograd_f2x2");
    assert_eq!(plan([192, 48, 3, 3], &pad, &relaxed).kernel_name([1, 48, 13, 13]).unwrap(), "winograd_f4x4");
    // Few channels (16 one way, 64 together) only on planes of 48 a side
    // and more: 16→64 on 55² (SqueezeNet's fire2 expand), not on 28²; 16→16
    // and 16→32 never.
    let few = [64, 16, 3, 3];
    assert_eq!(plan(few, &pad, &relaxed).algorithm([1, 16, 55, 55]).unwrap(), Algorithm::Winograd);
    assert_eq!(plan([16, 64, 3, 3], &pad, &relaxed).algorithm([1, 64, 48, 48]).unwrap(), Algorithm::Winograd);
    let wider = [256, 32, 3, 3];
    let strided = ConvParams { stride: [2, 2], ..pad };
    let narrow = [32, 64, 3, 3];
    for (shape, params, input) in [
        ([64, 64, 5, 5], pad, [1, 64, 20, 20]),
        (wide, strided, [1, 64, 20, 20]),
        (narrow, pad, [1, 64, 20, 20]),
        (wide, pad, [1, 64, 6, 6]),
        (wide, pad, [1, 64, 7, 7]),
        (wide, pad, [1, 64, 8, 8]),
        (wide, pad, [1, 64, 10, 10]),
        ([128, 32, 3, 3], pad, [1, 32, 10, 10]),
        ([128, 128, 3, 3], pad, [1, 128, 5, 5]),
        (wider, pad, [1, 32, 14, 14]),
        (few, pad, [1, 16, 28, 28]),
        (few, pad, [1, 16, 47, 47]),
        ([16, 16, 3, 3], pad, [1, 16, 56, 56]),
        ([32, 16, 3, 3], pad, [1, 16, 56, 56]),
        ([64, 8, 3, 3], pad, [1, 8, 56, 56]),
    ] {
        let relaxed_plan = plan(shape, &params, &relaxed);
        assert_ne!(relaxed_plan.algorithm(input).unwrap(), Algorithm::Winograd, "{shape:?} {params:?}");
        let x = values(input.iter().product(), 2);
        let exact_plan = plan(shape, &params, &ConvOptions::default());
        let len: usize = exact_plan.output_shape(input).unwrap().iter().product();
        let (mut a, mut b) = (vec![0.0; len], vec![1.0; len]);
        exact_plan.run(&x, input, &mut a).unwrap();
        relaxed_plan.run(&x, input, &mut b).unwrap();
        assert_eq!(bits(&a), bits(&b), "{shape:?} {params:?}");
    }
}

/// A forced Winograd on a problem it cannot compute is an error that says
/// why, with the output untouched, from the one-call API and from a plan.
#[test]
fn forced_winograd_rejects_other_kernels() {
    let cases = [
        ([4, 2, 5, 5], ConvParams::default()),
        ([4, 2, 3, 3], ConvParams { stride: [1, 2], ..ConvParams::default() }),
        ([4, 2, 3, 3], ConvParams { dilation: [2, 1], ..ConvParams::default() }),
        ([4, 2, 3, 1], ConvParams::default()),
    ];
    for (weight_shape, params) in cases {
        let p = ConvProblem::seeded([1, 2, 9, 9], weight_shape, params, false, 3);
        let mut out = vec![7.0f32; p.output_len().unwrap()];
        let err = p.run_into(&winograd(Isa::detect(), Threads::Pool), &mut out).unwrap_err();
        assert!(matches!(err, ConvError::AlgorithmNotApplicable { algorithm: "Winograd", .. }), "{err:?}");
        assert!(err.to_string().contains("3×3 kernels, stride 1 and dilation 1"), "{err}");
        assert!(out.iter().all(|&v| v == 7.0));
        let plan = Conv2dPlan::new(&p.weight, weight_shape, None, &params, &winograd(Isa::detect(), Threads::Pool));
        assert!(matches!(plan, Err(ConvError::AlgorithmNotApplicable { .. })));
    }
}

/// A NaN or an infinity in the input reaches every output of the tiles
/// whose window holds it (as NaN or ±inf: the transforms subtract it from
/// itself), and nothing else: every output of the other tiles stays within
/// the bound of the reference.
#[test]
fn a_non_finite_input_stays_in_its_tiles() {
    let params = ConvParams { padding: [1, 1, 1, 1], ..ConvParams::default() };
    for bad in [f32::NAN, f32::INFINITY] {
        let mut p = ConvProblem::seeded([1, 16, 24, 24], [16, 16, 3, 3], params, true, 9);
        let (iy, ix) = (10usize, 13usize);
        p.input[3 * 576 + iy * 24 + ix] = bad;
        let options = winograd(Isa::detect(), Threads::Pool);
        let m = tile_size(&p);
        let got = p.run(&options).unwrap();
        let reference = p.reference().unwrap();
        // Tile (ty, tx) reads input rows ty·m − 1 .. ty·m − 1 + m + 2.
        let holds = |t: usize, i: usize| (t * m) as isize - 1 <= i as isize && i as isize <= (t * m + m) as isize;
        for o in 0..16 {
            for oy in 0..24 {
                for ox in 0..24 {
                    let index = (o * 24 + oy) * 24 + ox;
                    let (v, want) = (got[index], reference.value[index]);
                    if holds(oy / m, iy) && holds(ox / m, ix) {
                        let in_window = oy.abs_diff(iy) <= 1 && ox.abs_diff(ix) <= 1;
                        assert!(!v.is_finite() || !in_window, "({o}, {oy}, {ox}) = {v} with {bad} in its window");
                    } else {
                        let bound = REL * reference.magnitude[index];
                        assert!((f64::from(v) - want).abs() <= bound, "({o}, {oy}, {ox}) = {v}, reference {want}");
                    }
                }
            }
        }
    }
}

/// The input gradient of a 3×3 stride-1 layer under `Relaxed` runs by
/// Winograd: within the bound of the f64 reference, bit-identical across
/// paths and thread counts, and (rounding differently) not the exact bits.
/// `conv_transpose2d` is the same computation.
#[test]
fn relaxed_input_gradient() {
    for (padding, groups, flip) in [([1, 1, 1, 1], 1, false), ([0, 2, 1, 0], 2, true), ([2, 2, 2, 2], 1, false)] {
        let params = ConvParams { padding, groups, flip, ..ConvParams::default() };
        let (input_shape, weight_shape) = ([2, 64 * groups, 14, 15], [72 * groups, 64, 3, 3]);
        let p = ConvProblem::seeded(input_shape, weight_shape, params, false, 11);
        let out_shape = p.output_shape().unwrap();
        let dy = values(out_shape.iter().product(), 12);
        let reference =
            conv2d_backward_input_direct(&dy, out_shape, &p.weight, weight_shape, &params, input_shape).unwrap();
        let run = |options: &ConvOptions| {
            let mut dx = vec![f32::NAN; p.input.len()];
            conv2d_backward_input_with(options, &dy, out_shape, &p.weight, weight_shape, &params, &mut dx, input_shape)
                .unwrap();
            dx
        };
        let exact = run(&ConvOptions::default());
        let mut first: Option<Vec<u32>> = None;
        for_each_isa(|isa| {
            for threads in [Threads::Pool, Threads::Single] {
                let relaxed = ConvOptions { isa, threads, precision: Precision::Relaxed, ..ConvOptions::default() };
                let dx = run(&relaxed);
                if let Some((i, r, g)) = reference.first_mismatch(&dx, REL) {
                    panic!("{} {padding:?}: element {i} is {g}, reference {r}", isa.name());
                }
                if is_exact(isa) {
                    let b = bits(&dx);
                    assert_eq!(first.get_or_insert_with(|| b.clone()), &b, "{} {threads:?}", isa.name());
                }
            }
        });
        assert_ne!(first.unwrap(), bits(&exact), "Relaxed ran the exact path {padding:?}");
        // conv_transpose2d with the same weights is this gradient (it has no flip).
        if flip {
            continue;
        }
        let relaxed = ConvOptions { precision: Precision::Relaxed, ..ConvOptions::default() };
        let transpose_params = convgemm::ConvTransposeParams { padding, groups, ..Default::default() };
        let mut y = vec![f32::NAN; p.input.len()];
        let shape = [out_shape[0], out_shape[1], out_shape[2], out_shape[3]];
        conv_transpose2d_with(&relaxed, &dy, shape, &p.weight, weight_shape, None, &transpose_params, &mut y).unwrap();
        assert_eq!(bits(&y), bits(&run(&relaxed)), "conv_transpose2d {padding:?}");
    }
}

/// Outputs whose window lies wholly in the padding are exact (their bias),
/// channel by channel: a NaN weight poisons its own channel (as on every
/// path: `0·NaN` is NaN) and no other, and an infinite input elsewhere in
/// the tile does not reach them.
#[test]
fn outputs_in_the_padding_are_exact() {
    let params = ConvParams { padding: [3, 3, 3, 3], ..ConvParams::default() };
    let mut p = ConvProblem::seeded([1, 4, 6, 6], [3, 4, 3, 3], params, true, 13);
    p.weight[5] = f32::NAN; // output channel 0
    p.input[2 * 36] = f32::INFINITY; // channel 2, pixel (0, 0)
    let got = p.run(&winograd(Isa::detect(), Threads::Pool)).unwrap();
    let [_, _, h, w] = p.output_shape().unwrap();
    let bias = p.bias.as_ref().unwrap();
    for o in 0..3 {
        for oy in 0..h {
            for ox in 0..w {
                let v = got[(o * h + oy) * w + ox];
                // Output (oy, ox) reads input rows oy − 3 .. oy − 1 and likewise columns.
                let in_padding = oy + 2 < 3 || oy >= 3 + 6 || ox + 2 < 3 || ox >= 3 + 6;
                if o == 0 {
                    assert!(v.is_nan(), "({o}, {oy}, {ox}) = {v}: a NaN weight poisons its channel");
                } else if in_padding {
                    assert_eq!(v.to_bits(), bias[o].to_bits(), "({o}, {oy}, {ox}) is its bias");
                }
            }
        }
    }
}

/// Empty tensors (no batch, or no channels) may come with planes whose
/// pixel count overflows: a plan answers for them (algorithm, kernel, a
/// run) with a value or an error, never an overflow, in every layout.
/// (Found by the `api_hostile` fuzz target: a 1×1 kernel on no channels.)
#[test]
fn empty_tensors_of_huge_planes() {
    let huge = 1usize << 40;
    for layout in [Layout::Nchw, Layout::Nhwc] {
        for (weight_shape, input_shape, padding, stride) in [
            ([64, 64, 3, 3], [0, 64, huge, huge], 1, 1),
            // No channels in: h·w overflows, the 1×1 output does not.
            ([8, 0, 1, 1], [1, 0, huge, huge], 0, huge),
            ([8, 0, 3, 3], [1, 0, huge, huge], 1, huge),
            ([0, 0, 3, 3], [1, 0, huge, huge], 1, 1),
            ([0, 64, 3, 3], [1, 64, 0, huge], 1, 1),
        ] {
            let params = ConvParams { padding: [padding; 4], stride: [stride; 2], layout, ..ConvParams::default() };
            let w = values(weight_shape.iter().product(), 3);
            for precision in [Precision::Exact, Precision::Relaxed] {
                let options = ConvOptions { precision, ..ConvOptions::default() };
                let Ok(plan) = Conv2dPlan::new(&w, weight_shape, None, &params, &options) else { continue };
                let _ = plan.algorithm(input_shape);
                let _ = plan.kernel_name(input_shape);
                let _ = plan.run(&[], input_shape, &mut []);
            }
        }
    }
}
