//! What a CNN unit "sees": the input patch that excites one unit of a small
//! two-layer network the most, found by gradient ascent on the *input* —
//! the forward pass through `conv2d`, the gradient back through
//! `conv2d_backward_input` (the same engine, run backwards).
//!
//! ```text
//! cargo run --release --example what_a_filter_sees                  # 300 steps per unit
//! cargo run --release --example what_a_filter_sees -- --quick --out DIR
//! ```
//!
//! The network is fixed, not trained: layer 1 is a bank of eight oriented
//! Gabor filters (7×7), then ReLU; layer 2 has units wired by hand from
//! those orientations (a vertical line, a cross, a corner, an X) and a few
//! random ones. For each unit we start from faint noise and repeat
//! `x ← normalise(x + step · ∂unit/∂x)`: a walk on the sphere `‖x‖ = 1`
//! toward the input the unit responds to most. A layer-1 unit is linear,
//! so its answer is its own filter; a layer-2 unit's answer is the pattern
//! its wiring asks for. Writes `what_a_filter_sees.png`.

mod common;

use common::{Canvas, INK, Map, Rng, WHITE, text_width};
use convgemm::{ConvParams, conv2d, conv2d_backward_input};

/// Input patch side: the receptive field of a layer-2 unit (7 + 5 − 1 = 11)
/// plus a margin, so the unit at the centre of the 5×5 layer-2 map sees it.
const P: usize = 15;
const K1: usize = 7;
const K2: usize = 5;
const C1: usize = 8;
const S1: usize = P - K1 + 1; // 9
const S2: usize = S1 - K2 + 1; // 5

/// Eight zero-mean Gabor filters, `θ = 0°, 22.5°, …, 157.5°`.
fn gabor_bank() -> Vec<f32> {
    let mut w = Vec::with_capacity(C1 * K1 * K1);
    for o in 0..C1 {
        let theta = std::f32::consts::PI * o as f32 / C1 as f32;
        let (c, s) = (theta.cos(), theta.sin());
        let k: Vec<f32> = (0..K1 * K1)
            .map(|i| {
                let (y, x) = ((i / K1) as f32 - 3.0, (i % K1) as f32 - 3.0);
                let (u, v) = (x * c + y * s, -x * s + y * c);
                (-(u * u + 0.5 * v * v) / 8.0).exp() * (std::f32::consts::TAU * u / 5.0).cos()
            })
            .collect();
        let mean = k.iter().sum::<f32>() / k.len() as f32;
        w.extend(k.iter().map(|v| v - mean));
    }
    w
}

/// Layer-2 units: `(name, weights [C1, K2, K2])`. Orientation index `o`
/// is `θ = o · 22.5°`; `θ = 0` responds to vertical stripes.
fn layer2_units(rng: &mut Rng, quick: bool) -> Vec<(String, Vec<f32>)> {
    let unit = |taps: &[(usize, usize, usize)]| {
        let mut w = vec![0.0; C1 * K2 * K2];
        for &(o, y, x) in taps {
            w[(o * K2 + y) * K2 + x] += 1.0;
        }
        w
    };
    let line: Vec<_> = (0..K2).map(|y| (0, y, 2)).collect();
    let cross: Vec<_> = (0..K2).flat_map(|i| [(0, i, 2), (4, 2, i)]).collect();
    let corner: Vec<_> = (1..K2).flat_map(|i| [(0, i, 1), (4, 1, i)]).collect();
    let x: Vec<_> = (0..K2).flat_map(|i| [(2, i, i), (6, i, K2 - 1 - i)]).collect();
    let mut units = vec![
        ("VERTICAL LINE".to_string(), unit(&line)),
        ("CROSS".to_string(), unit(&cross)),
        ("CORNER".to_string(), unit(&corner)),
        ("X".to_string(), unit(&x)),
    ];
    for r in 0..if quick { 1 } else { 3 } {
        units.push((format!("RANDOM {}", r + 1), rng.uniform(C1 * K2 * K2, 0.5)));
    }
    units
}

/// The network, forward and backward, for one input patch.
struct Net {
    w1: Vec<f32>,
    params: ConvParams,
}

impl Net {
    /// Layer-1 pre-activations `[C1, S1, S1]` of patch `x`.
    fn layer1(&self, x: &[f32]) -> Vec<f32> {
        let mut z = vec![0.0; C1 * S1 * S1];
        conv2d(x, [1, 1, P, P], &self.w1, [C1, 1, K1, K1], None, &self.params, &mut z).unwrap();
        z
    }

