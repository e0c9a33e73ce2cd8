//! `Layout`: where element `(b, ch, y, x)` of an activation tensor lies, and
//! the strides of one image that the algorithms index with. Imports nothing.

/// The memory order of activation tensors (inputs, outputs and their
/// gradients). Shapes stay logical `[n, c, h, w]` in both layouts; weights
/// keep their own layout (OIHW) whatever this says.
///
/// - `Nchw` (the default): element `(b, ch, y, x)` at `((b·c + ch)·h + y)·w + x`,
///   PyTorch's default.
/// - `Nhwc` (channels-last): element `(b, ch, y, x)` at `((b·h + y)·w + x)·c + ch`,
///   TensorFlow's, XNNPACK's and PyTorch's `channels_last` order.
///
/// ```
/// use convgemm::{conv2d, ConvParams, Layout};
/// // Two channels of a 1×2 image, channels-last: pixel 0 is (1, 10), pixel 1 is (2, 20).
/// let input = [1.0f32, 10.0, 2.0, 20.0];
/// // One output channel that sums the two input channels.
/// let params = ConvParams { layout: Layout::Nhwc, ..ConvParams::default() };
/// let mut out = [0.0f32; 2];
/// conv2d(&input, [1, 2, 1, 2], &[1.0, 1.0], [1, 2, 1, 1], None, &params, &mut out)?;
/// assert_eq!(out, [11.0, 22.0]);
/// # Ok::<(), convgemm::ConvError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Layout {
    /// Channels first: each channel a contiguous `h × w` plane.
    #[default]
    Nchw,
    /// Channels last: each pixel's `c` channels contiguous.
    Nhwc,
}

/// Where element `(ch, y, x)` of one `[c, h, w]` image lies, relative to
/// the image's first float: `ch·c + y·y + x·x`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Strides {
    pub c: usize,
    pub y: usize,
    pub x: usize,
}

impl Layout {
    /// The strides of one `[c, h, w]` image in this layout. (Saturating:
    /// an empty image's strides may not fit, and are never used.)
    pub(crate) fn strides(self, c: usize, h: usize, w: usize) -> Strides {
        match self {
            Layout::Nchw => Strides { c: h.saturating_mul(w), y: w, x: 1 },
            Layout::Nhwc => Strides { c: 1, y: w.saturating_mul(c), x: c },
        }
    }
}

impl Strides {
    /// The offset of `(ch, y, x)`.
    #[inline(always)]
    pub(crate) fn at(self, ch: usize, y: usize, x: usize) -> usize {
        ch * self.c + y * self.y + x * self.x
    }

    /// How many floats from the first element of `channels` channels of an
    /// `h × w` image to one past the last: what a slice of them must hold.
    pub(crate) fn span(self, channels: usize, h: usize, w: usize) -> usize {
        if channels == 0 || h == 0 || w == 0 { 0 } else { self.at(channels - 1, h - 1, w - 1) + 1 }
    }
}
