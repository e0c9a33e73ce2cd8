//! LeNet-5 (LeCun, Bottou, Bengio, Haffner 1998) forward, end to end, on a
//! batch of synthetic digits: the convolutional block every CNN is built
//! from — convolution, squashing, subsampling — twice, then dense layers.
//!
//! ```text
//! cargo run --release --example lenet5                  # batch 1 and 64, timed
//! cargo run --release --example lenet5 -- --quick       # few repetitions (CI)
//! cargo run --release --example lenet5 -- --out DIR     # where lenet5.png goes
//! ```
//!
//! ```text
//! input   1×32×32
//! C1      conv 5×5, 6 maps        → 6×28×28   tanh
//! S2      avg pool 2×2            → 6×14×14
//! C3      conv 5×5, 16 maps       → 16×10×10  tanh
//! S4      avg pool 2×2            → 16×5×5
//! C5      dense 400 → 120 (sgemm)             tanh
//! F6      dense 120 → 84  (sgemm)             tanh
//! output  dense 84 → 10   (sgemm)
//! ```
//!
//! The weights are deterministic pseudo-random numbers (scaled by
//! 1/√fan-in), not trained ones: the point is the shapes, the arithmetic and
//! the time each layer takes, not the predictions. The convolutions run
//! through prepacked [`Conv2dPlan`]s, as a framework would for inference.
//! Writes `lenet5.png`: the input digits and the feature maps of the first.

mod common;

use std::time::Instant;

use common::{Canvas, INK, Map, Rng, WHITE, glyph};
use convgemm::{Conv2dPlan, ConvOptions, ConvParams, PoolParams, avg_pool2d, pool2d_output_shape, sgemm};

/// LeNet's squashing function, `1.7159 · tanh(2x/3)`, with tanh as a
/// rational (Padé 7/6) approximation, within 1e-5 of `f32::tanh` and free
/// of calls, so it vectorises: libm's tanh took half of the forward time.
fn squash(v: &mut [f32]) {
    v.iter_mut().for_each(|x| {
        let t = (2.0 / 3.0 * *x).clamp(-4.97, 4.97);
        let t2 = t * t;
        let p = t * (135135.0 + t2 * (17325.0 + t2 * (378.0 + t2)));
        let q = 135135.0 + t2 * (62370.0 + t2 * (3150.0 + t2 * 28.0));
        *x = 1.7159 * (p / q).clamp(-1.0, 1.0);
    });
}

/// `batch` 32×32 digits `0, 1, 2, …` drawn from the 5×7 font at 4× with a
/// random shift and stroke noise; background −0.1, ink 1.175 (the paper's
/// input normalisation).
fn digits(batch: usize, rng: &mut Rng) -> Vec<f32> {
    let mut x = vec![-0.1f32; batch * 32 * 32];
    for (i, img) in x.chunks_exact_mut(32 * 32).enumerate() {
        let rows = glyph(char::from(b'0' + (i % 10) as u8));
        let (ox, oy) = (6 + (rng.next_f32() * 3.0) as isize, 2 + (rng.next_f32() * 1.5) as isize);
        for (gy, bits) in rows.iter().enumerate() {
            for gx in 0..5 {
                if bits & (0x10 >> gx) == 0 {
                    continue;
                }
                for (dy, dx) in (0..16).map(|k| (k / 4, k % 4)) {
                    let (y, x) = (oy + (gy * 4 + dy) as isize, ox + (gx * 4 + dx) as isize);
                    if (0..32).contains(&y) && (0..32).contains(&x) {
                        img[y as usize * 32 + x as usize] = 1.175 - 0.3 * rng.next_f32().abs();
                    }
                }
            }
        }
    }
    x
}

/// A dense layer `y[b, o] = Σ_i x[b, i] · w[i, o] + bias[o]` through `sgemm`.
/// The weights are stored input-major (`n_in × n_out`, row-major), so that
/// B has unit column stride and `sgemm` reads it in place for a small batch
/// instead of packing all of it on every call (C5 at batch 1: 14 → 2.5 µs).
fn dense(x: &[f32], batch: usize, w: &[f32], bias: &[f32], y: &mut [f32]) {
    let (n_in, n_out) = (w.len() / bias.len(), bias.len());
    assert!(x.len() == batch * n_in && y.len() == batch * n_out && w.len() == n_out * n_in);
    for row in y.chunks_exact_mut(n_out) {
        row.copy_from_slice(bias);
    }
    // SAFETY: the lengths asserted above cover every element the strides
    // reach: x is batch × n_in, w n_in × n_out, y batch × n_out, all row-major.
    unsafe {
        sgemm(
            batch,
            n_in,
            n_out,
            1.0,
            x.as_ptr(),
            n_in as isize,
            1,
            w.as_ptr(),
            n_out as isize,
            1,
            1.0,
            y.as_mut_ptr(),
            n_out as isize,
            1,
        )
    };
}

