//! Max pooling that remembers where each maximum came from (the "switches"
//! of Zeiler and Fergus's deconvnet), and the unpooling that puts values back
//! there: PyTorch's `max_pool2d(..., return_indices=True)` and `max_unpool2d`.

use rayon::prelude::*;

use super::PARALLEL_MIN_ELEMENTS;
use super::channels_last;
use super::params::{PoolGeometry, PoolParams};
use crate::check::{check_len, product};
use crate::error::ConvError;
use crate::layout::Layout;

/// The index [`max_pool2d_with_indices`] records for a window that covers no
/// input element (possible only with dilation); [`max_unpool2d`] skips it.
pub const MAX_POOL_NO_INDEX: usize = usize::MAX;

/// [`max_pool2d`](crate::max_pool2d), also writing where each maximum is:
/// `indices[k]` is the position `iy * w + ix` of output `k`'s maximum inside
/// its own `(image, channel)` input plane, as PyTorch's `return_indices=True`
/// gives (in either layout: `output` and `indices` are in `params.layout`,
/// the positions are plane positions). The maximum is the window's first in row-major window order (a NaN
/// wins: then the last NaN), the element [`max_pool2d_backward`] sends the
/// gradient to. A window with no input element (only with dilation) gives
/// −∞ and [`MAX_POOL_NO_INDEX`]. `output` holds the same bits `max_pool2d` writes.
///
/// [`max_pool2d_backward`]: crate::max_pool2d_backward
///
/// ```
/// use convgemm::{max_pool2d_with_indices, PoolParams};
/// let x = [1.0, 5.0, 2.0, 0.0,
///          3.0, 4.0, 8.0, 1.0];
/// let (mut y, mut at) = ([0.0; 2], [0; 2]);
/// max_pool2d_with_indices(&x, [1, 1, 2, 4], &PoolParams::new([2, 2]), &mut y, &mut at).unwrap();
/// assert_eq!((y, at), ([5.0, 8.0], [1, 6]));
/// ```
///
/// # Errors
/// Those of [`max_pool2d`](crate::max_pool2d), with `indices` checked like
/// `output`. Both are then untouched.
pub fn max_pool2d_with_indices(
    input: &[f32],
    input_shape: [usize; 4],
    params: &PoolParams,
    output: &mut [f32],
    indices: &mut [usize],
) -> Result<(), ConvError> {
    let g = PoolGeometry::new(input_shape, params)?;
    let (plane_in, plane_out) = (g.plane_in(), g.plane_out());
    check_len("input", input.len(), g.planes * plane_in)?;
    check_len("output", output.len(), g.planes * plane_out)?;
    check_len("indices", indices.len(), g.planes * plane_out)?;
    if g.planes == 0 || plane_out == 0 {
        return Ok(());
    }
    if params.layout == Layout::Nhwc {
        channels_last::max_with_indices(&g, input_shape[1], MAX_POOL_NO_INDEX, input, output, indices);
        return Ok(());
    }
    let scan = g.argmax_scan();
    let plane = |((y, at), x): ((&mut [f32], &mut [usize]), &[f32])| {
        scan.plane(x, |k, i| {
            (at[k], y[k]) = match i {
                Some(i) => (i, x[i]),
                None => (MAX_POOL_NO_INDEX, f32::NEG_INFINITY),
            };
        });
    };
    let per_task = PARALLEL_MIN_ELEMENTS.div_ceil(plane_in + 2 * plane_out).clamp(1, g.planes);
    output
        .par_chunks_mut(plane_out)
        .zip(indices.par_chunks_mut(plane_out))
        .zip(input.par_chunks(plane_in.max(1)))
        .with_min_len(per_task)
        .for_each(plane);
    Ok(())
}

