//! Implicit im2col: an image read as the im2col matrix of one group,
//! packed straight into B panels (stride, zero padding and dilation applied
//! while packing), so the `K × N` column matrix is never built. The image
//! is NCHW or channels-last: the band builder and the fallback packer read
//! it through the geometry's strides, and the band is the same either way.

use std::cell::Cell;

use crate::gemm::{KC, PackRows, PanelSource, copy_floats, enter_pack, with_panel_width, zero_floats};
use crate::geometry::ConvGeometry;
use crate::layout::Layout;
use crate::simd::{Lanes, WithLanes};

/// The `K × N` im2col matrix of one (image, group), never materialised:
/// row `(c·kh + u)·kw + v`, column `oy·w_out + ox` is
/// `X[c, oy·sh + u·dh − pad_top, ox·sw + v·dw − pad_left]` or 0 in the padding.
pub(crate) struct ImageSource<'a> {
    geo: &'a ConvGeometry,
    /// The group's `c_in / groups` channels of one image, `[cg, h, w]` in
    /// the geometry's layout, from its first float (`ConvGeometry::group_input`).
    channels: &'a [f32],
}

impl<'a> ImageSource<'a> {
    pub(crate) fn new(geo: &'a ConvGeometry, channels: &'a [f32]) -> Self {
        assert!(channels.len() >= geo.input_strides().span(geo.c_in_per_group(), geo.h_in, geo.w_in));
        ImageSource { geo, channels }
    }
}

impl PanelSource for ImageSource<'_> {
    fn pack<L: Lanes>(&self, lanes: L, panel: usize, k0: usize, kc: usize, j0: usize, w: usize, dst: &mut [f32]) {
        if kc > 0 && w > 0 && band_fits(self.geo, k0, kc, j0, w) {
            with_panel_width!(panel, enter_pack(lanes, self, k0, kc, j0, w, dst))
        } else {
            with_panel_width!(panel, pack_image(self, k0, kc, j0, w, dst))
        }
    }

    fn setup_per_block(&self) -> bool {
        true
    }
}

/// [`pack_rows`] inside the lanes' target features, so its whole-`P`
/// copies move as vectors.
impl PackRows for ImageSource<'_> {
    #[inline(always)]
    fn pack_rows<L: Lanes, const P: usize>(&self, _: L, k0: usize, kc: usize, j0: usize, w: usize, dst: &mut [f32]) {
        pack_rows::<L, P>(self, k0, kc, j0, w, dst)
    }
}

/// Whether [`pack_rows`] takes the block: where the windows cover the
/// stride (the band holds every row and column between the first and last
/// window, so windows that skip input would copy it for nothing), and the
/// band is at most four times the block it packs, plus 64 Ki floats. A large
/// dilation or padding makes the band of a few windows huge (a fuzzed call
/// asked for 91 GB); those blocks take [`pack_image`], which reads in place.
pub(super) fn band_fits(g: &ConvGeometry, k0: usize, kc: usize, j0: usize, w: usize) -> bool {
    let covers = (g.kh - 1) * g.dilation_h + 1 >= g.stride_h && (g.kw - 1) * g.dilation_w + 1 >= g.stride_w;
    covers && Band::of(g, k0, kc, j0, w).len() <= kc.saturating_mul(w).saturating_mul(4).saturating_add(1 << 16)
}

/// One row of the im2col matrix: kernel tap `(c, u, v)` as offsets from a
/// window's top-left corner.
#[derive(Clone, Copy, Default)]
struct Tap {
    /// `c·sc + dy·sy + dx·sx` (the input's strides): where the tap reads,
    /// relative to the corner.
    offset: isize,
    /// `u·dilation_h − pad_top`.
    dy: isize,
    /// `v·dilation_w − pad_left`.
    dx: isize,
}

