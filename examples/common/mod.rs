//! Shared by the picture-making examples: command-line flags, a
//! deterministic random generator, a 5×7 bitmap font, a canvas to lay out
//! labelled panels, and PNG input/output (the `png` crate).
#![allow(dead_code)]

use std::error::Error;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

/// `--quick` (small sizes, few repetitions: what CI runs), `--out DIR`
/// (where PNGs go; default the current directory), and positional arguments.
pub struct Args {
    pub quick: bool,
    pub out: PathBuf,
    pub positional: Vec<String>,
}

pub fn args() -> Args {
    let mut a = Args { quick: false, out: PathBuf::from("."), positional: Vec::new() };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => a.quick = true,
            "--out" => a.out = PathBuf::from(it.next().expect("--out needs a directory")),
            _ => a.positional.push(arg),
        }
    }
    std::fs::create_dir_all(&a.out).expect("cannot create the output directory");
    a
}

/// xorshift64*: the same numbers on every machine, for weights and noise.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    /// Uniform in [-1, 1).
    pub fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let r = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (r >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    /// `len` values uniform in [-scale, scale).
    pub fn uniform(&mut self, len: usize, scale: f32) -> Vec<f32> {
        (0..len).map(|_| scale * self.next_f32()).collect()
    }
    /// Shuffles `v` in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (((self.next_f32() + 1.0) / 2.0 * (i + 1) as f32) as usize).min(i);
            v.swap(i, j);
        }
    }
}

/// The 5×7 glyph of `c` (uppercase letters, digits, a few signs; lowercase
/// letters draw as uppercase, `x` as a multiplication sign), one byte per
/// row, bit 4 the leftmost pixel. Unknown characters draw as blanks.
pub fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1E],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' if c == 'x' => [0x00, 0x00, 0x11, 0x0A, 0x04, 0x0A, 0x11],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x0A, 0x04, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        '+' => [0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00],
        '=' => [0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00],
        '/' => [0x01, 0x01, 0x02, 0x04, 0x08, 0x10, 0x10],
        '\\' => [0x10, 0x10, 0x08, 0x04, 0x02, 0x01, 0x01],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        ':' => [0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
        ',' => [0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08],
        _ => [0; 7],
    }
}

/// The width in pixels of `s` drawn at `scale` (6 columns per character).
pub fn text_width(s: &str, scale: usize) -> usize {
    (s.chars().count() * 6).saturating_sub(1) * scale
}

/// How [`Canvas::plane`] maps values to colours.
#[derive(Clone, Copy)]
pub enum Map {
    /// Black at the plane's minimum, white at its maximum.
    Gray,
    /// Blue for negative, white for 0, red for positive, scaled by the
    /// largest magnitude (so the sign of a response shows).
    Signed,
}

/// An RGB image to draw panels and labels on.
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pixels: Vec<[u8; 3]>,
}

pub const WHITE: [u8; 3] = [255, 255, 255];
pub const BLACK: [u8; 3] = [0, 0, 0];
pub const INK: [u8; 3] = [30, 30, 40];

impl Canvas {
    pub fn new(width: usize, height: usize, background: [u8; 3]) -> Self {
        Canvas { width, height, pixels: vec![background; width * height] }
    }

    pub fn put(&mut self, x: usize, y: usize, color: [u8; 3]) {
        if x < self.width && y < self.height {
            self.pixels[y * self.width + x] = color;
        }
    }

    pub fn fill_rect(&mut self, x0: usize, y0: usize, w: usize, h: usize, color: [u8; 3]) {
        for y in y0..y0 + h {
            for x in x0..x0 + w {
                self.put(x, y, color);
            }
        }
    }

    /// Draws the `w`×`h` plane `data` with its top-left corner at `(x0, y0)`,
    /// each value a `scale`×`scale` block, coloured by `map`.
    #[allow(clippy::too_many_arguments)]
    pub fn plane(&mut self, x0: usize, y0: usize, data: &[f32], w: usize, h: usize, scale: usize, map: Map) {
        let finite = data.iter().copied().filter(|v| v.is_finite());
        let (lo, hi) = finite.fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), v| (l.min(v), h.max(v)));
        let mag = lo.abs().max(hi.abs()).max(1e-12);
        for y in 0..h {
            for x in 0..w {
                let v = data[y * w + x];
                let color = match map {
                    Map::Gray => {
                        let t = if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };
                        let g = (t.clamp(0.0, 1.0) * 255.0).round() as u8;
                        [g, g, g]
                    }
                    Map::Signed => {
                        let t = (v / mag).clamp(-1.0, 1.0);
                        let fade = (255.0 * (1.0 - t.abs())).round() as u8;
                        if t >= 0.0 { [255, fade, fade] } else { [fade, fade, 255] }
                    }
                };
                self.fill_rect(x0 + x * scale, y0 + y * scale, scale, scale, color);
            }
        }
    }

    /// Writes `s` with its top-left corner at `(x0, y0)`, each font pixel a
    /// `scale`×`scale` block.
    pub fn text(&mut self, x0: usize, y0: usize, s: &str, color: [u8; 3], scale: usize) {
        for (i, c) in s.chars().enumerate() {
            for (row, bits) in glyph(c).iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) != 0 {
                        self.fill_rect(x0 + (i * 6 + col) * scale, y0 + row * scale, scale, scale, color);
                    }
                }
            }
        }
    }

    /// Writes the canvas as an 8-bit RGB PNG.
    pub fn save(&self, path: &Path) -> Result<(), Box<dyn Error>> {
        let file = BufWriter::new(File::create(path)?);
        let mut encoder = png::Encoder::new(file, self.width as u32, self.height as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(self.pixels.as_flattened())?;
        println!("wrote {} ({}x{})", path.display(), self.width, self.height);
        Ok(())
    }
}

/// Reads a PNG as one gray plane in [0, 1]: `(pixels, width, height)`.
/// Colour images are averaged over their channels; alpha is ignored.
pub fn load_gray(path: &Path) -> Result<(Vec<f32>, usize, usize), Box<dyn Error>> {
    let mut decoder = png::Decoder::new(std::io::BufReader::new(File::open(path)?));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info()?;
    let mut buf = vec![0; reader.output_buffer_size().ok_or("image too large")?];
    let info = reader.next_frame(&mut buf)?;
    let (w, h) = (info.width as usize, info.height as usize);
    let channels = info.color_type.samples();
    let color = match info.color_type {
        png::ColorType::GrayscaleAlpha => 1,
        png::ColorType::Rgba => 3,
        _ => channels,
    };
    let gray = buf[..info.buffer_size()]
        .chunks_exact(channels)
        .map(|px| px[..color].iter().map(|&v| v as f32).sum::<f32>() / (255.0 * color as f32))
        .collect();
    Ok((gray, w, h))
}
