//! Explicit `im2col` and `col2im`: the public building blocks that turn a
//! convolution into a matrix product and back. They know the image layout
//! and nothing about the GEMM engine.

use crate::check::{check_len, product};
use crate::error::ConvError;
use crate::geometry::{ConvGeometry, ConvParams};

/// Validates the pair (image shape, kernel size) the way `conv2d` would for a
/// weight of `[groups, c_in / groups, kh, kw]`, so both functions reject what
/// `conv2d` rejects.
fn geometry(input_shape: [usize; 4], kernel: [usize; 2], params: &ConvParams) -> Result<ConvGeometry, ConvError> {
    let groups = params.groups.max(1);
    ConvGeometry::new(input_shape, [groups, input_shape[1] / groups, kernel[0], kernel[1]], params)
}

/// Number of elements of the column matrix `im2col` writes:
/// `n · (c_in·kh·kw) · (h_out·w_out)`.
pub fn im2col_len(input_shape: [usize; 4], kernel: [usize; 2], params: &ConvParams) -> Result<usize, ConvError> {
    let geo = geometry(input_shape, kernel, params)?;
    product(&[geo.batch, geo.c_in, geo.kh, geo.kw, geo.out_pixels()], "im2col element count")
}

/// Unfolds every receptive field of an NCHW image into a column.
///
/// `cols` has shape `[n, c_in·kh·kw, h_out·w_out]`, row-major: row
/// `(c·kh + u)·kw + v` of image `n` holds, for every output pixel
/// `(oy, ox)` in row-major order, the input value that kernel tap `(u, v)`
/// of channel `c` sees: `X[n, c, oy·sh + u·dh − pad_top, ox·sw + v·dw − pad_left]`,
/// or 0 in the padding. Stride, padding and dilation come from `params`;
/// `groups` and `flip` do not change the columns (group `g` owns rows
/// `g·(c_in/groups)·kh·kw ..`; flipping is a property of the weights).
/// Then the cross-correlation of group `g` is `W_g[c_out/groups × K] · cols_g[K × h_out·w_out]`.
///
/// ```
/// use convgemm::{im2col, ConvParams};
/// // 1 channel, 3x3 image, 2x2 kernel: 4 windows, each a column of 4 values.
/// let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
/// let mut cols = vec![0.0; 16];
/// im2col(&x, [1, 1, 3, 3], [2, 2], &ConvParams::default(), &mut cols).unwrap();
/// assert_eq!(&cols[..4], &[1.0, 2.0, 4.0, 5.0]); // tap (0, 0) of each window
/// ```
pub fn im2col(
    input: &[f32],
    input_shape: [usize; 4],
    kernel: [usize; 2],
    params: &ConvParams,
    cols: &mut [f32],
) -> Result<(), ConvError> {
    let geo = geometry(input_shape, kernel, params)?;
    check_len("input", input.len(), geo.input_len())?;
    check_len("cols", cols.len(), im2col_len(input_shape, kernel, params)?)?;
    let image_len = geo.c_in * geo.h_in * geo.w_in;
    let col_len = geo.c_in * geo.kh * geo.kw * geo.out_pixels();
    if image_len == 0 || col_len == 0 {
        cols.fill(0.0);
        return Ok(());
    }
    for (image, col) in input.chunks_exact(image_len).zip(cols.chunks_exact_mut(col_len)) {
        im2col_image(&geo, image, 0..geo.c_in, col);
    }
    Ok(())
}

/// Start and end (exclusive) of the output columns `o` whose input position
/// `o·stride + offset − pad` lies inside `0..size`.
pub(crate) fn valid_range(out: usize, size: usize, stride: usize, offset: usize, pad: usize) -> (usize, usize) {
    // o·stride + offset >= pad  <=>  o >= ceil((pad − offset) / stride)
    let lo = if offset >= pad { 0 } else { (pad - offset).div_ceil(stride) };
    // o·stride + offset − pad < size  <=>  o·stride < size + pad − offset
    let hi = if size + pad <= offset { 0 } else { (size + pad - offset).div_ceil(stride) };
    (lo.min(out), hi.min(out).max(lo.min(out)))
}

