//! The pictures of `train_digits`: what the network learned (filters,
//! feature maps, a confusion matrix) and what its units see — Zeiler and
//! Fergus's deconvnet projection and Grad-CAM.

use std::error::Error;
use std::path::Path;

use convgemm::{ConvParams, conv2d_backward_input, max_unpool2d};

use crate::common::{Canvas, INK, Map, WHITE, text_width};
use crate::data::Split;
use crate::net::{self, C1_SHAPE, C1_W, C3_SHAPE, C3_W, CLASSES, Params, SIDE};
use crate::predictions;

const PAD: usize = 10;
/// A row of labels: the 5×7 font and some air.
const LABEL: usize = 16;

/// Image `i` of `split`, `[1, 1, 16, 16]`.
fn image(split: &Split, i: usize) -> &[f32] {
    &split.images[i * SIDE * SIDE..][..SIDE * SIDE]
}

/// First-layer filters at initialisation and after training, then the
/// feature maps of one test digit through C1, S2 and C3.
pub fn filters_and_maps(init: &Params, p: &Params, test: &Split, path: &Path) -> Result<(), Box<dyn Error>> {
    let (cell, gap) = (64, 8);
    let width = 2 * PAD + 8 * (cell + gap) - gap;
    let height = PAD + 2 * (LABEL + 40 + gap) + 3 * (LABEL + cell + gap) + cell + gap + PAD - gap;
    let mut c = Canvas::new(width, height, WHITE);
    let mut y = PAD;
    for (name, params) in
        [("C1 FILTERS 5x5 AT INITIALISATION (EACH SCALED TO ITS LARGEST)", init), ("C1 FILTERS AFTER TRAINING", p)]
    {
        c.text(PAD, y, name, INK, 1);
        y += LABEL;
        for (k, w) in params.0[C1_W].chunks_exact(25).enumerate() {
            c.plane(PAD + k * (40 + gap), y, w, 5, 5, 8, Map::Signed);
        }
        y += 40 + gap;
    }
    let f = net::forward(p, image(test, 0));
    let guess = predictions(&f.z)[0];
    let title = format!("TEST DIGIT ({}, READ AS {guess}), THEN C1 MAPS AFTER RELU", test.labels[0]);
    c.text(PAD, y, &title, INK, 1);
    y += LABEL;
    c.plane(PAD, y, image(test, 0), SIDE, SIDE, 4, Map::Gray);
    for (k, m) in f.a1.chunks_exact(SIDE * SIDE).enumerate() {
        c.plane(PAD + (k + 1) * (cell + gap), y, m, SIDE, SIDE, 4, Map::Gray);
    }
    y += cell + gap;
    c.text(PAD, y, "S2: 2x2 MAX POOL", INK, 1);
    y += LABEL;
    for (k, m) in f.p1.chunks_exact(64).enumerate() {
        c.plane(PAD + (k + 1) * (cell + gap), y, m, 8, 8, 8, Map::Gray);
    }
    y += cell + gap;
    c.text(PAD, y, "C3 MAPS AFTER RELU", INK, 1);
    y += LABEL;
    for (k, m) in f.a3.chunks_exact(64).enumerate() {
        c.plane(PAD + (k % 8) * (cell + gap), y + (k / 8) * (cell + gap), m, 8, 8, 8, Map::Gray);
    }
    c.save(path)
}

/// Rows: the true digit; columns: the prediction; each cell the count,
/// shaded by its share of the row (green on the diagonal, red off it).
pub fn confusion(p: &Params, test: &Split, path: &Path) -> Result<(), Box<dyn Error>> {
    let f = net::forward(p, &test.images);
    let guess = predictions(&f.z);
    let mut counts = [[0usize; CLASSES]; CLASSES];
    for (&t, &g) in test.labels.iter().zip(&guess) {
        counts[t as usize][g as usize] += 1;
    }
    let right: usize = (0..CLASSES).map(|d| counts[d][d]).sum();
    let cell = 30;
    let (left, top) = (PAD + 40, PAD + 3 * LABEL);
    let title = format!("TEST SPLIT: {right} OF {} RIGHT", test.len());
    let width = (left + CLASSES * cell + PAD).max(2 * PAD + text_width(&title, 1));
    let mut c = Canvas::new(width, top + CLASSES * cell + PAD, WHITE);
    c.text(PAD, PAD, &title, INK, 1);
    c.text(left, PAD + LABEL, "PREDICTED", INK, 1);
    c.text(PAD, top + CLASSES * cell / 2 - 4, "TRUE", INK, 1);
    for (t, row) in counts.iter().enumerate() {
        let total = row.iter().sum::<usize>().max(1) as f32;
        c.text(left - 10, top + t * cell + cell / 2 - 3, &t.to_string(), INK, 1);
        for (g, &n) in row.iter().enumerate() {
            let share = n as f32 / total;
            let fade = (255.0 * (1.0 - share.sqrt())).round() as u8;
            let color = if t == g { [fade, 255 - (255 - fade) / 3, fade] } else { [255, fade, fade] };
            let (x, y) = (left + g * cell, top + t * cell);
            c.fill_rect(x, y, cell - 1, cell - 1, if n == 0 { [245, 245, 245] } else { color });
            if n > 0 {
                let s = n.to_string();
                let ink = if share > 0.5 { WHITE } else { INK };
                c.text(x + (cell - text_width(&s, 1)) / 2, y + cell / 2 - 3, &s, ink, 1);
            }
        }
    }
    for g in 0..CLASSES {
        c.text(left + g * cell + cell / 2 - 2, top - 12, &g.to_string(), INK, 1);
    }
    c.save(path)
}

