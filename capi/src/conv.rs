//! Convolution through C: output shapes, `cg_conv2d`, plans, the three
//! gradients and the transposed convolution. Each entry point reads and
//! checks every argument, then runs the Rust function on the chosen pool;
//! convgemm validates shapes and lengths before it writes.

use convgemm::{
    Conv2dPlan, conv_transpose2d, conv_transpose2d_output_shape, conv2d_backward_bias_with_layout,
    conv2d_backward_input_with, conv2d_backward_weight_with, conv2d_output_shape, conv2d_with,
};

use crate::buffers::{Region, floats, floats_mut, in_out, optional_floats, out_ptr, read, shape};
use crate::params::{LayoutArg, cg_conv_transpose2d_params, cg_conv2d_params};
use crate::status::{Failure, call, cg_status};
use crate::threads;

/// Writes the output shape [n, c_out, oh, ow] of a convolution of an input
/// [n, c_in, h, w] with a weight [c_out, c_in / groups, kh, kw]; per axis
/// oh = (h + pad_top + pad_bottom − dh·(kh − 1) − 1) / sh + 1. An axis with no
/// output is CG_ERROR_NO_OUTPUT. `output_shape` may be one of the inputs.
///
/// # Safety
/// Each pointer is NULL or addresses its four size_t (`params`: one struct).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_conv2d_output_shape(
    input_shape: *const usize,
    weight_shape: *const usize,
    params: *const cg_conv2d_params,
    output_shape: *mut usize,
) -> cg_status {
    call(|| {
        // SAFETY: the caller's promise for each pointer; all are copied out.
        let (x, w, p) = unsafe {
            (shape("input_shape", input_shape)?, shape("weight_shape", weight_shape)?, read("params", params)?)
        };
        let out = out_ptr("output_shape", output_shape.cast::<[usize; 4]>())?;
        let shape = conv2d_output_shape(x, w, &p.get()?.0)?;
        // SAFETY: non-NULL and aligned (checked); the caller promises four writable size_t.
        unsafe { out.write(shape) };
        Ok(())
    })
}

/// Convolution (cross-correlation unless `params->flip`) with bias and
/// activation fused: `output` [n, c_out, oh, ow] from `input` [n, c_in, h,
/// w] and `weight` [c_out, c_in / groups, kh, kw] (OIHW). `bias` (c_out
/// floats) may be NULL. Runs the fastest exact algorithm for the shape
/// (Winograd too if `params->precision` is CG_PRECISION_RELAXED). For many
/// calls with the same weights, a plan saves repacking them.
///
/// # Safety
/// Each pointer is NULL or addresses the number of floats its length says
/// (shapes: four size_t); `output` is writable and no other thread uses it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_conv2d(
    input: *const f32,
    input_len: usize,
    input_shape: *const usize,
    weight: *const f32,
    weight_len: usize,
    weight_shape: *const usize,
    bias: *const f32,
    bias_len: usize,
    params: *const cg_conv2d_params,
    output: *mut f32,
    output_len: usize,
) -> cg_status {
    call(|| {
        // SAFETY: the caller's promise for each pointer and length.
        let (x_shape, w_shape, p, x, w, b) = unsafe {
            (
                shape("input_shape", input_shape)?,
                shape("weight_shape", weight_shape)?,
                read("params", params)?,
                floats("input", input, input_len)?,
                floats("weight", weight, weight_len)?,
                optional_floats("bias", bias, bias_len)?,
            )
        };
        let inputs = [Region::of("input", x), Region::of("weight", w), Region::of("bias", b.unwrap_or(&[]))];
        // SAFETY: as above; disjoint from the inputs (checked).
        let out = unsafe { floats_mut("output", output, output_len, &inputs)? };
        let (params, options) = p.get()?;
        threads::run(|| conv2d_with(&options, x, x_shape, w, w_shape, b, &params, out))?;
        Ok(())
    })
}

/// Checked by `cg_conv2d_plan_run`: a plan pointer that does not hold this
/// is not a live plan.
const PLAN_MAGIC: u64 = 0x636f_6e76_706c_616e;

