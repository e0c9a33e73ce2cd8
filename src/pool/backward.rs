//! The gradients of the max and average pools: each output gradient sent
//! back to its window's arg-max, or spread over its window.

use super::params::{PoolGeometry, PoolParams, check_avg};
use super::{channels_last, for_each_plane};
use crate::check::check_len;
use crate::error::ConvError;
use crate::layout::Layout;

/// The gradient of [`max_pool2d`](crate::max_pool2d): each output gradient goes to its window's
/// arg-max (the first maximum in row-major window order; where the window
/// holds NaNs, the last NaN, as PyTorch's `v > max || isnan(v)` scan picks),
/// summed where windows overlap. The arg-max is recomputed from `input`, so
/// pass the forward's input. A window with no input element (possible only
/// with dilation) passes nothing back. `grad_input` is overwritten.
///
/// ```
/// use convgemm::{max_pool2d_backward, PoolParams};
/// let x = [1.0, 5.0,
///          5.0, 2.0];
/// let mut gx = [0.0; 4];
/// max_pool2d_backward(&x, [1, 1, 2, 2], &[1.5], &PoolParams::new([2, 2]), &mut gx).unwrap();
/// assert_eq!(gx, [0.0, 1.5, 0.0, 0.0]); // the tie goes to the first 5.0
/// ```
///
/// # Errors
/// Those of [`max_pool2d`](crate::max_pool2d), with `grad_output` checked against the output
/// shape and `grad_input` against `input_shape`. `grad_input` is then untouched.
pub fn max_pool2d_backward(
    input: &[f32],
    input_shape: [usize; 4],
    grad_output: &[f32],
    params: &PoolParams,
    grad_input: &mut [f32],
) -> Result<(), ConvError> {
    let g = PoolGeometry::new(input_shape, params)?;
    check_len("input", input.len(), g.planes * g.plane_in())?;
    check_len("grad_output", grad_output.len(), g.planes * g.plane_out())?;
    check_len("grad_input", grad_input.len(), g.planes * g.plane_in())?;
    if g.planes == 0 || g.plane_out() == 0 {
        // No window: a zero gradient. (The scan's column table has one
        // entry per output column, and an empty output may have 2^60 of them.)
        grad_input.fill(0.0);
        return Ok(());
    }
    if params.layout == Layout::Nhwc {
        channels_last::max_backward(&g, input_shape[1], input, grad_output, grad_input);
        return Ok(());
    }
    let scan = g.argmax_scan();
    let plane = |gi: &mut [f32], x: &[f32], go: &[f32]| {
        gi.fill(0.0);
        scan.plane(x, |k, at| {
            if let Some(i) = at {
                gi[i] += go[k];
            }
        });
    };
    for_each_plane(&g, grad_input, input, grad_output, plane);
    Ok(())
}

/// The gradient of [`avg_pool2d`](crate::avg_pool2d): each output gradient, divided by its
/// window's divisor, is added to every input element of the window, in
/// row-major output order. `grad_input` is overwritten.
///
/// ```
/// use convgemm::{avg_pool2d_backward, PoolParams};
/// let mut gx = [0.0; 4];
/// avg_pool2d_backward([1, 1, 2, 2], &[2.0], &PoolParams::new([2, 2]), &mut gx).unwrap();
/// assert_eq!(gx, [0.5; 4]);
/// ```
///
/// # Errors
/// Those of [`avg_pool2d`](crate::avg_pool2d), with `grad_output` checked against the output
/// shape and `grad_input` against `input_shape`. `grad_input` is then untouched.
pub fn avg_pool2d_backward(
    input_shape: [usize; 4],
    grad_output: &[f32],
    params: &PoolParams,
    grad_input: &mut [f32],
) -> Result<(), ConvError> {
    check_avg(params)?;
    let g = PoolGeometry::new(input_shape, params)?;
    check_len("grad_output", grad_output.len(), g.planes * g.plane_out())?;
    check_len("grad_input", grad_input.len(), g.planes * g.plane_in())?;
    if params.layout == Layout::Nhwc {
        channels_last::avg_backward(&g, input_shape[1], grad_output, grad_input);
        return Ok(());
    }
    let plane = |gi: &mut [f32], go: &[f32], _: &[f32]| {
        gi.fill(0.0);
        for oy in 0..g.h.out {
            for ox in 0..g.w.out {
                let count = g.taps(oy, ox).count();
                let val = go[oy * g.w.out + ox] / g.divisor(oy, ox, count);
                for i in g.taps(oy, ox) {
                    gi[i] += val;
                }
            }
        }
    };
    for_each_plane(&g, grad_input, grad_output, &[], plane);
    Ok(())
}
