//! Pooling through C: max, average and global average pooling, forward and
//! backward, and the output-shape helper.

use convgemm::{
    MAX_POOL_NO_INDEX, PoolParams, avg_pool2d, avg_pool2d_backward, global_avg_pool2d_with_layout, max_pool2d,
    max_pool2d_backward, max_pool2d_with_indices, max_unpool2d_with_layout, pool2d_output_shape,
};

use crate::buffers::{Region, floats, floats_mut, in_out, out_ptr, read, shape, slice, slice_mut};
use crate::params::{LayoutArg, cg_pool2d_params};
use crate::status::{call, cg_status};
use crate::threads;

/// Writes the output shape [n, c, oh, ow] of pooling `input_shape` [n, c, h,
/// w] with `params` (PyTorch's rules, ceil_mode included).
///
/// # Safety
/// Each pointer is NULL or addresses its four size_t (`params`: one struct).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_pool2d_output_shape(
    input_shape: *const usize,
    params: *const cg_pool2d_params,
    output_shape: *mut usize,
) -> cg_status {
    call(|| {
        // SAFETY: the caller's promise for each pointer; both are copied out.
        let (x, p) = unsafe { (shape("input_shape", input_shape)?, read("params", params)?) };
        let out = out_ptr("output_shape", output_shape.cast::<[usize; 4]>())?;
        let shape = pool2d_output_shape(x, &p.get()?)?;
        // SAFETY: non-NULL and aligned (checked); the caller promises four writable size_t.
        unsafe { out.write(shape) };
        Ok(())
    })
}

type Forward = fn(&[f32], [usize; 4], &PoolParams, &mut [f32]) -> Result<(), convgemm::ConvError>;

/// The forward poolings share everything but the Rust function.
///
/// # Safety
/// As for `cg_max_pool2d`.
unsafe fn forward(
    pool: Forward,
    input: *const f32,
    input_len: usize,
    input_shape: *const usize,
    params: *const cg_pool2d_params,
    output: *mut f32,
    output_len: usize,
) -> cg_status {
    call(|| {
        // SAFETY: the caller's promise for each pointer and length.
        let io = unsafe {
            in_out(("input", input, input_len), ("input_shape", input_shape), ("output", output, output_len))?
        };
        // SAFETY: as above.
        let params = unsafe { read("params", params)? }.get()?;
        threads::run(|| pool(io.input, io.shape, &params, io.output))?;
        Ok(())
    })
}

/// Max pooling: each output is the largest input of its window (padding
/// never wins; NaN propagates). `output` has the shape
/// `cg_pool2d_output_shape` gives.
///
/// # Safety
/// Each pointer is NULL or addresses the number of floats its length says
/// (shapes: four size_t); `output` is writable and no other thread uses it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_max_pool2d(
    input: *const f32,
    input_len: usize,
    input_shape: *const usize,
    params: *const cg_pool2d_params,
    output: *mut f32,
    output_len: usize,
) -> cg_status {
    // SAFETY: passed on.
    unsafe { forward(max_pool2d, input, input_len, input_shape, params, output, output_len) }
}

/// Average pooling (PyTorch's AvgPool2d; `params->dilation` must be [1, 1]).
///
/// # Safety
/// As for `cg_max_pool2d`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_avg_pool2d(
    input: *const f32,
    input_len: usize,
    input_shape: *const usize,
    params: *const cg_pool2d_params,
    output: *mut f32,
    output_len: usize,
) -> cg_status {
    // SAFETY: passed on.
    unsafe { forward(avg_pool2d, input, input_len, input_shape, params, output, output_len) }
}

/// The gradient of max pooling: each window's `grad_output` goes to the
/// position of its maximum in `input` (the first one, in window order, on
/// ties). Overwrites `grad_input` (the shape of `input`).
///
/// # Safety
/// As for `cg_max_pool2d`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_max_pool2d_backward(
    input: *const f32,
    input_len: usize,
    input_shape: *const usize,
    grad_output: *const f32,
    grad_output_len: usize,
    params: *const cg_pool2d_params,
    grad_input: *mut f32,
    grad_input_len: usize,
) -> cg_status {
    call(|| {
        // SAFETY: the caller's promise for each pointer and length.
        let (x_shape, p, x, dy) = unsafe {
            (
                shape("input_shape", input_shape)?,
                read("params", params)?,
                floats("input", input, input_len)?,
                floats("grad_output", grad_output, grad_output_len)?,
            )
        };
        let inputs = [Region::of("input", x), Region::of("grad_output", dy)];
        // SAFETY: as above; disjoint from the inputs (checked).
        let dx = unsafe { floats_mut("grad_input", grad_input, grad_input_len, &inputs)? };
        let params = p.get()?;
        threads::run(|| max_pool2d_backward(x, x_shape, dy, &params, dx))?;
        Ok(())
    })
}

/// The gradient of average pooling: each window's `grad_output`, divided as
/// the forward divided, spread over its window. Overwrites `grad_input`
/// (shape `input_shape`).
///
/// # Safety
/// As for `cg_max_pool2d`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_avg_pool2d_backward(
    grad_output: *const f32,
    grad_output_len: usize,
    input_shape: *const usize,
    params: *const cg_pool2d_params,
    grad_input: *mut f32,
    grad_input_len: usize,
) -> cg_status {
    call(|| {
        // SAFETY: the caller's promise for each pointer and length.
        let io = unsafe {
            in_out(
                ("grad_output", grad_output, grad_output_len),
                ("input_shape", input_shape),
                ("grad_input", grad_input, grad_input_len),
            )?
        };
        // SAFETY: as above.
        let params = unsafe { read("params", params)? }.get()?;
        threads::run(|| avg_pool2d_backward(io.shape, io.input, &params, io.output))?;
        Ok(())
    })
}

