//! `dwconv_channels_last_<isa>`: depthwise convolution (multiplier 1) of a
//! channels-last image with the channels as the vector lanes. A pixel's channels are
//! contiguous in the input, the output and the tap-major weights, so every
//! stride, dilation and padding reads whole vectors: no plane copies, no
//! stride phases. Each output sums its `kh·kw` taps in order from +0 by
//! fused multiply-adds (taps in the padding multiply a zero, as the GEMM
//! paths' packed zeros do), then adds the bias: the reproducibility rule's
//! operations, so the same bits as every other path.

use std::ops::Range;

use super::MAX_LANES;
use crate::activation::Activation;
use crate::geometry::ConvGeometry;
use crate::simd::{Lanes, WithLanes};

/// Output pixels that share each weight vector loaded (more in flight per
/// tap: 4 accumulators against one weight load).
const PIXELS: usize = 4;

/// Output rows of a batch on the lanes: `rows` numbered over the batch
/// (image `r / h_out`, row `r % h_out`), written into `out`, which holds
/// exactly those rows.
pub(super) struct ChannelsLast<'a> {
    pub geo: &'a ConvGeometry,
    /// The whole input batch, channels-last.
    pub input: &'a [f32],
    /// The taps tap-major: `[kh·kw][c_out]` (flipped if the convolution is).
    pub taps: &'a [f32],
    pub bias: Option<&'a [f32]>,
    pub act: Activation,
    pub rows: Range<usize>,
    pub out: &'a mut [f32],
}

impl WithLanes for ChannelsLast<'_> {
    type Output = ();

    #[inline(always)]
    fn run<L: Lanes>(self, _: L) {
        let ChannelsLast { geo: g, input, taps, bias, act, rows, out } = self;
        assert!(out.len() == rows.len() * g.w_out * g.c_out && taps.len() == g.kh * g.kw * g.c_out);
        assert!(input.len() == g.batch * g.h_in * g.w_in * g.c_in && bias.is_none_or(|b| b.len() == g.c_out));
        assert!(rows.end <= g.batch * g.h_out && g.c_out == g.c_in && g.kh * g.kw <= MAX_TAPS);
        if !out.is_empty() {
            // Each tap's offset from its window's first input float.
            let mut tap_offsets = [0usize; MAX_TAPS];
            for (t, offset) in tap_offsets.iter_mut().take(g.kh * g.kw).enumerate() {
                let (u, v) = (t / g.kw, t % g.kw);
                *offset = (u * g.dilation_h * g.w_in + v * g.dilation_w) * g.c_in;
            }
            // Stride 1 and dilation 1 across, 3 or 5 taps wide: each input
            // vector of a window row is loaded once for the kw outputs it
            // feeds (`row_block`).
            let rolling_kw = if g.stride_w == 1 && g.dilation_w == 1 && matches!(g.kw, 3 | 5) { g.kw } else { 0 };
            Job { g, input, taps, bias, act, tap_offsets, rolling_kw, chans: 0..g.c_out }.rows::<L>(rows, out);
        }
    }
}

/// What every row shares.
#[derive(Clone)]
struct Job<'a> {
    g: &'a ConvGeometry,
    input: &'a [f32],
    taps: &'a [f32],
    bias: Option<&'a [f32]>,
    act: Activation,
    /// Tap `t`'s input offset from its window's top-left float (the first `kh·kw` used).
    tap_offsets: [usize; MAX_TAPS],
    /// `kw` where `row_block` computes the inside pixels (3 or 5), else 0.
    rolling_kw: usize,
    /// The channels the job computes (at least one vector of them where
    /// there are that many).
    chans: Range<usize>,
}

