//! `ConvParams`, the output-size formula, and `ConvGeometry`: every shape
//! check and every overflow check of a convolution call, done once, before
//! any buffer is touched. Shared by the convolution paths and the explicit
//! im2col below them; knows no algorithm.

use crate::check::{at_least_one, mul, product};
use crate::error::ConvError;
use crate::layout::Layout;
pub(crate) use crate::layout::Strides;

/// How a 2-D convolution slides its kernel over the input.
///
/// Build it from the default and change what differs:
///
/// ```
/// use convgemm::ConvParams;
/// let mut p = ConvParams::default();
/// p.stride = [2, 2];
/// p.padding = [3, 3, 3, 3];
/// assert_eq!(p.dilation, [1, 1]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvParams {
    /// `[stride_h, stride_w]`, each at least 1.
    pub stride: [usize; 2],
    /// Zero padding `[top, left, bottom, right]`.
    pub padding: [usize; 4],
    /// `[dilation_h, dilation_w]`, each at least 1 (1 = dense kernel).
    pub dilation: [usize; 2],
    /// Number of groups: at least 1, divides `c_in` and `c_out`.
    /// `groups == c_in == c_out` is a depthwise convolution.
    pub groups: usize,
    /// `false`: cross-correlation (what deep learning calls convolution).
    /// `true`: true convolution, the kernel rotated by 180 degrees.
    pub flip: bool,
    /// The layout of the activations (input, output and their gradients):
    /// [`Layout::Nchw`] (the default) or channels-last [`Layout::Nhwc`].
    /// Weights are OIHW in both.
    pub layout: Layout,
}

impl Default for ConvParams {
    /// Stride 1, no padding, dilation 1, one group, cross-correlation, NCHW.
    fn default() -> Self {
        ConvParams {
            stride: [1, 1],
            padding: [0, 0, 0, 0],
            dilation: [1, 1],
            groups: 1,
            flip: false,
            layout: Layout::Nchw,
        }
    }
}

/// The shape of a convolution's output, `[n, c_out, h_out, w_out]`.
///
/// Per spatial axis, `out = (in + pad_a + pad_b - dilation * (k - 1) - 1) / stride + 1`
/// (floor division). An axis whose padded input is smaller than the dilated
/// kernel has no output and is an error, as is any invalid parameter.
///
/// ```
/// use convgemm::{conv2d_output_shape, ConvParams};
/// // AlexNet conv1: 3x227x227, 96 kernels of 11x11, stride 4 -> 96x55x55.
/// let mut p = ConvParams::default();
/// p.stride = [4, 4];
/// let shape = conv2d_output_shape([1, 3, 227, 227], [96, 3, 11, 11], &p).unwrap();
/// assert_eq!(shape, [1, 96, 55, 55]);
/// ```
pub fn conv2d_output_shape(
    input_shape: [usize; 4],
    weight_shape: [usize; 4],
    params: &ConvParams,
) -> Result<[usize; 4], ConvError> {
    ConvGeometry::new(input_shape, weight_shape, params).map(|g| g.output_shape())
}

/// A validated convolution: every size below is known to fit in `usize`,
/// including the element counts of input, weight, output and the im2col matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConvGeometry {
    pub batch: usize,
    pub c_in: usize,
    pub h_in: usize,
    pub w_in: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    pub pad_bottom: usize,
    pub pad_right: usize,
    pub dilation_h: usize,
    pub dilation_w: usize,
    pub groups: usize,
    pub flip: bool,
    pub layout: Layout,
    pub h_out: usize,
    pub w_out: usize,
}

/// One spatial axis: `(in + pad_a + pad_b - extent) / stride + 1`, checked.
fn axis_output(
    axis: &'static str,
    size: usize,
    pad_a: usize,
    pad_b: usize,
    kernel: usize,
    dilation: usize,
    stride: usize,
) -> Result<usize, ConvError> {
    let padded = size
        .checked_add(pad_a)
        .and_then(|s| s.checked_add(pad_b))
        .ok_or(ConvError::Overflow { what: "padded input size" })?;
    let extent = mul(dilation, kernel - 1, "dilated kernel extent")?
        .checked_add(1)
        .ok_or(ConvError::Overflow { what: "dilated kernel extent" })?;
    if padded < extent {
        return Err(ConvError::NoOutput { axis, padded_input: padded, kernel_extent: extent });
    }
    Ok((padded - extent) / stride + 1)
}

