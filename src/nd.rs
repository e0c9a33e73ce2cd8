//! convgemm for [ndarray](https://docs.rs/ndarray) views of any strides
//! (cargo feature `ndarray`). Array axes are the logical `[n, c, h, w]` of
//! the input and output and `[c_out, c_in/groups, kh, kw]` of the weights.
//!
//! ```
//! use convgemm::nd::{conv2d, ndarray::{Array4, Axis, s}};
//! use convgemm::ConvParams;
//! // An NHWC array viewed as NCHW: strided, read through one copy.
//! let nhwc = Array4::<f32>::ones((1, 8, 8, 3));
//! let x = nhwc.view().permuted_axes([0, 3, 1, 2]);
//! let w = Array4::<f32>::from_elem((4, 3, 3, 3), 0.5);
//! let y = conv2d(x, w.view(), None, &ConvParams::default()).unwrap();
//! assert_eq!(y.shape(), [1, 4, 6, 6]);
//! assert_eq!(y[[0, 0, 0, 0]], 13.5);
//! ```
//!
//! A view in standard (row-major, contiguous) layout is read in place; any
//! other is copied once. [`conv2d_into`] writes a standard-layout output in
//! place and any other view (a slice, a transposed view) element by element
//! from one temporary.

pub use ndarray;
use ndarray::{Array4, ArrayView1, ArrayView4, ArrayViewMut4, CowArray, Ix1, Ix4};

use crate::check::{adapter_layout, zeroed};
use crate::{ConvError, ConvParams, conv2d_output_shape};

/// The elements of `a` in standard order: borrowed when its layout already
/// is standard, else copied once.
fn standard<D: ndarray::Dimension>(a: ndarray::ArrayView<'_, f32, D>) -> CowArray<'_, f32, D> {
    if a.is_standard_layout() { CowArray::from(a) } else { CowArray::from(a.as_standard_layout().into_owned()) }
}

fn shape4(a: &ArrayView4<f32>) -> [usize; 4] {
    let d = a.shape();
    [d[0], d[1], d[2], d[3]]
}

/// The convolution of `x` with `w` and an optional bias `b`, into a new
/// array (see [`crate::conv2d`] for the definition and every parameter).
///
/// # Errors
/// Those of [`crate::conv2d`]: shapes that do not agree, bad parameters;
/// and `params.layout` other than NCHW (a view is `[n, c, h, w]` with its
/// own strides, which already say where each element lies: permute an NHWC
/// array's axes to `[n, c, h, w]` instead).
pub fn conv2d(
    x: ArrayView4<f32>,
    w: ArrayView4<f32>,
    b: Option<ArrayView1<f32>>,
    params: &ConvParams,
) -> Result<Array4<f32>, ConvError> {
    adapter_layout(params.layout)?;
    let y_shape = conv2d_output_shape(shape4(&x), shape4(&w), params)?;
    let y = zeroed(y_shape.iter().product(), "output size in bytes")?;
    let mut y = Array4::from_shape_vec(y_shape, y).expect("the length is the shape's product");
    conv2d_into(x, w, b, params, y.view_mut())?;
    Ok(y)
}

/// The convolution of `x` with `w` and an optional bias `b`, written into
/// `out`, a view of any strides whose shape is the output's.
///
/// # Errors
/// An `out` whose shape is not [`conv2d_output_shape`]'s, and those of
/// [`crate::conv2d`]. `out` is then untouched.
pub fn conv2d_into(
    x: ArrayView4<f32>,
    w: ArrayView4<f32>,
    b: Option<ArrayView1<f32>>,
    params: &ConvParams,
    mut out: ArrayViewMut4<f32>,
) -> Result<(), ConvError> {
    adapter_layout(params.layout)?;
    let (x_shape, w_shape) = (shape4(&x), shape4(&w));
    let y_shape = conv2d_output_shape(x_shape, w_shape, params)?;
    for (axis, (&want, &got)) in y_shape.iter().zip(out.shape()).enumerate() {
        if want != got {
            let what = [
                "out.shape()[0] (batch)",
                "out.shape()[1] (c_out)",
                "out.shape()[2] (h_out)",
                "out.shape()[3] (w_out)",
            ];
            return Err(ConvError::ShapeMismatch { what: what[axis], expected: want, found: got });
        }
    }
    let (x, w) = (standard::<Ix4>(x), standard::<Ix4>(w));
    let b = b.map(standard::<Ix1>);
    let (xs, ws) = (x.as_slice().expect("standard layout"), w.as_slice().expect("standard layout"));
    let bs = b.as_ref().map(|b| b.as_slice().expect("standard layout"));
    match out.as_slice_mut() {
        Some(y) => crate::conv2d(xs, x_shape, ws, w_shape, bs, params, y),
        None => {
            // `out` exists at this size, so the temporary fits too.
            let mut y = Array4::zeros(y_shape);
            let ys = y.as_slice_mut().expect("a new array is standard");
            crate::conv2d(xs, x_shape, ws, w_shape, bs, params, ys)?;
            out.assign(&y);
            Ok(())
        }
    }
}
