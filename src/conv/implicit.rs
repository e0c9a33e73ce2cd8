//! Implicit im2col: an NCHW image read as the im2col matrix of one group,
//! packed straight into B panels (stride, zero padding and dilation applied
//! while packing), so the `K × N` column matrix is never built.

use super::params::ConvGeometry;
use crate::gemm::pack::{PanelSource, with_panel_width};

/// The `K × N` im2col matrix of one (image, group), never materialised:
/// row `(c·kh + u)·kw + v`, column `oy·w_out + ox` is
/// `X[c, oy·sh + u·dh − pad_top, ox·sw + v·dw − pad_left]` or 0 in the padding.
pub(crate) struct ImageSource<'a> {
    geo: &'a ConvGeometry,
    /// The group's `c_in / groups` channels of one image, `[cg, h, w]`.
    channels: &'a [f32],
}

impl<'a> ImageSource<'a> {
    pub(crate) fn new(geo: &'a ConvGeometry, channels: &'a [f32]) -> Self {
        debug_assert_eq!(channels.len(), geo.c_in_per_group() * geo.h_in * geo.w_in);
        ImageSource { geo, channels }
    }
}

impl PanelSource for ImageSource<'_> {
    fn pack(&self, panel: usize, k0: usize, kc: usize, j0: usize, w: usize, dst: &mut [f32]) {
        with_panel_width!(panel, pack_image(self, k0, kc, j0, w, dst))
    }
}

/// A run of a panel's columns that lie in one output row.
#[derive(Clone, Copy, Default)]
struct Segment {
    oy: usize,
    ox: usize,
    len: usize,
    col: usize,
}

fn pack_image<const P: usize>(src: &ImageSource, k0: usize, kc: usize, j0: usize, w: usize, dst: &mut [f32]) {
    let g = src.geo;
    let (h_in, w_in, w_out) = (g.h_in as isize, g.w_in, g.w_out);
    let taps = g.kh * g.kw;
    for (p, panel) in dst.chunks_exact_mut(kc * P).take(w.div_ceil(P)).enumerate() {
        let jp = j0 + p * P;
        let wp = P.min(j0 + w - jp);
        let mut segs = [Segment::default(); 16];
        let mut n_segs = 0;
        let (mut oy, mut ox, mut col) = (jp / w_out, jp % w_out, 0);
        while col < wp {
            let len = (w_out - ox).min(wp - col);
            segs[n_segs] = Segment { oy, ox, len, col };
            n_segs += 1;
            (oy, ox, col) = (oy + 1, 0, col + len);
        }
        let segs = &segs[..n_segs];

        let (mut c, r) = (k0 / taps, k0 % taps);
        let (mut u, mut v) = (r / g.kw, r % g.kw);
        for row in panel.chunks_exact_mut(P) {
            row[wp..].fill(0.0);
            let plane = &src.channels[c * g.h_in * w_in..(c + 1) * g.h_in * w_in];
            for s in segs {
                let out = &mut row[s.col..s.col + s.len];
                let iy = (s.oy * g.stride_h + u * g.dilation_h) as isize - g.pad_top as isize;
                if iy < 0 || iy >= h_in {
                    out.fill(0.0);
                    continue;
                }
                let line = &plane[iy as usize * w_in..(iy as usize + 1) * w_in];
                let ix0 = (s.ox * g.stride_w + v * g.dilation_w) as isize - g.pad_left as isize;
                if g.stride_w == 1 {
                    // Columns ix0 .. ix0 + len, of which lo .. hi are inside the row.
                    let lo = (-ix0).clamp(0, s.len as isize) as usize;
                    let hi = (w_in as isize - ix0).clamp(lo as isize, s.len as isize) as usize;
                    if lo == 0 && hi == P {
                        let src_run: &[f32; P] = line[ix0 as usize..][..P].try_into().expect("P floats");
                        let dst_run: &mut [f32; P] = out.try_into().expect("P floats");
                        *dst_run = *src_run;
                    } else {
                        out[..lo].fill(0.0);
                        if hi > lo {
                            let start = (ix0 + lo as isize) as usize;
                            out[lo..hi].copy_from_slice(&line[start..start + (hi - lo)]);
                        }
                        out[hi..].fill(0.0);
                    }
                } else {
                    for (t, x) in out.iter_mut().enumerate() {
                        let ix = ix0 + (t * g.stride_w) as isize;
                        *x = if ix >= 0 && (ix as usize) < w_in { line[ix as usize] } else { 0.0 };
                    }
                }
            }
            v += 1;
            if v == g.kw {
                v = 0;
                u += 1;
                if u == g.kh {
                    u = 0;
                    c += 1;
                }
            }
        }
    }
}
