//! Pointwise convolution: a 1×1 kernel of stride 1 without padding reads
//! each group's channels as the GEMM's `K × N` B matrix, in place.

use crate::gemm::StridedSource;
use crate::geometry::ConvGeometry;

/// Whether the image itself is the B matrix: a 1×1 kernel, stride 1, no padding.
pub(crate) fn applies(geo: &ConvGeometry) -> bool {
    geo.kh == 1 && geo.kw == 1 && geo.stride_h == 1 && geo.stride_w == 1 && geo.params().padding == [0; 4]
}

/// `f(b)` with `b` the group's `channels` (`[c_in/groups, h, w]` in the
/// geometry's layout, from their first float) from pixel `first` on read
/// as the `K × N` matrix B (`N` at most the plane's pixels past `first`):
/// row-major in NCHW, column-major with a column stride of `c_in` in
/// channels-last (where the image is the transposed matrix, read in place).
///
/// # Panics
/// If [`applies`] is false for `geo`, `channels` is not one group's input
/// or `first` is past the plane.
pub(crate) fn with_source<R>(
    geo: &ConvGeometry,
    channels: &[f32],
    first: usize,
    f: impl FnOnce(&StridedSource) -> R,
) -> R {
    let at = geo.input_strides();
    let span = at.span(geo.c_in_per_group(), geo.h_in, geo.w_in);
    assert!(applies(geo) && channels.len() >= span && first <= geo.h_in * geo.w_in, "a pointwise group's input");
    // SAFETY: with a 1×1 stride-1 unpadded kernel, pixel p = y·w + x of the
    // group's channel c is at c·at.c + p·at.x in both layouts (at.y = w·at.x),
    // inside the span asserted above for every pixel p ≥ first of the
    // plane; the channels outlive `f`.
    f(&unsafe { StridedSource::new(channels.as_ptr().wrapping_add(first * at.x), at.c as isize, at.x as isize) })
}
