//! The network of `train_digits`: a LeNet-5-style CNN on 16×16 digits,
//! forward and backward, every convolution, pool and matrix product a call to
//! convgemm's public API. `tests/train_digits.rs` includes this file to check
//! its gradients against finite differences of an f64 network of its own.
//!
//! ```text
//! input  1×16×16
//! C1     conv 5×5 pad 2, 6 maps     → 6×16×16   ReLU (fused)
//! S2     max pool 2×2               → 6×8×8
//! C3     conv 5×5 pad 2, 16 maps    → 16×8×8    ReLU (fused)
//! S4     max pool 2×2               → 16×4×4 = 256
//! F5     dense 256 → 120                        ReLU
//! F6     dense 120 → 84                         ReLU
//! out    dense 84 → 10, softmax cross-entropy
//! ```
#![allow(dead_code)]

use convgemm::{
    Activation, ConvOptions, ConvParams, PoolParams, conv2d_backward_bias, conv2d_backward_input,
    conv2d_backward_weight, conv2d_with, max_pool2d_backward, max_pool2d_with_indices, sgemm,
};

/// The side of the network's input images.
pub const SIDE: usize = 16;
pub const CLASSES: usize = 10;

/// The parameter tensors, in this order, with their shapes: convolution
/// weights OIHW, dense weights input-major (`n_in × n_out`, row-major, so a
/// batch times them is a plain row-major product), then each bias.
pub const C1_W: usize = 0;
pub const C1_B: usize = 1;
pub const C3_W: usize = 2;
pub const C3_B: usize = 3;
pub const F5_W: usize = 4;
pub const F5_B: usize = 5;
pub const F6_W: usize = 6;
pub const F6_B: usize = 7;
pub const OUT_W: usize = 8;
pub const OUT_B: usize = 9;
pub const NAMES: [&str; 10] = ["C1 w", "C1 b", "C3 w", "C3 b", "F5 w", "F5 b", "F6 w", "F6 b", "out w", "out b"];
pub const C1_SHAPE: [usize; 4] = [6, 1, 5, 5];
pub const C3_SHAPE: [usize; 4] = [16, 6, 5, 5];
/// `(n_in, n_out)` of the dense layers F5, F6 and out.
pub const DENSE: [(usize, usize); 3] = [(16 * 4 * 4, 120), (120, 84), (84, CLASSES)];

/// Both convolutions: 5×5, padding 2 ("same"), stride 1.
pub fn conv_params() -> ConvParams {
    ConvParams { padding: [2; 4], ..ConvParams::default() }
}

pub fn pool_params() -> PoolParams {
    PoolParams::new([2, 2])
}

/// The element count of each parameter tensor.
pub fn param_lens() -> [usize; 10] {
    let (c1, c3) = (C1_SHAPE.iter().product(), C3_SHAPE.iter().product());
    let [(a, b), (c, d), (e, f)] = DENSE;
    [c1, C1_SHAPE[0], c3, C3_SHAPE[0], a * b, b, c * d, d, e * f, f]
}

/// The learned parameters (or their gradients, or optimiser moments).
#[derive(Clone, Debug)]
pub struct Params(pub Vec<Vec<f32>>);

impl Params {
    pub fn zeros() -> Self {
        Params(param_lens().iter().map(|&n| vec![0.0; n]).collect())
    }

    /// He initialisation: weights uniform in ±√(6 / fan-in), so that ReLU
    /// layers keep the scale of their input; biases 0. C1 starts at a tenth
    /// of that, so that its trained filters show what the gradients put
    /// there rather than the starting noise (the accuracy is the same).
    /// `uniform` gives numbers uniform in [-1, 1).
    pub fn init(mut uniform: impl FnMut() -> f32) -> Self {
        let mut p = Self::zeros();
        let fan_in = [25, 0, 6 * 25, 0, DENSE[0].0, 0, DENSE[1].0, 0, DENSE[2].0, 0];
        for (i, (t, &fan)) in p.0.iter_mut().zip(&fan_in).enumerate() {
            if fan > 0 {
                let scale = (6.0 / fan as f32).sqrt() * if i == C1_W { 0.1 } else { 1.0 };
                t.iter_mut().for_each(|v| *v = scale * uniform());
            }
        }
        p
    }
}

