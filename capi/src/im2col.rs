//! im2col and col2im through C: the building blocks the convolution is
//! made of, with the same parameters (`activation` and `precision` unused).

use convgemm::{col2im, im2col, im2col_len};

use crate::buffers::{dims, in_out, out_ptr, read, shape};
use crate::params::cg_conv2d_params;
use crate::status::{call, cg_status};
use crate::threads;

/// Writes to `*len` the number of floats `cg_im2col` fills for `input_shape`
/// [n, c, h, w] and a kernel_h × kernel_w window (`kernel`, two size_t):
/// n · c·kh·kw · oh·ow.
///
/// # Safety
/// Each pointer is NULL or addresses what it names (`input_shape`: four
/// size_t, `kernel`: two, `params`: one struct, `len`: one writable size_t).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_im2col_len(
    input_shape: *const usize,
    kernel: *const usize,
    params: *const cg_conv2d_params,
    len: *mut usize,
) -> cg_status {
    call(|| {
        // SAFETY: the caller's promise for each pointer; all are copied out.
        let (x, k, p) =
            unsafe { (shape("input_shape", input_shape)?, dims::<2>("kernel", kernel)?, read("params", params)?) };
        let out = out_ptr("len", len)?;
        let n = im2col_len(x, k, &p.get()?.0)?;
        // SAFETY: non-NULL and aligned (checked); the caller promises a writable size_t.
        unsafe { out.write(n) };
        Ok(())
    })
}

/// Unfolds every receptive field of `input` (in `params->layout`) into a
/// column: `cols` is [n, c·kh·kw, oh·ow], row (c·kh + u)·kw + v of image b
/// holding what kernel tap (u, v) of channel c sees at each output pixel
/// (zeros in the padding).
///
/// # Safety
/// As for `cg_conv2d`; `kernel` addresses two size_t.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_im2col(
    input: *const f32,
    input_len: usize,
    input_shape: *const usize,
    kernel: *const usize,
    params: *const cg_conv2d_params,
    cols: *mut f32,
    cols_len: usize,
) -> cg_status {
    call(|| {
        // SAFETY: the caller's promise for each pointer and length.
        let (io, k, p) = unsafe {
            (
                in_out(("input", input, input_len), ("input_shape", input_shape), ("cols", cols, cols_len))?,
                dims::<2>("kernel", kernel)?,
                read("params", params)?,
            )
        };
        let params = p.get()?.0;
        threads::run(|| im2col(io.input, io.shape, k, &params, io.output))?;
        Ok(())
    })
}

/// The adjoint of `cg_im2col`: `output` (shape `input_shape`, in
/// `params->layout`) is zeroed, then every column entry is added back to the
/// input position it was read from.
///
/// # Safety
/// As for `cg_conv2d`; `kernel` addresses two size_t.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_col2im(
    cols: *const f32,
    cols_len: usize,
    input_shape: *const usize,
    kernel: *const usize,
    params: *const cg_conv2d_params,
    output: *mut f32,
    output_len: usize,
) -> cg_status {
    call(|| {
        // SAFETY: the caller's promise for each pointer and length.
        let (io, k, p) = unsafe {
            (
                in_out(("cols", cols, cols_len), ("input_shape", input_shape), ("output", output, output_len))?,
                dims::<2>("kernel", kernel)?,
                read("params", params)?,
            )
        };
        let params = p.get()?.0;
        threads::run(|| col2im(io.input, io.shape, k, &params, io.output))?;
        Ok(())
    })
}
