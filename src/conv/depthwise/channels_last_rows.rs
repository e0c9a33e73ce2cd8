//! `dwconv_channels_last_rows_<isa>`: channels-last depthwise convolution
//! (multiplier 1) for 3×3 and 5×5 kernels at stride 1 or 2 and dilation 1,
//! rolling sums down the output rows as NCHW's `rolling.rs` does. A strip
//! of `STRIP` output pixels and one vector of channels walks down its
//! column: each input row's `s·(STRIP − 1) + k` vectors (stride `s`) are
//! loaded once and feed the output rows they belong to (`k` at stride 1;
//! at stride 2 the `⌈k/2⌉` whose kernel rows have the input row's
//! parity). 3×3 holds its nine weight vectors in registers (at stride 1,
//! per 16 outputs about 1.5 input loads for 9 FMAs, where
//! `channels_last.rs` loads about 5); 5×5 loads each weight once per input
//! row for the `STRIP` sums it feeds. At stride 1, where a pixel's
//! channels are whole vectors, the blocks of the inside columns start
//! where the input's vectors are aligned, the last of each pixel running
//! into the next one's first channels (a misaligned vector crossing cache
//! lines cost 1.3–1.6× on large planes). Each output sums its taps in tap order from +0 by
//! fused multiply-adds (taps in the padding multiply a zero), then adds the
//! bias: the reproducibility rule's operations, so the same bits as every
//! other path.

use std::ops::Range;

use super::MAX_LANES;
use super::channels_last::ChannelsLast;
use crate::activation::Activation;
use crate::geometry::ConvGeometry;
use crate::isa::Isa;
use crate::simd::{Lanes, WithLanes};

/// Output pixels of a strip: at stride 1 3×3's 12 sums, 9 weights and 6
/// inputs, or 5×5's 20 sums, 8 inputs and a weight, fit in 32 registers;
/// at stride 2 3×3's 8 sums, 9 weights and an input, or 5×5's 12 sums, 11
/// inputs and a weight.
const STRIP: usize = 4;

/// Output rows from which the kernel runs on 16 registers too (Zen 5,
/// AVX2 code: 32×112² 108.8 → 89.9 µs, 32×56² 26.0 → 21.7, 144×56² 106 →
/// 104, but 192×28² 35.1 → 36.4, 576×14² 29.4 → 32.9, 960×7² 12.3 → 17.5).
const WIDE_ROWS: usize = 56;

/// Output rows from which 5×5 takes the kernel at stride 1: on 7×7 planes
/// its 4 extra input rows per 7 and strips that all reach the padding cost
/// more than it saves (Zen 5, AVX-512: 960×7² 16.9 → 22.7 µs, 1152×7² 21.6
/// → 27.9; but 480×14² 49.7 → 35.9, 240×28² 78.4 → 48.4). (Not so on Zen
/// 4, where 960×7² runs 36 → 29 µs on the kernel; left as Zen 5 measured
/// it.) At stride 2 every width takes it (Zen 4: 672×14² to 7² 48 → 31 µs).
const WIDE_ROWS_5X5: usize = 14;

/// The widest kernel the code takes (3×3 and 5×5).
const MAX_K: usize = 5;

/// The input pixels a strip reads in a row at stride 2: `2·(STRIP − 1) + k`.
const MAX_SPAN: usize = 2 * (STRIP - 1) + MAX_K;

/// Whether [`RollingRows`] takes `geo` on `isa`: 3×3 or 5×5, stride 1
/// (or 2, on 32 registers) and dilation 1 both ways, a vector of channels
/// on every lane width, a row at least a strip wide. On lanes of 16
/// registers (AVX2, portable), where 3×3's sums and weights do not fit,
/// 3×3 at stride 1 on rows at least `WIDE_ROWS` wide and no 5×5; 5×5 at
/// stride 1 on rows at least `WIDE_ROWS_5X5` wide, at stride 2 on every
/// width.
pub(super) fn takes(isa: Isa, geo: &ConvGeometry) -> bool {
    let regs32 = matches!(isa, Isa::Avx512 | Isa::Neon);
    let stride = geo.stride_h == geo.stride_w && (geo.stride_h == 1 || geo.stride_h == 2 && regs32);
    (regs32 || geo.w_out >= WIDE_ROWS && geo.kh == 3)
        && (geo.kh == 3 || geo.kh == 5 && regs32 && (geo.w_out >= WIDE_ROWS_5X5 || geo.stride_h == 2))
        && geo.kw == geo.kh
        && stride
        && geo.dilation_h == 1
        && geo.dilation_w == 1
        && geo.c_out == geo.c_in
        && geo.c_out >= MAX_LANES
        && geo.w_out >= STRIP
}

