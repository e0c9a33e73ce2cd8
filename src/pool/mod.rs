//! Pooling: the maximum or the average over sliding windows of NCHW f32
//! images, forward and backward, with PyTorch's semantics
//! (`torch.nn.functional.max_pool2d` / `avg_pool2d`), and global average
//! pooling.
//!
//! Pooling does one operation per element it reads, so it is bound by memory,
//! not arithmetic: the floor is one pass over the input. The forward pass is
//! vectorised over output columns, one window per lane, and every lane walks
//! its window in row-major order, exactly like the scalar code at the image
//! borders. Results are therefore bit-identical on every instruction set and
//! for any number of threads (planes are independent; nothing is reordered).

use rayon::prelude::*;

use crate::conv::params::{at_least_one, check_len, product};
use crate::error::ConvError;
use crate::gemm::Isa;

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
        }
    }
}

/// One spatial axis of a validated pooling: every index below fits `isize`.
#[derive(Clone, Copy, Debug)]
struct Axis {
    size: usize,
    out: usize,
    kernel: usize,
    stride: usize,
    pad_a: usize,
    pad_b: usize,
    dilation: usize,
    /// The interior windows `lo..hi` (see [`Axis::interior`]), computed once.
    lo: usize,
    hi: usize,
}

/// The parameter names of one axis, for error messages.
struct AxisNames {
    axis: &'static str,
    size: &'static str,
    kernel: &'static str,
    stride: &'static str,
    dilation: &'static str,
    pad_a: &'static str,
    pad_b: &'static str,
}

