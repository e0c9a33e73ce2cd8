//! The first thing to run: `cargo run --release --example quickstart`.
//!
//! Runs two real convolutions — a bank of classic edge filters over a
//! 3×64×64 image, and AlexNet's first layer — and prints for each the output
//! shape, the largest error against the direct loops (f64), and the time and
//! GFLOP/s of `conv2d` next to the direct loops.

use std::time::{Duration, Instant};

use convgemm::reference::conv2d_direct;
use convgemm::{ConvParams, Isa, conv2d, conv2d_output_shape};

/// A 3×64×64 test image: a bright disc on a diagonal gradient, per channel shifted.
fn test_image() -> Vec<f32> {
    let mut img = Vec::with_capacity(3 * 64 * 64);
    for c in 0..3 {
        for y in 0..64 {
            for x in 0..64 {
                let (dx, dy) = (x as f32 - 32.0, y as f32 - 28.0 - 4.0 * c as f32);
                let disc = if dx * dx + dy * dy < 18.0 * 18.0 { 1.0 } else { 0.0 };
                img.push(0.5 * disc + (x + y) as f32 / 256.0);
            }
        }
    }
    img
}

/// Five 3×3 filters applied to the sum of the three channels:
/// Sobel x, Sobel y, Laplacian, box blur, sharpen.
fn edge_bank() -> Vec<f32> {
    let filters: [[f32; 9]; 5] = [
        [-1.0, 0.0, 1.0, -2.0, 0.0, 2.0, -1.0, 0.0, 1.0],
        [-1.0, -2.0, -1.0, 0.0, 0.0, 0.0, 1.0, 2.0, 1.0],
        [0.0, 1.0, 0.0, 1.0, -4.0, 1.0, 0.0, 1.0, 0.0],
        [1.0 / 9.0; 9],
        [0.0, -1.0, 0.0, -1.0, 5.0, -1.0, 0.0, -1.0, 0.0],
    ];
    filters.iter().flat_map(|f| f.repeat(3)).collect()
}

/// Deterministic values in [-1, 1).
fn pseudo_random(len: usize, mut s: u32) -> Vec<f32> {
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

/// Median time of `f` over enough runs to fill about 0.3 s.
fn time(mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    f();
    let once = start.elapsed().max(Duration::from_nanos(100));
    let runs = (Duration::from_millis(300).as_nanos() / once.as_nanos()).clamp(1, 1000) as usize;
    let mut samples: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    samples.sort();
    samples[runs / 2]
}

fn run(name: &str, input: &[f32], input_shape: [usize; 4], weight: &[f32], weight_shape: [usize; 4], p: &ConvParams) {
    let bias = pseudo_random(weight_shape[0], 7);
    let out_shape = conv2d_output_shape(input_shape, weight_shape, p).expect("valid layer");
    let mut out = vec![0.0f32; out_shape.iter().product()];
    let conv = time(|| conv2d(input, input_shape, weight, weight_shape, Some(&bias), p, &mut out).unwrap());
    let mut reference = None;
    let direct = time(|| reference = Some(conv2d_direct(input, input_shape, weight, weight_shape, Some(&bias), p)));
    let reference = reference.unwrap().unwrap();
    // Error relative to the size of each element's sum (Σ|w·x| + |bias|).
    let max_rel = out
        .iter()
        .zip(reference.value.iter().zip(&reference.magnitude))
        .map(|(&got, (&want, &mag))| (got as f64 - want).abs() / mag.max(f64::MIN_POSITIVE))
        .fold(0.0, f64::max);
    let [_, c_in, ..] = input_shape;
    let [_, _, kh, kw] = weight_shape;
    let flops = 2.0 * out.len() as f64 * (c_in / p.groups * kh * kw) as f64;
    let gflops = |t: Duration| flops / t.as_secs_f64() / 1e9;
    println!("{name}");
    println!("  input {input_shape:?}  weight {weight_shape:?}  ->  output {out_shape:?}");
    println!("  max error vs direct f64 loops: {max_rel:.2e} (relative to each element's Σ|w·x|)");
    println!("  conv2d       {:>10.1} µs  {:>7.2} GFLOP/s", conv.as_secs_f64() * 1e6, gflops(conv));
    println!(
        "  direct loops {:>10.1} µs  {:>7.2} GFLOP/s   ({:.0}x slower)",
        direct.as_secs_f64() * 1e6,
        gflops(direct),
        direct.as_secs_f64() / conv.as_secs_f64()
    );
    assert!(max_rel < 1e-4, "error above 1e-4 relative");
}

fn main() {
    println!(
        "convgemm quickstart — path {} ({}), {} rayon threads\n",
        Isa::detect().name(),
        Isa::detect().kernel_name(),
        rayon::current_num_threads()
    );
    let same = ConvParams { padding: [1, 1, 1, 1], ..ConvParams::default() };
    run(
        "Edge filters: 3x64x64 image, 5 filters of 3x3, padding 1",
        &test_image(),
        [1, 3, 64, 64],
        &edge_bank(),
        [5, 3, 3, 3],
        &same,
    );

    let alexnet = ConvParams { stride: [4, 4], ..ConvParams::default() };
    let x = pseudo_random(3 * 227 * 227, 1);
    let w = pseudo_random(96 * 3 * 11 * 11, 2);
    println!();
    run("AlexNet conv1: 3x227x227, 96 filters of 11x11, stride 4", &x, [1, 3, 227, 227], &w, [96, 3, 11, 11], &alexnet);
}