/// Zeiler & Fergus (2014): keep one C3 unit's strongest activation on an
/// image, zero every other, and run the network backwards to the pixels —
/// C3's filters transposed (`conv2d_backward_input`), S2 undone with the
/// forward pass's switches (`max_unpool2d`), a ReLU, C1's filters
/// transposed. For every C3 unit, the three test images that excite it most,
/// each beside its projection (red: pixels that raise the activation).
pub fn deconvnet(p: &Params, test: &Split, path: &Path) -> Result<(), Box<dyn Error>> {
    let f = net::forward(p, &test.images);
    let plane = 64;
    let (units, top_k, scale) = (C3_SHAPE[0], 3, 3);
    let px = SIDE * scale;
    let block = top_k * (2 * px + 4) + (top_k - 1) * 12;
    let width = 2 * PAD + 2 * block + 20;
    let height = 2 * PAD + LABEL + units / 2 * (LABEL + px + 10) - 10;
    let mut c = Canvas::new(width, height, WHITE);
    c.text(PAD, PAD, "EACH C3 UNIT: ITS 3 STRONGEST TEST DIGITS, EACH WITH ITS DECONVNET PROJECTION", INK, 1);
    let params = net::conv_params();
    for unit in 0..units {
        // The strongest activation of `unit` in each image, then the top images.
        let mut best: Vec<(f32, usize, usize)> = (0..test.len())
            .map(|i| {
                let m = &f.a3[(i * units + unit) * plane..][..plane];
                let (at, &v) = m.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap();
                (v, i, at)
            })
            .collect();
        best.sort_by(|a, b| b.0.total_cmp(&a.0));
        let (x0, y0) = (PAD + (unit % 2) * (block + 20), PAD + LABEL + (unit / 2) * (LABEL + px + 10));
        c.text(x0, y0, &format!("UNIT {unit}"), INK, 1);
        for (j, &(v, i, at)) in best.iter().take(top_k).enumerate() {
            let projection = project(p, &f, i, unit, at, v, &params)?;
            let x = x0 + j * (2 * px + 16);
            c.plane(x, y0 + LABEL, image(test, i), SIDE, SIDE, scale, Map::Gray);
            c.plane(x + px + 4, y0 + LABEL, &projection, SIDE, SIDE, scale, Map::Signed);
        }
    }
    c.save(path)
}

/// The deconvnet projection of activation `value` of C3 unit `unit` at
/// position `at` of image `i` (its only non-zero) down to the 16×16 pixels.
fn project(
    p: &Params,
    f: &net::Forward,
    i: usize,
    unit: usize,
    at: usize,
    value: f32,
    params: &ConvParams,
) -> Result<Vec<f32>, Box<dyn Error>> {
    let half = SIDE / 2;
    let mut r3 = vec![0.0; C3_SHAPE[0] * half * half];
    r3[unit * half * half + at] = value;
    let mut r_p1 = vec![0.0; C3_SHAPE[1] * half * half];
    conv2d_backward_input(&r3, net::a3_shape(1), &p.0[C3_W], C3_SHAPE, params, &mut r_p1, net::p1_shape(1))?;
    let switches = &f.s1[i * r_p1.len()..][..r_p1.len()];
    let mut r_a1 = vec![0.0; C1_SHAPE[0] * SIDE * SIDE];
    max_unpool2d(&r_p1, net::p1_shape(1), switches, &mut r_a1, net::a1_shape(1))?;
    r_a1.iter_mut().for_each(|v| *v = v.max(0.0));
    let mut r_x = vec![0.0; SIDE * SIDE];
    conv2d_backward_input(&r_a1, net::a1_shape(1), &p.0[C1_W], C1_SHAPE, params, &mut r_x, [1, 1, SIDE, SIDE])?;
    Ok(r_x)
}

