//! The C parameter structs and enums, and their translation into
//! convgemm's `ConvParams`, `ConvTransposeParams`, `PoolParams` and
//! `ConvOptions`. Enum values arrive as plain ints (`*Arg`), so a value the
//! header does not define is a `CG_ERROR_BAD_PARAMETER`, never undefined
//! behaviour.
#![allow(non_camel_case_types)]

use std::ffi::c_int;

use convgemm::{Activation, ConvOptions, ConvParams, ConvTransposeParams, Layout, PoolParams, Precision};

use crate::buffers;
use crate::status::{Failure, cg_status};

/// The memory order of activation tensors (input, output and their
/// gradients); shapes are the logical [n, c, h, w] in both. (The enums of
/// this header are int-sized, as C compilers make them by default: do not
/// build callers with -fshort-enums.)
#[repr(C)]
pub enum cg_layout {
    /// Element (b, ch, y, x) at ((b·c + ch)·h + y)·w + x (PyTorch's default).
    CG_LAYOUT_NCHW = 0,
    /// Channels-last: element (b, ch, y, x) at ((b·h + y)·w + x)·c + ch
    /// (TensorFlow, XNNPACK, PyTorch's channels_last).
    CG_LAYOUT_NHWC = 1,
}

/// What is applied to each output after the bias, in the same pass.
#[repr(C)]
pub enum cg_activation {
    /// The identity.
    CG_ACTIVATION_NONE = 0,
    /// max(x, 0); NaN stays NaN.
    CG_ACTIVATION_RELU = 1,
    /// min(max(x, 0), 6) (MobileNet's ReLU6); NaN stays NaN.
    CG_ACTIVATION_RELU6 = 2,
}

/// Whether the library may trade exact rounding for speed.
#[repr(C)]
pub enum cg_precision {
    /// Every algorithm gives the same bits as the defining sum computed in
    /// convgemm's fixed order (the default).
    CG_PRECISION_EXACT = 0,
    /// Layers with 3×3 kernels, stride 1 and dilation 1 may run by Winograd
    /// (the automatic choice takes it from 64 channels per group each way and
    /// 7×7 outputs): each output within 1e-5 times the largest Σ|w·x| + |bias|
    /// among the outputs of its tile, results still bit-identical across
    /// thread counts, batch sizes and CPUs.
    CG_PRECISION_RELAXED = 1,
}

/// A `cg_layout` value as it arrives from C (named `cg_layout` in the header).
#[repr(transparent)]
#[derive(Clone, Copy, Debug)]
pub struct LayoutArg(pub c_int);

/// A `cg_activation` value as it arrives from C.
#[repr(transparent)]
#[derive(Clone, Copy, Debug)]
pub struct ActivationArg(pub c_int);

/// A `cg_precision` value as it arrives from C.
#[repr(transparent)]
#[derive(Clone, Copy, Debug)]
pub struct PrecisionArg(pub c_int);

fn bad(name: &str, value: impl std::fmt::Display, requirement: &str) -> Failure {
    Failure::new(cg_status::CG_ERROR_BAD_PARAMETER, format!("bad parameter {name} = {value}: must be {requirement}"))
}

impl LayoutArg {
    pub(crate) fn get(self, name: &str) -> Result<Layout, Failure> {
        match self.0 {
            0 => Ok(Layout::Nchw),
            1 => Ok(Layout::Nhwc),
            v => Err(bad(name, v, "CG_LAYOUT_NCHW (0) or CG_LAYOUT_NHWC (1)")),
        }
    }
}

fn flag(name: &str, v: c_int) -> Result<bool, Failure> {
    match v {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(bad(name, v, "0 or 1")),
    }
}