impl ConvGeometry {
    pub fn new(input_shape: [usize; 4], weight_shape: [usize; 4], params: &ConvParams) -> Result<Self, ConvError> {
        let [batch, c_in, h_in, w_in] = input_shape;
        let [c_out, c_in_per_group, kh, kw] = weight_shape;
        check_params(weight_shape, params)?;
        let groups = params.groups;
        if c_in % groups != 0 {
            return Err(ConvError::BadParameter {
                name: "groups",
                value: groups,
                requirement: "a divisor of input channels (input_shape[1])",
            });
        }
        if c_in_per_group != c_in / groups {
            return Err(ConvError::ShapeMismatch {
                what: "weight_shape[1] (input channels / groups)",
                expected: c_in / groups,
                found: c_in_per_group,
            });
        }
        let [pad_top, pad_left, pad_bottom, pad_right] = params.padding;
        let h_out = axis_output("height", h_in, pad_top, pad_bottom, kh, params.dilation[0], params.stride[0])?;
        let w_out = axis_output("width", w_in, pad_left, pad_right, kw, params.dilation[1], params.stride[1])?;
        let g = ConvGeometry {
            batch,
            c_in,
            h_in,
            w_in,
            c_out,
            kh,
            kw,
            stride_h: params.stride[0],
            stride_w: params.stride[1],
            pad_top,
            pad_left,
            pad_bottom,
            pad_right,
            dilation_h: params.dilation[0],
            dilation_w: params.dilation[1],
            groups,
            flip: params.flip,
            layout: params.layout,
            h_out,
            w_out,
        };
        // Every count the kernels index with must fit, so later code can use
        // plain arithmetic.
        // Each partial product is checked on its own: a zero elsewhere in the
        // shape (an empty batch, no channels) must not hide an overflow.
        product(&input_shape, "input element count")?;
        product(&[c_in, h_in, w_in], "input image size")?;
        product(&weight_shape, "weight element count")?;
        product(&g.output_shape(), "output element count")?;
        product(&[c_out, h_out, w_out], "output image size")?;
        product(&[h_out, w_out], "output pixel count")?;
        product(&[c_in_per_group, kh, kw, h_out, w_out], "im2col element count")?;
        product(&[c_in, kh, kw, h_out, w_out], "im2col element count")?;
        Ok(g)
    }

    pub fn output_shape(&self) -> [usize; 4] {
        [self.batch, self.c_out, self.h_out, self.w_out]
    }
    pub fn c_in_per_group(&self) -> usize {
        self.c_in / self.groups
    }
    pub fn c_out_per_group(&self) -> usize {
        self.c_out / self.groups
    }
    /// Rows of the im2col matrix of one group: `(c_in / groups) * kh * kw`.
    pub fn patch_len(&self) -> usize {
        self.c_in_per_group() * self.kh * self.kw
    }
    /// Output pixels of one image: `h_out * w_out`.
    pub fn out_pixels(&self) -> usize {
        self.h_out * self.w_out
    }
    /// `[h_in + pad_top + pad_bottom, w_in + pad_left + pad_right]`, or
    /// `None` if either overflows (hostile paddings can be near `usize::MAX`).
    pub fn padded_extent(&self) -> Option<[usize; 2]> {
        let hp = self.h_in.checked_add(self.pad_top)?.checked_add(self.pad_bottom)?;
        let wp = self.w_in.checked_add(self.pad_left)?.checked_add(self.pad_right)?;
        Some([hp, wp])
    }
    /// `[stride_h, stride_w]` as the outputs take them: 1 along an axis
    /// with one output, where the stride is never stepped (and may be as
    /// large as `usize` allows, so a kernel must not multiply it).
    pub fn taken_strides(&self) -> [usize; 2] {
        [if self.h_out > 1 { self.stride_h } else { 1 }, if self.w_out > 1 { self.stride_w } else { 1 }]
    }
    /// `[dilation_h, dilation_w]` as the windows take them: 1 along an
    /// axis where the kernel has one tap, whose dilation is never applied
    /// (and may be as large as `usize` allows, so a kernel must not
    /// multiply it).
    pub fn taken_dilations(&self) -> [usize; 2] {
        [if self.kh > 1 { self.dilation_h } else { 1 }, if self.kw > 1 { self.dilation_w } else { 1 }]
    }
    pub fn input_len(&self) -> usize {
        self.batch * self.c_in * self.h_in * self.w_in
    }
    pub fn weight_len(&self) -> usize {
        self.c_out * self.patch_len()
    }
    pub fn output_len(&self) -> usize {
        self.batch * self.c_out * self.out_pixels()
    }
    /// Whether the zero-padded input plane is small enough (at most 2^40
    /// floats) that the implicit and direct paths may index it with `isize`
    /// offsets and copy it; other geometries (absurd paddings or strides)
    /// take the explicit im2col path, whose arithmetic stays within the sizes
    /// checked above.
    pub fn is_compact(&self) -> bool {
        let padded_h = self.h_in + self.pad_top + self.pad_bottom;
        let padded_w = self.w_in + self.pad_left + self.pad_right;
        // Channels-last offsets step by c_in floats per pixel: the padded
        // plane times that must stay within the bound.
        padded_h.checked_mul(padded_w).and_then(|n| n.checked_mul(self.input_strides().x)).is_some_and(|n| n <= 1 << 40)
    }

