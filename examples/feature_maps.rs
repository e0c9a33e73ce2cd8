//! What a convolutional layer computes, in pictures: a bank of classic
//! hand-made feature detectors run over an image as **one** `conv2d` call
//! (one input channel, one output channel per filter), then a max pool.
//! And the difference between cross-correlation (what deep learning calls
//! convolution) and true convolution, on an asymmetric kernel.
//!
//! ```text
//! cargo run --release --example feature_maps                 # built-in test image
//! cargo run --release --example feature_maps -- photo.png    # your PNG (any size, made gray)
//! cargo run --release --example feature_maps -- --quick --out DIR
//! ```
//!
//! Writes `feature_maps.png` (the input, each feature map, each pooled map;
//! red = positive response, blue = negative) and `correlation_vs_convolution.png`.

mod common;

use std::path::Path;

use common::{Canvas, INK, Map, WHITE, glyph, text_width};
use convgemm::{ConvParams, PoolParams, conv2d, conv2d_output_shape, max_pool2d, pool2d_output_shape};

/// The filters, each embedded at the centre of a 5×5 kernel so the whole
/// bank is one weight tensor `[7, 1, 5, 5]`.
fn bank() -> Vec<(&'static str, Vec<f32>)> {
    let k3 = |name, k: [f32; 9]| {
        let mut w = vec![0.0; 25];
        for (i, v) in k.iter().enumerate() {
            w[(i / 3 + 1) * 5 + i % 3 + 1] = *v;
        }
        (name, w)
    };
    let binomial = [1.0, 4.0, 6.0, 4.0, 1.0];
    let gauss = (0..25).map(|i| binomial[i / 5] * binomial[i % 5] / 256.0).collect();
    vec![
        k3("SOBEL X", [-1.0, 0.0, 1.0, -2.0, 0.0, 2.0, -1.0, 0.0, 1.0]),
        k3("SOBEL Y", [-1.0, -2.0, -1.0, 0.0, 0.0, 0.0, 1.0, 2.0, 1.0]),
        k3("LAPLACIAN", [0.0, 1.0, 0.0, 1.0, -4.0, 1.0, 0.0, 1.0, 0.0]),
        ("GAUSSIAN 5x5", gauss),
        k3("SHARPEN", [0.0, -1.0, 0.0, -1.0, 5.0, -1.0, 0.0, -1.0, 0.0]),
        k3("DIAGONAL \\", [2.0, 1.0, 0.0, 1.0, 0.0, -1.0, 0.0, -1.0, -2.0]),
        k3("DIAGONAL /", [0.0, 1.0, 2.0, -1.0, 0.0, 1.0, -2.0, -1.0, 0.0]),
    ]
}

/// A `size`×`size` test image: a disc, a square, diagonal stripes, a
/// gradient and the letters CNN — edges in every orientation.
fn test_image(size: usize) -> Vec<f32> {
    let s = size as f32;
    let mut img = vec![0.0f32; size * size];
    for y in 0..size {
        for x in 0..size {
            let (fx, fy) = (x as f32 / s, y as f32 / s);
            let mut v = 0.15 + 0.2 * fx;
            if (fx - 0.3).powi(2) + (fy - 0.3).powi(2) < 0.04 {
                v = 0.9;
            }
            if (0.55..0.85).contains(&fx) && (0.15..0.45).contains(&fy) {
                v = 0.6;
            }
            if fy > 0.55 && fx < 0.45 && ((x + y) / (size / 16).max(1)).is_multiple_of(2) {
                v = 0.8;
            }
            img[y * size + x] = v;
        }
    }
    // The letters, 5×7 glyphs scaled to fit the lower-right quarter.
    let scale = (size / 40).max(1);
    let (x0, y0) = (size / 2 + size / 16, size * 5 / 8);
    for (i, c) in "CNN".chars().enumerate() {
        for (gy, bits) in glyph(c).iter().enumerate() {
            for gx in 0..5 {
                if bits & (0x10 >> gx) != 0 {
                    for (dy, dx) in (0..scale * scale).map(|k| (k / scale, k % scale)) {
                        let (x, y) = (x0 + (i * 6 + gx) * scale + dx, y0 + gy * scale + dy);
                        if x < size && y < size {
                            img[y * size + x] = 1.0;
                        }
                    }
                }
            }
        }
    }
    img
}

