//! ResNet-18 and MobileNetV2 written with candle-nn (random weights from a
//! `VarMap`, nothing downloaded), run with candle's own convolutions and with
//! convgemm's: the largest difference of the outputs, the time per image of
//! inference at batch 1, and the time of one training step (forward,
//! backward, SGD update) at batch 8, each side by side with the speed-up.
//!
//! ```text
//! RAYON_NUM_THREADS=1 cargo run --release --features candle --example candle_cnn            # 224x224
//! RAYON_NUM_THREADS=1 cargo run --release --features candle --example candle_cnn -- --quick # 64x64, few runs
//! RAYON_NUM_THREADS=1 cargo run --release --features candle --example candle_cnn -- --inference # no training step
//! ```
//!
//! Only the convolutions change between the two runs; batch norm, ReLU,
//! pooling, the classifier and the loss are candle's in both. Inference uses
//! `convgemm::candle::Conv2d` (weights packed once, as a deployed model
//! would); training uses `convgemm::candle::conv2d`, whose backward computes
//! the input, weight and bias gradients with convgemm. Set
//! `RAYON_NUM_THREADS` to choose the threads of both (candle reads it too).

use std::time::Instant;

use candle_nn::{BatchNorm, Linear, Optimizer, SGD, VarBuilder, VarMap};
use convgemm::candle::candle_core::{self, DType, Device, Module, ModuleT, Result, Tensor};
use convgemm::{Activation, ConvOptions, ConvParams};

/// Which convolutions a forward pass runs.
#[derive(Clone, Copy, PartialEq)]
enum Backend {
    /// candle's `Tensor::conv2d`.
    Candle,
    /// `convgemm::candle::conv2d`: differentiable, weights read on each call.
    Convgemm,
    /// `convgemm::candle::Conv2d`: weights packed once (inference).
    Plans,
    /// Plans with each batch norm folded into the weights and a bias and
    /// the activation fused: a deployed model (inference).
    Folded,
}

/// A bias-free convolution (batch norm follows each one), square kernel,
/// symmetric padding: what both candle and convgemm can express.
struct Conv {
    w: Tensor,
    k: usize,
    stride: usize,
    groups: usize,
    plan: Option<convgemm::candle::Conv2d>,
}

impl Conv {
    fn new(vb: VarBuilder, c_in: usize, c_out: usize, k: usize, stride: usize, groups: usize) -> Result<Self> {
        let w = vb.get_with_hints((c_out, c_in / groups, k, k), "weight", candle_nn::init::DEFAULT_KAIMING_NORMAL)?;
        Ok(Conv { w, k, stride, groups, plan: None })
    }

    fn params(&self) -> ConvParams {
        ConvParams { stride: [self.stride; 2], padding: [self.k / 2; 4], groups: self.groups, ..ConvParams::default() }
    }

    /// Packs the current weights for `Backend::Plans`.
    fn pack(&mut self) -> Result<()> {
        self.plan = Some(convgemm::candle::Conv2d::new(self.w.detach(), None, self.params())?);
        Ok(())
    }

    fn forward(&self, x: &Tensor, backend: Backend) -> Result<Tensor> {
        match backend {
            Backend::Candle => x.conv2d(&self.w, self.k / 2, self.stride, 1, self.groups),
            Backend::Convgemm => convgemm::candle::conv2d(x, &self.w, None, &self.params()),
            Backend::Plans | Backend::Folded => self.plan.as_ref().expect("packed").forward(x),
        }
    }
}

/// The activation after a convolution and its batch norm.
#[derive(Clone, Copy)]
enum Act {
    None,
    Relu,
    Relu6,
}

impl Act {
    fn apply(self, x: Tensor) -> Result<Tensor> {
        match self {
            Act::None => Ok(x),
            Act::Relu => x.relu(),
            Act::Relu6 => x.clamp(0f32, 6f32),
        }
    }

    fn fused(self) -> Activation {
        match self {
            Act::None => Activation::None,
            Act::Relu => Activation::Relu,
            Act::Relu6 => Activation::Clamp { min: 0.0, max: 6.0 },
        }
    }
}