/// Grad-CAM (Selvaraju et al. 2017) over C3: each map weighted by the mean
/// gradient of the class score over it, summed, rectified; 8×8.
fn grad_cam(p: &Params, x: &[f32], class: usize) -> Vec<f32> {
    let f = net::forward(p, x);
    let mut d_z = vec![0.0; CLASSES];
    d_z[class] = 1.0;
    let g = net::backward(p, &f, &d_z);
    let mut cam = vec![0.0f32; 64];
    for (a, d) in f.a3.chunks_exact(64).zip(g.d_a3.chunks_exact(64)) {
        let alpha = d.iter().sum::<f32>() / 64.0;
        cam.iter_mut().zip(a).for_each(|(c, &a)| *c += alpha * a);
    }
    cam.iter_mut().for_each(|c| *c = c.max(0.0));
    cam
}

/// A heat colour for `t` in [0, 1]: blue, cyan, yellow, red.
fn heat(t: f32) -> [f32; 3] {
    let t = t.clamp(0.0, 1.0) * 3.0;
    match t {
        t if t < 1.0 => [0.0, t, 1.0],
        t if t < 2.0 => [t - 1.0, 1.0, 2.0 - t],
        t => [1.0, 3.0 - t, 0.0],
    }
}

/// Draws `cam` (8×8, bilinearly stretched) over the gray digit `x` (16×16),
/// `4·16` pixels square, half and half.
fn overlay(c: &mut Canvas, x0: usize, y0: usize, x: &[f32], cam: &[f32]) {
    let (lo, hi) = x.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
    let peak = cam.iter().copied().fold(1e-12, f32::max);
    let side = 4 * SIDE;
    for py in 0..side {
        for px in 0..side {
            let gray = (x[(py / 4) * SIDE + px / 4] - lo) / (hi - lo).max(1e-12);
            // Cell centres of the 8×8 map sit at 8k + 3.5 pixels.
            let (fy, fx) = (((py as f32 - 3.5) / 8.0).clamp(0.0, 7.0), ((px as f32 - 3.5) / 8.0).clamp(0.0, 7.0));
            let (y0c, x0c) = (fy.floor() as usize, fx.floor() as usize);
            let (y1c, x1c) = ((y0c + 1).min(7), (x0c + 1).min(7));
            let (ty, tx) = (fy - y0c as f32, fx - x0c as f32);
            let at = |y: usize, x: usize| cam[y * 8 + x];
            let v = (1.0 - ty) * ((1.0 - tx) * at(y0c, x0c) + tx * at(y0c, x1c))
                + ty * ((1.0 - tx) * at(y1c, x0c) + tx * at(y1c, x1c));
            let h = heat(v / peak);
            let rgb = h.map(|h| ((0.45 * gray + 0.55 * h) * 255.0).round() as u8);
            c.put(x0 + px, y0 + py, rgb);
        }
    }
}

/// Grad-CAM for the first test image of each digit and for every test image
/// the network gets wrong: the digit, the map for the class it chose, and
/// the map for its runner-up.
pub fn gradcam(p: &Params, test: &Split, path: &Path) -> Result<(), Box<dyn Error>> {
    let f = net::forward(p, &test.images);
    let guess = predictions(&f.z);
    let mut shown: Vec<usize> = (0..CLASSES as u8).filter_map(|d| test.labels.iter().position(|&l| l == d)).collect();
    shown.extend((0..test.len()).filter(|&i| guess[i] != test.labels[i]).take(6));
    let (cell, gap) = (4 * SIDE, 10);
    let width = 2 * PAD + shown.len() * (cell + gap) - gap;
    let height = PAD + LABEL + 3 * (LABEL + cell + gap) + PAD - gap;
    let mut c = Canvas::new(
        width.max(2 * PAD + text_width("GRAD-CAM OVER C3: THE CHOSEN CLASS, THEN THE RUNNER-UP", 1)),
        height,
        WHITE,
    );
    c.text(PAD, PAD, "GRAD-CAM OVER C3: THE CHOSEN CLASS, THEN THE RUNNER-UP", INK, 1);
    for (col, &i) in shown.iter().enumerate() {
        let x = PAD + col * (cell + gap);
        let z = &f.z[i * CLASSES..][..CLASSES];
        let mut ranked: Vec<usize> = (0..CLASSES).collect();
        ranked.sort_by(|&a, &b| z[b].total_cmp(&z[a]));
        let mut y = PAD + LABEL;
        let wrong = if guess[i] != test.labels[i] { " X" } else { "" };
        c.text(x, y, &format!("{}{wrong}", test.labels[i]), INK, 1);
        c.plane(x, y + LABEL, image(test, i), SIDE, SIDE, 4, Map::Gray);
        for class in &ranked[..2] {
            y += LABEL + cell + gap;
            c.text(x, y, &format!("AS {class}"), INK, 1);
            overlay(&mut c, x, y + LABEL, image(test, i), &grad_cam(p, image(test, i), *class));
        }
    }
    c.save(path)
}