fn main() {
    let args = common::args();
    let (image, w, h) = match args.positional.first() {
        Some(path) => common::load_gray(Path::new(path)).unwrap_or_else(|e| panic!("cannot read {path}: {e}")),
        None => {
            let size = if args.quick { 64 } else { 192 };
            (test_image(size), size, size)
        }
    };
    let bank = bank();
    let weight: Vec<f32> = bank.iter().flat_map(|(_, k)| k.iter().copied()).collect();
    let (k, input_shape, weight_shape) = (bank.len(), [1, 1, h, w], [bank.len(), 1, 5, 5]);
    let params = ConvParams { padding: [2; 4], ..ConvParams::default() }; // "same" size output
    let out_shape = conv2d_output_shape(input_shape, weight_shape, &params).unwrap();
    let mut maps = vec![0.0; out_shape.iter().product()];
    let t = std::time::Instant::now();
    conv2d(&image, input_shape, &weight, weight_shape, None, &params, &mut maps).unwrap();
    let conv_time = t.elapsed();
    let pool = PoolParams::new([2, 2]);
    let pooled_shape = pool2d_output_shape(out_shape, &pool).unwrap();
    let mut pooled = vec![0.0; pooled_shape.iter().product()];
    max_pool2d(&maps, out_shape, &pool, &mut pooled).unwrap();
    println!("input {w}x{h}; one conv2d call: {k} filters of 5x5 -> {out_shape:?} in {conv_time:?}");
    println!("max pool 2x2 -> {pooled_shape:?}");

    // The grid: the input on top, then one column per filter with its map
    // above its pooled map.
    let (pad, label) = (10, 16);
    let (ph, pw) = (pooled_shape[2], pooled_shape[3]);
    let cell_w = w.max(2 * pw).max(text_width("GAUSSIAN 5x5", 1));
    let width = pad + k * (cell_w + pad);
    let height = pad + (label + h + pad) * 2 + label + 2 * ph + pad;
    let mut canvas = Canvas::new(width, height, WHITE);
    canvas.text(pad, pad, &format!("INPUT {w}x{h}"), INK, 1);
    canvas.plane(pad, pad + label, &image, w, h, 1, Map::Gray);
    let top = pad + label + h + pad;
    for (i, (name, _)) in bank.iter().enumerate() {
        let x = pad + i * (cell_w + pad);
        canvas.text(x, top, name, INK, 1);
        canvas.plane(x, top + label, &maps[i * h * w..][..h * w], w, h, 1, Map::Signed);
        let y = top + label + h + pad;
        canvas.text(x, y, "MAX POOL 2x2", INK, 1);
        canvas.plane(x, y + label, &pooled[i * ph * pw..][..ph * pw], pw, ph, 2, Map::Signed);
    }
    canvas.save(&args.out.join("feature_maps.png")).unwrap();
    correlation_vs_convolution(&args.out.join("correlation_vs_convolution.png"), args.quick);
}

/// Three bright points and a kernel shaped like the letter F, run through
/// `conv2d` with `flip = false` (cross-correlation: each point stamps the
/// kernel rotated by 180°) and `flip = true` (convolution: each point stamps
/// the kernel as it is — the impulse response).
fn correlation_vs_convolution(path: &Path, quick: bool) {
    let size = if quick { 32 } else { 48 };
    let mut image = vec![0.0f32; size * size];
    for (y, x) in [(size / 4, size / 4), (size / 2, size * 3 / 4), (size * 3 / 4, size / 3)] {
        image[y * size + x] = 1.0;
    }
    let mut kernel = vec![0.0f32; 7 * 7];
    for (gy, bits) in glyph('F').iter().enumerate() {
        for gx in 0..5 {
            if bits & (0x10 >> gx) != 0 {
                kernel[gy * 7 + gx + 1] = 1.0;
            }
        }
    }
    let mut params = ConvParams { padding: [3; 4], ..ConvParams::default() };
    let (input_shape, weight_shape) = ([1, 1, size, size], [1, 1, 7, 7]);
    let mut results = Vec::new();
    for flip in [false, true] {
        params.flip = flip;
        let mut out = vec![0.0; size * size];
        conv2d(&image, input_shape, &kernel, weight_shape, None, &params, &mut out).unwrap();
        results.push(out);
    }
    let (pad, label, scale) = (10, 16, 4);
    let cell = (size * scale).max(text_width("CONVOLUTION (FLIP)", 1));
    let mut canvas = Canvas::new(pad + 4 * (cell + pad), pad + label + size * scale + pad + label, WHITE);
    let panels: [(&str, &[f32], usize); 4] = [
        ("INPUT: 3 POINTS", &image, size),
        ("KERNEL 7x7", &kernel, 7),
        ("CROSS-CORRELATION", &results[0], size),
        ("CONVOLUTION (FLIP)", &results[1], size),
    ];
    for (i, (name, data, side)) in panels.into_iter().enumerate() {
        let x = pad + i * (cell + pad);
        canvas.text(x, pad, name, INK, 1);
        canvas.plane(x, pad + label, data, side, side, scale * size / side, Map::Gray);
    }
    canvas.text(
        pad,
        pad + label + size * scale + pad,
        "CORRELATION STAMPS THE KERNEL ROTATED 180 DEGREES; CONVOLUTION STAMPS IT AS IT IS",
        INK,
        1,
    );
    canvas.save(path).unwrap();
}
