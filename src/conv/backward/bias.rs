//! The gradient of `conv2d` with respect to its bias: per output channel a
//! sum over the batch and the output pixels, in the GEMM's chunked order.

use crate::check::{check_len, product};
use crate::error::ConvError;
use crate::gemm::KC;

/// The gradient of `conv2d` with respect to its bias: `grad_bias[o]` is the
/// sum of `grad_output[n, o, oy, ox]` over the batch and the output pixels.
///
/// `grad_output` is `[n, c_out, h_out, w_out]` in NCHW (this function
/// takes no layout: a channels-last gradient is not read here yet),
/// `grad_bias` holds `c_out`
/// floats and is overwritten. Each sum runs over (image, pixel) in order
/// (images in order, pixels row-major), in the crate's chunked order: chunks
/// of 256 terms each summed from `+0.0`, then added in order. Plain f32
/// additions, the same on every path and thread count.
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
    let [batch, c_out, h_out, w_out] = grad_output_shape;
    let len = product(&grad_output_shape, "grad_output element count")?;
    check_len("grad_output", grad_output.len(), len)?;
    check_len("grad_bias", grad_bias.len(), c_out)?;
    if len == 0 {
        grad_bias.fill(0.0);
        return Ok(());
    }
    let pixels = h_out * w_out; // a factor of `len`, which fits
    for (o, out) in grad_bias.iter_mut().enumerate() {
        // The first chunk's sum is stored as is, later ones added (as the GEMM stores).
        let mut total: Option<f32> = None;
        let mut acc = 0.0f32;
        let mut in_chunk = 0;
        for image in 0..batch {
            for &term in &grad_output[(image * c_out + o) * pixels..][..pixels] {
                acc += term;
                in_chunk += 1;
                if in_chunk == KC {
                    total = Some(total.map_or(acc, |t| t + acc));
                    (acc, in_chunk) = (0.0, 0);
                }
            }
        }
        if in_chunk > 0 || total.is_none() {
            total = Some(total.map_or(acc, |t| t + acc));
        }
        *out = total.unwrap_or(0.0);
    }
    Ok(())
}