/// A convolution with its weights packed once, for many inputs (any batch
/// and size). Opaque; made by `cg_conv2d_plan_create`, freed by
/// `cg_conv2d_plan_destroy`. One plan may run on many threads at once.
pub struct cg_conv2d_plan {
    // What a handle points to is a `Plan`; this type only names it for C.
    _opaque: [u8; 0],
}

/// What a `cg_conv2d_plan *` points to.
#[repr(C)]
struct Plan {
    /// First, so a pointer to anything of 8 bytes can be checked for it.
    magic: u64,
    plan: Conv2dPlan,
}

/// Plans are shared by C threads: `Conv2dPlan` must stay `Sync`.
const _: fn() = || {
    fn sync<T: Sync + Send>() {}
    sync::<Plan>();
};

/// Checks `weight` [c_out, c_in / groups, kh, kw], `bias` (c_out floats or
/// NULL) and `params`, packs the weights, and stores a new plan in `*plan`.
/// On failure `*plan` is untouched. The weights are copied: the caller may
/// free them afterwards.
///
/// # Safety
/// As for `cg_conv2d`; `plan` addresses a writable `cg_conv2d_plan *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_conv2d_plan_create(
    weight: *const f32,
    weight_len: usize,
    weight_shape: *const usize,
    bias: *const f32,
    bias_len: usize,
    params: *const cg_conv2d_params,
    plan: *mut *mut cg_conv2d_plan,
) -> cg_status {
    call(|| {
        // SAFETY: the caller's promise for each pointer and length.
        let (w_shape, p, w, b) = unsafe {
            (
                shape("weight_shape", weight_shape)?,
                read("params", params)?,
                floats("weight", weight, weight_len)?,
                optional_floats("bias", bias, bias_len)?,
            )
        };
        let slot = out_ptr("plan", plan)?;
        let (params, options) = p.get()?;
        let built = threads::run(|| Conv2dPlan::new(w, w_shape, b, &params, &options))?;
        let handle = Box::into_raw(Box::new(Plan { magic: PLAN_MAGIC, plan: built })).cast::<cg_conv2d_plan>();
        // SAFETY: non-NULL and aligned (checked); the caller promises it is writable.
        unsafe { slot.write(handle) };
        Ok(())
    })
}

/// The plan behind a C handle, if it looks like a live one: a best-effort
/// check of its first 8 bytes (NULL, misaligned and some stray pointers are
/// caught; a destroyed plan is freed memory, as in any C library).
///
/// # Safety
/// A non-NULL `plan` must come from `cg_conv2d_plan_create` and not be
/// destroyed (or at least address 8 readable bytes).
unsafe fn plan_ref<'a>(plan: *const cg_conv2d_plan) -> Result<&'a Conv2dPlan, Failure> {
    let plan = out_ptr("plan", plan.cast::<Plan>().cast_mut())?;
    // SAFETY: non-NULL and aligned (checked); the caller promises at least
    // the 8 bytes of `magic` (the struct's first field) are readable. No
    // reference is made before the magic matches.
    if unsafe { std::ptr::addr_of!((*plan).magic).read() } != PLAN_MAGIC {
        return Err(Failure::new(cg_status::CG_ERROR_BAD_PLAN, "plan does not point to a live cg_conv2d_plan"));
    }
    // SAFETY: the magic matches: a live plan, which the caller promises.
    Ok(unsafe { &(*plan).plan })
}

/// Runs the plan on `input` [n, c_in, h, w] (any n, h, w its kernel fits)
/// into `output`, as `cg_conv2d` would with the plan's weights. Safe to call
/// on one plan from many threads at once; the bits do not depend on it.
///
/// # Safety
/// `plan` is NULL or a live plan; the buffers as for `cg_conv2d`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_conv2d_plan_run(
    plan: *const cg_conv2d_plan,
    input: *const f32,
    input_len: usize,
    input_shape: *const usize,
    output: *mut f32,
    output_len: usize,
) -> cg_status {
    call(|| {
        // SAFETY: the caller's promise for each pointer and length.
        let (plan, io) = unsafe {
            (
                plan_ref(plan)?,
                in_out(("input", input, input_len), ("input_shape", input_shape), ("output", output, output_len))?,
            )
        };
        threads::run(|| plan.run(io.input, io.shape, io.output))?;
        Ok(())
    })
}