/// The partial inverse of [`max_pool2d_with_indices`] (PyTorch's
/// `max_unpool2d`): a zero `output` of `output_shape` (the pooling's input
/// shape) with each `input` value written at its plane's position
/// `indices[k]`. Where several values name one position (overlapping
/// windows), the last in row-major order stays, as in PyTorch; the gradient
/// of an overlapping max pool, which sums them, is
/// [`max_pool2d_backward`](crate::max_pool2d_backward). [`MAX_POOL_NO_INDEX`] entries
/// are skipped.
///
/// ```
/// use convgemm::max_unpool2d;
/// let (pooled, at) = ([5.0, 8.0], [1, 6]);
/// let mut x = [9.0; 8];
/// max_unpool2d(&pooled, [1, 1, 1, 2], &at, &mut x, [1, 1, 2, 4]).unwrap();
/// assert_eq!(x, [0.0, 5.0, 0.0, 0.0,
///                0.0, 0.0, 8.0, 0.0]);
/// ```
///
/// # Errors
/// A buffer whose length is not its shape's product, an `output_shape`
/// with another batch or channel count than `input_shape`, an element count
/// that overflows, or an index outside its plane (other than [`MAX_POOL_NO_INDEX`]).
/// `output` is then untouched.
pub fn max_unpool2d(
    input: &[f32],
    input_shape: [usize; 4],
    indices: &[usize],
    output: &mut [f32],
    output_shape: [usize; 4],
) -> Result<(), ConvError> {
    max_unpool2d_with_layout(input, input_shape, indices, output, output_shape, Layout::Nchw)
}

/// [`max_unpool2d`] with `input`, `indices` and `output` in `layout` (the
/// indices are plane positions `iy * w + ix` in both, as
/// [`max_pool2d_with_indices`] writes them).
///
/// ```
/// use convgemm::{max_pool2d_with_indices, max_unpool2d_with_layout, Layout, PoolParams};
/// // Two channels of a 1×2 image, channels-last: pixel 0 is (1, 7), pixel 1 is (4, 2).
/// let p = PoolParams { layout: Layout::Nhwc, ..PoolParams::new([1, 2]) };
/// let (mut y, mut at) = ([0.0; 2], [0; 2]);
/// max_pool2d_with_indices(&[1.0, 7.0, 4.0, 2.0], [1, 2, 1, 2], &p, &mut y, &mut at)?;
/// assert_eq!((y, at), ([4.0, 7.0], [1, 0]));
/// let mut x = [9.0; 4];
/// max_unpool2d_with_layout(&y, [1, 2, 1, 1], &at, &mut x, [1, 2, 1, 2], Layout::Nhwc)?;
/// assert_eq!(x, [0.0, 7.0, 4.0, 0.0]);
/// # Ok::<(), convgemm::ConvError>(())
/// ```
///
/// # Errors
/// As [`max_unpool2d`].
pub fn max_unpool2d_with_layout(
    input: &[f32],
    input_shape: [usize; 4],
    indices: &[usize],
    output: &mut [f32],
    output_shape: [usize; 4],
    layout: Layout,
) -> Result<(), ConvError> {
    let in_len = product(&input_shape, "input element count")?;
    let plane_out = product(&output_shape[2..], "output plane size")?;
    product(&output_shape, "output element count")?;
    for (what, axis) in [("output_shape[0] (batch)", 0), ("output_shape[1] (channels)", 1)] {
        if output_shape[axis] != input_shape[axis] {
            return Err(ConvError::ShapeMismatch { what, expected: input_shape[axis], found: output_shape[axis] });
        }
    }
    check_len("input", input.len(), in_len)?;
    check_len("indices", indices.len(), in_len)?;
    check_len("output", output.len(), output_shape.iter().product())?;
    if let Some(&bad) = indices.iter().find(|&&i| i >= plane_out && i != MAX_POOL_NO_INDEX) {
        return Err(ConvError::BadParameter {
            name: "indices",
            value: bad,
            requirement: "a position inside its output plane (below h * w), or MAX_POOL_NO_INDEX",
        });
    }
    let planes = input_shape[0] * input_shape[1];
    if planes == 0 || plane_out == 0 {
        return Ok(());
    }
    let plane_in = in_len / planes;
    if plane_in == 0 {
        output.fill(0.0);
        return Ok(());
    }
    if layout == Layout::Nhwc {
        channels_last::unpool(input_shape[1], (plane_in, plane_out), MAX_POOL_NO_INDEX, input, indices, output);
        return Ok(());
    }
    let plane = |((y, x), at): ((&mut [f32], &[f32]), &[usize])| {
        y.fill(0.0);
        for (&v, &i) in x.iter().zip(at) {
            if i != MAX_POOL_NO_INDEX {
                y[i] = v;
            }
        }
    };
    let per_task = PARALLEL_MIN_ELEMENTS.div_ceil(2 * plane_in + plane_out).clamp(1, planes);
    output
        .par_chunks_mut(plane_out)
        .zip(input.par_chunks(plane_in))
        .zip(indices.par_chunks(plane_in))
        .with_min_len(per_task)
        .for_each(plane);
    Ok(())
}