/// A batch norm with random statistics and affine parameters, as a trained
/// network has (a fresh one is the identity, which would make folding it
/// trivial).
fn batch_norm(c: usize, vb: VarBuilder) -> Result<BatchNorm> {
    let gamma = vb.get_with_hints(c, "weight", candle_nn::Init::Uniform { lo: 0.5, up: 1.5 })?;
    let beta = vb.get_with_hints(c, "bias", candle_nn::Init::Randn { mean: 0.0, stdev: 0.1 })?;
    let mean = Tensor::randn(0f32, 0.1, c, vb.device())?;
    let var = Tensor::rand(0.5f32, 1.5, c, vb.device())?;
    BatchNorm::new(c, mean, var, gamma, beta, 1e-5)
}

/// Convolution, batch norm, activation.
struct ConvBn {
    conv: Conv,
    bn: BatchNorm,
    act: Act,
    /// For `Backend::Folded`: the batch norm folded into the weights and a
    /// bias, the activation fused.
    folded: Option<convgemm::candle::Conv2d>,
}

impl ConvBn {
    fn new(
        vb: VarBuilder,
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        groups: usize,
        act: Act,
    ) -> Result<Self> {
        let conv = Conv::new(vb.pp("conv"), c_in, c_out, k, stride, groups)?;
        let bn = batch_norm(c_out, vb.pp("bn"))?;
        Ok(ConvBn { conv, bn, act, folded: None })
    }

    /// Inference-time batch norm is `y·s + (β − μ·s)` with `s = γ/√(σ² + ε)`
    /// per channel: scale the weights by `s`, make the rest the bias.
    fn fold(&mut self) -> Result<()> {
        let (gamma, beta) = self.bn.weight_and_bias().expect("affine batch norm");
        let s = (gamma / (self.bn.running_var() + self.bn.eps())?.sqrt()?)?;
        let w = self.conv.w.detach().broadcast_mul(&s.reshape(((), 1, 1, 1))?)?;
        let b = (beta - (self.bn.running_mean() * &s)?)?;
        let options = ConvOptions { activation: self.act.fused(), ..ConvOptions::default() };
        self.folded = Some(convgemm::candle::Conv2d::with_options(w, Some(b.detach()), self.conv.params(), &options)?);
        Ok(())
    }

    fn forward(&self, x: &Tensor, b: Backend, train: bool) -> Result<Tensor> {
        if b == Backend::Folded {
            return self.folded.as_ref().expect("folded").forward(x);
        }
        self.act.apply(self.bn.forward_t(&self.conv.forward(x, b)?, train)?)
    }
}

/// ResNet's 3×3 max pool with stride 2 and padding 1, from candle ops that
/// have a backward (candle's `max_pool2d` has none when kernel ≠ stride):
/// the maximum of the nine shifted views of the padded input, then every
/// second row and column. After a ReLU, zero padding is as good as −∞.
fn max_pool_3x3_s2(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (ho, wo) = ((h - 1) / 2 + 1, (w - 1) / 2 + 1);
    // Padded to 2·ho + 2 rows and 2·wo + 2 columns, so every shift holds 2·ho × 2·wo.
    let p = x.pad_with_zeros(2, 1, 2 * ho + 1 - h)?.pad_with_zeros(3, 1, 2 * wo + 1 - w)?;
    let mut m: Option<Tensor> = None;
    for u in 0..3 {
        for v in 0..3 {
            let shifted = p.narrow(2, u, 2 * ho)?.narrow(3, v, 2 * wo)?;
            m = Some(match m {
                None => shifted,
                Some(m) => m.maximum(&shifted)?,
            });
        }
    }
    let m = m.expect("nine shifts").reshape((n, c, ho, 2, wo, 2))?;
    m.narrow(3, 0, 1)?.narrow(5, 0, 1)?.reshape((n, c, ho, wo))
}

/// What both networks share: a list of convolutions to pack, and a forward.
trait Net {
    fn layers(&mut self) -> Vec<&mut ConvBn>;
    fn forward(&self, x: &Tensor, b: Backend, train: bool) -> Result<Tensor>;
}

/// ResNet-18 (He et al. 2016): a 7×7/2 stem, a 3×3/2 max pool, four stages
/// of two basic blocks (64, 128, 256, 512 channels), average pool, 1000 classes.
struct ResNet18 {
    stem: ConvBn,
    blocks: Vec<(ConvBn, ConvBn, Option<ConvBn>)>,
    fc: Linear,
}

