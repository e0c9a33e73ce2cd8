//! What a call through the C interface costs over the same call in Rust:
//! `cg_conv2d` vs `convgemm::conv2d` and `cg_conv2d_plan_run` vs
//! `Conv2dPlan::run`, on the smallest layer of the suite (LeNet-5's conv1,
//! 1×32×32 → 6×28×28, 5×5), timed side by side (interleaved medians) in one
//! run. The C entry points are called through the same symbols C links; the
//! difference is the wrapper's checks (pointers, overlap, enum values) and
//! its panic guard. Issue 22's target: at most 0.5 µs.
//!
//! ```text
//! cargo bench -p convgemm-capi --bench overhead            # 41 rounds
//! cargo bench -p convgemm-capi --bench overhead -- quick   # 11 rounds
//! ```
//!
//! A last row times the plan run after `cg_set_num_threads(2)`: every call
//! is then handed to the library's own pool (the default hands nothing).

#[path = "../../benches/support/mod.rs"]
mod support;

use std::time::Duration;

use convgemm::{Conv2dPlan, ConvOptions, conv2d};
use convgemm_capi::*;
use support::{interleaved_medians, layers, values};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds = if args.iter().any(|a| a == "quick") { 11 } else { 41 };
    let min_sample = Duration::from_millis(20);
    let layer = layers().into_iter().find(|l| l.name == "lenet_conv1").expect("lenet_conv1 in layers.json");
    let (x_shape, w_shape, params) = (layer.input_shape(), layer.weight_shape(), layer.params());
    let x = values(x_shape.iter().product(), 1);
    let w = values(w_shape.iter().product(), 2);
    let b = values(w_shape[0], 3);
    let y_len: usize = layer.output_shape().iter().product();
    let (mut y_rust, mut y_c) = (vec![0f32; y_len], vec![0f32; y_len]);
    let plan = Conv2dPlan::new(&w, w_shape, Some(&b), &params, &ConvOptions::default()).expect("plan");

    let c_params = cg_conv2d_params {
        stride: params.stride,
        padding: params.padding,
        dilation: params.dilation,
        groups: params.groups,
        ..cg_conv2d_params::default()
    };
    let mut c_plan = std::ptr::null_mut();
    // SAFETY: as above.
    let status = unsafe {
        cg_conv2d_plan_create(w.as_ptr(), w.len(), w_shape.as_ptr(), b.as_ptr(), b.len(), &c_params, &mut c_plan)
    };
    assert_eq!(status, cg_status::CG_OK);

    let y_ptr = y_c.as_mut_ptr();
    let mut rust_call = || conv2d(&x, x_shape, &w, w_shape, Some(&b), &params, &mut y_rust).unwrap();
    let mut c_call = || {
        // SAFETY: as above.
        let s = unsafe {
            cg_conv2d(
                x.as_ptr(),
                x.len(),
                x_shape.as_ptr(),
                w.as_ptr(),
                w.len(),
                w_shape.as_ptr(),
                b.as_ptr(),
                b.len(),
                &c_params,
                y_ptr,
                y_len,
            )
        };
        assert_eq!(s, cg_status::CG_OK);
    };
    let mut y_plan = vec![0f32; y_len];
    let mut rust_plan = || plan.run(&x, x_shape, &mut y_plan).unwrap();
    let mut c_plan_run = || {
        // SAFETY: as above.
        let s = unsafe { cg_conv2d_plan_run(c_plan, x.as_ptr(), x.len(), x_shape.as_ptr(), y_ptr, y_len) };
        assert_eq!(s, cg_status::CG_OK);
    };
    let t =
        interleaved_medians(&mut [&mut rust_call, &mut c_call, &mut rust_plan, &mut c_plan_run], rounds, min_sample);
    assert_eq!(cg_set_num_threads(2), cg_status::CG_OK);
    let pooled = interleaved_medians(&mut [&mut c_plan_run], rounds, min_sample)[0];
    assert_eq!(cg_set_num_threads(0), cg_status::CG_OK);
    // SAFETY: the plan is destroyed once, after its last run.
    unsafe { cg_conv2d_plan_destroy(c_plan) };

    let us = |s: f64| s * 1e6;
    println!("LeNet-5 conv1 {x_shape:?} * {w_shape:?}, {rounds} rounds, medians");
    println!("{:<34} {:>10} {:>10} {:>14}", "call", "Rust µs", "C µs", "C − Rust (µs)");
    println!("{:<34} {:>10.3} {:>10.3} {:>14.3}", "conv2d / cg_conv2d", us(t[0]), us(t[1]), us(t[1] - t[0]));
    println!(
        "{:<34} {:>10.3} {:>10.3} {:>14.3}",
        "Conv2dPlan::run / cg_conv2d_plan_run",
        us(t[2]),
        us(t[3]),
        us(t[3] - t[2])
    );
    println!(
        "{:<34} {:>10.3} {:>10.3} {:>14.3}",
        "… after cg_set_num_threads(2)",
        us(t[2]),
        us(pooled),
        us(pooled - t[2])
    );
}