    /// The parameters this geometry was built from.
    pub fn params(&self) -> ConvParams {
        ConvParams {
            stride: [self.stride_h, self.stride_w],
            padding: [self.pad_top, self.pad_left, self.pad_bottom, self.pad_right],
            dilation: [self.dilation_h, self.dilation_w],
            groups: self.groups,
            flip: self.flip,
            layout: self.layout,
        }
    }

    /// The strides of one input image in the geometry's layout.
    pub fn input_strides(&self) -> Strides {
        self.layout.strides(self.c_in, self.h_in, self.w_in)
    }

    /// The strides of one output image in the geometry's layout.
    pub fn output_strides(&self) -> Strides {
        self.layout.strides(self.c_out, self.h_out, self.w_out)
    }

    /// The input channels of group `group` of image `image`: from their
    /// first float to the end of the image (NCHW: exactly their planes;
    /// empty for an empty image, whose channels have no floats).
    /// Index them with [`ConvGeometry::input_strides`].
    pub fn group_input<'a>(&self, input: &'a [f32], image: usize, group: usize) -> &'a [f32] {
        let image_len = self.c_in * self.h_in * self.w_in;
        let first = image * image_len + group * self.c_in_per_group() * self.input_strides().c;
        let end = match self.layout {
            Layout::Nchw => first + self.c_in_per_group() * self.h_in * self.w_in,
            Layout::Nhwc => (image + 1) * image_len,
        };
        &input[first.min(end)..end]
    }
}

/// The checks that need no input shape: strides, dilations and groups at
/// least 1, a kernel of at least 1×1, groups dividing `c_out`, and a weight
/// element count that fits `usize`.
pub(crate) fn check_params(weight_shape: [usize; 4], params: &ConvParams) -> Result<(), ConvError> {
    at_least_one("stride[0]", params.stride[0])?;
    at_least_one("stride[1]", params.stride[1])?;
    at_least_one("dilation[0]", params.dilation[0])?;
    at_least_one("dilation[1]", params.dilation[1])?;
    at_least_one("groups", params.groups)?;
    at_least_one("weight_shape[2] (kernel height)", weight_shape[2])?;
    at_least_one("weight_shape[3] (kernel width)", weight_shape[3])?;
    if !weight_shape[0].is_multiple_of(params.groups) {
        return Err(ConvError::BadParameter {
            name: "groups",
            value: params.groups,
            requirement: "a divisor of output channels (weight_shape[0])",
        });
    }
    product(&weight_shape, "weight element count")?;
    product(&weight_shape[1..], "kernel patch size")?;
    product(&weight_shape[2..], "kernel size")?;
    Ok(())
}