/// A convolution's parameters; `cg_conv2d_params_default` fills in the
/// defaults (stride 1, no padding, dilation 1, one group, cross-correlation,
/// NCHW, no activation, exact), then change what differs.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct cg_conv2d_params {
    /// [stride_h, stride_w], each at least 1.
    pub stride: [usize; 2],
    /// Zeros added [top, left, bottom, right].
    pub padding: [usize; 4],
    /// [dilation_h, dilation_w], each at least 1.
    pub dilation: [usize; 2],
    /// At least 1; divides the input and output channels.
    pub groups: usize,
    /// 0: cross-correlation (PyTorch's conv); 1: true convolution (kernel
    /// rotated by 180 degrees).
    pub flip: c_int,
    /// The layout of input and output.
    pub layout: LayoutArg,
    /// Applied after the bias.
    pub activation: ActivationArg,
    /// CG_PRECISION_EXACT, or CG_PRECISION_RELAXED to allow Winograd.
    pub precision: PrecisionArg,
}

impl cg_conv2d_params {
    /// convgemm's parameters and options for these.
    pub(crate) fn get(&self) -> Result<(ConvParams, ConvOptions), Failure> {
        let params = ConvParams {
            stride: self.stride,
            padding: self.padding,
            dilation: self.dilation,
            groups: self.groups,
            flip: flag("params.flip", self.flip)?,
            layout: self.layout.get("params.layout")?,
        };
        let activation = match self.activation.0 {
            0 => Activation::None,
            1 => Activation::Relu,
            2 => Activation::Clamp { min: 0.0, max: 6.0 },
            v => return Err(bad("params.activation", v, "CG_ACTIVATION_NONE, _RELU or _RELU6 (0, 1, 2)")),
        };
        let precision = match self.precision.0 {
            0 => Precision::Exact,
            1 => Precision::Relaxed,
            v => return Err(bad("params.precision", v, "CG_PRECISION_EXACT (0) or CG_PRECISION_RELAXED (1)")),
        };
        Ok((params, ConvOptions { activation, precision, ..ConvOptions::default() }))
    }

    /// The parameters of a call that has no activation (the gradients): a
    /// set activation is a mistake there, not something to ignore quietly.
    pub(crate) fn get_linear(&self, what: &str) -> Result<(ConvParams, ConvOptions), Failure> {
        if self.activation.0 != 0 {
            return Err(bad("params.activation", self.activation.0, &format!("CG_ACTIVATION_NONE for {what}")));
        }
        self.get()
    }
}

/// Fills `params` with the defaults: stride 1, no padding, dilation 1, one
/// group, cross-correlation, NCHW, no activation, exact precision. A NULL
/// (or misaligned) pointer: nothing happens.
///
/// # Safety
/// `params` is NULL or points to a writable `cg_conv2d_params`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_conv2d_params_default(params: *mut cg_conv2d_params) {
    if let Ok(p) = buffers::out_ptr("params", params) {
        // SAFETY: non-NULL and aligned (checked); the caller promises it is writable.
        unsafe { p.write(cg_conv2d_params::default()) };
    }
}

impl Default for cg_conv2d_params {
    /// What `cg_conv2d_params_default` writes.
    fn default() -> Self {
        cg_conv2d_params {
            stride: [1, 1],
            padding: [0; 4],
            dilation: [1, 1],
            groups: 1,
            flip: 0,
            layout: LayoutArg(0),
            activation: ActivationArg(0),
            precision: PrecisionArg(0),
        }
    }
}

/// A transposed convolution's parameters (PyTorch's ConvTranspose2d);
/// `cg_conv_transpose2d_params_default` fills in the defaults.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct cg_conv_transpose2d_params {
    /// [stride_h, stride_w], each at least 1: input pixels land this far apart.
    pub stride: [usize; 2],
    /// [top, left, bottom, right] rows and columns cropped from the full output.
    pub padding: [usize; 4],
    /// [extra_h, extra_w] added at the bottom and right; each less than its
    /// stride or its dilation.
    pub output_padding: [usize; 2],
    /// [dilation_h, dilation_w], each at least 1.
    pub dilation: [usize; 2],
    /// At least 1; divides the input and output channels.
    pub groups: usize,
    /// The layout of input and output.
    pub layout: LayoutArg,
}