impl Job<'_> {
    /// Output rows `rows` (numbered over the batch: image `r / h_out`,
    /// row `r % h_out`) into `out`, which holds exactly those rows.
    #[inline(always)]
    fn rows<L: Lanes>(&self, rows: Range<usize>, out: &mut [f32]) {
        let g = self.g;
        let row_len = g.w_out * g.c_out;
        let mut offsets = [NONE; MAX_TAPS * PIXELS];
        let (columns, top, bottom) = inside_windows(g);
        if self.rolling_kw != 0 && g.c_out >= L::N {
            // Row-rolling windows, in slices of channels whose weights stay
            // in L1 (see `slice_width`).
            // In a row whose windows lie inside the image's height, with at
            // least 8 inside columns: the pixels left and right of them one
            // at a time on the checked variant of the code, the inside ones
            // in groups (see `groups`). Other rows: groups across the row,
            // all checked.
            let width = slice_width(g, L::N);
            let mut c0 = 0;
            while c0 < g.c_out {
                // A last slice of less than a vector joins the one before.
                let end = if g.c_out - c0 < width + L::N { g.c_out } else { c0 + width };
                let job = Job { chans: c0..end, ..self.clone() };
                for (r, out_row) in rows.clone().zip(out.chunks_exact_mut(row_len)) {
                    let (image, oy) = (r / g.h_out, r % g.h_out);
                    let (lo, hi) = if (top..bottom).contains(&oy) { (columns.start, columns.end) } else { (0, 0) };
                    if hi - lo >= INSIDE_PIXELS {
                        for ox in (0..lo).chain(hi..g.w_out) {
                            job.pixels_padded::<L, 1>(image, oy, ox, out_row);
                        }
                        job.groups::<L, false>(image, oy, lo..hi, out_row);
                    } else {
                        job.groups::<L, true>(image, oy, 0..g.w_out, out_row);
                    }
                }
                c0 = end;
            }
            return;
        }
        for (r, out_row) in rows.zip(out.chunks_exact_mut(row_len)) {
            let (image, oy) = (r / g.h_out, r % g.h_out);
            // Windows wholly inside the image take the unchecked path; the
            // rest (the padded border) the general one.
            // (Fewer channels than a vector: all on the general path, whose
            // partial vectors the unchecked one does not have.)
            let inside = if (top..bottom).contains(&oy) && g.c_out >= L::N { columns.clone() } else { 0..0 };
            let mut ox = 0;
            while ox < g.w_out {
                if ox == inside.start && inside.len() >= INSIDE_PIXELS {
                    while ox + INSIDE_PIXELS <= inside.end {
                        self.pixels_inside::<L, INSIDE_PIXELS>(image, oy, ox, out_row);
                        ox += INSIDE_PIXELS;
                    }
                    // The inside columns left: fewer pixels per call, still unchecked.
                    while ox + PIXELS <= inside.end {
                        self.pixels_inside::<L, PIXELS>(image, oy, ox, out_row);
                        ox += PIXELS;
                    }
                    while ox < inside.end {
                        self.pixels_inside::<L, 1>(image, oy, ox, out_row);
                        ox += 1;
                    }
                } else if ox + PIXELS <= g.w_out && !(ox..ox + PIXELS).contains(&inside.start) {
                    self.pixels::<L, PIXELS>(image, oy, ox, out_row, &mut offsets);
                    ox += PIXELS;
                } else {
                    self.pixels::<L, 1>(image, oy, ox, out_row, &mut offsets);
                    ox += 1;
                }
            }
        }
    }

    /// The output pixels `run` of row `oy` of `image` on the row-rolling
    /// code (inside the image, or `PADDED`: checked): groups of 8, then the
    /// rest as one group of 4 or 8 moved back to end at the run's end,
    /// overlapping the one before (the same values again, by the same
    /// operations); a run shorter than 8, groups of 4 so, or single pixels.
    #[inline(always)]
    fn groups<L: Lanes, const PADDED: bool>(&self, image: usize, oy: usize, run: Range<usize>, out_row: &mut [f32]) {
        let len = run.len();
        if len < PIXELS {
            for ox in run {
                self.group::<L, 1, PADDED>(image, oy, ox, out_row);
            }
            return;
        }
        let size = if len >= INSIDE_PIXELS { INSIDE_PIXELS } else { PIXELS };
        for ox in run.clone().step_by(size).take(len / size) {
            if size == INSIDE_PIXELS {
                self.group::<L, INSIDE_PIXELS, PADDED>(image, oy, ox, out_row);
            } else {
                self.group::<L, PIXELS, PADDED>(image, oy, ox, out_row);
            }
        }
        match len % size {
            0 => {}
            rest if rest <= PIXELS => self.group::<L, PIXELS, PADDED>(image, oy, run.end - PIXELS, out_row),
            _ => self.group::<L, INSIDE_PIXELS, PADDED>(image, oy, run.end - INSIDE_PIXELS, out_row),
        }
    }

    /// [`Job::pixels_padded`] or [`Job::pixels_inside`].
    #[inline(always)]
    fn group<L: Lanes, const P: usize, const PADDED: bool>(
        &self,
        image: usize,
        oy: usize,
        ox: usize,
        out_row: &mut [f32],
    ) {
        if PADDED {
            self.pixels_padded::<L, P>(image, oy, ox, out_row)
        } else {
            self.pixels_inside::<L, P>(image, oy, ox, out_row)
        }
    }

    /// Output pixels `ox .. ox + P` of row `oy` of `image`, every channel,
    /// where every tap of their windows lies inside the image: no offsets
    /// to check, full vectors loaded straight from the input. The same
    /// operations in the same order as [`Job::pixels`].
    #[inline(always)]
    fn pixels_inside<L: Lanes, const P: usize>(&self, image: usize, oy: usize, ox: usize, out_row: &mut [f32]) {
        let g = self.g;
        let (c, n, taps) = (g.c_out, L::N, g.kh * g.kw);
        let image_len = g.h_in * g.w_in * c;
        let image_in = &self.input[image * image_len..][..image_len];
        // The first window's top-left float, and the step from one window to the next.
        let corner = ((oy * g.stride_h - g.pad_top) * g.w_in + ox * g.stride_w - g.pad_left) * c;
        let step = g.stride_w * c;
        let tap_offsets = &self.tap_offsets[..taps];
        debug_assert!(corner + (P - 1) * step + tap_offsets[taps - 1] + c <= image_len);
        debug_assert!(out_row.len() >= (ox + P) * c && self.taps.len() >= taps * c);
        debug_assert!(c >= n, "fewer channels than a vector take the general path");
        self.channel_blocks::<L, P, false>(image_in, oy, ox, corner, step, out_row);
    }

    /// Every channel of output pixels `ox .. ox + P` of row `oy`, in
    /// whole vectors: where a pixel's channels fill whole vectors, blocks
    /// start where the first pixel's loads are aligned (one block at
    /// channel 0 first when that is not), and a last block ends at channel
    /// c. Blocks that overlap compute the same values twice, by the same
    /// operations: the bits do not change. Except for the row-rolling
    /// block over fewer than 4 vectors: its few loads crossing cache lines
    /// cost less than the extra block (Zen 5, misaligned input, 3×3 stride
    /// 1: 32 channels 107 -> 94 µs unaligned, but 144 channels 93 -> 110 µs;
    /// stride 2 with 96 channels 105 -> 140 µs). Row-rolling blocks go two
    /// at a time. `PADDED`: windows that may reach the padding (row-rolling
    /// only; `corner` and `step` unused), else windows inside the image
    /// from `corner`, `step` apart.
    #[inline(always)]
    fn channel_blocks<L: Lanes, const P: usize, const PADDED: bool>(
        &self,
        image_in: &[f32],
        oy: usize,
        ox: usize,
        corner: usize,
        step: usize,
        out_row: &mut [f32],
    ) {
        let (first, c, n) = (self.chans.start, self.chans.end, L::N);
        debug_assert!(c - first >= n, "fewer channels than a vector take the general path");
        // (With g.c_out a multiple of n, every pixel's channel 0 is as
        // aligned as the image's first float: `corner` may be 0 for the
        // padded blocks; and the slices start at multiples of n.)
        let misaligned = (image_in.as_ptr() as usize / 4 + corner) % n;
        let aligned = self.g.c_out.is_multiple_of(n) && (self.rolling_kw == 0 || c - first >= 4 * n);
        let head = if aligned { (n - misaligned) % n } else { 0 };
        // Channels below `done` are written.
        let mut done = first;
        if head != 0 {
            self.block_at::<L, P, 1, PADDED>(image_in, oy, ox, corner, step, first, out_row);
            done = first + n;
        }
        let mut c0 = first + head;
        // Row-rolling blocks several at a time where their sums, weights and
        // input vectors fit in the registers (`B·(P + kw + 1)`): AVX2's 16
        // hold two blocks of one pixel, 32 (AVX-512, NEON) two of 8 or four
        // of one (on AVX2, two blocks of 8 pixels spilled: 10 % slower).
        let fit = |blocks: usize| self.rolling_kw != 0 && blocks * (P + self.rolling_kw + 1) <= L::REGS;
        // One pixel: four blocks at once, for sums enough to fill the pipes.
        while c0 + 4 * n <= c && P == 1 && fit(4) {
            self.block_at::<L, P, 4, PADDED>(image_in, oy, ox, corner, step, c0, out_row);
            c0 += 4 * n;
            done = c0;
        }
        while c0 + 2 * n <= c && fit(2) {
            self.block_at::<L, P, 2, PADDED>(image_in, oy, ox, corner, step, c0, out_row);
            c0 += 2 * n;
            done = c0;
        }
        while c0 + n <= c {
            self.block_at::<L, P, 1, PADDED>(image_in, oy, ox, corner, step, c0, out_row);
            c0 += n;
            done = c0;
        }
        if done < c {
            self.block_at::<L, P, 1, PADDED>(image_in, oy, ox, corner, step, c - n, out_row);
        }
    }

    /// `B` channel blocks from `c0` of [`Job::channel_blocks`] (two only
    /// on the row-rolling code). (A method, not a closure: a closure would
    /// compile without the lanes' target features.)
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn block_at<L: Lanes, const P: usize, const B: usize, const PADDED: bool>(
        &self,
        image_in: &[f32],
        oy: usize,
        ox: usize,
        corner: usize,
        step: usize,
        c0: usize,
        out_row: &mut [f32],
    ) {
        match self.rolling_kw {
            3 => self.row_block::<L, P, 3, B, PADDED>(image_in, oy, ox, corner, c0, out_row),
            5 => self.row_block::<L, P, 5, B, PADDED>(image_in, oy, ox, corner, c0, out_row),
            _ => self.whole_block::<L, P>(image_in, corner, step, c0, ox, out_row),
        }
    }

    /// Output pixels `ox .. ox + P` of row `oy` of `image`, every channel
    /// (at least one vector of them), on the row-rolling code whatever the
    /// padding ([`Job::row_block`] with `PADDED`).
    #[inline(always)]
    fn pixels_padded<L: Lanes, const P: usize>(&self, image: usize, oy: usize, ox: usize, out_row: &mut [f32]) {
        let g = self.g;
        debug_assert!(out_row.len() >= (ox + P) * g.c_out);
        let image_len = g.h_in * g.w_in * g.c_out;
        let image_in = &self.input[image * image_len..][..image_len];
        self.channel_blocks::<L, P, true>(image_in, oy, ox, 0, 0, out_row);
    }

    /// [`Job::whole_block`] for stride 1 and dilation 1 across and `KW`
    /// taps a row, on `B` channel blocks `c0 + b·n` at once: per window
    /// row, the `P + KW − 1` input vectors of each block are loaded once
    /// each and multiplied into every output they feed (input column `j` is
    /// tap `v` of pixel `j − v`), against the row's `KW` weight vectors held
    /// in registers. Each output still sums its taps in order (rows in
    /// order; within a row, `j` and so `v` increasing). Two blocks keep 16
    /// sums in flight where one block's 8 wait on each other: a column's
    /// FMAs feed the sums the previous column updated.
    ///
    /// With `PADDED`, for windows that may reach the padding (the border of
    /// the plane): a window row above or below the image, or an input
    /// column left or right of it, multiplies a zero vector, as the general
    /// path's taps in the padding do: the same operations in the same
    /// order, so the same bits, at the speed of the inside pixels (Zen 5, 1
    /// thread, 72 channels 3×3 on 56²: the border's 7 % of the pixels took
    /// 30 % of the time on the general path). Without, every window lies
    /// inside the image and pixel `ox`'s starts at `corner`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn row_block<L: Lanes, const P: usize, const KW: usize, const B: usize, const PADDED: bool>(
        &self,
        image_in: &[f32],
        oy: usize,
        ox: usize,
        corner: usize,
        c0: usize,
        out_row: &mut [f32],
    ) {
        let g = self.g;
        let c = g.c_out;
        let acc = if PADDED {
            // Window row u's input row, and input column j's, signed
            // (negative or past the image in the padding).
            let y0 = (oy * g.stride_h) as isize - g.pad_top as isize;
            let x0 = ox as isize - g.pad_left as isize;
            let (h_in, w_in) = (g.h_in as isize, g.w_in as isize);
            let row_at = |u: usize| {
                let iy = y0 + (u * g.dilation_h) as isize;
                // Input pixel (iy, x0)'s channel c0, formed only for rows of
                // the image (x0 may lie left of it: `wrapping_offset`, read
                // only at columns j with x0 + j inside the row).
                (0..h_in)
                    .contains(&iy)
                    .then(|| image_in.as_ptr().wrapping_offset((iy * w_in + x0) * c as isize + c0 as isize))
            };
            self.roll::<L, P, KW, B>(c0, row_at, |j| (0..w_in).contains(&(x0 + j as isize)))
        } else {
            debug_assert!(corner + (g.kh - 1) * g.dilation_h * g.w_in * c + (P + KW - 1) * c <= image_in.len());
            // (The dilation as taken: a one-row kernel's may be anything.)
            let row_step = g.taken_dilations()[0] * g.w_in * c;
            // The caller put every tap of windows ox .. ox + P inside the
            // image: window row u of pixel p reads input pixels `corner/c +
            // u·dilation_h·w_in + p + v` (v < KW), whose channels c0 .. c0 +
            // B·n <= c lie inside `image_in`.
            let x0 = image_in.as_ptr().wrapping_add(corner + c0);
            self.roll::<L, P, KW, B>(c0, |u| Some(x0.wrapping_add(u * row_step)), |_| true)
        };
        for (b, acc) in acc.iter().enumerate() {
            self.store_sums::<L, P>(acc, c0 + b * L::N, ox, out_row);
        }
    }

    /// The sums of [`Job::row_block`]:
    /// window row `u`'s input pixels from `row_at(u)` (its first pixel's
    /// channel c0; `None`: a row in the padding), input column `j` of the
    /// row read where `column_in(j)`, else a zero vector.
    #[inline(always)]
    fn roll<L: Lanes, const P: usize, const KW: usize, const B: usize>(
        &self,
        c0: usize,
        row_at: impl Fn(usize) -> Option<*const f32>,
        column_in: impl Fn(usize) -> bool,
    ) -> [[L::V; P]; B] {
        let g = self.g;
        let (c, n) = (g.c_out, L::N);
        debug_assert!(g.kw == KW && g.stride_w == 1 && g.dilation_w == 1 && c0 + B * n <= c);
        debug_assert!(self.taps.len() >= g.kh * KW * c);
        // SAFETY: `L`'s features are enabled (the caller runs under its
        // token); tap (u, v)'s weights for channels c0 .. c0 + B·n <= c lie
        // inside `taps` ([kh·KW][c]); input column j of a row is read only
        // where `row_at` and `column_in` promise a pixel of the image, whose
        // channels c0 + b·n .. + n <= c lie inside it.
        unsafe {
            let mut acc = [[L::splat(0.0); P]; B];
            for u in 0..g.kh {
                let mut w = [[L::splat(0.0); KW]; B];
                for (b, w) in w.iter_mut().enumerate() {
                    for (v, w) in w.iter_mut().enumerate() {
                        *w = L::load(self.taps.as_ptr().add((u * KW + v) * c + c0 + b * n));
                    }
                }
                let row = row_at(u);
                for j in 0..P + KW - 1 {
                    for b in 0..B {
                        let x = match row {
                            Some(row) if column_in(j) => L::load(row.add(j * c + b * n)),
                            _ => L::splat(0.0),
                        };
                        for (v, &w) in w[b].iter().enumerate() {
                            if j >= v && j - v < P {
                                acc[b][j - v] = L::fma(x, w, acc[b][j - v]);
                            }
                        }
                    }
                }
            }
            acc
        }
    }

    /// Channels `c0 .. c0 + n` (`c0 + n <= c`) of the output pixels
    /// `ox .. ox + P` of [`Job::pixels_inside`], whose window `p` starts at
    /// `corner + p·step` of `image_in`.
    #[inline(always)]
    fn whole_block<L: Lanes, const P: usize>(
        &self,
        image_in: &[f32],
        corner: usize,
        step: usize,
        c0: usize,
        ox: usize,
        out_row: &mut [f32],
    ) {
        let c = self.g.c_out;
        let tap_offsets = &self.tap_offsets[..self.g.kh * self.g.kw];
        debug_assert!(
            c0 + L::N <= c && corner + (P - 1) * step + tap_offsets[tap_offsets.len() - 1] + c <= image_in.len()
        );
        debug_assert!(out_row.len() >= (ox + P) * c && self.taps.len() >= tap_offsets.len() * c);
        // SAFETY: `L`'s features are enabled (the caller runs under its
        // token). The caller put every tap of windows ox .. ox + P inside
        // the image, so `corner + p·step + tap_offsets[t]` is the first
        // channel of an input pixel of this image, whose channels c0 ..
        // c0 + n <= c lie inside `image_in`; tap t's weights for them lie
        // inside `taps` ([kh·kw][c]); outputs ox + p < w_out of the row.
        let acc = unsafe {
            let x0 = image_in.as_ptr().add(corner + c0);
            let mut acc = [L::splat(0.0); P];
            for (t, &offset) in tap_offsets.iter().enumerate() {
                let w = L::load(self.taps.as_ptr().add(t * c + c0));
                let xt = x0.add(offset);
                for (p, acc) in acc.iter_mut().enumerate() {
                    *acc = L::fma(L::load(xt.add(p * step)), w, *acc);
                }
            }
            acc
        };
        self.store_sums::<L, P>(&acc, c0, ox, out_row);
    }

    /// Output pixels `ox .. ox + P` of row `oy` of `image`, every channel.
    #[inline(always)]
    fn pixels<L: Lanes, const P: usize>(
        &self,
        image: usize,
        oy: usize,
        ox: usize,
        out_row: &mut [f32],
        offsets: &mut [usize; MAX_TAPS * PIXELS],
    ) {
        let g = self.g;
        let c = g.c_out;
        let taps = g.kh * g.kw;
        let image_in = &self.input[image * g.h_in * g.w_in * c..][..g.h_in * g.w_in * c];
        // Where tap t of pixel p reads (its first channel), or NONE in the
        // padding: computed once for every channel block.
        for (t, offsets) in offsets.chunks_exact_mut(P).take(taps).enumerate() {
            let (u, v) = (t / g.kw, t % g.kw);
            let iy = (oy * g.stride_h + u * g.dilation_h).checked_sub(g.pad_top).filter(|&y| y < g.h_in);
            for (p, offset) in offsets.iter_mut().enumerate() {
                let ix = ((ox + p) * g.stride_w + v * g.dilation_w).checked_sub(g.pad_left).filter(|&x| x < g.w_in);
                *offset = match (iy, ix) {
                    (Some(iy), Some(ix)) => (iy * g.w_in + ix) * c,
                    _ => NONE,
                };
            }
        }
        let offsets = &offsets[..taps * P];
        let mut c0 = 0;
        // Where the pixels are few, several whole channel blocks at once:
        // their independent sums hide the FMA latency one sum alone exposes.
        if P == 1 {
            while c0 + 4 * L::N <= c {
                self.whole_blocks::<L, P, 4>(image_in, offsets, c0, ox, out_row);
                c0 += 4 * L::N;
            }
        } else if P < 8 {
            while c0 + 2 * L::N <= c {
                self.whole_blocks::<L, P, 2>(image_in, offsets, c0, ox, out_row);
                c0 += 2 * L::N;
            }
        }
        while c0 < c {
            // A last partial block moves back to end at c where the channels
            // fill a vector (overlapping the one before: the same values
            // again, by the same operations), sparing the partial loads'
            // copies.
            let at = if c0 + L::N > c && c >= L::N { c - L::N } else { c0 };
            self.block::<L, P>(image_in, offsets, at, ox, out_row);
            c0 += L::N;
        }
    }

    /// Channels `c0 .. min(c0 + n, c)` of output pixels `ox .. ox + P`:
    /// tap `t` of pixel `p` reads `image_in` from `offsets[t·P + p]` (its
    /// first channel), or zeros where that is NONE (the padding).
    #[inline(always)]
    fn block<L: Lanes, const P: usize>(
        &self,
        image_in: &[f32],
        offsets: &[usize],
        c0: usize,
        ox: usize,
        out_row: &mut [f32],
    ) {
        let (c, n) = (self.g.c_out, L::N);
        let lanes = n.min(c - c0);
        // SAFETY: `L`'s features are enabled (the caller runs under its
        // token). Full vectors: an offset other than NONE is a pixel of
        // the image, whose channels c0 .. c0 + n <= c lie inside
        // `image_in`; tap t's weights for those channels lie inside
        // `taps` ([kh·kw][c]); partial vectors go through `load_part`
        // and the stack buffers of MAX_LANES >= n floats.
        unsafe {
            let mut acc = [L::splat(0.0); P];
            for (t, offsets) in offsets.chunks_exact(P).enumerate() {
                let w = load_part::<L>(&self.taps[t * c + c0..], lanes);
                for (acc, &offset) in acc.iter_mut().zip(offsets) {
                    let x = if offset == NONE {
                        L::splat(0.0)
                    } else if lanes == n {
                        debug_assert!(offset + c0 + n <= image_in.len());
                        L::load(image_in.as_ptr().add(offset + c0))
                    } else {
                        load_part::<L>(&image_in[offset + c0..], lanes)
                    };
                    *acc = L::fma(x, w, *acc);
                }
            }
            let bias = self.bias.map(|b| load_part::<L>(&b[c0..], lanes));
            for (p, &acc) in acc.iter().enumerate() {
                let sum = bias.map_or(acc, |b| L::add(acc, b));
                let y = L::activate(self.act, sum);
                let dst = &mut out_row[(ox + p) * c + c0..][..lanes];
                if lanes == n {
                    L::store(dst.as_mut_ptr(), y);
                } else {
                    let mut part = [0.0f32; MAX_LANES];
                    L::store(part.as_mut_ptr(), y);
                    dst.copy_from_slice(&part[..lanes]);
                }
            }
        }
    }

    /// [`Job::block`] for `B` whole channel blocks `c0 + b·n` (`c0 + B·n <=
    /// c`) at once: the same operations on each lane.
    #[inline(always)]
    fn whole_blocks<L: Lanes, const P: usize, const B: usize>(
        &self,
        image_in: &[f32],
        offsets: &[usize],
        c0: usize,
        ox: usize,
        out_row: &mut [f32],
    ) {
        let (c, n) = (self.g.c_out, L::N);
        debug_assert!(c0 + B * n <= c && self.taps.len() >= offsets.len() / P * c);
        debug_assert!(out_row.len() >= (ox + P) * c);
        // SAFETY: `L`'s features are enabled (the caller runs under its
        // token). An offset other than NONE is a pixel of the image, whose
        // channels c0 .. c0 + B·n <= c lie inside `image_in`; tap t's
        // weights for them lie inside `taps` ([kh·kw][c]); outputs
        // ox + p < w_out of the row, channels below c.
        unsafe {
            let mut acc = [[L::splat(0.0); P]; B];
            for (t, offsets) in offsets.chunks_exact(P).enumerate() {
                let mut w = [L::splat(0.0); B];
                for (b, w) in w.iter_mut().enumerate() {
                    *w = L::load(self.taps.as_ptr().add(t * c + c0 + b * n));
                }
                for (p, &offset) in offsets.iter().enumerate() {
                    for (b, acc) in acc.iter_mut().enumerate() {
                        let x = if offset == NONE {
                            L::splat(0.0)
                        } else {
                            debug_assert!(offset + c0 + (b + 1) * n <= image_in.len());
                            L::load(image_in.as_ptr().add(offset + c0 + b * n))
                        };
                        acc[p] = L::fma(x, w[b], acc[p]);
                    }
                }
            }
            for (b, acc) in acc.iter().enumerate() {
                self.store_sums::<L, P>(acc, c0 + b * n, ox, out_row);
            }
        }
    }

    /// Channels `c0 .. c0 + n` (`c0 + n <= c`) of output pixels `ox .. ox +
    /// P` from their sums: plus the bias, then the activation, stored.
    #[inline(always)]
    fn store_sums<L: Lanes, const P: usize>(&self, acc: &[L::V; P], c0: usize, ox: usize, out_row: &mut [f32]) {
        let c = self.g.c_out;
        debug_assert!(c0 + L::N <= c && out_row.len() >= (ox + P) * c);
        // SAFETY: `L`'s features are enabled (the caller runs under its
        // token); channels c0 .. c0 + n <= c of the bias and of output
        // pixels ox + p < w_out of the row are in bounds.
        unsafe {
            let bias = self.bias.map(|b| L::load(b.as_ptr().add(c0)));
            let dst = out_row.as_mut_ptr().add(ox * c + c0);
            for (p, &acc) in acc.iter().enumerate() {
                let sum = bias.map_or(acc, |b| L::add(acc, b));
                L::store(dst.add(p * c), L::activate(self.act, sum));
            }
        }
    }
}

