//! `PoolParams` and the validated geometry of a pooling call: every check
//! (PyTorch's padding rule, output sizes, overflow), done before any buffer
//! is touched.

use crate::check::{at_least_one, product};
use crate::error::ConvError;
use crate::layout::Layout;

/// How a pooling window slides: kernel, stride, padding, dilation, and the
/// two PyTorch switches, `ceil_mode` and `count_include_pad`.
///
/// [`PoolParams::new`] gives PyTorch's defaults (stride = kernel, no padding);
/// change what differs:
///
/// ```
/// use convgemm::PoolParams;
/// // ResNet-50's stem pool: 3x3, stride 2, padding 1.
/// let mut p = PoolParams::new([3, 3]);
/// p.stride = [2, 2];
/// p.padding = [1, 1, 1, 1];
/// assert!(!p.ceil_mode);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolParams {
    /// `[kernel_h, kernel_w]`, each at least 1.
    pub kernel: [usize; 2],
    /// `[stride_h, stride_w]`, each at least 1.
    pub stride: [usize; 2],
    /// Implicit padding `[top, left, bottom, right]`, each at most half the
    /// dilated kernel extent (PyTorch's rule). Max pooling ignores padded
    /// positions; average pooling counts them as zeros when
    /// `count_include_pad`.
    pub padding: [usize; 4],
    /// `[dilation_h, dilation_w]`, each at least 1. Average pooling accepts
    /// only `[1, 1]`, as in PyTorch.
    pub dilation: [usize; 2],
    /// Round the output size up instead of down; a window that would start
    /// in the bottom or right padding is dropped.
    pub ceil_mode: bool,
    /// Average pooling: divide by the window's size clipped to the padded
    /// input (`true`) or by the number of input elements it covers (`false`).
    pub count_include_pad: bool,
    /// The layout of input and output (and their gradients, and the
    /// switches of `max_pool2d_with_indices`): NCHW or channels-last.
    pub layout: Layout,
}

impl PoolParams {
    /// A `kernel`-sized window with PyTorch's defaults: stride = kernel, no
    /// padding, dilation 1, `ceil_mode = false`, `count_include_pad = true`.
    pub fn new(kernel: [usize; 2]) -> Self {
        PoolParams {
            kernel,
            stride: kernel,
            padding: [0; 4],
            dilation: [1, 1],
            ceil_mode: false,
            count_include_pad: true,
            layout: Layout::Nchw,
        }
    }
}

/// One spatial axis of a validated pooling: every index below fits `isize`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Axis {
    pub(crate) size: usize,
    pub(crate) out: usize,
    pub(crate) kernel: usize,
    pub(crate) stride: usize,
    pub(crate) pad_a: usize,
    pub(crate) pad_b: usize,
    pub(crate) dilation: usize,
    /// The interior windows `lo..hi` (see [`Axis::interior`]), computed once.
    pub(crate) lo: usize,
    pub(crate) hi: usize,
}

/// The parameter names of one axis, for error messages.
pub(crate) struct AxisNames {
    axis: &'static str,
    size: &'static str,
    kernel: &'static str,
    stride: &'static str,
    dilation: &'static str,
    pad_a: &'static str,
    pad_b: &'static str,
}

pub(crate) const HEIGHT: AxisNames = AxisNames {
    axis: "height",
    size: "input_shape[2] (height)",
    kernel: "kernel[0]",
    stride: "stride[0]",
    dilation: "dilation[0]",
    pad_a: "padding[0] (top)",
    pad_b: "padding[2] (bottom)",
};
const WIDTH: AxisNames = AxisNames {
    axis: "width",
    size: "input_shape[3] (width)",
    kernel: "kernel[1]",
    stride: "stride[1]",
    dilation: "dilation[1]",
    pad_a: "padding[1] (left)",
    pad_b: "padding[3] (right)",
};