/// `c = a · b + beta · c` for an `m × k` `a` and a `k × n` `b` read through
/// `(slice, row stride, column stride)`, and a row-major `m × n` `c`.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    m: usize,
    k: usize,
    n: usize,
    a: (&[f32], usize, usize),
    b: (&[f32], usize, usize),
    beta: f32,
    c: &mut [f32],
) {
    let last = |rows: usize, cols: usize, (s, rs, cs): (&[f32], usize, usize)| {
        rows == 0 || cols == 0 || (rows - 1) * rs + (cols - 1) * cs < s.len()
    };
    assert!(last(m, k, a) && last(k, n, b) && c.len() == m * n, "matmul operands out of bounds");
    // SAFETY: the assertion above bounds the largest offset either input's
    // strides reach; C is a separate, exclusively borrowed m × n row-major slice.
    unsafe {
        sgemm(
            m,
            k,
            n,
            1.0,
            a.0.as_ptr(),
            a.1 as isize,
            a.2 as isize,
            b.0.as_ptr(),
            b.1 as isize,
            b.2 as isize,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        )
    }
}

/// Everything the backward pass (and the pictures) need from a forward pass.
pub struct Forward {
    pub batch: usize,
    pub x: Vec<f32>,
    /// C1 after its ReLU, `[batch, 6, 16, 16]`.
    pub a1: Vec<f32>,
    /// S2 and its switches, `[batch, 6, 8, 8]`.
    pub p1: Vec<f32>,
    pub s1: Vec<usize>,
    /// C3 after its ReLU, `[batch, 16, 8, 8]`.
    pub a3: Vec<f32>,
    /// S4 and its switches, `[batch, 16, 4, 4]` (= the `batch × 256` input of F5).
    pub p3: Vec<f32>,
    pub s3: Vec<usize>,
    /// F5 and F6 after their ReLUs.
    pub h5: Vec<f32>,
    pub h6: Vec<f32>,
    /// The class scores (logits), `batch × 10`.
    pub z: Vec<f32>,
}

pub fn a1_shape(batch: usize) -> [usize; 4] {
    [batch, 6, SIDE, SIDE]
}
pub fn p1_shape(batch: usize) -> [usize; 4] {
    [batch, 6, SIDE / 2, SIDE / 2]
}
pub fn a3_shape(batch: usize) -> [usize; 4] {
    [batch, 16, SIDE / 2, SIDE / 2]
}
pub fn p3_shape(batch: usize) -> [usize; 4] {
    [batch, 16, SIDE / 4, SIDE / 4]
}

fn len(shape: [usize; 4]) -> usize {
    shape.iter().product()
}

/// A convolution with its ReLU fused.
fn conv_relu(x: &[f32], x_shape: [usize; 4], w: &[f32], w_shape: [usize; 4], b: &[f32], y: &mut [f32]) {
    let relu = ConvOptions { activation: Activation::Relu, ..ConvOptions::default() };
    conv2d_with(&relu, x, x_shape, w, w_shape, Some(b), &conv_params(), y).expect("convolution shapes");
}

/// A max pool that keeps its switches.
fn pool(x: &[f32], x_shape: [usize; 4], out_len: usize) -> (Vec<f32>, Vec<usize>) {
    let (mut y, mut at) = (vec![0.0; out_len], vec![0; out_len]);
    max_pool2d_with_indices(x, x_shape, &pool_params(), &mut y, &mut at).expect("pool shapes");
    (y, at)
}

