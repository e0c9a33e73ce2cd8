//! Explicit im2col: the `K × N` column matrix of one (image, group) built
//! whole (by the public building block's routine), then multiplied. The
//! simple path the others are tested against.

use crate::gemm::StridedSource;
use crate::geometry::ConvGeometry;
use crate::im2col::im2col_image;

/// `f(b)` with `b` the im2col matrix of the group's `channels`, written
/// into `cols`, as the GEMM's B source.
pub(crate) fn with_columns<R>(
    geo: &ConvGeometry,
    channels: &[f32],
    cols: &mut Vec<f32>,
    f: impl FnOnce(&StridedSource) -> R,
) -> R {
    let (k, n) = (geo.patch_len(), geo.out_pixels());
    cols.resize(k * n, 0.0);
    im2col_image(geo, channels, 0..geo.c_in_per_group(), cols);
    // SAFETY: `cols` is K × N row-major and outlives `f`'s use of the source.
    f(&unsafe { StridedSource::new(cols.as_ptr(), n as isize, 1) })
}
