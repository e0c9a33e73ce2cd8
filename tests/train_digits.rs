//! The gradients `examples/train_digits` trains with, checked against finite
//! differences of the same network written here again in f64 with plain
//! loops (no convgemm): if a convolution gradient, a pool's gradient, a dense
//! transpose or the softmax were wrong, the two would disagree. The pools'
//! switches, which the deconvnet picture unpools with, must route a gradient
//! exactly as `max_pool2d_backward` does (the 2×2 windows do not overlap).

#[path = "../examples/train_digits/net.rs"]
mod net;

use net::{C1_SHAPE, C3_SHAPE, CLASSES, DENSE, Params, SIDE};

/// xorshift64*, uniform in [-1, 1).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 23) as f32) - 1.0
    }
}

/// A "same" 5×5 convolution (padding 2, stride 1) followed by a ReLU.
fn conv_relu(x: &[f64], [n, c, h, w]: [usize; 4], wt: &[f64], o: usize, b: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; n * o * h * w];
    for img in 0..n {
        for oc in 0..o {
            for i in 0..h {
                for j in 0..w {
                    let mut s = b[oc];
                    for ic in 0..c {
                        for u in 0..5 {
                            for v in 0..5 {
                                let (iy, ix) = (i as isize + u as isize - 2, j as isize + v as isize - 2);
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                    let xv = x[((img * c + ic) * h + iy as usize) * w + ix as usize];
                                    s += wt[((oc * c + ic) * 5 + u) * 5 + v] * xv;
                                }
                            }
                        }
                    }
                    y[((img * o + oc) * h + i) * w + j] = s.max(0.0);
                }
            }
        }
    }
    y
}

/// 2×2 max pooling with stride 2 over `planes` planes of `h × w`.
fn pool(x: &[f64], planes: usize, h: usize, w: usize) -> Vec<f64> {
    let mut y = Vec::with_capacity(planes * h * w / 4);
    for p in x.chunks_exact(h * w).take(planes) {
        for i in 0..h / 2 {
            for j in 0..w / 2 {
                let at = |a: usize, b: usize| p[(2 * i + a) * w + 2 * j + b];
                y.push(at(0, 0).max(at(0, 1)).max(at(1, 0)).max(at(1, 1)));
            }
        }
    }
    y
}

/// `x · w + b` for a `batch × n_in` `x` and an input-major `w`.
fn dense(x: &[f64], w: &[f64], b: &[f64], relu: bool) -> Vec<f64> {
    let (n_out, n_in) = (b.len(), w.len() / b.len());
    let mut y = Vec::new();
    for row in x.chunks_exact(n_in) {
        for o in 0..n_out {
            let s = b[o] + (0..n_in).map(|i| row[i] * w[i * n_out + o]).sum::<f64>();
            y.push(if relu { s.max(0.0) } else { s });
        }
    }
    y
}

/// The mean softmax cross-entropy of the network on `x`, all in f64.
fn loss(p: &[Vec<f64>], x: &[f64], labels: &[u8]) -> f64 {
    let n = labels.len();
    let a1 = conv_relu(x, [n, 1, SIDE, SIDE], &p[net::C1_W], C1_SHAPE[0], &p[net::C1_B]);
    let p1 = pool(&a1, n * 6, SIDE, SIDE);
    let a3 = conv_relu(&p1, [n, 6, SIDE / 2, SIDE / 2], &p[net::C3_W], C3_SHAPE[0], &p[net::C3_B]);
    let p3 = pool(&a3, n * 16, SIDE / 2, SIDE / 2);
    let h5 = dense(&p3, &p[net::F5_W], &p[net::F5_B], true);
    let h6 = dense(&h5, &p[net::F6_W], &p[net::F6_B], true);
    let z = dense(&h6, &p[net::OUT_W], &p[net::OUT_B], false);
    let mut total = 0.0;
    for (row, &label) in z.chunks_exact(CLASSES).zip(labels) {
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let log_sum = row.iter().map(|v| (v - max).exp()).sum::<f64>().ln() + max;
        total += log_sum - row[label as usize];
    }
    total / n as f64
}