/// Output rows per parallel item of `rows` on `threads` threads: 4 items
/// a thread where rows allow (a thread that starts late leaves the others
/// work to take), but at least `2(k − s) / s` at stride `s` (`2(k − 1)` at
/// stride 1), since each item loads the `k − s` input rows past its own
/// `s` per output row again and walks its strips anew (Zen 5, 2 threads:
/// 960×7² 3×3, items of 1 row against 4, 12.7 -> 5.5 µs; 5×5, items of 4
/// rows against 8: 240×28² 41.2–41.3 -> 33.8–34.4 µs, 672×14² 42.7–44.3
/// -> 32.9–33.8). (At stride 2 the `2(k − 1)` of stride 1 left a 7-row
/// output one item: Zen 4, 672 × 14² 5×5/2, 2 threads as slow as 1.)
pub(super) fn item_rows(geo: &ConvGeometry, rows: usize, threads: usize) -> usize {
    let s = geo.stride_h.max(1);
    rows.div_ceil(4 * threads).max(2 * geo.kh.saturating_sub(s) / s).max(1)
}

/// [`ChannelsLast`]'s rows on this kernel, for a geometry [`takes`] accepts.
pub(super) struct RollingRows<'a>(pub ChannelsLast<'a>);

impl WithLanes for RollingRows<'_> {
    type Output = ();

    #[inline(always)]
    fn run<L: Lanes>(self, _: L) {
        match (self.0.geo.kh, self.0.geo.stride_h) {
            (3, 1) => self.kernel::<L, 3, 1>(),
            (3, _) => self.kernel::<L, 3, 2>(),
            (_, 1) => self.kernel::<L, 5, 1>(),
            _ => self.kernel::<L, 5, 2>(),
        }
    }
}