/// The network's parameters and its activations for one batch size.
struct LeNet {
    c1: Conv2dPlan,
    c3: Conv2dPlan,
    pool: PoolParams,
    dense: [(Vec<f32>, Vec<f32>); 3],
}

/// Names, output sizes per image, and multiply-add counts of the layers;
/// the last row is the time of all the tanh squashing.
const LAYERS: [(&str, &str, usize); 8] = [
    ("C1 conv 5x5", "6x28x28", 6 * 28 * 28 * 25),
    ("S2 avg pool", "6x14x14", 0),
    ("C3 conv 5x5", "16x10x10", 16 * 10 * 10 * 6 * 25),
    ("S4 avg pool", "16x5x5", 0),
    ("C5 dense", "120", 120 * 400),
    ("F6 dense", "84", 84 * 120),
    ("output dense", "10", 10 * 84),
    ("tanh (all)", "", 0),
];

impl LeNet {
    fn new(rng: &mut Rng) -> Self {
        let conv = |rng: &mut Rng, shape: [usize; 4]| {
            let fan_in = (shape[1] * shape[2] * shape[3]) as f32;
            let w = rng.uniform(shape.iter().product(), 1.0 / fan_in.sqrt());
            let b = rng.uniform(shape[0], 0.1);
            Conv2dPlan::new(&w, shape, Some(&b), &ConvParams::default(), &ConvOptions::default()).unwrap()
        };
        let fc = |rng: &mut Rng, n_in: usize, n_out: usize| {
            (rng.uniform(n_in * n_out, 1.0 / (n_in as f32).sqrt()), rng.uniform(n_out, 0.1))
        };
        LeNet {
            c1: conv(rng, [6, 1, 5, 5]),
            c3: conv(rng, [16, 6, 5, 5]),
            pool: PoolParams::new([2, 2]),
            dense: [fc(rng, 400, 120), fc(rng, 120, 84), fc(rng, 84, 10)],
        }
    }

    /// Runs the network on `x` (`batch` images), returning every layer's
    /// output and adding each layer's time to `times`.
    fn forward(&self, x: &[f32], batch: usize, times: &mut [f64; 8]) -> Vec<Vec<f32>> {
        let mut outs: Vec<Vec<f32>> = Vec::with_capacity(7);
        let mut clock = Instant::now();
        let mut lap = |i: usize, clock: &mut Instant| {
            times[i] += clock.elapsed().as_secs_f64();
            *clock = Instant::now();
        };
        let mut c1 = vec![0.0; batch * 6 * 28 * 28];
        self.c1.run(x, [batch, 1, 32, 32], &mut c1).unwrap();
        lap(0, &mut clock);
        squash(&mut c1);
        lap(7, &mut clock);
        let mut s2 = vec![0.0; batch * 6 * 14 * 14];
        avg_pool2d(&c1, [batch, 6, 28, 28], &self.pool, &mut s2).unwrap();
        lap(1, &mut clock);
        let mut c3 = vec![0.0; batch * 16 * 10 * 10];
        self.c3.run(&s2, [batch, 6, 14, 14], &mut c3).unwrap();
        lap(2, &mut clock);
        squash(&mut c3);
        lap(7, &mut clock);
        let s4_shape = pool2d_output_shape([batch, 16, 10, 10], &self.pool).unwrap();
        let mut s4 = vec![0.0; s4_shape.iter().product()];
        avg_pool2d(&c3, [batch, 16, 10, 10], &self.pool, &mut s4).unwrap();
        lap(3, &mut clock);
        outs.extend([c1, s2, c3]);
        let mut h = s4;
        outs.push(h.clone());
        for (i, (w, b)) in self.dense.iter().enumerate() {
            let mut y = vec![0.0; batch * b.len()];
            dense(&h, batch, w, b, &mut y);
            lap(4 + i, &mut clock);
            if i < 2 {
                squash(&mut y);
            }
            lap(7, &mut clock);
            h = y;
            outs.push(h.clone());
        }
        outs
    }
}