/// im2col of the channels `channels` of one image (`image` from its first
/// channel, `[c, h, w]` in the geometry's layout, read through its strides)
/// into `col` (`[channels.len()·kh·kw, h_out·w_out]`).
pub(crate) fn im2col_image(geo: &ConvGeometry, image: &[f32], channels: std::ops::Range<usize>, col: &mut [f32]) {
    let (h, w, ow) = (geo.h_in, geo.w_in, geo.w_out);
    let at = geo.input_strides();
    let npix = geo.out_pixels();
    let mut rows = col.chunks_exact_mut(npix);
    for c in channels {
        for u in 0..geo.kh {
            let (oy0, oy1) = valid_range(geo.h_out, h, geo.stride_h, u * geo.dilation_h, geo.pad_top);
            for v in 0..geo.kw {
                let row = rows.next().expect("col has one row per (channel, u, v)");
                let (ox0, ox1) = valid_range(ow, w, geo.stride_w, v * geo.dilation_w, geo.pad_left);
                row.fill(0.0);
                for oy in oy0..oy1 {
                    let iy = oy * geo.stride_h + u * geo.dilation_h - geo.pad_top;
                    let dst = &mut row[oy * ow..(oy + 1) * ow];
                    for ox in ox0..ox1 {
                        dst[ox] = image[at.at(c, iy, ox * geo.stride_w + v * geo.dilation_w - geo.pad_left)];
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: scatters each column back onto the image it came
/// from and sums where windows overlap. `cols` is `[n, c_in·kh·kw, h_out·w_out]`
/// (as `im2col` writes it), `output` is the NCHW image of `input_shape`, and is
/// overwritten. Padding positions are dropped. So `col2im(im2col(x))` is `x`
/// times the number of windows that cover each pixel.
///
/// Each pixel's sum is taken in a fixed order (rows `(c, u, v)` increasing,
/// then output pixels increasing), independent of threads.
///
/// ```
/// use convgemm::{col2im, im2col, ConvParams};
/// let x = vec![1.0f32; 9];
/// let mut cols = vec![0.0; 16];
/// let p = ConvParams::default();
/// im2col(&x, [1, 1, 3, 3], [2, 2], &p, &mut cols).unwrap();
/// let mut back = vec![0.0; 9];
/// col2im(&cols, [1, 1, 3, 3], [2, 2], &p, &mut back).unwrap();
/// assert_eq!(back, [1.0, 2.0, 1.0, 2.0, 4.0, 2.0, 1.0, 2.0, 1.0]); // window counts
/// ```
pub fn col2im(
    cols: &[f32],
    input_shape: [usize; 4],
    kernel: [usize; 2],
    params: &ConvParams,
    output: &mut [f32],
) -> Result<(), ConvError> {
    let geo = geometry(input_shape, kernel, params)?;
    check_len("cols", cols.len(), im2col_len(input_shape, kernel, params)?)?;
    check_len("output", output.len(), geo.input_len())?;
    output.fill(0.0);
    let image_len = geo.c_in * geo.h_in * geo.w_in;
    let col_len = geo.c_in * geo.kh * geo.kw * geo.out_pixels();
    if image_len == 0 || col_len == 0 {
        return Ok(());
    }
    for (col, image) in cols.chunks_exact(col_len).zip(output.chunks_exact_mut(image_len)) {
        col2im_image(&geo, col, 0..geo.c_in, image);
    }
    Ok(())
}

/// Adds the columns of `col` (`[channels.len()·kh·kw, h_out·w_out]`) into
/// `image` (as [`im2col_image`] reads it), the adjoint of [`im2col_image`].
pub(crate) fn col2im_image(geo: &ConvGeometry, col: &[f32], channels: std::ops::Range<usize>, image: &mut [f32]) {
    let (h, w, ow) = (geo.h_in, geo.w_in, geo.w_out);
    let at = geo.input_strides();
    let npix = geo.out_pixels();
    let mut rows = col.chunks_exact(npix);
    for c in channels {
        for u in 0..geo.kh {
            let (oy0, oy1) = valid_range(geo.h_out, h, geo.stride_h, u * geo.dilation_h, geo.pad_top);
            for v in 0..geo.kw {
                let row = rows.next().expect("col has one row per (channel, u, v)");
                let (ox0, ox1) = valid_range(ow, w, geo.stride_w, v * geo.dilation_w, geo.pad_left);
                for oy in oy0..oy1 {
                    let iy = oy * geo.stride_h + u * geo.dilation_h - geo.pad_top;
                    let src = &row[oy * ow..(oy + 1) * ow];
                    for ox in ox0..ox1 {
                        image[at.at(c, iy, ox * geo.stride_w + v * geo.dilation_w - geo.pad_left)] += src[ox];
                    }
                }
            }
        }
    }
}