/// `y = relu?(x · w + bias)` for a `batch × n_in` `x`.
fn dense(x: &[f32], w: &[f32], bias: &[f32], relu: bool) -> Vec<f32> {
    let (n_out, batch) = (bias.len(), x.len() * bias.len() / w.len());
    let mut y: Vec<f32> = bias.iter().copied().cycle().take(batch * n_out).collect();
    let n_in = w.len() / n_out;
    matmul(batch, n_in, n_out, (x, n_in, 1), (w, n_out, 1), 1.0, &mut y);
    if relu {
        y.iter_mut().for_each(|v| *v = v.max(0.0));
    }
    y
}

/// The forward pass over a batch of `[batch, 1, 16, 16]` images.
pub fn forward(p: &Params, x: &[f32]) -> Forward {
    let batch = x.len() / (SIDE * SIDE);
    let t = &p.0;
    let mut a1 = vec![0.0; len(a1_shape(batch))];
    conv_relu(x, [batch, 1, SIDE, SIDE], &t[C1_W], C1_SHAPE, &t[C1_B], &mut a1);
    let (p1, s1) = pool(&a1, a1_shape(batch), len(p1_shape(batch)));
    let mut a3 = vec![0.0; len(a3_shape(batch))];
    conv_relu(&p1, p1_shape(batch), &t[C3_W], C3_SHAPE, &t[C3_B], &mut a3);
    let (p3, s3) = pool(&a3, a3_shape(batch), len(p3_shape(batch)));
    let h5 = dense(&p3, &t[F5_W], &t[F5_B], true);
    let h6 = dense(&h5, &t[F6_W], &t[F6_B], true);
    let z = dense(&h6, &t[OUT_W], &t[OUT_B], false);
    Forward { batch, x: x.to_vec(), a1, p1, s1, a3, p3, s3, h5, h6, z }
}

/// The softmax of each row of `z`, in place.
pub fn softmax(z: &mut [f32]) {
    for row in z.chunks_exact_mut(CLASSES) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        row.iter_mut().for_each(|v| *v = (*v - max).exp());
        let sum: f32 = row.iter().sum();
        row.iter_mut().for_each(|v| *v /= sum);
    }
}

/// The mean cross-entropy of the batch and its gradient with respect to the
/// scores: `(softmax(z) − onehot(label)) / batch`.
pub fn loss_and_grad(z: &[f32], labels: &[u8]) -> (f32, Vec<f32>) {
    let batch = labels.len();
    let mut g = z.to_vec();
    softmax(&mut g);
    let mut loss = 0.0;
    for (row, &label) in g.chunks_exact_mut(CLASSES).zip(labels) {
        loss -= row[label as usize].max(1e-30).ln();
        row[label as usize] -= 1.0;
        row.iter_mut().for_each(|v| *v /= batch as f32);
    }
    (loss / batch as f32, g)
}

/// The gradients of one backward pass.
pub struct Backward {
    /// With respect to every parameter, in the order of [`Params`].
    pub params: Params,
    /// With respect to C3's output after its ReLU (what Grad-CAM weighs).
    pub d_a3: Vec<f32>,
}

/// Zeroes `g` where the ReLU's output `y` was not positive (its gradient is 0 there).
fn relu_backward(g: &mut [f32], y: &[f32]) {
    g.iter_mut().zip(y).for_each(|(g, &y)| *g = if y > 0.0 { *g } else { 0.0 });
}

/// A dense layer's backward: its weight and bias gradients into `gw`, `gb`,
/// and the gradient with respect to its input, `dy · wᵀ`.
fn dense_backward(x: &[f32], w: &[f32], dy: &[f32], gw: &mut [f32], gb: &mut [f32]) -> Vec<f32> {
    let n_out = gb.len();
    let (batch, n_in) = (dy.len() / n_out, w.len() / n_out);
    // dW = xᵀ · dy: A(i, l) = x[l, i].
    matmul(n_in, batch, n_out, (x, 1, n_in), (dy, n_out, 1), 0.0, gw);
    gb.fill(0.0);
    for row in dy.chunks_exact(n_out) {
        gb.iter_mut().zip(row).for_each(|(b, &d)| *b += d);
    }
    // dx = dy · wᵀ: B(l, j) = w[j, l].
    let mut dx = vec![0.0; batch * n_in];
    matmul(batch, n_out, n_in, (dy, n_out, 1), (w, 1, n_out), 0.0, &mut dx);
    dx
}