fn main() {
    let args = common::args();
    let mut rng = Rng::new(1998);
    let net = LeNet::new(&mut rng);
    println!("LeNet-5 forward, deterministic random weights, {} threads", rayon::current_num_threads());
    for batch in [1, 64] {
        let x = digits(batch, &mut rng);
        let reps = match (args.quick, batch) {
            (true, _) => 3,
            (false, 1) => 2000,
            (false, _) => 100,
        };
        net.forward(&x, batch, &mut [0.0; 8]); // warm up: scratch buffers, caches
        let mut samples = vec![[0.0; 8]; reps];
        for s in &mut samples {
            net.forward(&x, batch, s);
        }
        println!("\nbatch {batch} (median of {reps} runs)");
        println!("{:<14} {:>10} {:>10} {:>10}", "layer", "out/image", "time us", "GFLOP/s");
        let mut total = 0.0;
        for (i, (name, shape, macs)) in LAYERS.iter().enumerate() {
            let mut t: Vec<f64> = samples.iter().map(|s| s[i]).collect();
            t.sort_by(f64::total_cmp);
            let median = t[t.len() / 2];
            total += median;
            let gflops = 2.0 * (*macs * batch) as f64 / median * 1e-9;
            let g = if *macs > 0 { format!("{gflops:.1}") } else { "-".into() };
            println!("{name:<14} {shape:>10} {:>10.1} {g:>10}", median * 1e6);
        }
        println!("{:<14} {:>10} {:>10.1}   -> {:.0} images/s", "total", "", total * 1e6, batch as f64 / total);
        if batch == 1 {
            let outs = net.forward(&x, 1, &mut [0.0; 8]);
            let scores = &outs[6];
            let best = (0..10).max_by(|&a, &b| scores[a].total_cmp(&scores[b])).unwrap();
            println!("scores of digit 0: {:?}", scores.iter().map(|s| (s * 100.0).round() / 100.0).collect::<Vec<_>>());
            println!("(untrained weights, so its guess, {best}, means nothing; the shapes and times do)");
        }
    }
    picture(&net, &args.out.join("lenet5.png"), &mut rng);
}

/// `lenet5.png`: ten input digits, then the C1, S2 and C3 maps of the first.
fn picture(net: &LeNet, path: &std::path::Path, rng: &mut Rng) {
    let x = digits(10, rng);
    let outs = net.forward(&x, 10, &mut [0.0; 8]);
    let (pad, label) = (8, 14);
    let sections = [
        ("C1: 6 MAPS 28x28 (CONV 5x5 + TANH) OF THE FIRST DIGIT", 6usize, 28, 2, &outs[0]),
        ("S2: 6 MAPS 14x14 (AVG POOL 2x2)", 6, 14, 4, &outs[1]),
        ("C3: 16 MAPS 10x10 (CONV 5x5 + TANH)", 16, 10, 4, &outs[2]),
    ];
    // Ten maps of 56 px per row of maps.
    let height =
        pad + (label + 64 + pad) + sections.iter().map(|s| label + s.1.div_ceil(10) * (56 + pad)).sum::<usize>();
    let mut canvas = Canvas::new(10 * (64 + pad) + pad, height, WHITE);
    let mut y = pad;
    canvas.text(pad, y, "INPUT DIGITS 32x32", INK, 1);
    for i in 0..10 {
        canvas.plane(pad + i * (64 + pad), y + label, &x[i * 1024..][..1024], 32, 32, 2, Map::Gray);
    }
    y += label + 64 + pad;
    for (name, maps, side, scale, data) in sections {
        canvas.text(pad, y, name, INK, 1);
        for m in 0..maps {
            let (col, row) = (m % 10, m / 10);
            let plane = &data[m * side * side..][..side * side];
            canvas.plane(pad + col * (56 + pad), y + label + row * (56 + pad), plane, side, side, scale, Map::Signed);
        }
        y += label + maps.div_ceil(10) * (56 + pad);
    }
    canvas.save(path).unwrap();
}

#[cfg(test)]
mod tests {
    #[test]
    fn squash_is_close_to_tanh() {
        for i in -2000..=2000 {
            let x = i as f32 / 100.0;
            let mut v = [x];
            super::squash(&mut v);
            let want = 1.7159 * (2.0 / 3.0 * x).tanh();
            assert!((v[0] - want).abs() < 1e-5, "x = {x}: {} vs {want}", v[0]);
        }
    }
}
