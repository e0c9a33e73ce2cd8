//! A forced portable run executes no vector code: every entry into SIMD
//! code (a lanes token's `enter`, a SIMD microkernel's dispatch) is counted
//! per thread under `cfg(test)`, and the portable paths leave the count at
//! zero, while the detected path moves it (so the count does count).

use crate::simd::probe;
use crate::{
    Algorithm, ConvOptions, ConvParams, Isa, PoolParams, Threads, conv2d_backward_input_with,
    conv2d_backward_weight_with, conv2d_with,
};

/// Runs every algorithm, both gradients and a max pool on `isa`, on the
/// calling thread; returns the SIMD entries it made.
fn entries_of(isa: Isa) -> usize {
    let before = probe::entries();
    let params = ConvParams { padding: [1, 1, 1, 1], ..ConvParams::default() };
    // Miri interprets every element: a smaller image there.
    let side = if cfg!(miri) { 5 } else { 9 };
    let (x_shape, w_shape, dw_shape) = ([1, 4, side, side], [16, 4, 3, 3], [4, 1, 3, 3]);
    let (pixels, y_shape) = (side * side, [1, 16, side, side]);
    let x: Vec<f32> = (0..4 * pixels).map(|i| (i % 7) as f32 - 3.0).collect();
    let w: Vec<f32> = (0..16 * 36).map(|i| (i % 5) as f32 * 0.25 - 0.5).collect();
    let mut y = vec![0.0f32; 16 * pixels];
    for algorithm in [Algorithm::Auto, Algorithm::Im2col, Algorithm::Implicit, Algorithm::Pointwise, Algorithm::Direct]
    {
        let opts = ConvOptions { isa, algorithm, threads: Threads::Single, ..ConvOptions::default() };
        conv2d_with(&opts, &x, x_shape, &w, w_shape, None, &params, &mut y).unwrap();
    }
    let depthwise = ConvParams { groups: 4, ..params };
    let opts = ConvOptions { isa, algorithm: Algorithm::Depthwise, threads: Threads::Single, ..ConvOptions::default() };
    let mut y_dw = vec![0.0f32; 4 * pixels];
    conv2d_with(&opts, &x, x_shape, &w[..36], dw_shape, None, &depthwise, &mut y_dw).unwrap();
    let mut gx = vec![0.0f32; x.len()];
    conv2d_backward_input_with(&opts, &y, y_shape, &w, w_shape, &params, &mut gx, x_shape).unwrap();
    let mut gw = vec![0.0f32; w.len()];
    conv2d_backward_weight_with(&opts, &x, x_shape, &y, y_shape, &params, &mut gw, w_shape).unwrap();
    let mut pooled = vec![0.0f32; 4 * (side / 2) * (side / 2)];
    crate::pool::max_pool2d_with(isa, &x, x_shape, &PoolParams::new([2, 2]), &mut pooled).unwrap();
    probe::entries() - before
}

#[test]
fn portable_runs_execute_no_simd_code() {
    assert_eq!(entries_of(Isa::Portable), 0, "the portable path entered vector code");
    // (Under Miri, which interprets every float, the fused path stands for both.)
    if !cfg!(miri) {
        assert_eq!(entries_of(Isa::PortableUnfused), 0, "the unfused portable path entered vector code");
    }
}

#[test]
fn simd_entries_are_counted() {
    let best = Isa::best();
    if best == Isa::Portable || best == Isa::PortableUnfused {
        return eprintln!("skipped: this CPU has no vector path");
    }
    assert!(entries_of(best) > 0, "{} ran without a counted entry: the probe counts nothing", best.name());
}