impl Axis {
    /// `out = (size + pad_a + pad_b - extent) / stride + 1`, rounded down, or
    /// up with `ceil_mode` (then minus one if the last window would start in
    /// the trailing padding), where `extent = dilation * (kernel - 1) + 1`.
    pub(crate) fn new(names: &AxisNames, size: usize, i: usize, p: &PoolParams) -> Result<Axis, ConvError> {
        let (kernel, stride, dilation) = (p.kernel[i], p.stride[i], p.dilation[i]);
        let (pad_a, pad_b) = (p.padding[i], p.padding[i + 2]);
        at_least_one(names.kernel, kernel)?;
        at_least_one(names.stride, stride)?;
        at_least_one(names.dilation, dilation)?;
        if size == 0 {
            let requirement = "at least 1 (a pooling window needs an input element)";
            return Err(ConvError::BadParameter { name: names.size, value: 0, requirement });
        }
        let overflow = ConvError::Overflow { what: "pooling window extent" };
        let extent = dilation.checked_mul(kernel - 1).and_then(|e| e.checked_add(1)).ok_or(overflow.clone())?;
        for (name, pad) in [(names.pad_a, pad_a), (names.pad_b, pad_b)] {
            if pad > extent / 2 {
                let requirement =
                    "at most half the dilated kernel extent, dilation * (kernel - 1) + 1 (PyTorch's rule)";
                return Err(ConvError::BadParameter { name, value: pad, requirement });
            }
        }
        // Every start, tap and end computed below is at most `padded + stride + extent`.
        let padded = size.checked_add(pad_a).and_then(|s| s.checked_add(pad_b)).ok_or(overflow.clone())?;
        match padded.checked_add(stride).and_then(|s| s.checked_add(extent)) {
            Some(bound) if bound <= isize::MAX as usize => {}
            _ => return Err(overflow),
        }
        if padded < extent {
            return Err(ConvError::NoOutput { axis: names.axis, padded_input: padded, kernel_extent: extent });
        }
        let span = padded - extent;
        let mut out = if p.ceil_mode { span.div_ceil(stride) + 1 } else { span / stride + 1 };
        if p.ceil_mode && (out - 1) * stride >= size + pad_a {
            out -= 1;
        }
        let mut axis = Axis { size, out, kernel, stride, pad_a, pad_b, dilation, lo: 0, hi: 0 };
        (axis.lo, axis.hi) = axis.find_interior();
        Ok(axis)
    }

    /// Where window `o` starts, relative to the unpadded input (may be < 0).
    pub(crate) fn start(&self, o: usize) -> isize {
        (o * self.stride) as isize - self.pad_a as isize
    }

    /// The input index tap `t` of window `o` reads, if it is inside the input.
    pub(crate) fn tap(&self, o: usize, t: usize) -> Option<usize> {
        let i = self.start(o) + (t * self.dilation) as isize;
        (i >= 0 && (i as usize) < self.size).then_some(i as usize)
    }

    /// The taps of window `o` inside the input, `dilation` apart: the first
    /// one's input index and their count (0 when the window holds none).
    pub(crate) fn tap_range(&self, o: usize) -> (usize, usize) {
        let (start, d) = (self.start(o), self.dilation as isize);
        // The first tap t with start + t·d ≥ 0.
        let skip = if start < 0 { (-start + d - 1) / d } else { 0 };
        let first = start + skip * d;
        if skip as usize >= self.kernel || first as usize >= self.size {
            return (0, 0);
        }
        let fit = (self.size - 1 - first as usize) / self.dilation + 1;
        (first as usize, fit.min(self.kernel - skip as usize))
    }

    /// The windows `lo..hi` whose every tap is inside the input.
    pub(crate) fn interior(&self) -> (usize, usize) {
        (self.lo, self.hi)
    }

    fn find_interior(&self) -> (usize, usize) {
        let extent = self.dilation * (self.kernel - 1) + 1;
        let lo = self.pad_a.div_ceil(self.stride).min(self.out);
        let hi = match (self.size + self.pad_a).checked_sub(extent) {
            Some(last) => (last / self.stride + 1).min(self.out),
            None => 0,
        };
        (lo, hi.max(lo))
    }

    /// Taps of window `o` inside `[-pad_a, size + pad_b)`: PyTorch's
    /// `count_include_pad` divisor along this axis (dilation is 1 there).
    pub(crate) fn padded_count(&self, o: usize) -> usize {
        let start = self.start(o);
        let end = (start + self.kernel as isize).min((self.size + self.pad_b) as isize);
        (end - start) as usize
    }
}

/// A validated pooling call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PoolGeometry {
    pub(crate) planes: usize,
    pub(crate) h: Axis,
    pub(crate) w: Axis,
    pub(crate) count_include_pad: bool,
}

impl PoolGeometry {
    pub(crate) fn new(input_shape: [usize; 4], params: &PoolParams) -> Result<Self, ConvError> {
        let h = Axis::new(&HEIGHT, input_shape[2], 0, params)?;
        let w = Axis::new(&WIDTH, input_shape[3], 1, params)?;
        // Each partial product on its own: an empty batch must not hide a
        // plane size that overflows (found by fuzzing).
        let planes = product(&input_shape[..2], "input plane count")?;
        product(&input_shape[2..], "input plane size")?;
        product(&input_shape, "input element count")?;
        product(&[h.out, w.out], "output plane size")?;
        product(&[planes, h.out, w.out], "output element count")?;
        Ok(PoolGeometry { planes, h, w, count_include_pad: params.count_include_pad })
    }

    pub(crate) fn plane_in(&self) -> usize {
        self.h.size * self.w.size
    }
    pub(crate) fn plane_out(&self) -> usize {
        self.h.out * self.w.out
    }

    /// Average pooling's divisor for window `(oy, ox)` covering `count` input elements.
    pub(crate) fn divisor(&self, oy: usize, ox: usize, count: usize) -> f32 {
        let d = if self.count_include_pad { self.h.padded_count(oy) * self.w.padded_count(ox) } else { count };
        d as f32
    }