impl RollingRows<'_> {
    /// [`WithLanes::run`] for a `K × K` kernel at stride `S`.
    #[inline(always)]
    fn kernel<L: Lanes, const K: usize, const S: usize>(self) {
        let ChannelsLast { geo: g, input, taps, bias, act, rows, out } = self.0;
        let c = g.c_out;
        assert!(
            g.kh == K
                && g.kw == K
                && g.stride_h == S
                && g.stride_w == S
                && g.dilation_w == 1
                && c >= L::N
                && out.len() == rows.len() * g.w_out * c
                && taps.len() == K * K * c
        );
        assert!(input.len() == g.batch * g.h_in * g.w_in * c && bias.is_none_or(|b| b.len() == c));
        assert!(rows.end <= g.batch * g.h_out);
        let (row_len, image_len) = (g.w_out * c, g.h_in * g.w_in * c);
        // The output columns whose windows lie inside the image's width.
        let (inside, _, _) = super::channels_last::inside_windows(g);
        // Where a pixel's channels are whole vectors, every pixel's channel
        // 0 lies as far past a vector boundary as the input's first float:
        // blocks starting `shift` channels in load whole aligned vectors
        // (a misaligned load crossing cache lines costs 1.3–1.6× on large
        // planes). The last block of a pixel then runs `shift` channels
        // into the next pixel, whose weights and bias `wrap` holds. At
        // stride 1 only: at stride 2 the next output pixel reads the input
        // pixel after the next. (Zen 4, 64 × 112² 3×3/2: 69–70 µs from an
        // aligned input, 103–106 from one 16 bytes past a line. Covering
        // the channels below `shift` and past the last aligned vector by
        // two unaligned blocks per strip, one block more than the channels'
        // vectors, gained nothing: 102–103 µs. Walks of at most 6 output
        // rows, so that blocks sharing lines find them in L1: slower,
        // 112–114 µs, and 78 aligned.)
        let n = L::N;
        let shift = if S == 1 && c.is_multiple_of(n) { (n - (input.as_ptr() as usize / 4) % n) % n } else { 0 };
        let mut wrap = [0.0f32; MAX_K * MAX_K * MAX_LANES + MAX_LANES];
        if shift != 0 {
            // Rows of n: the taps' channels c − n + shift .. c, then 0 .. shift; the bias last.
            for (t, dst) in wrap.chunks_exact_mut(n).take(K * K).enumerate() {
                dst[..n - shift].copy_from_slice(&taps[t * c + c - n + shift..(t + 1) * c]);
                dst[n - shift..].copy_from_slice(&taps[t * c..t * c + shift]);
            }
            if let Some(b) = bias {
                let dst = &mut wrap[K * K * n..(K * K + 1) * n];
                dst[..n - shift].copy_from_slice(&b[c - n + shift..]);
                dst[n - shift..].copy_from_slice(&b[..shift]);
            }
        }
        let normal = |c0: usize| Weights { taps: &taps[c0..], stride: c, bias: bias.map(|b| &b[c0..]) };
        let wrapped = Weights { taps: &wrap, stride: n, bias: bias.map(|_| &wrap[K * K * n..]) };
        let mut r = rows.start;
        while r < rows.end {
            // The rows of one image at a time.
            let image = r / g.h_out;
            let end = rows.end.min((image + 1) * g.h_out);
            let out_rows = &mut out[(r - rows.start) * row_len..(end - rows.start) * row_len];
            let strips = Strips {
                g,
                image_in: &input[image * image_len..][..image_len],
                act,
                oys: r - image * g.h_out..end - image * g.h_out,
            };
            // Shifted strips on the inside columns from STRIP on (see
            // `shift`), the first with an unshifted first block for the
            // channels below the shift of its first pixel.
            let start = STRIP.max(inside.start);
            let mut shifted_end = start;
            if shift != 0 {
                while shifted_end + STRIP < inside.end {
                    if shifted_end == start {
                        strips.column::<L, K, S, false>(shifted_end, 0, &normal(0), out_rows);
                    }
                    for c0 in (shift..c).step_by(n) {
                        let w = if c0 + n <= c { normal(c0) } else { wrapped };
                        strips.column::<L, K, S, false>(shifted_end, c0, &w, out_rows);
                    }
                    shifted_end += STRIP;
                }
            }
            // The other columns: channel blocks of a vector, the last moved
            // back to end at c (overlapping the one before: the same values
            // again, by the same operations); strips of STRIP columns
            // likewise.
            let rest = if shifted_end > start { [0..start, shifted_end..g.w_out] } else { [0..g.w_out, 0..0] };
            for run in rest.into_iter().filter(|run| !run.is_empty()) {
                for ox in run.clone().step_by(STRIP).map(|ox| ox.min(run.end - STRIP)) {
                    for c0 in (0..c).step_by(n).map(|c0| c0.min(c - n)) {
                        let w = normal(c0);
                        if inside.start <= ox && ox + STRIP <= inside.end {
                            strips.column::<L, K, S, false>(ox, c0, &w, out_rows);
                        } else {
                            strips.column::<L, K, S, true>(ox, c0, &w, out_rows);
                        }
                    }
                }
            }
            r = end;
        }
    }
}

/// Where a block's weights come from: tap `t`'s `n` from `taps[t·stride..]`,
/// the bias's from `bias`.
#[derive(Clone, Copy)]
struct Weights<'a> {
    taps: &'a [f32],
    stride: usize,
    bias: Option<&'a [f32]>,
}

/// What every strip of one image shares.
struct Strips<'a> {
    g: &'a ConvGeometry,
    /// The image's input, channels-last.
    image_in: &'a [f32],
    act: Activation,
    /// The output rows of the image to compute (`out` holds exactly these).
    oys: Range<usize>,
}