/// Packs one block of the implicit im2col matrix where the windows skip
/// input rows or columns (a kernel extent below the stride, as a 1×1
/// convolution with stride 2), which [`pack_rows`]'s band would copy for
/// nothing. The block's taps are tabulated once; per panel, the window
/// corners of its `P` output pixels are computed once, with the range of
/// taps that stay inside the image. Each panel row is then `P` indexed
/// loads or, only for taps that reach into the padding, a bounds-checked fill.
fn pack_image<const P: usize>(src: &ImageSource, k0: usize, kc: usize, j0: usize, w: usize, dst: &mut [f32]) {
    if kc == 0 {
        return;
    }
    let g = src.geo;
    debug_assert!(g.is_compact(), "offsets fit isize only for compact geometries");
    let (h_in, w_in, w_out) = (g.h_in as isize, g.w_in as isize, g.w_out);
    let at = g.input_strides();
    let (sc, sy, sx) = (at.c as isize, at.y as isize, at.x as isize);
    let x = src.channels;
    let mut taps = [Tap::default(); KC];
    let taps = &mut taps[..kc];
    let (mut c, r) = (k0 / (g.kh * g.kw), k0 % (g.kh * g.kw));
    let (mut u, mut v) = (r / g.kw, r % g.kw);
    for tap in taps.iter_mut() {
        let dy = (u * g.dilation_h) as isize - g.pad_top as isize;
        let dx = (v * g.dilation_w) as isize - g.pad_left as isize;
        *tap = Tap { offset: c as isize * sc + dy * sy + dx * sx, dy, dx };
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
        let corners: [isize; P] = std::array::from_fn(|jj| row_of[jj] * sy + col_of[jj] * sx);
        let corner = |jj: usize| corners[jj];
        for (kk, tap) in taps.iter().enumerate() {
            let inside = tap.dy >= dy_lo && tap.dy <= dy_hi && tap.dx >= dx_lo && tap.dx <= dx_hi;
            let row = &mut panel[kk * P..][..P];
            if inside {
                if wp == P {
                    let offsets: [usize; P] = std::array::from_fn(|jj| (tap.offset + corner(jj)) as usize);
                    for (out, &i) in row.iter_mut().zip(&offsets) {
                        debug_assert!(i < x.len());
                        // SAFETY: `inside` puts every pixel's tap at (iy, ix) with
                        // 0 <= iy < h_in and 0 <= ix < w_in of channel c < c_in/groups,
                        // so i = c·sc + iy·sy + ix·sx < the span of the
                        // group's channels <= x.len() (asserted by `new`).
                        *out = unsafe { *x.get_unchecked(i) };
                    }
                } else {
                    for (jj, out) in row.iter_mut().enumerate().take(wp) {
                        *out = x[(tap.offset + corner(jj)) as usize];
                    }
                    row[wp..].fill(0.0);
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

/// Packs one block of the implicit im2col matrix as straight copies. The
/// input rows the block's windows cover are first copied, for the block's
/// channels, into a band with the padding as zeros, each row split into its
/// `stride_w` phases (padded column `q + i·stride_w` at phase `q`, index
/// `i`), so that for every tap the panel's pixels of one output row read
/// consecutive band floats. Every panel row is then one copy of `P` floats per output row the
/// panel touches, whatever the tap.
///
/// Each copy moves a whole `P` floats: it may read past its band row and
/// write past its part of the panel row, into parts that the next copy, or
/// the next panel row, overwrites afterwards. The copies that would leave
/// `buf` or `dst` move only their own floats.
#[inline(always)]
fn pack_rows<L: Lanes, const P: usize>(src: &ImageSource, k0: usize, kc: usize, j0: usize, w: usize, dst: &mut [f32]) {
    if kc == 0 || w == 0 {
        return;
    }
    let g = src.geo;
    debug_assert!(g.is_compact());
    let w_out = g.w_out;
    let layout = Band::of(g, k0, kc, j0, w);
    let mut band = take_band();
    {
        build_band::<L>(g, src.channels, &layout, P, &mut band);
        let buf = &band[..];
        let mut taps = [0usize; KC];
        let taps = &mut taps[..kc];
        band_taps(g, k0, &layout, taps);
        let panels = w.div_ceil(P);
        for p in 0..panels {
            let jp = j0 + p * P;
            let wp = P.min(j0 + w - jp);
            // One run per output row the panel touches: (first column in the
            // panel, its pixel's window corner in the band).
            let mut runs = [(0usize, 0usize); P];
            let mut n_runs = 0;
            let (mut oy, mut ox) = (jp / w_out, jp % w_out);
            let mut at = 0;
            while at < wp {
                runs[n_runs] = (at, (oy * g.stride_h - layout.py0) * layout.row_len + ox);
                n_runs += 1;
                at += w_out - ox;
                (oy, ox) = (oy + 1, 0);
            }
            let runs = &runs[..n_runs];
            let panel_at = p * kc * P;
            // Whole-P copies stay inside `buf` and `dst` for every tap of the
            // panel (the taps grow with k, the runs with the column) unless
            // the panel is the last one in a `dst` without room to spill
            // into, or its reads reach the end of `buf`.
            let whole = taps[kc - 1] + runs[n_runs - 1].1 + P <= buf.len() && panel_at + (kc + 1) * P <= dst.len();
            for (kk, &tap) in taps.iter().enumerate() {
                let row_at = panel_at + kk * P;
                if whole {
                    for (i, &(at, corner)) in runs.iter().enumerate() {
                        let (from, to) = (tap + corner, row_at + at);
                        // SAFETY: tap + corner + P <= buf.len() and
                        // row_at + at + P <= panel_at + (kc + 1)·P <= dst.len(),
                        // both checked above; `buf` and `dst` do not overlap.
                        // A run of at most 16 pixels moves 16 floats, not P.
                        unsafe {
                            let (from, to) = (buf.as_ptr().add(from), dst.as_mut_ptr().add(to));
                            if P > 16 && runs.get(i + 1).map_or(wp, |r| r.0) - at <= 16 {
                                std::ptr::copy_nonoverlapping(from, to, 16)
                            } else {
                                std::ptr::copy_nonoverlapping(from, to, P)
                            }
                        };
                    }
                } else {
                    for (i, &(at, corner)) in runs.iter().enumerate() {
                        let (from, to) = (tap + corner, row_at + at);
                        let len = if from + P <= buf.len() && to + P <= dst.len() {
                            P
                        } else {
                            runs.get(i + 1).map_or(wp, |r| r.0) - at
                        };
                        dst[to..to + len].copy_from_slice(&buf[from..from + len]);
                    }
                }
                if wp < P {
                    dst[row_at + wp..row_at + P].fill(0.0);
                }
            }
        }
    }
    put_band(band);
}

/// The band of one block of the im2col matrix (taps `k0 .. k0 + kc`,
/// pixels `j0 .. j0 + w`): the padded rows `py0 .. py0 + rows` (padded row
/// `py` is input row `py - pad_top`) of the channels the taps read, each
/// row split into `phases` phases (padded column `q + i·phases` at
/// `q·phase + i`): `stride_w` phases put the columns of consecutive output
/// pixels next to each other, 1 keeps the row as it is.
pub(super) struct Band {
    channels: std::ops::Range<usize>,
    pub(super) py0: usize,
    /// Phases per row: `stride_w` or 1.
    phases: usize,
    /// Floats per phase of a row: `ceil(padded width / phases)`.
    phase: usize,
    /// Floats per band row: `phases` phases.
    pub(super) row_len: usize,
    /// Floats per channel: `rows · row_len` (saturating: [`band_fits`] asks
    /// about geometries whose band could not exist).
    channel_len: usize,
    /// Floats from one column of a row to the next: 1 in a built band (and
    /// NCHW read in place), `c_in` in a channels-last input read in place,
    /// the band's channel count in a pixel-major band.
    pub(super) pixel: usize,
    /// Padded rows per channel (a pixel-major band holds `rows · row_len`
    /// floats in all).
    rows: usize,
}

impl Band {
    /// The band split into `stride_w` phases, as the packer reads it.
    pub(super) fn of(g: &ConvGeometry, k0: usize, kc: usize, j0: usize, w: usize) -> Band {
        Band::with_phases(g, k0, kc, j0, w, g.stride_w)
    }

    /// The band split into `phases` phases (`stride_w` or 1).
    pub(super) fn with_phases(g: &ConvGeometry, k0: usize, kc: usize, j0: usize, w: usize, phases: usize) -> Band {
        debug_assert!(phases == 1 || phases == g.stride_w);
        let taps_per_channel = g.kh * g.kw;
        let channels = k0 / taps_per_channel..(k0 + kc - 1) / taps_per_channel + 1;
        let (oy_lo, oy_hi) = (j0 / g.w_out, (j0 + w - 1) / g.w_out + 1);
        let py0 = oy_lo * g.stride_h;
        let last_row = ((oy_hi - 1) * g.stride_h).saturating_add((g.kh - 1).saturating_mul(g.dilation_h));
        let rows = last_row.saturating_add(1) - py0;
        let phase = (g.pad_left + g.w_in + g.pad_right).div_ceil(phases);
        let row_len = phase * phases;
        Band { channels, py0, phases, phase, row_len, channel_len: rows.saturating_mul(row_len), pixel: 1, rows }
    }

    /// The band of [`Band::with_phases`] read in place from the group's
    /// input, and where in the input it starts: where there is no padding
    /// and one phase, a band row is an input row, and the input's channels
    /// serve as the band's (NCHW: channels `h_in·w_in` apart, columns 1;
    /// channels-last: channels 1 apart, columns `c_in`).
    pub(super) fn in_input(
        g: &ConvGeometry,
        k0: usize,
        kc: usize,
        j0: usize,
        w: usize,
        phases: usize,
    ) -> Option<(Band, usize)> {
        let unpadded = [g.pad_top, g.pad_left, g.pad_bottom, g.pad_right] == [0; 4];
        if !unpadded || phases != 1 {
            return None;
        }
        let band = Band::with_phases(g, k0, kc, j0, w, 1);
        debug_assert_eq!(band.row_len, g.w_in);
        // The input's own strides: a channel `at.c` floats on, a row `at.y`, a column `at.x`.
        let at = g.input_strides();
        let band = Band { channel_len: at.c, row_len: at.y, phase: at.y, pixel: at.x, ..band };
        let start = band.channels.start * at.c + band.py0 * at.y;
        Some((band, start))
    }

    /// The band of [`Band::with_phases`] (one phase) laid out pixel-major,
    /// as a channels-last input is: each padded row the row's pixels, each
    /// pixel the band's channels (columns `channels.len()` floats apart,
    /// channels 1 apart). [`build_pixel_major_band`] fills it with row copies;
    /// a kernel that takes any step reads it.
    pub(super) fn pixel_major(g: &ConvGeometry, k0: usize, kc: usize, j0: usize, w: usize) -> Band {
        let band = Band::with_phases(g, k0, kc, j0, w, 1);
        let pitch = band.channels.len();
        let row_len = band.row_len * pitch;
        Band { row_len, phase: row_len, channel_len: 1, pixel: pitch, ..band }
    }

    /// Floats in the band (saturating).
    fn len(&self) -> usize {
        self.channels.len().saturating_mul(self.channel_len)
    }
}

/// [`build_band`], or with `pixel_major` the pixel-major band of
/// [`Band::pixel_major`] (row copies from a channels-last input, a
/// transpose from NCHW), inside the lanes' features (a closure or a plain
/// function would run without them).
pub(super) struct BuildBand<'a> {
    pub(super) g: &'a ConvGeometry,
    pub(super) channels: &'a [f32],
    pub(super) layout: &'a Band,
    pub(super) band: &'a mut Vec<f32>,
    pub(super) pixel_major: bool,
}

impl WithLanes for BuildBand<'_> {
    type Output = ();
    #[inline(always)]
    fn run<L: Lanes>(self, _: L) {
        if self.pixel_major && self.g.layout == Layout::Nhwc {
            build_pixel_major_band(self.g, self.channels, self.layout, self.band)
        } else if self.pixel_major {
            build_pixel_major_band_nchw::<L>(self.g, self.channels, self.layout, self.band)
        } else {
            build_band::<L>(self.g, self.channels, self.layout, 0, self.band)
        }
    }
}

/// Builds the pixel-major `layout` ([`Band::pixel_major`]) of the group's
/// channels-last input `x` in `band`: each padded row zeros, the input
/// row's pixels (their band channels, one copy per pixel, or one for the
/// whole row where the band holds every channel of the image), zeros.
fn build_pixel_major_band(g: &ConvGeometry, x: &[f32], layout: &Band, band: &mut Vec<f32>) {
    debug_assert!(g.layout == Layout::Nhwc && layout.channel_len == 1);
    let (pitch, row_len) = (layout.pixel, layout.row_len);
    band.resize(layout.rows * row_len, 0.0);
    let at = g.input_strides();
    let (left, width) = (g.pad_left * pitch, g.w_in * pitch);
    for (py, row) in (layout.py0..).zip(band.chunks_exact_mut(row_len)) {
        let Some(iy) = py.checked_sub(g.pad_top).filter(|&iy| iy < g.h_in) else {
            row.fill(0.0);
            continue;
        };
        row[..left].fill(0.0);
        row[left + width..].fill(0.0);
        let first = at.at(layout.channels.start, iy, 0);
        if pitch == at.x {
            row[left..left + width].copy_from_slice(&x[first..first + width]);
        } else {
            for (dst, ix) in row[left..left + width].chunks_exact_mut(pitch).zip(0..) {
                dst.copy_from_slice(&x[first + ix * at.x..][..pitch]);
            }
        }
    }
}

/// Builds the pixel-major `layout` ([`Band::pixel_major`]) of the group's
/// NCHW input `x` in `band`: the transpose of the band's channels ×
/// pixels into pixels × channels, in the lanes' 8 × 8 register
/// transposes, with zeros in the padding. Without horizontal padding the
/// band's rows inside the image are one run of pixels (a 7×7 plane
/// transposes as 49 pixels, not 7 rows of 7).
///
/// A 1×1 convolution's direct path reads this band rather than the input
/// in place: a tile's pixels then read each input channel from one line
/// per pixel for 16 channels running, where in NCHW every channel is a
/// line of its own (Zen 5, 1 thread: 512 -> 2048 on 7×7 472 -> 425 µs).
#[inline(always)]
fn build_pixel_major_band_nchw<L: Lanes>(g: &ConvGeometry, x: &[f32], layout: &Band, band: &mut Vec<f32>) {
    debug_assert!(g.layout == Layout::Nchw && layout.channel_len == 1);
    let (pitch, row_len) = (layout.pixel, layout.row_len);
    band.resize(layout.rows * row_len, 0.0);
    let plane = g.h_in * g.w_in;
    let channels = layout.channels.clone();
    // Band rows inside the image: r_lo .. r_hi (input rows py0 + r − pad_top).
    let r_lo = g.pad_top.saturating_sub(layout.py0).min(layout.rows);
    let r_hi = (g.pad_top + g.h_in).saturating_sub(layout.py0).clamp(r_lo, layout.rows);
    band[..r_lo * row_len].fill(0.0);
    band[r_hi * row_len..].fill(0.0);
    if r_lo == r_hi {
        // Every row of the block lies in the padding (a top padding taller than the block).
        return;
    }
    let iy0 = layout.py0 + r_lo - g.pad_top;
    if g.pad_left == 0 && g.pad_right == 0 {
        let pixels = (r_hi - r_lo) * g.w_in;
        transpose_run::<L>(x, plane, channels, iy0 * g.w_in, pixels, &mut band[r_lo * row_len..r_hi * row_len], pitch);
        return;
    }
    let left = g.pad_left * pitch;
    for (r, row) in band[r_lo * row_len..r_hi * row_len].chunks_exact_mut(row_len).enumerate() {
        row[..left].fill(0.0);
        row[left + g.w_in * pitch..].fill(0.0);
        let dst = &mut row[left..left + g.w_in * pitch];
        transpose_run::<L>(x, plane, channels.clone(), (iy0 + r) * g.w_in, g.w_in, dst, pitch);
    }
}

/// Pixels `p0 .. p0 + n` of the channels `channels` of the NCHW planes `x`
/// (`plane` floats each) into `dst`, pixel-major: pixel `p0 + j`'s channel
/// `c` at `dst[j·pitch + c − channels.start]`.
#[inline(always)]
fn transpose_run<L: Lanes>(
    x: &[f32],
    plane: usize,
    channels: std::ops::Range<usize>,
    p0: usize,
    n: usize,
    dst: &mut [f32],
    pitch: usize,
) {
    let c0 = channels.start;
    let mut c = c0;
    while c + TILE <= channels.end {
        let mut j = 0;
        while j + TILE <= n {
            // Channels c .. c + 8 (rows `plane` apart) × pixels p0 + j .. + 8.
            let src = &x[c * plane + p0 + j..][..(TILE - 1) * plane + TILE];
            let out = &mut dst[j * pitch + c - c0..][..(TILE - 1) * pitch + TILE];
            let at = out.as_mut_ptr();
            // SAFETY: inside the lanes' features (the caller's); the 8 rows
            // of 8 floats read lie in `src`, the 8 written (pixel j + i's
            // channels at i·pitch) in `out`; they do not overlap.
            unsafe { L::transpose_8x8(src.as_ptr(), plane, |p| at.add(p * pitch)) };
            j += TILE;
        }
        for j in j..n {
            for i in 0..TILE {
                dst[j * pitch + c - c0 + i] = x[(c + i) * plane + p0 + j];
            }
        }
        c += TILE;
    }
    for c in c..channels.end {
        for j in 0..n {
            dst[j * pitch + c - c0] = x[c * plane + p0 + j];
        }
    }
}

/// Builds `layout`'s band of the group's `[c, h, w]` input `x` in `band`,
/// zeros in the padding, followed by `slack` floats. Every float is written.
///
/// Generic over the lanes it runs on (the caller is inside their target
/// features): channels-last's tiles transpose in their registers.
#[inline(always)]
pub(super) fn build_band<L: Lanes>(g: &ConvGeometry, x: &[f32], layout: &Band, slack: usize, band: &mut Vec<f32>) {
    let len = layout.len();
    band.resize(len + slack, 0.0);
    band[len..].fill(0.0);
    if g.layout == Layout::Nhwc {
        return build_band_channels_last::<L>(g, x, layout, &mut band[..len]);
    }
    for (c, channel) in layout.channels.clone().zip(band[..len].chunks_exact_mut(layout.channel_len)) {
        if layout.phases == 1 {
            // The channel's zeros in whole vectors, then its rows' pixels.
            // (A loop of its own: merged into the one below with a test per
            // row, 128 -> 32 3×3 on 7² ran 4 % slower, Zen 4.)
            zero_lanes::<L>(channel);
            for (py, row) in (layout.py0..).zip(channel.chunks_exact_mut(layout.row_len)) {
                if let Some(iy) = py.checked_sub(g.pad_top).filter(|&iy| iy < g.h_in) {
                    let at = (c * g.h_in + iy) * g.w_in;
                    copy_floats(&mut row[g.pad_left..g.pad_left + g.w_in], &x[at..at + g.w_in]);
                }
            }
            continue;
        }
        for (py, row) in (layout.py0..).zip(channel.chunks_exact_mut(layout.row_len)) {
            match py.checked_sub(g.pad_top).filter(|&iy| iy < g.h_in) {
                Some(iy) => {
                    let at = (c * g.h_in + iy) * g.w_in;
                    fill_band_row::<L>(row, &x[at..at + g.w_in], g.pad_left, layout.phases, layout.phase);
                }
                None => zero_floats(row),
            }
        }
    }
}

/// [`build_band`] from a channels-last input: the same band (channel
/// planes of padded rows split into phases), each input row read once. A
/// row of pixels × channels is transposed into the band's channel rows in
/// tiles of [`TILE`] × [`TILE`] (whole rows of 8 floats read and written)
/// where the band row has one phase; the rest goes element by element.
#[inline(always)]
fn build_band_channels_last<L: Lanes>(g: &ConvGeometry, x: &[f32], layout: &Band, band: &mut [f32]) {
    let at = g.input_strides();
    let channels = layout.channels.clone();
    band.fill(0.0);
    for (r, py) in (layout.py0..).enumerate().take(layout.channel_len / layout.row_len.max(1)) {
        let Some(iy) = py.checked_sub(g.pad_top).filter(|&iy| iy < g.h_in) else { continue };
        for c0 in channels.clone().step_by(TILE) {
            let c1 = (c0 + TILE).min(channels.end);
            // Channel c0's band row r; channel c0 + i's lies i planes further.
            let row0 = (c0 - channels.start) * layout.channel_len + r * layout.row_len;
            let mut ix = 0;
            if layout.phases == 1 && c1 - c0 == TILE {
                while ix + TILE <= g.w_in {
                    // Pixels ix .. ix + 8 (rows at.x floats apart) × channels c0 .. c0 + 8.
                    let src = &x[at.at(c0, iy, ix)..][..(TILE - 1) * at.x + TILE];
                    let last = row0 + (TILE - 1) * layout.channel_len + g.pad_left + ix + TILE;
                    let dst = band[..last].as_mut_ptr();
                    // SAFETY: inside the lanes' features (the caller's); the 8
                    // source rows lie in `src` and the 8 band rows of 8 floats
                    // (channel ch's at row0 + ch·channel_len + pad_left + ix)
                    // below `last`, inside `band`; they do not overlap.
                    unsafe {
                        L::transpose_8x8(src.as_ptr(), at.x, |ch| {
                            dst.add(row0 + ch * layout.channel_len + g.pad_left + ix)
                        })
                    };
                    ix += TILE;
                }
            }
            for ix in ix..g.w_in {
                let pc = ix + g.pad_left;
                let col = pc % layout.phases * layout.phase + pc / layout.phases;
                let pixel = &x[at.at(c0, iy, ix)..][..c1 - c0];
                for (i, &v) in pixel.iter().enumerate() {
                    band[row0 + i * layout.channel_len + col] = v;
                }
            }
        }
    }
}

/// Pixels and channels per transposed tile of [`build_band_channels_last`].
const TILE: usize = 8;

/// Where each tap `k0, k0 + 1, ..` (as many as `taps` holds) reads in
/// `band`, relative to its pixel's window corner.
#[inline(always)]
pub(super) fn band_taps(g: &ConvGeometry, k0: usize, band: &Band, taps: &mut [usize]) {
    let taps_per_channel = g.kh * g.kw;
    let (c, r) = (k0 / taps_per_channel, k0 % taps_per_channel);
    // One channel's taps computed once (a division per tap cost a 7×7
    // plane's direct path, K chunks of 256 taps and few pixels a tap, a
    // tenth of its time: Zen 4, 128 -> 32 3×3 on 7²), then repeated a
    // channel further on. On the stack up to PATTERN taps.
    let (mut on_stack, mut on_heap);
    let pattern: &mut [usize] = if taps_per_channel <= PATTERN {
        on_stack = [0usize; PATTERN];
        &mut on_stack[..taps_per_channel]
    } else {
        on_heap = vec![0usize; taps_per_channel];
        &mut on_heap[..]
    };
    for (t, at) in pattern.iter_mut().enumerate() {
        // Kernel tap (u, v): row u, column v's phase and place in it.
        let (u, v) = (t / g.kw, t % g.kw);
        let (vq, vi) = (v * g.dilation_w % band.phases, v * g.dilation_w / band.phases);
        *at = u * g.dilation_h * band.row_len + (vq * band.phase + vi) * band.pixel;
    }
    let (mut at, mut t, mut rest) = ((c - band.channels.start) * band.channel_len, r, &mut taps[..]);
    while !rest.is_empty() {
        // The rest of a channel's taps, from tap t.
        let n = (taps_per_channel - t).min(rest.len());
        let (run, tail) = rest.split_at_mut(n);
        run.iter_mut().zip(&pattern[t..t + n]).for_each(|(tap, &p)| *tap = at + p);
        (at, t, rest) = (at + band.channel_len, 0, tail);
    }
}

/// Taps per channel up to which [`band_taps`] keeps one channel's offsets
/// on the stack (7×7 kernels: 49); larger kernels allocate them.
const PATTERN: usize = 64;

/// One band row of a band split into phases (`sw` of them, 2 or more: a
/// band of one phase is built a channel at a time by [`build_band`]): the
/// input row `x` between `pad_left` zeros and zeros up to the row's end,
/// split into `sw` phases of `phase` floats (padded column `q + i·sw` at
/// `q·phase + i`).
#[inline(always)]
fn fill_band_row<L: Lanes>(row: &mut [f32], x: &[f32], pad_left: usize, sw: usize, phase: usize) {
    match sw {
        2 => split_two_phases::<L>(row, x, pad_left, phase),
        4 => split_phases::<4>(row, x, pad_left, phase),
        _ => split_phases::<0>(row, x, pad_left, phase),
    }
}

/// `dst.fill(0.0)` in stores of the lanes' vectors (no call out of the
/// lanes' code), the last (partial) vector's floats by [`zero_floats`].
#[inline(always)]
fn zero_lanes<L: Lanes>(dst: &mut [f32]) {
    let mut chunks = dst.chunks_exact_mut(L::N);
    // A zero the compiler cannot see, or it turns the loop back into a
    // `memset` call.
    // SAFETY: inside the lanes' features (the caller's).
    let zero = unsafe { L::splat(std::hint::black_box(0.0)) };
    for v in &mut chunks {
        // SAFETY: as above; `v` holds N floats.
        unsafe { L::store(v.as_mut_ptr(), zero) };
    }
    zero_floats(chunks.into_remainder());
}

/// [`fill_band_row`] for stride `SW` (0: any, `row.len() / phase`): zeros,
/// then the input, the columns of each `SW`-aligned group of padded columns
/// dealt out to the phases (a de-interleave the compiler vectorises for a
/// constant `SW`).
#[inline(always)]
fn split_phases<const SW: usize>(row: &mut [f32], x: &[f32], pad_left: usize, phase: usize) {
    let sw = if SW == 0 { row.len() / phase } else { SW };
    row.fill(0.0);
    // Input columns before the first group that starts a multiple of sw.
    let head = ((sw - pad_left % sw) % sw).min(x.len());
    for (ix, &v) in x[..head].iter().enumerate() {
        let pc = ix + pad_left;
        row[pc % sw * phase + pc / sw] = v;
    }
    let first = (head + pad_left) / sw;
    let tail = x[head..].chunks_exact(sw).remainder();
    let n = x[head..].len() / sw;
    for q in 0..sw {
        let out = &mut row[q * phase + first..][..n];
        for (o, group) in out.iter_mut().zip(x[head..].chunks_exact(sw)) {
            *o = group[q];
        }
    }
    for (q, &v) in tail.iter().enumerate() {
        row[q * phase + first + n] = v;
    }
}

/// [`split_phases`] for stride 2 in the lanes' de-interleave: each pair
/// of input vectors becomes a vector of even and one of odd padded
/// columns, stored to the two phases, and zeros only in the padding (a
/// first layer's 3×3/2 band, where building the band was ~1/6 of the
/// layer: Zen 4, 3 → 16 on 224², 1 thread, minima 174–179 → 165–171 µs
/// alternated in one run).
#[inline(always)]
fn split_two_phases<L: Lanes>(row: &mut [f32], x: &[f32], pad_left: usize, phase: usize) {
    // An odd left padding puts input column 0 in phase 1; it goes alone,
    // and so does a last column left without a pair (in phase 0).
    let head = (pad_left % 2).min(x.len());
    let first = (head + pad_left) / 2;
    let pairs = (x.len() - head) / 2;
    let tail = (x.len() - head) % 2;
    let (even, odd) = row.split_at_mut(phase);
    // Zeros only where no input column lands (the padding).
    even[..first].fill(0.0);
    even[first + pairs + tail..].fill(0.0);
    odd[..first - head].fill(0.0);
    odd[first + pairs..].fill(0.0);
    if head == 1 {
        odd[first - 1] = x[0];
    }
    if tail == 1 {
        even[first + pairs] = x[x.len() - 1];
    }
    let (even, odd) = (&mut even[first..][..pairs], &mut odd[first..][..pairs]);
    let mut i = 0;
    while i + L::N <= pairs {
        let src = &x[head + 2 * i..][..2 * L::N];
        let (e, o) = (&mut even[i..i + L::N], &mut odd[i..i + L::N]);
        // SAFETY: inside the lanes' features (the caller's); `src` holds
        // 2·N floats, `e` and `o` N each.
        unsafe {
            let (ve, vo) = L::deinterleave(src.as_ptr());
            L::store(e.as_mut_ptr(), ve);
            L::store(o.as_mut_ptr(), vo);
        }
        i += L::N;
    }
    for ((e, o), pair) in even[i..].iter_mut().zip(&mut odd[i..]).zip(x[head + 2 * i..].chunks_exact(2)) {
        (*e, *o) = (pair[0], pair[1]);
    }
}

thread_local! {
    /// The band buffer of [`pack_rows`], reused across calls on this thread.
    static BAND: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// This thread's band buffer, taken (a nested call would get a fresh one).
/// (Not a closure-taking helper: a closure would not inherit the caller's
/// target features.)
#[inline(always)]
pub(super) fn take_band() -> Vec<f32> {
    BAND.with(Cell::take)
}

/// Gives the band buffer back for the next call on this thread.
#[inline(always)]
pub(super) fn put_band(band: Vec<f32>) {
    BAND.with(|cell| cell.set(band));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::ConvParams;

    #[test]
    fn band_fits_real_layers_not_huge_dilations() {
        let resnet = ConvParams { padding: [1; 4], ..ConvParams::default() };
        let g = ConvGeometry::new([1, 64, 56, 56], [64, 64, 3, 3], &resnet).unwrap();
        assert!(band_fits(&g, 0, KC, 0, 256));
        assert!(band_fits(&g, 512, 64, 3072, 64));
        let dilated = ConvParams { padding: [20_000, 1, 20_000, 1], dilation: [40_000, 1], ..ConvParams::default() };
        let g = ConvGeometry::new([1, 2, 5, 6], [3, 2, 2, 2], &dilated).unwrap();
        assert!(!band_fits(&g, 0, 8, 0, 35));
        let strided = ConvParams { stride: [2, 2], ..ConvParams::default() };
        let g = ConvGeometry::new([1, 8, 16, 16], [8, 8, 1, 1], &strided).unwrap();
        assert!(!band_fits(&g, 0, 8, 0, 64), "a 1x1 kernel with stride 2 skips input");
    }
}