impl ResNet18 {
    fn new(vb: VarBuilder) -> Result<Self> {
        let stem = ConvBn::new(vb.pp("stem"), 3, 64, 7, 2, 1, Act::Relu)?;
        let mut blocks = Vec::new();
        let mut c_in = 64;
        for (stage, c) in [64, 128, 256, 512].into_iter().enumerate() {
            for i in 0..2 {
                let vb = vb.pp(format!("layer{stage}.{i}"));
                let stride = if stage > 0 && i == 0 { 2 } else { 1 };
                let a = ConvBn::new(vb.pp("a"), c_in, c, 3, stride, 1, Act::Relu)?;
                let b = ConvBn::new(vb.pp("b"), c, c, 3, 1, 1, Act::None)?;
                let down = if stride != 1 || c_in != c {
                    Some(ConvBn::new(vb.pp("down"), c_in, c, 1, stride, 1, Act::None)?)
                } else {
                    None
                };
                blocks.push((a, b, down));
                c_in = c;
            }
        }
        Ok(ResNet18 { stem, blocks, fc: candle_nn::linear(512, 1000, vb.pp("fc"))? })
    }
}

impl Net for ResNet18 {
    fn layers(&mut self) -> Vec<&mut ConvBn> {
        let mut v = vec![&mut self.stem];
        for (a, b, down) in &mut self.blocks {
            v.extend([a, b]);
            v.extend(down);
        }
        v
    }

    fn forward(&self, x: &Tensor, b: Backend, train: bool) -> Result<Tensor> {
        let x = self.stem.forward(x, b, train)?;
        let mut x = max_pool_3x3_s2(&x)?;
        for (conv_a, conv_b, down) in &self.blocks {
            let y = conv_b.forward(&conv_a.forward(&x, b, train)?, b, train)?;
            let skip = match down {
                Some(d) => d.forward(&x, b, train)?,
                None => x.clone(),
            };
            x = (y + skip)?.relu()?;
        }
        self.fc.forward(&x.mean((2, 3))?)
    }
}

/// MobileNetV2 (Sandler et al. 2018): inverted residual blocks of a 1×1
/// expansion, a 3×3 depthwise convolution and a 1×1 projection.
struct MobileNetV2 {
    stem: ConvBn,
    blocks: Vec<(Option<ConvBn>, ConvBn, ConvBn, bool)>,
    last: ConvBn,
    fc: Linear,
}

impl MobileNetV2 {
    fn new(vb: VarBuilder) -> Result<Self> {
        let stem = ConvBn::new(vb.pp("stem"), 3, 32, 3, 2, 1, Act::Relu6)?;
        let mut blocks = Vec::new();
        let mut c_in = 32;
        let table =
            [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)];
        for (t, c, n, s) in table {
            for i in 0..n {
                let vb = vb.pp(format!("block{}", blocks.len()));
                let stride = if i == 0 { s } else { 1 };
                let hidden = c_in * t;
                let expand =
                    if t != 1 { Some(ConvBn::new(vb.pp("expand"), c_in, hidden, 1, 1, 1, Act::Relu6)?) } else { None };
                let dw = ConvBn::new(vb.pp("dw"), hidden, hidden, 3, stride, hidden, Act::Relu6)?;
                let project = ConvBn::new(vb.pp("project"), hidden, c, 1, 1, 1, Act::None)?;
                blocks.push((expand, dw, project, stride == 1 && c_in == c));
                c_in = c;
            }
        }
        let last = ConvBn::new(vb.pp("last"), 320, 1280, 1, 1, 1, Act::Relu6)?;
        Ok(MobileNetV2 { stem, blocks, last, fc: candle_nn::linear(1280, 1000, vb.pp("fc"))? })
    }
}

impl Net for MobileNetV2 {
    fn layers(&mut self) -> Vec<&mut ConvBn> {
        let mut v = vec![&mut self.stem, &mut self.last];
        for (e, dw, p, _) in &mut self.blocks {
            v.extend(e);
            v.extend([dw, p]);
        }
        v
    }

    fn forward(&self, x: &Tensor, b: Backend, train: bool) -> Result<Tensor> {
        let mut x = self.stem.forward(x, b, train)?;
        for (expand, dw, project, residual) in &self.blocks {
            let h = match expand {
                Some(e) => e.forward(&x, b, train)?,
                None => x.clone(),
            };
            let y = project.forward(&dw.forward(&h, b, train)?, b, train)?;
            x = if *residual { (y + x)? } else { y };
        }
        let x = self.last.forward(&x, b, train)?;
        self.fc.forward(&x.mean((2, 3))?)
    }
}

