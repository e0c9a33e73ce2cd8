//! Pointwise convolution: a 1×1 kernel of stride 1 without padding reads
//! each group's channels as the GEMM's `K × N` B matrix, in place.

use crate::gemm::StridedSource;
use crate::geometry::ConvGeometry;

/// Whether the image itself is the B matrix: a 1×1 kernel, stride 1, no padding.
pub(crate) fn applies(geo: &ConvGeometry) -> bool {
    geo.kh == 1 && geo.kw == 1 && geo.stride_h == 1 && geo.stride_w == 1 && geo.params().padding == [0; 4]
}

/// `f(b)` with `b` the group's `channels` (`[c_in/groups, h, w]`) read as
/// the `K × N` matrix B.
///
/// # Panics
/// If [`applies`] is false for `geo` or `channels` is not one group's input.
pub(crate) fn with_source<R>(geo: &ConvGeometry, channels: &[f32], f: impl FnOnce(&StridedSource) -> R) -> R {
    assert!(applies(geo) && channels.len() == geo.patch_len() * geo.out_pixels(), "a pointwise group's input");
    // SAFETY: with a 1×1 stride-1 unpadded kernel the group's channels are
    // the K × N matrix, row-major (asserted above), and outlive `f`.
    f(&unsafe { StridedSource::new(channels.as_ptr(), geo.out_pixels() as isize, 1) })
}