/// The backward pass from `d_z`, the gradient with respect to the scores.
pub fn backward(p: &Params, f: &Forward, d_z: &[f32]) -> Backward {
    let (t, b) = (&p.0, f.batch);
    let mut g = Params::zeros();
    let [c1w, c1b, c3w, c3b, f5w, f5b, f6w, f6b, ow, ob] = &mut g.0[..] else { unreachable!() };
    let mut d_h6 = dense_backward(&f.h6, &t[OUT_W], d_z, ow, ob);
    relu_backward(&mut d_h6, &f.h6);
    let mut d_h5 = dense_backward(&f.h5, &t[F6_W], &d_h6, f6w, f6b);
    relu_backward(&mut d_h5, &f.h5);
    let d_p3 = dense_backward(&f.p3, &t[F5_W], &d_h5, f5w, f5b);
    // Through S4 to the pool's input, then through C3's ReLU.
    let mut d_a3 = vec![0.0; f.a3.len()];
    max_pool2d_backward(&f.a3, a3_shape(b), &d_p3, &pool_params(), &mut d_a3).expect("pool shapes");
    let mut d_c3 = d_a3.clone();
    relu_backward(&mut d_c3, &f.a3);
    conv2d_backward_weight(&f.p1, p1_shape(b), &d_c3, a3_shape(b), &conv_params(), c3w, C3_SHAPE).expect("C3");
    conv2d_backward_bias(&d_c3, a3_shape(b), c3b).expect("C3 bias");
    let mut d_p1 = vec![0.0; f.p1.len()];
    conv2d_backward_input(&d_c3, a3_shape(b), &t[C3_W], C3_SHAPE, &conv_params(), &mut d_p1, p1_shape(b))
        .expect("C3 input");
    let mut d_c1 = vec![0.0; f.a1.len()];
    max_pool2d_backward(&f.a1, a1_shape(b), &d_p1, &pool_params(), &mut d_c1).expect("pool shapes");
    relu_backward(&mut d_c1, &f.a1);
    let x_shape = [b, 1, SIDE, SIDE];
    conv2d_backward_weight(&f.x, x_shape, &d_c1, a1_shape(b), &conv_params(), c1w, C1_SHAPE).expect("C1");
    conv2d_backward_bias(&d_c1, a1_shape(b), c1b).expect("C1 bias");
    Backward { params: g, d_a3 }
}

/// Adam (Kingma & Ba 2015) with the usual β₁ = 0.9, β₂ = 0.999, ε = 1e-8.
pub struct Adam {
    pub lr: f32,
    m: Params,
    v: Params,
    step: i32,
}

impl Adam {
    pub fn new(lr: f32) -> Self {
        Adam { lr, m: Params::zeros(), v: Params::zeros(), step: 0 }
    }

    pub fn update(&mut self, p: &mut Params, g: &Params) {
        let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
        self.step += 1;
        let (c1, c2) = (1.0 - b1.powi(self.step), 1.0 - b2.powi(self.step));
        for (((p, g), m), v) in p.0.iter_mut().zip(&g.0).zip(&mut self.m.0).zip(&mut self.v.0) {
            for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                *m = b1 * *m + (1.0 - b1) * g;
                *v = b2 * *v + (1.0 - b2) * g * g;
                *p -= self.lr * (*m / c1) / ((*v / c2).sqrt() + eps);
            }
        }
    }
}