impl cg_conv_transpose2d_params {
    pub(crate) fn get(&self) -> Result<ConvTransposeParams, Failure> {
        Ok(ConvTransposeParams {
            stride: self.stride,
            padding: self.padding,
            output_padding: self.output_padding,
            dilation: self.dilation,
            groups: self.groups,
            layout: self.layout.get("params.layout")?,
        })
    }
}

/// Fills `params` with the defaults: stride 1, no padding, no output
/// padding, dilation 1, one group, NCHW. A NULL (or misaligned) pointer:
/// nothing happens.
///
/// # Safety
/// `params` is NULL or points to a writable `cg_conv_transpose2d_params`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_conv_transpose2d_params_default(params: *mut cg_conv_transpose2d_params) {
    if let Ok(p) = buffers::out_ptr("params", params) {
        // SAFETY: non-NULL and aligned (checked); the caller promises it is writable.
        unsafe { p.write(cg_conv_transpose2d_params::default()) };
    }
}

impl Default for cg_conv_transpose2d_params {
    /// What `cg_conv_transpose2d_params_default` writes.
    fn default() -> Self {
        cg_conv_transpose2d_params {
            stride: [1, 1],
            padding: [0; 4],
            output_padding: [0; 2],
            dilation: [1, 1],
            groups: 1,
            layout: LayoutArg(0),
        }
    }
}

/// A pooling window (PyTorch's MaxPool2d / AvgPool2d);
/// `cg_pool2d_params_default` fills in PyTorch's defaults for a kernel size.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct cg_pool2d_params {
    /// [kernel_h, kernel_w], each at least 1.
    pub kernel: [usize; 2],
    /// [stride_h, stride_w], each at least 1.
    pub stride: [usize; 2],
    /// [top, left, bottom, right], each at most half the dilated kernel.
    pub padding: [usize; 4],
    /// [dilation_h, dilation_w]; average pooling takes only [1, 1].
    pub dilation: [usize; 2],
    /// 1: round the output size up (PyTorch's ceil_mode); 0: down.
    pub ceil_mode: c_int,
    /// Average pooling: 1 divides by the window clipped to the padded input,
    /// 0 by the number of input elements it covers.
    pub count_include_pad: c_int,
    /// The layout of input and output.
    pub layout: LayoutArg,
}

impl cg_pool2d_params {
    pub(crate) fn get(&self) -> Result<PoolParams, Failure> {
        Ok(PoolParams {
            kernel: self.kernel,
            stride: self.stride,
            padding: self.padding,
            dilation: self.dilation,
            ceil_mode: flag("params.ceil_mode", self.ceil_mode)?,
            count_include_pad: flag("params.count_include_pad", self.count_include_pad)?,
            layout: self.layout.get("params.layout")?,
        })
    }
}

/// Fills `params` with PyTorch's defaults for a kernel_h × kernel_w window:
/// stride = kernel, no padding, dilation 1, ceil_mode 0, count_include_pad
/// 1, NCHW. A NULL (or misaligned) pointer: nothing happens.
///
/// # Safety
/// `params` is NULL or points to a writable `cg_pool2d_params`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_pool2d_params_default(params: *mut cg_pool2d_params, kernel_h: usize, kernel_w: usize) {
    if let Ok(p) = buffers::out_ptr("params", params) {
        // SAFETY: non-NULL and aligned (checked); the caller promises it is writable.
        unsafe { p.write(cg_pool2d_params::new([kernel_h, kernel_w])) };
    }
}

impl cg_pool2d_params {
    /// What `cg_pool2d_params_default` writes for a `kernel`-sized window.
    pub fn new(kernel: [usize; 2]) -> Self {
        cg_pool2d_params {
            kernel,
            stride: kernel,
            padding: [0; 4],
            dilation: [1, 1],
            ceil_mode: 0,
            count_include_pad: 1,
            layout: LayoutArg(0),
        }
    }
}