/// Global average pooling: `output` [n, c] (n·c floats, the same order in
/// both layouts) holds the mean of each channel's h × w plane of `input`
/// [n, c, h, w] in `layout`.
///
/// # Safety
/// As for `cg_max_pool2d`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_global_avg_pool2d(
    input: *const f32,
    input_len: usize,
    input_shape: *const usize,
    layout: LayoutArg,
    output: *mut f32,
    output_len: usize,
) -> cg_status {
    call(|| {
        // SAFETY: the caller's promise for each pointer and length.
        let io = unsafe {
            in_out(("input", input, input_len), ("input_shape", input_shape), ("output", output, output_len))?
        };
        let layout = layout.get("layout")?;
        threads::run(|| global_avg_pool2d_with_layout(io.input, io.shape, layout, io.output))?;
        Ok(())
    })
}

/// The gradient of global average pooling: every element of channel c of
/// image b gets `grad_output[b·c_count + c] / (h·w)`. Overwrites `grad_input`
/// [n, c, h, w] (shape `input_shape`, in `layout`).
///
/// # Safety
/// As for `cg_max_pool2d`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_global_avg_pool2d_backward(
    grad_output: *const f32,
    grad_output_len: usize,
    input_shape: *const usize,
    layout: LayoutArg,
    grad_input: *mut f32,
    grad_input_len: usize,
) -> cg_status {
    call(|| {
        // SAFETY: the caller's promise for each pointer and length.
        let io = unsafe {
            in_out(
                ("grad_output", grad_output, grad_output_len),
                ("input_shape", input_shape),
                ("grad_input", grad_input, grad_input_len),
            )?
        };
        let layout = layout.get("layout")?;
        // The whole plane is one window of an average pooling: the same
        // division, the same checks.
        let [_, _, h, w] = io.shape;
        let params = PoolParams { layout, ..PoolParams::new([h.max(1), w.max(1)]) };
        threads::run(|| avg_pool2d_backward(io.shape, io.input, &params, io.output))?;
        Ok(())
    })
}

/// What `cg_max_pool2d_with_indices` writes for a window that holds no input
/// element (possible only with dilation); its output is then −∞.
pub const CG_MAX_POOL_NO_INDEX: usize = usize::MAX;
const _: () = assert!(CG_MAX_POOL_NO_INDEX == MAX_POOL_NO_INDEX);

/// Max pooling that also says where each maximum came from (PyTorch's
/// `return_indices=True`): `indices[i]` is the position y·w + x, within its
/// own (image, channel) plane of the input, of output i's maximum (the
/// element `cg_max_pool2d_backward` sends the gradient to).
/// `output` and `indices` have the shape `cg_pool2d_output_shape` gives, in
/// `params->layout`, and must not overlap each other or the input.
///
/// # Safety
/// As for `cg_max_pool2d`; `indices` addresses `indices_len` writable size_t.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn cg_max_pool2d_with_indices(
    input: *const f32,
    input_len: usize,
    input_shape: *const usize,
    params: *const cg_pool2d_params,
    output: *mut f32,
    output_len: usize,
    indices: *mut usize,
    indices_len: usize,
) -> cg_status {
    call(|| {
        // SAFETY: the caller's promise for each pointer and length.
        let (x_shape, p, x) = unsafe {
            (shape("input_shape", input_shape)?, read("params", params)?, floats("input", input, input_len)?)
        };
        // SAFETY: as above; each output disjoint from the input and from the other (checked).
        let (out, at) = unsafe {
            let out = floats_mut("output", output, output_len, &[Region::of("input", x)])?;
            let others = [Region::of("input", x), Region::of("output", out)];
            (out, slice_mut("indices", indices, indices_len, &others)?)
        };
        let params = p.get()?;
        threads::run(|| max_pool2d_with_indices(x, x_shape, &params, out, at))?;
        Ok(())
    })
}

/// The inverse of `cg_max_pool2d_with_indices` (PyTorch's `max_unpool2d`):
/// `output` (shape `output_shape`, zeros first) gets each `input` value at
/// the plane position `indices` gives it (an index of CG_MAX_POOL_NO_INDEX
/// puts nothing); `input`, `indices` and `output` in `layout`. Any other
/// index outside its plane is CG_ERROR_BAD_PARAMETER.
///
/// # Safety
/// As for `cg_max_pool2d`; `indices` addresses `indices_len` readable size_t.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn cg_max_unpool2d(
    input: *const f32,
    input_len: usize,
    input_shape: *const usize,
    indices: *const usize,
    indices_len: usize,
    layout: LayoutArg,
    output: *mut f32,
    output_len: usize,
    output_shape: *const usize,
) -> cg_status {
    call(|| {
        // SAFETY: the caller's promise for each pointer and length.
        let (x_shape, y_shape, x, at) = unsafe {
            (
                shape("input_shape", input_shape)?,
                shape("output_shape", output_shape)?,
                floats("input", input, input_len)?,
                slice("indices", indices, indices_len)?,
            )
        };
        let inputs = [Region::of("input", x), Region::of("indices", at)];
        // SAFETY: as above; disjoint from the inputs (checked).
        let out = unsafe { floats_mut("output", output, output_len, &inputs)? };
        let layout = layout.get("layout")?;
        threads::run(|| max_unpool2d_with_layout(x, x_shape, at, out, y_shape, layout))?;
        Ok(())
    })
}