/// Channels a row-rolling slice takes: as many whole pairs of vectors as
/// keep the slice's weights (`kh·kw` vectors a block) in a quarter of L1,
/// at least four vectors, or every channel.
fn slice_width(g: &ConvGeometry, n: usize) -> usize {
    let fit = crate::gemm::cache_sizes().l1 / 4 / (g.kh * g.kw * 4).max(1);
    (fit / (2 * n) * (2 * n)).max(4 * n)
}

/// The output columns whose windows lie wholly inside the image's width,
/// and the output rows `top .. bottom` whose windows lie inside its height.
pub(super) fn inside_windows(g: &ConvGeometry) -> (Range<usize>, usize, usize) {
    let axis = |out: usize, size: usize, stride: usize, reach: usize, pad: usize| {
        // o·stride ≥ pad and o·stride + reach − pad < size.
        let first = pad.div_ceil(stride);
        let last = (size + pad).checked_sub(reach + 1).map_or(0, |m| m / stride + 1);
        first.min(out)..last.min(out).max(first.min(out))
    };
    let columns = axis(g.w_out, g.w_in, g.stride_w, (g.kw - 1) * g.dilation_w, g.pad_left);
    let rows = axis(g.h_out, g.h_in, g.stride_h, (g.kh - 1) * g.dilation_h, g.pad_top);
    (columns, rows.start, rows.end)
}

/// Output pixels per call of the unchecked path: 8 accumulators and one
/// weight vector of 32 (AVX-512) or 16 (AVX2) registers.
const INSIDE_PIXELS: usize = 8;

/// An offset that marks a tap in the padding.
const NONE: usize = usize::MAX;

/// The most taps the kernel takes (`kh·kw`, one K chunk).
const MAX_TAPS: usize = crate::gemm::KC;

/// The first `lanes` floats of `src` as a vector, zeros past them.
///
/// # Safety
/// `L`'s features are enabled; `src` holds at least `lanes <= L::N` floats.
#[inline(always)]
unsafe fn load_part<L: Lanes>(src: &[f32], lanes: usize) -> L::V {
    debug_assert!(lanes <= L::N && L::N <= MAX_LANES && src.len() >= lanes);
    if lanes == L::N {
        // SAFETY: `src` holds L::N floats; the caller enabled L's features.
        unsafe { L::load(src.as_ptr()) }
    } else {
        let mut part = [0.0f32; MAX_LANES];
        part[..lanes].copy_from_slice(&src[..lanes]);
        // SAFETY: the buffer holds MAX_LANES >= L::N floats.
        unsafe { L::load(part.as_ptr()) }
    }
}
