//! Implicit im2col: an NCHW image read as the im2col matrix of one group,
//! packed straight into B panels (stride, zero padding and dilation applied
//! while packing), so the `K × N` column matrix is never built.

use super::params::ConvGeometry;
use crate::gemm::loops::KC;
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

/// One row of the im2col matrix: kernel tap `(c, u, v)` as offsets from a
/// window's top-left corner.
#[derive(Clone, Copy, Default)]
struct Tap {
    /// `c·h·w + dy·w + dx`: where the tap reads, relative to the corner.
    offset: isize,
    /// `u·dilation_h − pad_top`.
    dy: isize,
    /// `v·dilation_w − pad_left`.
    dx: isize,
}

/// Packs one block of the implicit im2col matrix. The block's taps are
/// tabulated once; per panel, the window corners of its `P` output pixels
/// are computed once, with the range of taps that stay inside the image.
/// Each panel row is then a straight copy of `P` floats per output row the
/// panel touches (stride 1), `P` indexed loads (other strides), or, only for
/// taps that reach into the padding, a bounds-checked fill.
fn pack_image<const P: usize>(src: &ImageSource, k0: usize, kc: usize, j0: usize, w: usize, dst: &mut [f32]) {
    if kc == 0 {
        return;
    }
    let g = src.geo;
    debug_assert!(g.is_compact(), "offsets fit isize only for compact geometries");
    let (h_in, w_in, w_out) = (g.h_in as isize, g.w_in as isize, g.w_out);
    let x = src.channels;
    let mut taps = [Tap::default(); KC];
    let taps = &mut taps[..kc];
    let (mut c, r) = (k0 / (g.kh * g.kw), k0 % (g.kh * g.kw));
    let (mut u, mut v) = (r / g.kw, r % g.kw);
    for tap in taps.iter_mut() {
        let dy = (u * g.dilation_h) as isize - g.pad_top as isize;
        let dx = (v * g.dilation_w) as isize - g.pad_left as isize;
        *tap = Tap { offset: (c * g.h_in * g.w_in) as isize + dy * w_in + dx, dy, dx };
        v += 1;
        if v == g.kw {
            (u, v) = (u + 1, 0);
            if u == g.kh {
                (c, u) = (c + 1, 0);
            }
        }
    }
    let taps = &*taps;

    for (p, panel) in dst.chunks_exact_mut(kc * P).take(w.div_ceil(P)).enumerate() {
        let jp = j0 + p * P;
        let wp = P.min(j0 + w - jp);
        // Top-left input corner (padding not applied) of each pixel's window.
        let mut row_of = [0isize; P];
        let mut col_of = [0isize; P];
        let (mut oy, mut ox) = (jp / w_out, jp % w_out);
        for jj in 0..wp {
            row_of[jj] = (oy * g.stride_h) as isize;
            col_of[jj] = (ox * g.stride_w) as isize;
            ox += 1;
            if ox == w_out {
                (oy, ox) = (oy + 1, 0);
            }
        }
        let (col_min, col_max) =
            col_of[..wp].iter().fold((isize::MAX, isize::MIN), |(lo, hi), &c| (lo.min(c), hi.max(c)));
        // A tap is inside the image for every pixel of the panel iff its
        // (dy, dx) lies in these ranges.
        let (dy_lo, dy_hi) = (-row_of[0], h_in - 1 - row_of[wp - 1]);
        let (dx_lo, dx_hi) = (-col_min, w_in - 1 - col_max);
        // With stride 1, a full panel is a few runs of consecutive input
        // pixels, one per output row it touches: (first column in the panel,
        // input offset of its window corner).
        let mut runs = [(0usize, 0isize); P];
        let mut n_runs = 0;
        if g.stride_w == 1 && wp == P {
            for jj in 0..P {
                if jj == 0 || row_of[jj] != row_of[jj - 1] {
                    runs[n_runs] = (jj, row_of[jj] * w_in + col_of[jj]);
                    n_runs += 1;
                }
            }
        }
        let runs = &runs[..n_runs];
        // Each run is copied as a whole P floats: it may read past its input
        // row (the check below keeps it inside the image) and write past its
        // part of the panel row, into parts that the next run, or the next
        // panel row, overwrites afterwards; so the block's last row may not spill.
        let spill_end = runs.last().map_or(isize::MAX, |&(_, off)| off + P as isize);
        let corners: [isize; P] = std::array::from_fn(|jj| row_of[jj] * w_in + col_of[jj]);
        let corner = |jj: usize| corners[jj];
        // With stride 1 along the width, the panel's pixels of one output row
        // read consecutive input columns for every tap: segments (first column
        // in the panel, length, window row, window column of the first pixel).
        // A tap that reaches into the padding copies each segment's part inside
        // the input and zero-fills the rest, instead of testing every element.
        let mut segs = [(0usize, 0usize, 0isize, 0isize); P];
        let mut n_segs = 0;
        if g.stride_w == 1 {
            for jj in 0..wp {
                if jj == 0 || row_of[jj] != row_of[jj - 1] {
                    segs[n_segs] = (jj, 0, row_of[jj], col_of[jj]);
                    n_segs += 1;
                }
                segs[n_segs - 1].1 += 1;
            }
        }
        let segs = &segs[..n_segs];

        for (kk, tap) in taps.iter().enumerate() {
            let inside = tap.dy >= dy_lo && tap.dy <= dy_hi && tap.dx >= dx_lo && tap.dx <= dx_hi;
            if inside
                && !runs.is_empty()
                && (kk + 1 < kc || runs.len() == 1)
                && tap.offset + spill_end <= x.len() as isize
            {
                for &(at, off) in runs {
                    let start = (tap.offset + off) as usize;
                    let run: &[f32; P] = x[start..start + P].try_into().expect("P floats");
                    let out: &mut [f32; P] = (&mut panel[kk * P + at..][..P]).try_into().expect("P floats");
                    *out = *run;
                }
                continue;
            }
            let row = &mut panel[kk * P..][..P];
            if inside {
                if wp == P {
                    let offsets: [usize; P] = std::array::from_fn(|jj| (tap.offset + corner(jj)) as usize);
                    for (out, &i) in row.iter_mut().zip(&offsets) {
                        debug_assert!(i < x.len());
                        // SAFETY: `inside` puts every pixel's tap at (iy, ix) with
                        // 0 <= iy < h_in and 0 <= ix < w_in of channel c < c_in/groups,
                        // so i = c·h·w + iy·w + ix < (c + 1)·h·w <= x.len().
                        *out = unsafe { *x.get_unchecked(i) };
                    }
                } else {
                    for (jj, out) in row.iter_mut().enumerate().take(wp) {
                        *out = x[(tap.offset + corner(jj)) as usize];
                    }
                    row[wp..].fill(0.0);
                }
            } else if !segs.is_empty() {
                row[wp..].fill(0.0);
                for &(at, len, wy, wx) in segs {
                    let part = &mut row[at..at + len];
                    let iy = wy + tap.dy;
                    if iy < 0 || iy >= h_in {
                        part.fill(0.0);
                        continue;
                    }
                    // Pixels t in 0..len read input column wx + tap.dx + t.
                    let first = wx + tap.dx;
                    let lo = (-first).clamp(0, len as isize) as usize;
                    let hi = (w_in - first).clamp(0, len as isize) as usize;
                    let hi = hi.max(lo);
                    part[..lo].fill(0.0);
                    part[hi..].fill(0.0);
                    if hi > lo {
                        // Channel base + row iy + column first + lo, inside the image.
                        let start = (tap.offset - tap.dy * w_in - tap.dx + iy * w_in + first + lo as isize) as usize;
                        part[lo..hi].copy_from_slice(&x[start..start + (hi - lo)]);
                    }
                }
            } else {
                for (jj, out) in row.iter_mut().enumerate() {
                    let (iy, ix) = (row_of[jj] + tap.dy, col_of[jj] + tap.dx);
                    *out = if jj < wp && iy >= 0 && iy < h_in && ix >= 0 && ix < w_in {
                        x[(tap.offset + corner(jj)) as usize]
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}