/// Frees a plan. NULL (or a pointer whose first 8 bytes are not a plan's
/// mark): nothing happens. The plan must not be running.
///
/// # Safety
/// `plan` is NULL or a live plan from `cg_conv2d_plan_create`, destroyed
/// once, with no call on it running or to come.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_conv2d_plan_destroy(plan: *mut cg_conv2d_plan) {
    // NULL, misaligned or not a plan (by its magic): nothing happens.
    // SAFETY: the caller promises a live plan (its first 8 bytes readable).
    if unsafe { plan_ref(plan) }.is_err() {
        return;
    }
    // SAFETY: a live plan made by `Box::into_raw` in `cg_conv2d_plan_create`,
    // destroyed once and used by no one else (the caller's promise).
    let mut boxed = unsafe { Box::from_raw(plan.cast::<Plan>()) };
    // SAFETY: a field of the live box; volatile so that the store is kept
    // (a second destroy then most likely finds no mark).
    unsafe { std::ptr::write_volatile(&mut boxed.magic, 0) };
    // Dropping frees the packed weights; a panic there must not unwind into C.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(boxed)));
}

/// The gradient of a convolution's input: `grad_input` [n, c_in, h, w]
/// (shape `input_shape`) from `grad_output` [n, c_out, oh, ow] and `weight`.
/// Overwrites `grad_input`. `params->activation` must be CG_ACTIVATION_NONE;
/// CG_PRECISION_RELAXED lets 3×3 stride-1 layers run by Winograd.
///
/// # Safety
/// As for `cg_conv2d`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_conv2d_backward_input(
    grad_output: *const f32,
    grad_output_len: usize,
    grad_output_shape: *const usize,
    weight: *const f32,
    weight_len: usize,
    weight_shape: *const usize,
    params: *const cg_conv2d_params,
    grad_input: *mut f32,
    grad_input_len: usize,
    input_shape: *const usize,
) -> cg_status {
    call(|| {
        // SAFETY: the caller's promise for each pointer and length.
        let (dy_shape, w_shape, x_shape, p, dy, w) = unsafe {
            (
                shape("grad_output_shape", grad_output_shape)?,
                shape("weight_shape", weight_shape)?,
                shape("input_shape", input_shape)?,
                read("params", params)?,
                floats("grad_output", grad_output, grad_output_len)?,
                floats("weight", weight, weight_len)?,
            )
        };
        let inputs = [Region::of("grad_output", dy), Region::of("weight", w)];
        // SAFETY: as above; disjoint from the inputs (checked).
        let dx = unsafe { floats_mut("grad_input", grad_input, grad_input_len, &inputs)? };
        let (params, options) = p.get_linear("a gradient")?;
        threads::run(|| conv2d_backward_input_with(&options, dy, dy_shape, w, w_shape, &params, dx, x_shape))?;
        Ok(())
    })
}

/// The gradient of a convolution's weight: `grad_weight` [c_out, c_in /
/// groups, kh, kw] (shape `weight_shape`) from `input` and `grad_output`.
/// Overwrites `grad_weight`. `params->activation` must be CG_ACTIVATION_NONE.
///
/// # Safety
/// As for `cg_conv2d`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_conv2d_backward_weight(
    input: *const f32,
    input_len: usize,
    input_shape: *const usize,
    grad_output: *const f32,
    grad_output_len: usize,
    grad_output_shape: *const usize,
    params: *const cg_conv2d_params,
    grad_weight: *mut f32,
    grad_weight_len: usize,
    weight_shape: *const usize,
) -> cg_status {
    call(|| {
        // SAFETY: the caller's promise for each pointer and length.
        let (x_shape, dy_shape, w_shape, p, x, dy) = unsafe {
            (
                shape("input_shape", input_shape)?,
                shape("grad_output_shape", grad_output_shape)?,
                shape("weight_shape", weight_shape)?,
                read("params", params)?,
                floats("input", input, input_len)?,
                floats("grad_output", grad_output, grad_output_len)?,
            )
        };
        let inputs = [Region::of("input", x), Region::of("grad_output", dy)];
        // SAFETY: as above; disjoint from the inputs (checked).
        let dw = unsafe { floats_mut("grad_weight", grad_weight, grad_weight_len, &inputs)? };
        let (params, options) = p.get_linear("a gradient")?;
        threads::run(|| conv2d_backward_weight_with(&options, x, x_shape, dy, dy_shape, &params, dw, w_shape))?;
        Ok(())
    })
}

