//! The UCI handwritten digits (`examples/data/digits.csv.gz`, see the README
//! beside it): 1,797 8×8 images of 0..16, split once into a fixed training
//! and test set, and upsampled to 16×16 by a transposed convolution with the
//! bilinear kernel.

use std::error::Error;
use std::io::Read;
use std::path::Path;

use convgemm::{ConvTransposeParams, conv_transpose2d};

use crate::common::Rng;

/// One split: `images` is `[n, 1, 16, 16]`, normalised; `labels` the digits.
pub struct Split {
    pub images: Vec<f32>,
    pub labels: Vec<u8>,
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
}

/// How many images the test split holds (a fifth of the set).
pub const TEST: usize = 360;

/// Reads the CSV (64 pixel columns, then the label), shuffles with a fixed
/// permutation, and returns `(train, test)`.
pub fn load(path: &Path) -> Result<(Split, Split), Box<dyn Error>> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path)?).read_to_string(&mut text)?;
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let v: Vec<u8> = line.split(',').map(str::parse).collect::<Result<_, _>>()?;
        if v.len() != 65 || v[64] > 9 || v[..64].iter().any(|&p| p > 16) {
            return Err(format!("{}: line {} is not 64 pixels in 0..=16 and a digit", path.display(), n + 1).into());
        }
        rows.push(v);
    }
    // A fixed shuffle (Fisher–Yates from a seeded generator), so that both
    // splits hold every writer and every digit.
    let mut order: Vec<usize> = (0..rows.len()).collect();
    Rng::new(1797).shuffle(&mut order);
    let split = |ids: &[usize]| -> Result<Split, Box<dyn Error>> {
        let raw: Vec<f32> = ids.iter().flat_map(|&i| rows[i][..64].iter().map(|&p| p as f32 / 16.0)).collect();
        let labels = ids.iter().map(|&i| rows[i][64]).collect();
        Ok(Split { images: upsample(&raw, ids.len())?, labels })
    };
    let test = split(&order[..TEST])?;
    let train = split(&order[TEST..])?;
    Ok((train, test))
}

/// 8×8 → 16×16 by bilinear interpolation, as a stride-2 transposed
/// convolution with the 4×4 kernel `k ⊗ k`, `k = [¼, ¾, ¾, ¼]` (padding 1
/// crops the full 18×18 output to 16×16), then centred and scaled: the
/// images' mean 0.3 and spread 0.4 become about 0 and 1.
fn upsample(raw: &[f32], n: usize) -> Result<Vec<f32>, Box<dyn Error>> {
    let k = [0.25f32, 0.75, 0.75, 0.25];
    let w: Vec<f32> = (0..16).map(|i| k[i / 4] * k[i % 4]).collect();
    let params = ConvTransposeParams { stride: [2, 2], padding: [1; 4], ..ConvTransposeParams::default() };
    let mut y = vec![0.0; n * 16 * 16];
    conv_transpose2d(raw, [n, 1, 8, 8], &w, [1, 1, 4, 4], None, &params, &mut y)?;
    y.iter_mut().for_each(|v| *v = (*v - 0.3) / 0.4);
    Ok(y)
}