/// Times `f(0)`, `f(1)`, … `f(variants − 1)` in turn, `rounds` times after
/// one warm-up round, so that a drift of the machine's speed hits every
/// variant alike. Returns each variant's median time (seconds) and the
/// median over rounds of variant 0's time over each variant's: the speed-up,
/// paired round by round.
fn interleaved(variants: usize, rounds: usize, mut f: impl FnMut(usize) -> Result<()>) -> Result<Vec<(f64, f64)>> {
    let mut t = vec![Vec::with_capacity(rounds); variants];
    for round in 0..=rounds {
        for (v, times) in t.iter_mut().enumerate() {
            let start = Instant::now();
            f(v)?;
            if round > 0 {
                times.push(start.elapsed().as_secs_f64());
            }
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let base = t[0].clone();
    Ok(t.into_iter()
        .map(|times| (median(times.clone()), median(base.iter().zip(&times).map(|(b, x)| b / x).collect())))
        .collect())
}

/// Inference at batch 1 and one training step at batch 8 with both
/// backends; prints the differences, times and speed-ups.
fn compare(
    name: &str,
    make: impl Fn(VarBuilder) -> Result<Box<dyn Net>>,
    side: usize,
    quick: bool,
    train: bool,
) -> Result<()> {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let mut net = make(VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
    for layer in net.layers() {
        layer.conv.pack()?;
        layer.fold()?;
    }
    let x = Tensor::randn(0f32, 1.0, (1, 3, side, side), &dev)?;
    let want = net.forward(&x, Backend::Candle, false)?;
    let scale = want.abs()?.max_all()?.to_scalar::<f32>()?;
    println!("\n{name}, {side}x{side}, {} convolutions", net.layers().len());
    let variants = [("conv2d op", Backend::Convgemm), ("Conv2d plans", Backend::Plans), ("folded", Backend::Folded)];
    for (label, backend) in variants {
        let got = net.forward(&x, backend, false)?;
        let diff = (&got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        println!("  largest difference from candle ({label}): {diff:.3e} = {:.2e} of the largest output", diff / scale);
    }
    let rounds = if quick { 3 } else { 9 };
    let backends = [Backend::Candle, Backend::Convgemm, Backend::Plans, Backend::Folded];
    let times = interleaved(backends.len(), rounds, |v| net.forward(&x, backends[v], false).map(drop))?;
    print!("  inference, batch 1 (ms an image, median of {rounds}):  candle {:.1}", times[0].0 * 1e3);
    for (label, (t, ratio)) in ["convgemm op", "plans", "plans, BN folded"].iter().zip(&times[1..]) {
        print!("   {label} {:.1} ({ratio:.2}x)", t * 1e3);
    }
    println!();
    if !train {
        return Ok(());
    }
    // One SGD step on random labels at batch 8; batch norm in training mode.
    let batch = 8;
    let xb = Tensor::randn(0f32, 1.0, (batch, 3, side, side), &dev)?;
    let labels = Tensor::from_vec((0..batch as u32).map(|i| i * 97 % 1000).collect(), batch, &dev)?;
    let mut sgd = SGD::new(varmap.all_vars(), 1e-3)?;
    let mut step = |backend: Backend| -> Result<()> {
        let logits = net.forward(&xb, backend, true)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &labels)?;
        sgd.backward_step(&loss)
    };
    let rounds = if quick { 2 } else { 5 };
    let backends = [Backend::Candle, Backend::Convgemm];
    let times = interleaved(2, rounds, |v| step(backends[v]))?;
    println!(
        "  training step, batch {batch} (ms, median of {rounds}):  candle {:.1}   convgemm op {:.1} ({:.2}x)",
        times[0].0 * 1e3,
        times[1].0 * 1e3,
        times[1].1
    );
    Ok(())
}

fn main() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let side = if quick { 64 } else { 224 };
    let train = !std::env::args().any(|a| a == "--inference");
    println!(
        "candle 0.11 vs convgemm {}: {} rayon threads (candle's: {})",
        env!("CARGO_PKG_VERSION"),
        rayon::current_num_threads(),
        candle_core::utils::get_num_threads()
    );
    compare("ResNet-18", |vb| Ok(Box::new(ResNet18::new(vb)?)), side, quick, train)?;
    compare("MobileNetV2", |vb| Ok(Box::new(MobileNetV2::new(vb)?)), side, quick, train)?;
    Ok(())
}