impl Strips<'_> {
    /// Channels `c0 .. c0 + n` of output columns `ox .. ox + STRIP` in every
    /// row of `oys`, at stride `S`. After input row `iy` (`top = iy +
    /// pad_top`), `acc[s]` holds output row `top / S − s`, which has had
    /// kernel rows up to `top % S + S·s`; at stride 1 `acc[K − 1]`, at
    /// stride 2 after an even `top` `acc[(K − 1) / 2]`, is then complete.
    /// `PADDED`: some window may reach past the image's width (those
    /// columns read zeros), else all lie inside it.
    #[inline(always)]
    fn column<L: Lanes, const K: usize, const S: usize, const PADDED: bool>(
        &self,
        ox: usize,
        c0: usize,
        weights: &Weights<'_>,
        out: &mut [f32],
    ) {
        let g = self.g;
        let (c, n) = (g.c_out, L::N);
        // Output rows in flight, and the input pixels of a strip's row.
        let (slots, span) = (K.div_ceil(S), S * (STRIP - 1) + K);
        debug_assert!(ox + STRIP <= g.w_out && out.len() == self.oys.len() * g.w_out * c);
        debug_assert!(c0 + n <= c || !PADDED && (ox + STRIP + 1) * c + c0 <= (g.w_out + 1) * c);
        debug_assert!(weights.taps.len() >= (K * K - 1) * weights.stride + n);
        debug_assert!(weights.bias.is_none_or(|b| b.len() >= n));
        debug_assert!(S <= 2 && span <= MAX_SPAN && K % 2 == 1);
        let (h_in, w_in) = (g.h_in as isize, g.w_in as isize);
        // Input column of each of the strip's `span` input pixels.
        let x0 = (ox * S) as isize - g.pad_left as isize;
        let mut column_in = [true; MAX_SPAN];
        for (j, inside) in column_in.iter_mut().enumerate().take(span) {
            *inside = (0..w_in).contains(&(x0 + j as isize));
        }
        let (first, last) = (self.oys.start as isize, self.oys.end as isize - 1);
        let pad_top = g.pad_top as isize;
        // The slot that completes its row, after a row of `top % S` equal to `(K − 1) % S`.
        let done_slot = (K - 1) / S;
        // SAFETY: `L`'s features are enabled (the caller runs under its
        // token). `weights` holds K·K rows of n floats `stride` apart and n
        // of bias (asserted above). Input pixel (iy, x0 + j) is read only
        // where iy is a row of the image and, PADDED, `column_in[j]`
        // (unpadded, the caller put every column of the strip inside the
        // image): its channels c0 .. c0 + n; where c0 + n > c (a block
        // shifted to aligned loads, never PADDED) they run into pixel x0 + j
        // + 1, which the caller also put inside the image (ox + STRIP lies
        // left of the inside columns' end, and its window's last pixel, x0
        // + S·STRIP + K − 1, lies at or past x0 + span). Output row oy of
        // `oys` is stored at `(oy − oys.start)·w_out + ox + p` (p < STRIP),
        // channels c0 .. c0 + n, at most into pixel ox + STRIP < w_out:
        // inside `out`.
        unsafe {
            let zero = L::splat(0.0);
            // The weights in registers for 3×3 (see `STRIP`); 5×5's sums
            // and inputs leave no room: loaded where used.
            let mut w = [[zero; K]; K];
            for (u, w) in w.iter_mut().enumerate().take(if K == 3 { K } else { 0 }) {
                for (v, w) in w.iter_mut().enumerate() {
                    *w = L::load(weights.taps.as_ptr().add((u * K + v) * weights.stride));
                }
            }
            let bias = weights.bias.map(|b| L::load(b.as_ptr()));
            // (The first `slots` used.)
            let mut acc = [[zero; STRIP]; K];
            // Input rows from the first output row's window top to the last one's bottom.
            for iy in first * S as isize - pad_top..=last * S as isize - pad_top + K as isize - 1 {
                // Sums of output rows outside `oys` are not computed: row iy
                // feeds output row top / S − s through kernel row top % S + S·s.
                let top = iy + pad_top;
                let (newest, odd) = (top / S as isize, top % S as isize == 1);
                let guard = newest - (slots as isize - 1) < first || newest > last;
                let row = (0..h_in)
                    .contains(&iy)
                    .then(|| self.image_in.as_ptr().wrapping_offset((iy * w_in + x0) * c as isize + c0 as isize));
                let mut live = [true; K];
                if guard {
                    for (s, live) in live.iter_mut().enumerate() {
                        *live = (first..=last).contains(&(newest - s as isize));
                    }
                }
                match (guard, odd) {
                    (false, false) => {
                        feed::<L, K, S, false, PADDED>(&mut acc, &w, weights, row, &column_in, [true; K], c)
                    }
                    (true, false) => feed::<L, K, S, false, PADDED>(&mut acc, &w, weights, row, &column_in, live, c),
                    (false, true) => {
                        feed::<L, K, S, true, PADDED>(&mut acc, &w, weights, row, &column_in, [true; K], c)
                    }
                    (true, true) => feed::<L, K, S, true, PADDED>(&mut acc, &w, weights, row, &column_in, live, c),
                }
                if (top % S as isize) as usize == (K - 1) % S {
                    // Output row newest − done_slot is complete.
                    let done = newest - done_slot as isize;
                    if (first..=last).contains(&done) {
                        let dst = out.as_mut_ptr().add(((done - first) as usize * g.w_out + ox) * c + c0);
                        for (p, &sum) in acc[done_slot].iter().enumerate() {
                            let sum = bias.map_or(sum, |b| L::add(sum, b));
                            L::store(dst.add(p * c), L::activate(self.act, sum));
                        }
                    }
                }
                if (top + 1) % S as isize == 0 {
                    // The next row starts output row newest + 1 in slot 0.
                    for s in (1..slots).rev() {
                        acc[s] = acc[s - 1];
                    }
                    acc[0] = [zero; STRIP];
                }
            }
        }
    }
}