    /// The unit's value and its gradient with respect to `x`. A layer-1
    /// unit is filter `o` at the centre of the layer-1 map (`w2 = None`);
    /// a layer-2 unit is `w2` over ReLU(layer 1) at the centre of its map.
    fn unit_and_gradient(&self, x: &[f32], unit: &Unit) -> (f32, Vec<f32>) {
        let z1 = self.layer1(x);
        let mut g1 = vec![0.0; C1 * S1 * S1];
        let value = match unit {
            Unit::Layer1(o) => {
                g1[(o * S1 + S1 / 2) * S1 + S1 / 2] = 1.0;
                z1[(o * S1 + S1 / 2) * S1 + S1 / 2]
            }
            Unit::Layer2(w2) => {
                let a1: Vec<f32> = z1.iter().map(|v| v.max(0.0)).collect();
                let mut y2 = vec![0.0; S2 * S2];
                conv2d(&a1, [1, C1, S1, S1], w2, [1, C1, K2, K2], None, &self.params, &mut y2).unwrap();
                let mut g2 = vec![0.0; S2 * S2];
                g2[(S2 / 2) * S2 + S2 / 2] = 1.0;
                conv2d_backward_input(&g2, [1, 1, S2, S2], w2, [1, C1, K2, K2], &self.params, &mut g1, [1, C1, S1, S1])
                    .unwrap();
                // Through the ReLU: the gradient passes where z1 > 0.
                g1.iter_mut().zip(&z1).for_each(|(g, z)| *g *= (*z > 0.0) as u8 as f32);
                y2[(S2 / 2) * S2 + S2 / 2]
            }
        };
        let mut gx = vec![0.0; P * P];
        conv2d_backward_input(&g1, [1, C1, S1, S1], &self.w1, [C1, 1, K1, K1], &self.params, &mut gx, [1, 1, P, P])
            .unwrap();
        (value, gx)
    }
}

enum Unit {
    Layer1(usize),
    Layer2(Vec<f32>),
}

fn normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}

/// Projected gradient ascent on `‖x‖ = 1`: the patch that excites `unit` most.
/// A start where every ReLU the unit reads is off has no gradient (a "dead"
/// start); then we draw another.
fn ascend(net: &Net, unit: &Unit, steps: usize, rng: &mut Rng) -> (Vec<f32>, f32, f32) {
    let mut x = rng.uniform(P * P, 1.0);
    for _ in 0..100 {
        if net.unit_and_gradient(&x, unit).1.iter().any(|g| *g != 0.0) {
            break;
        }
        x = rng.uniform(P * P, 1.0);
    }
    normalise(&mut x);
    let start = net.unit_and_gradient(&x, unit).0;
    let mut value = start;
    for step in 0..steps {
        let (v, mut g) = net.unit_and_gradient(&x, unit);
        value = v;
        normalise(&mut g);
        let lr = 0.3 / (1.0 + step as f32 / 50.0);
        x.iter_mut().zip(&g).for_each(|(x, g)| *x += lr * g);
        normalise(&mut x);
    }
    (x, start, value)
}

fn main() {
    let args = common::args();
    let steps = if args.quick { 30 } else { 300 };
    let mut rng = Rng::new(7);
    let net = Net { w1: gabor_bank(), params: ConvParams::default() };
    let mut units: Vec<(String, Unit)> =
        vec![("LAYER 1: 0 DEG".to_string(), Unit::Layer1(0)), ("LAYER 1: 45 DEG".to_string(), Unit::Layer1(2))];
    units.extend(layer2_units(&mut rng, args.quick).into_iter().map(|(n, w)| (n, Unit::Layer2(w))));

    let (pad, label, scale) = (10, 16, 6);
    let cell = (P * scale).max(text_width("LAYER 1: 45 DEG", 1));
    let width = pad + units.len().max(C1) * (cell + pad);
    let height = pad + 2 * (label + P * scale + pad) + 2 * label;
    let mut canvas = Canvas::new(width, height, WHITE);
    canvas.text(pad, pad, "LAYER 1: EIGHT GABOR FILTERS 7x7 (RED +, BLUE -)", INK, 1);
    for o in 0..C1 {
        let k = &net.w1[o * K1 * K1..][..K1 * K1];
        canvas.plane(pad + o * (cell + pad), pad + label, k, K1, K1, scale * P / K1, Map::Signed);
    }
    let top = pad + label + P * scale + 2 * pad;
    canvas.text(
        pad,
        top,
        &format!("THE INPUT {P}x{P} EACH UNIT LIKES MOST ({steps} STEPS OF GRADIENT ASCENT)"),
        INK,
        1,
    );
    for (i, (name, unit)) in units.iter().enumerate() {
        let (patch, start, end) = ascend(&net, unit, steps, &mut rng);
        println!("{name:<16} unit value {start:>8.3} -> {end:>8.3}");
        let x = pad + i * (cell + pad);
        canvas.text(x, top + label, name, INK, 1);
        canvas.plane(x, top + 2 * label, &patch, P, P, scale, Map::Signed);
        canvas.text(x, top + 2 * label + P * scale + 4, &format!("{start:.2} TO {end:.2}"), INK, 1);
    }
    canvas.save(&args.out.join("what_a_filter_sees.png")).unwrap();
}