/// The gradient of a convolution's bias: `grad_bias[c]` is the sum of
/// `grad_output` [n, c_out, oh, ow] (in `layout`) over its channel c.
/// Overwrites the c_out floats of `grad_bias`.
///
/// # Safety
/// As for `cg_conv2d`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_conv2d_backward_bias(
    grad_output: *const f32,
    grad_output_len: usize,
    grad_output_shape: *const usize,
    layout: LayoutArg,
    grad_bias: *mut f32,
    grad_bias_len: usize,
) -> cg_status {
    call(|| {
        // SAFETY: the caller's promise for each pointer and length.
        let io = unsafe {
            in_out(
                ("grad_output", grad_output, grad_output_len),
                ("grad_output_shape", grad_output_shape),
                ("grad_bias", grad_bias, grad_bias_len),
            )?
        };
        let layout = layout.get("layout")?;
        threads::run(|| conv2d_backward_bias_with_layout(io.input, io.shape, layout, io.output))?;
        Ok(())
    })
}

/// Writes the output shape [n, c_out, oh, ow] of a transposed convolution of
/// `input_shape` [n, c_in, h, w] with a weight [c_in, c_out / groups, kh,
/// kw]: per axis (h − 1)·stride − pad_top − pad_bottom + dilation·(kh − 1) +
/// output_padding + 1 (PyTorch's formula).
///
/// # Safety
/// Each pointer is NULL or addresses its four size_t (`params`: one struct).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_conv_transpose2d_output_shape(
    input_shape: *const usize,
    weight_shape: *const usize,
    params: *const cg_conv_transpose2d_params,
    output_shape: *mut usize,
) -> cg_status {
    call(|| {
        // SAFETY: the caller's promise for each pointer; all are copied out.
        let (x, w, p) = unsafe {
            (shape("input_shape", input_shape)?, shape("weight_shape", weight_shape)?, read("params", params)?)
        };
        let out = out_ptr("output_shape", output_shape.cast::<[usize; 4]>())?;
        let shape = conv_transpose2d_output_shape(x, w, &p.get()?)?;
        // SAFETY: non-NULL and aligned (checked); the caller promises four writable size_t.
        unsafe { out.write(shape) };
        Ok(())
    })
}

/// Transposed convolution (PyTorch's ConvTranspose2d): `output` (shape from
/// `cg_conv_transpose2d_output_shape`) from `input` [n, c_in, h, w] and
/// `weight` [c_in, c_out / groups, kh, kw], plus `bias` (c_out floats, or
/// NULL). Overwrites `output`.
///
/// # Safety
/// As for `cg_conv2d`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_conv_transpose2d(
    input: *const f32,
    input_len: usize,
    input_shape: *const usize,
    weight: *const f32,
    weight_len: usize,
    weight_shape: *const usize,
    bias: *const f32,
    bias_len: usize,
    params: *const cg_conv_transpose2d_params,
    output: *mut f32,
    output_len: usize,
) -> cg_status {
    call(|| {
        // SAFETY: the caller's promise for each pointer and length.
        let (x_shape, w_shape, p, x, w, b) = unsafe {
            (
                shape("input_shape", input_shape)?,
                shape("weight_shape", weight_shape)?,
                read("params", params)?,
                floats("input", input, input_len)?,
                floats("weight", weight, weight_len)?,
                optional_floats("bias", bias, bias_len)?,
            )
        };
        let inputs = [Region::of("input", x), Region::of("weight", w), Region::of("bias", b.unwrap_or(&[]))];
        // SAFETY: as above; disjoint from the inputs (checked).
        let out = unsafe { floats_mut("output", output, output_len, &inputs)? };
        let params = p.get()?;
        threads::run(|| conv_transpose2d(x, x_shape, w, w_shape, b, &params, out))?;
        Ok(())
    })
}