const HEIGHT: AxisNames = AxisNames {
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
    fn new(names: &AxisNames, size: usize, i: usize, p: &PoolParams) -> Result<Axis, ConvError> {
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
    fn start(&self, o: usize) -> isize {
        (o * self.stride) as isize - self.pad_a as isize
    }

    /// The input index tap `t` of window `o` reads, if it is inside the input.
    fn tap(&self, o: usize, t: usize) -> Option<usize> {
        let i = self.start(o) + (t * self.dilation) as isize;
        (i >= 0 && (i as usize) < self.size).then_some(i as usize)
    }

    /// The windows `lo..hi` whose every tap is inside the input.
    fn interior(&self) -> (usize, usize) {
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
    fn padded_count(&self, o: usize) -> usize {
        let start = self.start(o);
        let end = (start + self.kernel as isize).min((self.size + self.pad_b) as isize);
        (end - start) as usize
    }
}

/// A validated pooling call.
#[derive(Clone, Copy, Debug)]
struct PoolGeometry {
    planes: usize,
    h: Axis,
    w: Axis,
    count_include_pad: bool,
}

impl PoolGeometry {
    fn new(input_shape: [usize; 4], params: &PoolParams) -> Result<Self, ConvError> {
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

    fn plane_in(&self) -> usize {
        self.h.size * self.w.size
    }
    fn plane_out(&self) -> usize {
        self.h.out * self.w.out
    }

    /// Average pooling's divisor for window `(oy, ox)` covering `count` input elements.
    fn divisor(&self, oy: usize, ox: usize, count: usize) -> f32 {
        let d = if self.count_include_pad { self.h.padded_count(oy) * self.w.padded_count(ox) } else { count };
        d as f32
    }

    /// The input taps of window `(oy, ox)` inside the input, in row-major
    /// window order, as indices into the plane.
    fn taps(&self, oy: usize, ox: usize) -> impl Iterator<Item = usize> + '_ {
        let w = self.w.size;
        (0..self.h.kernel)
            .filter_map(move |t| self.h.tap(oy, t))
            .flat_map(move |iy| (0..self.w.kernel).filter_map(move |u| self.w.tap(ox, u)).map(move |ix| iy * w + ix))
    }
}

/// The output shape `[n, c, h_out, w_out]` of [`max_pool2d`] or
/// [`avg_pool2d`] on an input of `input_shape`.
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Max,
    Avg,
}

/// Max pooling: each output is the largest input element of its window;
/// padded positions are ignored. A NaN in a window makes its output NaN.
/// `output` has the shape [`pool2d_output_shape`] gives.
///
/// ```
/// use convgemm::{max_pool2d, PoolParams};
/// let x = [1.0, 5.0, 2.0, 0.0,
///          3.0, 4.0, 8.0, 1.0,
///          0.0, 0.0, 1.0, 1.0,
///          9.0, 0.0, 1.0, 2.0];
/// let mut y = [0.0; 4];
/// max_pool2d(&x, [1, 1, 4, 4], &PoolParams::new([2, 2]), &mut y).unwrap();
/// assert_eq!(y, [5.0, 8.0, 9.0, 2.0]);
/// ```
///
/// # Errors
/// A zero kernel, stride or dilation, a padding over half the dilated
/// kernel, an empty height or width, a kernel larger than the padded input,
/// or a buffer whose length is not its shape's product. `output` is then
/// untouched.
pub fn max_pool2d(
    input: &[f32],
    input_shape: [usize; 4],
    params: &PoolParams,
    output: &mut [f32],
) -> Result<(), ConvError> {
    forward(Kind::Max, Isa::detect(), input, input_shape, params, output)
}

/// Average pooling: each output is the sum of its window's input elements
/// (in row-major window order, in f32) divided by the window's size, which
/// counts padded positions when `params.count_include_pad` (clipped to the
/// padded input, as PyTorch does in `ceil_mode`), or only the input elements
/// it covers when not. `params.dilation` must be `[1, 1]`.
///
/// ```
/// use convgemm::{avg_pool2d, PoolParams};
/// let x = [1.0, 3.0, 2.0, 2.0,
///          5.0, 7.0, 0.0, 4.0];
/// let mut y = [0.0; 2];
/// avg_pool2d(&x, [1, 1, 2, 4], &PoolParams::new([2, 2]), &mut y).unwrap();
/// assert_eq!(y, [4.0, 2.0]);
/// ```
///
/// # Errors
/// Those of [`max_pool2d`], and a dilation other than 1. `output` is then
/// untouched.
pub fn avg_pool2d(
    input: &[f32],
    input_shape: [usize; 4],
    params: &PoolParams,
    output: &mut [f32],
) -> Result<(), ConvError> {
    forward(Kind::Avg, Isa::detect(), input, input_shape, params, output)
}

/// The gradient of [`max_pool2d`]: each output gradient goes to its window's
/// arg-max (the first maximum in row-major window order; where the window
/// holds NaNs, the last NaN, as PyTorch's `v > max || isnan(v)` scan picks),
/// summed where windows overlap. The arg-max is recomputed from `input`, so
/// pass the forward's input. A window with no input element (possible only
/// with dilation) passes nothing back. `grad_input` is overwritten.
///
/// ```
/// use convgemm::{max_pool2d_backward, PoolParams};
/// let x = [1.0, 5.0,
///          5.0, 2.0];
/// let mut gx = [0.0; 4];
/// max_pool2d_backward(&x, [1, 1, 2, 2], &[1.5], &PoolParams::new([2, 2]), &mut gx).unwrap();
/// assert_eq!(gx, [0.0, 1.5, 0.0, 0.0]); // the tie goes to the first 5.0
/// ```
///
/// # Errors
/// Those of [`max_pool2d`], with `grad_output` checked against the output
/// shape and `grad_input` against `input_shape`. `grad_input` is then untouched.
pub fn max_pool2d_backward(
    input: &[f32],
    input_shape: [usize; 4],
    grad_output: &[f32],
    params: &PoolParams,
    grad_input: &mut [f32],
) -> Result<(), ConvError> {
    let g = PoolGeometry::new(input_shape, params)?;
    check_len("input", input.len(), g.planes * g.plane_in())?;
    check_len("grad_output", grad_output.len(), g.planes * g.plane_out())?;
    check_len("grad_input", grad_input.len(), g.planes * g.plane_in())?;
    let plane = |gi: &mut [f32], x: &[f32], go: &[f32]| {
        gi.fill(0.0);
        for oy in 0..g.h.out {
            for ox in 0..g.w.out {
                let mut best: Option<(usize, f32)> = None;
                for i in g.taps(oy, ox) {
                    let v = x[i];
                    if best.is_none_or(|(_, m)| v > m || v.is_nan()) {
                        best = Some((i, v));
                    }
                }
                if let Some((i, _)) = best {
                    gi[i] += go[oy * g.w.out + ox];
                }
            }
        }
    };
    for_each_plane(&g, grad_input, input, grad_output, plane);
    Ok(())
}

/// The gradient of [`avg_pool2d`]: each output gradient, divided by its
/// window's divisor, is added to every input element of the window, in
/// row-major output order. `grad_input` is overwritten.
///
/// ```
/// use convgemm::{avg_pool2d_backward, PoolParams};
/// let mut gx = [0.0; 4];
/// avg_pool2d_backward([1, 1, 2, 2], &[2.0], &PoolParams::new([2, 2]), &mut gx).unwrap();
/// assert_eq!(gx, [0.5; 4]);
/// ```
///
/// # Errors
/// Those of [`avg_pool2d`], with `grad_output` checked against the output
/// shape and `grad_input` against `input_shape`. `grad_input` is then untouched.
pub fn avg_pool2d_backward(
    input_shape: [usize; 4],
    grad_output: &[f32],
    params: &PoolParams,
    grad_input: &mut [f32],
) -> Result<(), ConvError> {
    check_avg(params)?;
    let g = PoolGeometry::new(input_shape, params)?;
    check_len("grad_output", grad_output.len(), g.planes * g.plane_out())?;
    check_len("grad_input", grad_input.len(), g.planes * g.plane_in())?;
    let plane = |gi: &mut [f32], go: &[f32], _: &[f32]| {
        gi.fill(0.0);
        for oy in 0..g.h.out {
            for ox in 0..g.w.out {
                let count = g.taps(oy, ox).count();
                let val = go[oy * g.w.out + ox] / g.divisor(oy, ox, count);
                for i in g.taps(oy, ox) {
                    gi[i] += val;
                }
            }
        }
    };
    for_each_plane(&g, grad_input, grad_output, &[], plane);
    Ok(())
}

/// Global average pooling, `[n, c, h, w] -> [n, c, 1, 1]`: the mean of each
/// plane. Sums in f64 over eight interleaved partial sums (element `i` into
/// sum `i % 8`, combined pairwise), so it is both accurate and the same on
/// every machine; the mean is rounded to f32 once.
///
/// ```
/// use convgemm::global_avg_pool2d;
/// let x = [1.0, 2.0, 3.0, 4.0, /* second channel */ 10.0, 10.0, 10.0, 10.0];
/// let mut y = [0.0; 2];
/// global_avg_pool2d(&x, [1, 2, 2, 2], &mut y).unwrap();
/// assert_eq!(y, [2.5, 10.0]);
/// ```
///
/// # Errors
/// An empty height or width, an element count that overflows, or a buffer
/// whose length is not its shape's product (`output` has `n * c` elements).
/// `output` is then untouched.
pub fn global_avg_pool2d(input: &[f32], input_shape: [usize; 4], output: &mut [f32]) -> Result<(), ConvError> {
    let [_, _, h, w] = input_shape;
    PoolGeometry::new(input_shape, &PoolParams::new([h.max(1), w.max(1)]))?;
    let planes = input_shape[0] * input_shape[1];
    check_len("input", input.len(), planes * h * w)?;
    check_len("output", output.len(), planes)?;
    for (y, x) in output.iter_mut().zip(input.chunks_exact(h * w)) {
        let mut lanes = [0f64; 8];
        let mut chunks = x.chunks_exact(8);
        for c in &mut chunks {
            for (l, &v) in lanes.iter_mut().zip(c) {
                *l += v as f64;
            }
        }
        for (l, &v) in lanes.iter_mut().zip(chunks.remainder()) {
            *l += v as f64;
        }
        let [a, b, c, d, e, f, g, k] = lanes;
        let sum = ((a + b) + (c + d)) + ((e + f) + (g + k));
        *y = (sum / (h * w) as f64) as f32;
    }
    Ok(())
}

fn check_avg(params: &PoolParams) -> Result<(), ConvError> {
    for (name, d) in [("dilation[0]", params.dilation[0]), ("dilation[1]", params.dilation[1])] {
        if d != 1 {
            return Err(ConvError::BadParameter { name, value: d, requirement: "1 for average pooling" });
        }
    }
    Ok(())
}

/// Below this many elements (all buffers together) the planes run on the
/// calling thread; above it, each parallel task takes at least this many.
const PARALLEL_MIN_ELEMENTS: usize = 1 << 15;

/// Runs `f(out_plane, a_plane, b_plane)` for every plane, in parallel when
/// the call is large enough (tasks of whole planes, at least
/// `PARALLEL_MIN_ELEMENTS / 4` elements each, so that small planes are not
/// one task each). `out` holds planes of `out.len() / planes` elements, and
/// likewise `a` and `b` (which may be empty).
fn for_each_plane<F>(g: &PoolGeometry, out: &mut [f32], a: &[f32], b: &[f32], f: F)
where
    F: Fn(&mut [f32], &[f32], &[f32]) + Sync,
{
    if g.planes == 0 {
        return;
    }
    let (o, pa, pb) = (out.len() / g.planes, a.len() / g.planes, b.len() / g.planes);
    let work = out.len() + a.len() + b.len();
    let run = |first: usize, y: &mut [f32]| {
        for (p, y) in (first..).zip(y.chunks_mut(o)) {
            f(y, chunk(a, pa, p), chunk(b, pb, p));
        }
    };
    if g.planes > 1 && work >= PARALLEL_MIN_ELEMENTS && rayon::current_num_threads() > 1 {
        let per_task = (PARALLEL_MIN_ELEMENTS / 4).div_ceil(o + pa + pb).clamp(1, g.planes);
        out.par_chunks_mut(o * per_task).enumerate().for_each(|(t, y)| run(t * per_task, y));
    } else {
        run(0, out);
    }
}

/// Plane `p` of `s`, planes of `len` elements (none when `s` is empty).
fn chunk(s: &[f32], len: usize, p: usize) -> &[f32] {
    if len == 0 { &[] } else { &s[p * len..][..len] }
}

/// The forward pass of either kind, on the lanes of `isa` where it has a
/// vector path (the bits do not depend on it).
fn forward(
    kind: Kind,
    isa: Isa,
    input: &[f32],
    input_shape: [usize; 4],
    params: &PoolParams,
    output: &mut [f32],
) -> Result<(), ConvError> {
    if kind == Kind::Avg {
        check_avg(params)?;
    }
    let g = PoolGeometry::new(input_shape, params)?;
    check_len("input", input.len(), g.planes * g.plane_in())?;
    check_len("output", output.len(), g.planes * g.plane_out())?;
    if !isa.is_available() {
        return Err(ConvError::IsaUnavailable { isa: isa.name() });
    }
    let plane = |y: &mut [f32], x: &[f32], _: &[f32]| forward_plane(kind, isa, &g, x, y);
    for_each_plane(&g, output, input, &[], plane);
    Ok(())
}

fn forward_plane(kind: Kind, isa: Isa, g: &PoolGeometry, x: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    match isa {
        // SAFETY: `forward` checked that the path is available.
        Isa::Avx2Fma => return unsafe { avx2::forward_plane(kind, g, x, y) },
        // SAFETY: as above; the AVX-512 path has AVX-512F and AVX2.
        Isa::Avx512 => return unsafe { avx512::forward_plane(kind, g, x, y) },
        _ => {}
    }
    let _ = isa;
    // SAFETY: the portable rows need no CPU feature.
    unsafe { body::<Portable>(kind, g, x, y) }
}

/// What a whole-plane max kernel did. (Only the x86-64 kernels compute
/// planes; NEON declines them all.)
#[derive(Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
enum MaxPlane {
    /// The plane is computed.
    Done,
    /// The plane holds a NaN or a −0: it needs the exact row-major scan.
    OrderMatters,
    /// The kernel does not take this geometry; nothing is known of the plane.
    Declined,
}

/// Vector kernels for parts of the forward pass; each may decline.
trait RowKernel {
    /// Computes the max-pooled plane `y` from the input plane `x` if no
    /// window holds a NaN or a −0 (then the scan order cannot change the
    /// bits, and the kernel may take any); otherwise says why not, leaving
    /// `y` unspecified. `scratch` is a reusable buffer.
    ///
    /// # Safety
    /// The CPU has the implementation's instructions; `x` and `y` are one
    /// plane of `g`'s input and output.
    unsafe fn max_plane(g: &PoolGeometry, x: &[f32], y: &mut [f32], scratch: &mut Vec<f32>) -> MaxPlane;

    /// Writes `out[i]`, the exact row-major max scan (`MAX_NAN`) of interior
    /// window `(oy, lo + i)`, for every `i`, and returns `true`; or returns
    /// `false`, writing nothing.
    ///
    /// # Safety
    /// The CPU has the implementation's instructions; `lo .. lo + out.len()`
    /// are interior windows of `g` (all taps inside the input), and `x` is
    /// one plane of its input.
    unsafe fn exact_max_row(g: &PoolGeometry, x: &[f32], oy: usize, lo: usize, out: &mut [f32]) -> bool;
}

/// No vector kernel: every row takes the portable loops, which the compiler
/// vectorises for the target it builds for.
struct Portable;

impl RowKernel for Portable {
    #[inline(always)]
    unsafe fn max_plane(_: &PoolGeometry, _: &[f32], _: &mut [f32], _: &mut Vec<f32>) -> MaxPlane {
        MaxPlane::Declined
    }
    #[inline(always)]
    unsafe fn exact_max_row(_: &PoolGeometry, _: &[f32], _: usize, _: usize, _: &mut [f32]) -> bool {
        false
    }
}

/// The forward pass of one plane: for max, a plane without NaN or −0 (the
/// common case) takes `I`'s whole-plane kernel, or else the plain `v > m`
/// scan, which compiles to one `max` instruction per tap; both may scan in
/// any order. Other planes take the row-major scan that also propagates NaN.
/// All give the same bits where they apply.
///
/// # Safety
/// The CPU has `I`'s instructions.
#[inline(always)]
unsafe fn body<I: RowKernel>(kind: Kind, g: &PoolGeometry, x: &[f32], y: &mut [f32]) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match kind {
            Kind::Max => match with_scratch(|scratch| I::max_plane(g, x, y, scratch)) {
                MaxPlane::Done => {}
                MaxPlane::OrderMatters => plane_body::<MAX_NAN, I>(g, x, y),
                MaxPlane::Declined if order_matters(x) => plane_body::<MAX_NAN, I>(g, x, y),
                MaxPlane::Declined => plane_body::<MAX, I>(g, x, y),
            },
            Kind::Avg => plane_body::<SUM, I>(g, x, y),
        }
    }
}