    /// The arg-max scan of this pooling, its column tap ranges computed
    /// once for every plane it will scan.
    pub(crate) fn argmax_scan(&self) -> ArgmaxScan<'_> {
        ArgmaxScan { g: self, columns: (0..self.w.out).map(|o| self.w.tap_range(o)).collect() }
    }

    /// The input taps of window `(oy, ox)` inside the input, in row-major
    /// window order, as indices into the plane.
    pub(crate) fn taps(&self, oy: usize, ox: usize) -> impl Iterator<Item = usize> + use<> {
        let ((y0, ny), (x0, nx)) = (self.h.tap_range(oy), self.w.tap_range(ox));
        let (w, dh, dw) = (self.w.size, self.h.dilation, self.w.dilation);
        (0..ny).flat_map(move |r| (0..nx).map(move |c| (y0 + r * dh) * w + x0 + c * dw))
    }
}

/// Where each window's maximum is, plane by plane (see
/// [`PoolGeometry::argmax_scan`]).
pub(crate) struct ArgmaxScan<'a> {
    g: &'a PoolGeometry,
    /// `Axis::tap_range` of every output column.
    columns: Vec<(usize, usize)>,
}

impl ArgmaxScan<'_> {
    /// Calls `f(k, at)` for every window `k` (row-major) of plane `x`, with
    /// `at` where its maximum is: its first maximum in row-major window
    /// order, or where the window holds NaNs, its last NaN (PyTorch's
    /// `v > max || isnan(v)` scan); `None` for a window with no input element.
    pub(crate) fn plane(&self, x: &[f32], mut f: impl FnMut(usize, Option<usize>)) {
        let g = self.g;
        let (w, dh, dw) = (g.w.size, g.h.dilation, g.w.dilation);
        for oy in 0..g.h.out {
            let (y0, ny) = g.h.tap_range(oy);
            for (ox, &(x0, nx)) in self.columns.iter().enumerate() {
                let k = oy * g.w.out + ox;
                if ny == 0 || nx == 0 {
                    f(k, None);
                    continue;
                }
                let (mut at, mut max) = (y0 * w + x0, x[y0 * w + x0]);
                for r in 0..ny {
                    let row = (y0 + r * dh) * w + x0;
                    for i in (row..).step_by(dw).take(nx) {
                        let v = x[i];
                        // Written to select, not to branch: maxima in random data are unpredictable.
                        let take = v > max || v.is_nan();
                        at = if take { i } else { at };
                        max = if take { v } else { max };
                    }
                }
                f(k, Some(at));
            }
        }
    }
}

/// The output shape `[n, c, h_out, w_out]` of [`max_pool2d`](crate::max_pool2d) or
/// [`avg_pool2d`](crate::avg_pool2d) on an input of `input_shape`.
///
/// Per axis, `out = (in + pad_a + pad_b - dilation * (kernel - 1) - 1) / stride + 1`,
/// the division rounded down, or up with `ceil_mode` (and then one less if the
/// last window would start in the bottom/right padding).
///
/// ```
/// use convgemm::{pool2d_output_shape, PoolParams};
/// let mut p = PoolParams::new([3, 3]);
/// p.stride = [2, 2];
/// assert_eq!(pool2d_output_shape([1, 96, 55, 55], &p).unwrap(), [1, 96, 27, 27]); // AlexNet
/// p.ceil_mode = true;
/// assert_eq!(pool2d_output_shape([1, 64, 112, 112], &p).unwrap(), [1, 64, 56, 56]);
/// ```
pub fn pool2d_output_shape(input_shape: [usize; 4], params: &PoolParams) -> Result<[usize; 4], ConvError> {
    let g = PoolGeometry::new(input_shape, params)?;
    Ok([input_shape[0], input_shape[1], g.h.out, g.w.out])
}

pub(super) fn check_avg(params: &PoolParams) -> Result<(), ConvError> {
    for (name, d) in [("dilation[0]", params.dilation[0]), ("dilation[1]", params.dilation[1])] {
        if d != 1 {
            return Err(ConvError::BadParameter { name, value: d, requirement: "1 for average pooling" });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interior_is_exactly_the_windows_inside() {
        for size in 1..12 {
            for (k, s, d, pad) in [(1, 1, 1, 0), (2, 2, 1, 1), (3, 2, 1, 1), (3, 1, 2, 2), (4, 3, 1, 2), (2, 3, 3, 2)] {
                let mut p = PoolParams::new([k, k]);
                p.stride = [s, s];
                p.dilation = [d, d];
                p.padding = [pad; 4];
                for ceil in [false, true] {
                    p.ceil_mode = ceil;
                    let Ok(a) = Axis::new(&HEIGHT, size, 0, &p) else { continue };
                    let (lo, hi) = a.interior();
                    for o in 0..a.out {
                        let inside = (0..k).all(|t| a.tap(o, t).is_some());
                        assert_eq!(inside, (lo..hi).contains(&o), "size {size} k{k} s{s} d{d} p{pad} o{o}");
                    }
                }
            }
        }
    }
}