/// A network with random weights and biases and a batch of three random
/// images (which `loss` and the example's `forward` both read).
fn problem() -> (Params, Vec<f32>, Vec<u8>) {
    let mut rng = Rng(0x5eed_1998);
    let mut p = Params::init(|| rng.next());
    for b in [net::C1_B, net::C3_B, net::F5_B, net::F6_B, net::OUT_B] {
        p.0[b].iter_mut().for_each(|v| *v = 0.1 * rng.next());
    }
    let x = (0..3 * SIDE * SIDE).map(|_| rng.next()).collect();
    (p, x, vec![3, 7, 1])
}

#[test]
fn switches_route_like_the_pool_gradient() {
    let (p, x, _) = problem();
    let f = net::forward(&p, &x);
    let b = f.batch;
    for (input, switches, in_shape, out_shape) in
        [(&f.a1, &f.s1, net::a1_shape(b), net::p1_shape(b)), (&f.a3, &f.s3, net::a3_shape(b), net::p3_shape(b))]
    {
        let mut rng = Rng(out_shape.iter().product::<usize>() as u64);
        let d: Vec<f32> = (0..switches.len()).map(|_| rng.next()).collect();
        let (mut unpooled, mut grad) = (vec![1.0; input.len()], vec![2.0; input.len()]);
        convgemm::max_unpool2d(&d, out_shape, switches, &mut unpooled, in_shape).unwrap();
        convgemm::max_pool2d_backward(input, in_shape, &d, &net::pool_params(), &mut grad).unwrap();
        assert_eq!(unpooled, grad);
        assert!(unpooled.iter().filter(|&&v| v != 0.0).count() == d.len(), "every switch names its own element");
    }
}

#[test]
fn f32_loss_matches_the_f64_network() {
    let (p, x, labels) = problem();
    let f = net::forward(&p, &x);
    let (got, _) = net::loss_and_grad(&f.z, &labels);
    let p64: Vec<Vec<f64>> = p.0.iter().map(|t| t.iter().map(|&v| v as f64).collect()).collect();
    let want = loss(&p64, &x.iter().map(|&v| v as f64).collect::<Vec<_>>(), &labels);
    assert!((got as f64 - want).abs() <= 1e-5 * (1.0 + want), "loss {got} vs f64 {want}");
    assert!(want > 0.5, "a random network should be unsure: loss {want}");
}

/// Central differences in f64 (step 1e-6, error about 1e-9) against the
/// example's f32 gradients, for every bias, every C1 weight and a spread of
/// the other weights: each within 1e-3 of its tensor's largest gradient.
#[test]
fn gradients_match_finite_differences() {
    let (p, x, labels) = problem();
    let f = net::forward(&p, &x);
    let (_, d_z) = net::loss_and_grad(&f.z, &labels);
    let g = net::backward(&p, &f, &d_z).params;
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let mut p64: Vec<Vec<f64>> = p.0.iter().map(|t| t.iter().map(|&v| v as f64).collect()).collect();
    let mut rng = Rng(77);
    for (t, grad) in g.0.iter().enumerate() {
        let scale = grad.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64;
        assert!(scale > 1e-6, "{}: the gradient is all zero", net::NAMES[t]);
        let picks: Vec<usize> = if grad.len() <= 160 {
            (0..grad.len()).collect()
        } else {
            (0..24).map(|_| ((rng.next() + 1.0) / 2.0 * grad.len() as f32) as usize % grad.len()).collect()
        };
        for i in picks {
            let (keep, h) = (p64[t][i], 1e-6);
            p64[t][i] = keep + h;
            let up = loss(&p64, &x64, &labels);
            p64[t][i] = keep - h;
            let down = loss(&p64, &x64, &labels);
            p64[t][i] = keep;
            let fd = (up - down) / (2.0 * h);
            let got = grad[i] as f64;
            assert!(
                (got - fd).abs() <= 1e-3 * scale,
                "{}[{i}]: backward {got}, finite difference {fd} (largest |gradient| {scale})",
                net::NAMES[t]
            );
        }
    }
    // The dense shapes the example and this file agree on.
    assert_eq!(DENSE[0].0, C3_SHAPE[0] * (SIDE / 4) * (SIDE / 4));
}