/// Whether `x` holds a NaN or a −0: the values for which the maximum of a
/// window depends on the order of the scan (which NaN; which zero). Without
/// them, equal values have equal bits, so any order gives the same result.
/// Two integer reductions: NaN is the only value
/// whose bits shifted left (sign dropped) exceed those of infinity, and −0
/// the only one whose bits with the sign flipped are 0.
#[inline(always)]
fn order_matters(x: &[f32]) -> bool {
    // Integer max/min reductions may be reassociated, so this vectorises.
    let (mut high, mut low) = (0u32, u32::MAX);
    for v in x {
        high = high.max(v.to_bits() << 1);
        low = low.min(v.to_bits() ^ 0x8000_0000);
    }
    high > f32::INFINITY.to_bits() << 1 || low == 0
}

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod separable;

/// How a window's elements are combined (the const parameter of the scans).
const SUM: u8 = 0;
/// The maximum, for planes without NaN or −0 (see [`order_matters`]):
/// `v > m`, exactly one `max` instruction, in any scan order.
const MAX: u8 = 1;
/// The maximum with PyTorch's full rule `v > m || isnan(v)`: the first
/// maximum, or the last NaN.
const MAX_NAN: u8 = 2;

/// One step of a window's scan.
#[inline(always)]
fn combine<const OP: u8>(acc: f32, v: f32) -> f32 {
    match OP {
        SUM => acc + v,
        MAX => {
            if v > acc {
                v
            } else {
                acc
            }
        }
        _ => {
            if v > acc || v.is_nan() {
                v
            } else {
                acc
            }
        }
    }
}

