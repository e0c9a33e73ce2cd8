//! The gradient of `conv2d` with respect to its bias: per output channel a
//! sum over the batch and the output pixels, in the GEMM's chunked order.

use crate::check::{check_len, product};
use crate::error::ConvError;
use crate::gemm::KC;
use crate::layout::Layout;

/// The gradient of `conv2d` with respect to its bias: `grad_bias[o]` is the
/// sum of `grad_output[n, o, oy, ox]` over the batch and the output pixels.
///
/// `grad_output` is `[n, c_out, h_out, w_out]` in NCHW (for a channels-last
/// gradient, [`conv2d_backward_bias_with_layout`]), `grad_bias` holds
/// `c_out` floats and is overwritten. Each sum runs over (image, pixel) in
/// order (images in order, pixels row-major), in the crate's chunked order:
/// chunks of 256 terms each summed from `+0.0`, then added in order. Plain
/// f32 additions, the same on every path, thread count and layout.
///
/// ```
/// use convgemm::conv2d_backward_bias;
/// let grad_output = [1.0f32, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0, 40.0]; // [2, 2, 1, 2]
/// let mut grad_bias = [0.0f32; 2];
/// conv2d_backward_bias(&grad_output, [2, 2, 1, 2], &mut grad_bias)?;
/// assert_eq!(grad_bias, [1.0 + 2.0 + 10.0 + 20.0, 3.0 + 4.0 + 30.0 + 40.0]);
/// # Ok::<(), convgemm::ConvError>(())
/// ```
pub fn conv2d_backward_bias(
    grad_output: &[f32],
    grad_output_shape: [usize; 4],
    grad_bias: &mut [f32],
) -> Result<(), ConvError> {
    conv2d_backward_bias_with_layout(grad_output, grad_output_shape, Layout::Nchw, grad_bias)
}

/// [`conv2d_backward_bias`] of a `grad_output` in `layout` (logical shape
/// `[n, c_out, h_out, w_out]` either way). Same sums in the same order, so
/// the same bits in both layouts.
///
/// ```
/// use convgemm::{conv2d_backward_bias_with_layout, Layout};
/// // [1, 2, 1, 2] channels-last: pixel 0 holds (1, 3), pixel 1 holds (2, 4).
/// let mut grad_bias = [0.0f32; 2];
/// conv2d_backward_bias_with_layout(&[1.0, 3.0, 2.0, 4.0], [1, 2, 1, 2], Layout::Nhwc, &mut grad_bias)?;
/// assert_eq!(grad_bias, [3.0, 7.0]);
/// # Ok::<(), convgemm::ConvError>(())
/// ```
pub fn conv2d_backward_bias_with_layout(
    grad_output: &[f32],
    grad_output_shape: [usize; 4],
    layout: Layout,
    grad_bias: &mut [f32],
) -> Result<(), ConvError> {
    let [_, c_out, h_out, w_out] = grad_output_shape;
    let len = product(&grad_output_shape, "grad_output element count")?;
    check_len("grad_output", grad_output.len(), len)?;
    check_len("grad_bias", grad_bias.len(), c_out)?;
    if len == 0 {
        grad_bias.fill(0.0);
        return Ok(());
    }
    let pixels = h_out * w_out; // a factor of `len`, which fits
    // Every channel at once, row by row: row `image·pixels + pixel` holds
    // that pixel's c_out terms (contiguous in channels-last, gathered from
    // the planes in NCHW).
    let mut sum = ChunkedSum::new(c_out);
    match layout {
        Layout::Nchw => {
            let mut row = vec![0.0f32; c_out];
            for image in grad_output.chunks_exact(c_out * pixels) {
                for p in 0..pixels {
                    row.iter_mut().zip(image[p..].iter().step_by(pixels)).for_each(|(r, &t)| *r = t);
                    sum.add_row(&row);
                }
            }
        }
        _ => grad_output.chunks_exact(c_out).for_each(|row| sum.add_row(row)),
    }
    grad_bias.copy_from_slice(&sum.finish());
    Ok(())
}

/// Column sums of rows of `width` floats in the crate's chunked order: per
/// column, chunks of `KC` consecutive rows each summed from `+0.0`, the
/// first chunk's sum kept as is and later ones added in order (as the GEMM
/// stores them).
struct ChunkedSum {
    total: Option<Vec<f32>>,
    acc: Vec<f32>,
    in_chunk: usize,
}

impl ChunkedSum {
    fn new(width: usize) -> Self {
        ChunkedSum { total: None, acc: vec![0.0; width], in_chunk: 0 }
    }

    fn add_row(&mut self, row: &[f32]) {
        self.acc.iter_mut().zip(row).for_each(|(a, &t)| *a += t);
        self.in_chunk += 1;
        if self.in_chunk == KC {
            self.fold();
        }
    }

    /// Adds the chunk into the total (or makes it the total) and clears it.
    fn fold(&mut self) {
        match &mut self.total {
            Some(t) => t.iter_mut().zip(&self.acc).for_each(|(t, &a)| *t += a),
            None => self.total = Some(self.acc.clone()),
        }
        self.acc.fill(0.0);
        self.in_chunk = 0;
    }

    fn finish(mut self) -> Vec<f32> {
        if self.in_chunk > 0 || self.total.is_none() {
            self.fold();
        }
        self.total.unwrap_or_default()
    }
}