/// One input row into the sums of [`Strips::column`] at stride `S`: input
/// pixel `j` of the strip from `row + j·c` (`None`: a row in the padding;
/// `PADDED` and not `column_in[j]`: a column in the padding; both read as
/// zeros), into `acc[s]` where `live[s]`, through kernel row `ODD + S·s`
/// (rows past `K` none); tap (u, v)'s weights from `w` (3×3) or `weights`
/// (5×5). Input pixel `j` is tap `v` of output pixel `p` where `j = S·p + v`.
///
/// # Safety
/// `L`'s features are enabled; where `row` is `Some` and column `j` is
/// read, `row + j·c .. + n` lies inside the image; `weights` holds `K·K`
/// rows of `n` floats `stride` apart.
// (Index loops: `j` and `v` index several arrays, and iterator filters
// kept the sums in memory.)
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
#[inline(always)]
unsafe fn feed<L: Lanes, const K: usize, const S: usize, const ODD: bool, const PADDED: bool>(
    acc: &mut [[L::V; STRIP]; K],
    w: &[[L::V; K]; K],
    weights: &Weights<'_>,
    row: Option<*const f32>,
    column_in: &[bool; MAX_SPAN],
    live: [bool; K],
    c: usize,
) {
    let (slots, span) = (K.div_ceil(S), S * (STRIP - 1) + K);
    // SAFETY: as the caller promises.
    unsafe {
        if K == 3 {
            // Each input vector into the sums it feeds as it is loaded (on
            // large planes 1.16–1.26× faster than loading the row first).
            // (Plain loops: iterator filters here kept the sums in memory.)
            for j in 0..span {
                let x = match row {
                    Some(row) if !PADDED || column_in[j] => L::load(row.wrapping_add(j * c)),
                    _ => L::splat(0.0),
                };
                for s in 0..slots {
                    let u = ODD as usize + S * s;
                    if u >= K || !live[s] {
                        continue;
                    }
                    for v in 0..K {
                        if j >= v && (j - v) % S == 0 && (j - v) / S < STRIP {
                            let p = (j - v) / S;
                            acc[s][p] = L::fma(x, w[u][v], acc[s][p]);
                        }
                    }
                }
            }
        } else {
            // The row's inputs first, then each weight, loaded once, into
            // the STRIP sums it feeds.
            let mut x = [L::splat(0.0); MAX_SPAN];
            for (j, x) in x.iter_mut().enumerate().take(span) {
                match row {
                    Some(row) if !PADDED || column_in[j] => *x = L::load(row.wrapping_add(j * c)),
                    _ => {}
                }
            }
            for s in 0..slots {
                let u = ODD as usize + S * s;
                if u >= K || !live[s] {
                    continue;
                }
                for v in 0..K {
                    let w = L::load(weights.taps.as_ptr().add((u * K + v) * weights.stride));
                    for (p, acc) in acc[s].iter_mut().enumerate() {
                        *acc = L::fma(x[S * p + v], w, *acc);
                    }
                }
            }
        }
    }
}
