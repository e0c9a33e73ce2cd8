//! The forward pools: max and average (the scans of `scan.rs`, on the lanes
//! of the chosen path) and the global average.

use super::params::{PoolGeometry, PoolParams, check_avg};
use super::scan::{Kind, Portable, body};
use super::{channels_last, for_each_plane};
use crate::check::check_len;
use crate::error::ConvError;
use crate::isa::Isa;
use crate::layout::Layout;
use crate::simd::{self, Lanes, WithLanes};

/// Max pooling: each output is the largest input element of its window;
/// padded positions are ignored. A NaN in a window makes its output NaN.
/// `output` has the shape [`pool2d_output_shape`](crate::pool2d_output_shape) gives.
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
    global_avg_pool2d_with_layout(input, input_shape, Layout::Nchw, output)
}

/// [`global_avg_pool2d`] of an input in `layout` (logical shape `[n, c, h,
/// w]` either way; the `[n, c, 1, 1]` output has the same order in both).
/// The same sums in the same order, so the same bits in both layouts.
///
/// ```
/// use convgemm::{global_avg_pool2d_with_layout, Layout};
/// // [1, 2, 1, 2] channels-last: pixel 0 holds (1, 10), pixel 1 holds (3, 20).
/// let mut y = [0.0; 2];
/// global_avg_pool2d_with_layout(&[1.0, 10.0, 3.0, 20.0], [1, 2, 1, 2], Layout::Nhwc, &mut y)?;
/// assert_eq!(y, [2.0, 15.0]);
/// # Ok::<(), convgemm::ConvError>(())
/// ```
///
/// # Errors
/// As [`global_avg_pool2d`].
pub fn global_avg_pool2d_with_layout(
    input: &[f32],
    input_shape: [usize; 4],
    layout: Layout,
    output: &mut [f32],
) -> Result<(), ConvError> {
    let [_, c, h, w] = input_shape;
    PoolGeometry::new(input_shape, &PoolParams::new([h.max(1), w.max(1)]))?;
    let planes = input_shape[0] * input_shape[1];
    check_len("input", input.len(), planes * h * w)?;
    check_len("output", output.len(), planes)?;
    if planes == 0 {
        return Ok(());
    }
    // Per channel, eight f64 partial sums: pixel i into sum i % 8.
    let mean = |l: &[f64; 8]| {
        let [a, b, c, d, e, f, g, k] = *l;
        let sum = ((a + b) + (c + d)) + ((e + f) + (g + k));
        (sum / (h * w) as f64) as f32
    };
    for (y, image) in output.chunks_exact_mut(c).zip(input.chunks_exact(c * h * w)) {
        match layout {
            Layout::Nchw => {
                for (y, plane) in y.iter_mut().zip(image.chunks_exact(h * w)) {
                    let mut l = [0f64; 8];
                    let mut chunks = plane.chunks_exact(8);
                    for eight in &mut chunks {
                        l.iter_mut().zip(eight).for_each(|(l, &v)| *l += v as f64);
                    }
                    l.iter_mut().zip(chunks.remainder()).for_each(|(l, &v)| *l += v as f64);
                    *y = mean(&l);
                }
            }
            _ => {
                // Blocks of channels, each down every pixel: partial sums on the stack.
                const BLOCK: usize = 64;
                for c0 in (0..c).step_by(BLOCK) {
                    let width = BLOCK.min(c - c0);
                    let mut lanes = [[0f64; 8]; BLOCK];
                    for (i, pixel) in image.chunks_exact(c).enumerate() {
                        lanes.iter_mut().zip(&pixel[c0..c0 + width]).for_each(|(l, &v)| l[i % 8] += v as f64);
                    }
                    y[c0..c0 + width].iter_mut().zip(&lanes).for_each(|(y, l)| *y = mean(l));
                }
            }
        }
    }
    Ok(())
}

/// [`max_pool2d`] on a chosen path (the unit tests run every path).
#[cfg(test)]
pub(crate) fn max_pool2d_with(
    isa: Isa,
    input: &[f32],
    input_shape: [usize; 4],
    params: &PoolParams,
    output: &mut [f32],
) -> Result<(), ConvError> {
    forward(Kind::Max, isa, input, input_shape, params, output)
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
    if params.layout == Layout::Nhwc {
        channels_last::forward(kind, &g, input_shape[1], input, output);
        return Ok(());
    }
    let plane = |y: &mut [f32], x: &[f32], _: &[f32]| forward_plane(kind, isa, &g, x, y);
    for_each_plane(&g, output, input, &[], plane);
    Ok(())
}

/// One plane of the forward pass on the lanes of `isa`: the portable
/// scans, with the x86-64 row kernels on the paths that have them.
fn forward_plane(kind: Kind, isa: Isa, g: &PoolGeometry, x: &[f32], y: &mut [f32]) {
    let done = simd::dispatch(isa, Plane { kind, g, x, y });
    debug_assert!(done.is_ok(), "`forward` checked that the path is available");
}

/// The arguments of [`forward_plane`], as code generic over the lanes.
struct Plane<'a> {
    kind: Kind,
    g: &'a PoolGeometry,
    x: &'a [f32],
    y: &'a mut [f32],
}

impl WithLanes for Plane<'_> {
    type Output = ();

    #[inline(always)]
    fn run<L: Lanes>(self, _: L) {
        // SAFETY: the portable rows need no CPU feature.
        unsafe { body::<Portable>(self.kind, self.g, self.x, self.y) }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn avx2(self, _: simd::x86::Avx2) {
        // SAFETY: inside the AVX2 lanes' features (`simd::dispatch`).
        unsafe { body::<super::avx2::Avx2Rows>(self.kind, self.g, self.x, self.y) }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn avx512(self, lanes: simd::x86::Avx512) {
        // SAFETY: inside the AVX-512 lanes' features (`simd::dispatch`), and
        // DQ where its token says so.
        unsafe {
            match lanes.dq() {
                Some(_) => super::avx512::forward_plane_dq(self.kind, self.g, self.x, self.y),
                None => body::<super::avx512::Avx512Rows<false>>(self.kind, self.g, self.x, self.y),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::params::pool2d_output_shape;
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
}