/// `acc[i] = combine(acc[i], src[i * S])` for every `i`: one tap of a row of
/// windows. Written so the compiler vectorises it over `i`.
#[inline(always)]
fn combine_row<const OP: u8, const S: usize>(acc: &mut [f32], src: &[f32], stride: usize) {
    let s = if S == 0 { stride } else { S };
    assert!(acc.is_empty() || (acc.len() - 1) * s < src.len(), "tap row out of bounds");
    for (i, a) in acc.iter_mut().enumerate() {
        // SAFETY: i * s <= (acc.len() - 1) * s < src.len(), asserted above.
        let v = unsafe { *src.get_unchecked(i * s) };
        *a = combine::<OP>(*a, v);
    }
}

/// One plane of the forward pass. The windows whose columns are all inside
/// the input (the interior) are computed a row of windows at a time, by `I`
/// or else tap by tap in row-major window order over a row of accumulators,
/// each output column a lane; the border windows go through the scalar scan.
/// All scan each window in row-major order (or, for `MAX`, in an order that
/// cannot change the bits), so they agree bit for bit.
///
/// # Safety
/// The CPU has `I`'s instructions.
#[inline(always)]
unsafe fn plane_body<const OP: u8, I: RowKernel>(g: &PoolGeometry, x: &[f32], y: &mut [f32]) {
    let (w, ow, sw) = (g.w.size, g.w.out, g.w.stride);
    let (lo, hi) = g.w.interior();
    let init = if OP == SUM { 0.0 } else { f32::NEG_INFINITY };
    for (oy, row_out) in y.chunks_exact_mut(ow).enumerate() {
        let divisor = if OP == SUM && hi > lo {
            let rows = (0..g.h.kernel).filter_map(|t| g.h.tap(oy, t)).count();
            g.divisor(oy, lo, rows * g.w.kernel)
        } else {
            1.0
        };
        let inner = &mut row_out[lo..hi];
        // SAFETY: `I`'s instructions are the caller's contract; lo..hi are
        // the interior windows and `x` is a plane of `g`'s input.
        let vector = OP == MAX_NAN && unsafe { I::exact_max_row(g, x, oy, lo, inner) };
        if hi > lo && !vector {
            inner.fill(init);
            for iy in (0..g.h.kernel).filter_map(|t| g.h.tap(oy, t)) {
                let row = &x[iy * w..][..w];
                for u in 0..g.w.kernel {
                    // Window `lo` starts inside the input, so this is >= 0.
                    let first = (g.w.start(lo) + (u * g.w.dilation) as isize) as usize;
                    match sw {
                        1 => combine_row::<OP, 1>(inner, &row[first..], 1),
                        2 => combine_row::<OP, 2>(inner, &row[first..], 2),
                        s => combine_row::<OP, 0>(inner, &row[first..], s),
                    }
                }
            }
            if OP == SUM {
                inner.iter_mut().for_each(|v| *v /= divisor);
            }
        }
        for ox in (0..lo).chain(hi..ow) {
            let mut acc = init;
            let mut count = 0;
            for i in g.taps(oy, ox) {
                acc = combine::<OP>(acc, x[i]);
                count += 1;
            }
            row_out[ox] = if OP == SUM { acc / g.divisor(oy, ox, count) } else { acc };
        }
    }
}

/// Runs `f` with this thread's scratch row buffer (a fresh one if it is in
/// use further up the stack).
fn with_scratch<R>(f: impl FnOnce(&mut Vec<f32>) -> R) -> R {
    use std::cell::RefCell;
    thread_local! {
        static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) => f(&mut v),
        Err(_) => f(&mut Vec::new()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every ISA path gives the same bits as the portable one (max is exact;
    /// the average sums in the same order on every lane). NaNs count as
    /// equal: Rust leaves the sign and payload of a NaN result unspecified.
    #[test]
    fn isa_paths_bit_identical() {
        // Miri interprets every element: a smaller problem there.
        let shape = if cfg!(miri) { [1, 1, 9, 37] } else { [2, 3, 9, 37] };
        let len: usize = shape.iter().product();
        let smooth: Vec<f32> = (0..len).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 37.0).collect();
        // Coarse values hold ties between +0 and -0; one NaN.
        let mut coarse: Vec<f32> = smooth.iter().map(|v| (v / 20.0).round()).collect();
        coarse[100] = f32::NAN;
        let cases = [(3, 2, 1, false), (2, 2, 0, true), (3, 1, 1, true), (5, 3, 2, true)];
        let bits = |v: &[f32]| v.iter().map(|f| if f.is_nan() { u32::MAX } else { f.to_bits() }).collect::<Vec<_>>();
        for &(k, s, p, ceil) in &cases[..if cfg!(miri) { 2 } else { 4 }] {
            let mut params = PoolParams::new([k, k]);
            params.stride = [s, s];
            params.padding = [p, p, p, p];
            params.ceil_mode = ceil;
            let n = pool2d_output_shape(shape, &params).unwrap().iter().product();
            for (kind, x) in [(Kind::Max, &smooth), (Kind::Avg, &smooth), (Kind::Max, &coarse), (Kind::Avg, &coarse)] {
                let mut want = vec![0.0; n];
                forward(kind, Isa::Portable, x, shape, &params, &mut want).unwrap();
                for isa in Isa::available() {
                    let mut got = vec![0.0; n];
                    forward(kind, isa, x, shape, &params, &mut got).unwrap();
                    assert_eq!(bits(&got), bits(&want), "{isa:?} k{k} s{s} p{p} ceil {ceil}");
                }
            }
        }
    }

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
