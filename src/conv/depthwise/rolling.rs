//! `dwconv_3x3_rolling_<isa>` and `dwconv_5x5_rolling_<isa>`: depthwise rows
//! by rolling accumulators, on lanes with masked loads (x86-64's AVX2 and
//! AVX-512), read in place from the plane: each input row is loaded once
//! per kernel column (stride 1) or once per pair of kernel columns, its
//! even and odd columns split in registers (stride 2), and feeds the output
//! rows it belongs to; masked loads supply the zero padding.

use super::Depthwise;
use crate::activation::Activation;
use crate::geometry::ConvGeometry;
use crate::simd::MaskedLanes;

/// Most vectors of output columns in one block of [`dwconv_rolling`].
const ROLLING_MAX_C: usize = 4;

/// Whether [`dwconv_rolling`] takes this geometry on lanes of `lanes`
/// floats: a 3 × 3 or 5 × 5 kernel, no vertical dilation, and stride 1 both
/// ways, or stride 2 both ways without dilation on 16 lanes (AVX-512 splits
/// a pair of vectors into even and odd columns in 2 shuffles, AVX2 in 4:
/// on Zen 4 its stride-2 rows were even with the blocks of channels or
/// slower, 240 × 28² 3×3 64 against 58 µs).
pub(super) fn takes(geo: &ConvGeometry, lanes: usize) -> bool {
    let strides = match (geo.stride_h, geo.stride_w) {
        (1, 1) => true,
        (2, 2) => geo.dilation_w == 1 && lanes == 16,
        _ => false,
    };
    strides && geo.dilation_h == 1 && geo.kh == geo.kw && matches!(geo.kh, 3 | 5)
}

/// The convolution of one (image, group) with one input channel, as
/// `dwconv_plane` computes it (the same outputs, bit for bit), for a
/// geometry [`takes`] accepts, without a padded copy of the plane:
/// each input row is loaded once per kernel column and feeds the `k`
/// output rows it belongs to (stride 1, [`Block::rows`]), or once per pair
/// of kernel columns, split into even and odd columns, and feeds the
/// `⌈k/2⌉` or `⌊k/2⌋` output rows it belongs to (stride 2,
/// [`Block::rows_stride_2`]). The zero padding comes from masked loads
/// (masked lanes read as `0.0`), so every output still does its `kh·kw`
/// FMAs in tap order from `+0.0`; bias and activation are applied to each
/// finished row before it is stored.
///
/// # Safety
/// `L`'s instructions are available.
#[inline(always)]
pub(super) unsafe fn dwconv_rolling<L: MaskedLanes>(job: Depthwise<'_>) {
    let Depthwise { geo, plane, weight, bias, act, out, .. } = job;
    assert!(takes(geo, L::N) && plane.len() >= geo.h_in * geo.w_in, "a plane of a geometry dwconv_rolling takes");
    let taps = geo.kh * geo.kw;
    // Vectors per row: `k·C` accumulators, `C` input vectors, a weight and
    // a mask fit in the registers at stride 1 (at stride 2, `⌈k/2⌉·C`
    // accumulators and a pair of vectors split into two, fewer).
    let max_c = ((L::REGS - 2) / (geo.kh + 1)).min(ROLLING_MAX_C);
    for (o, out_plane) in out.chunks_exact_mut(geo.out_pixels()).enumerate() {
        let block = |x0, cols| Block {
            geo,
            plane,
            plane_stride: 0,
            kernel: &weight[o * taps..(o + 1) * taps],
            bias: bias.map(|b| &b[o..o + 1]),
            act,
            x0,
            cols,
        };
        let mut x0 = 0;
        while x0 < geo.w_out {
            let cols = (geo.w_out - x0).min(L::N * max_c);
            let b = block(x0, cols);
            // SAFETY: CPU support is the caller's; the block's columns fit
            // its `C` vectors.
            unsafe {
                match (geo.kh, cols.div_ceil(L::N)) {
                    (3, c) if geo.stride_h == 2 => match c {
                        1 => b.rows_stride_2::<L, 3, 1, 1>(out_plane),
                        2 => b.rows_stride_2::<L, 3, 2, 1>(out_plane),
                        3 => b.rows_stride_2::<L, 3, 3, 1>(out_plane),
                        _ => b.rows_stride_2::<L, 3, 4, 1>(out_plane),
                    },
                    (_, c) if geo.stride_h == 2 => match c {
                        1 => b.rows_stride_2::<L, 5, 1, 1>(out_plane),
                        2 => b.rows_stride_2::<L, 5, 2, 1>(out_plane),
                        3 => b.rows_stride_2::<L, 5, 3, 1>(out_plane),
                        _ => b.rows_stride_2::<L, 5, 4, 1>(out_plane),
                    },
                    (3, 1) => b.rows::<L, 3, 1, 1>(out_plane),
                    (3, 2) => b.rows::<L, 3, 2, 1>(out_plane),
                    (3, 3) => b.rows::<L, 3, 3, 1>(out_plane),
                    (3, _) => b.rows::<L, 3, 4, 1>(out_plane),
                    (_, 1) => b.rows::<L, 5, 1, 1>(out_plane),
                    (_, 2) => b.rows::<L, 5, 2, 1>(out_plane),
                    (_, 3) => b.rows::<L, 5, 3, 1>(out_plane),
                    (_, _) => b.rows::<L, 5, 4, 1>(out_plane),
                }
            }
            x0 += cols;
        }
    }
}

/// Whether [`dwconv_rolling_blocks`] takes `geo` on AVX-512's 16 lanes:
/// [`takes`] on rows of 9 to 32 outputs under a 3 × 3 kernel at stride 1
/// (one or two vectors), of 9 to 16 otherwise (one vector), where the
/// rows of one plane a call paid the call for little work and, under
/// 3 × 3, kept only three chains of FMAs in flight a vector (two at
/// stride 2) (Zen 4, 1 thread: 672×14² 3×3 59.6 -> 37.0 µs, 200×14² 3×3
/// 17.5 -> 10.7, 240×28² 3×3 55.8 -> 45.1, 480×14² 5×5 82.2 -> 67.9;
/// stride 2: 240×28² 3×3 30.8 -> 24.2, 5×5 49.7 -> 43.8; 120×28² 5×5 at stride 1
/// gained 5 % on 1 thread and lost 7 % on 2, its 7.5 blocks split
/// unevenly, and stays a plane a call).
pub(super) fn takes_blocks(geo: &ConvGeometry) -> bool {
    let widest = if geo.kh == 3 && geo.stride_h == 1 { 32 } else { 16 };
    takes(geo, 16) && (9..=widest).contains(&geo.w_out)
}

/// The depthwise convolution of one block of channels (see
/// [`super::Block`]; its scratch and landing table are not used) through
/// [`Block::rows`] or [`Block::rows_stride_2`], each plane read in place:
/// under a 3 × 3 kernel two channels at a time (under 5 × 5,
/// two channels' 50 weights would not fit the registers, and one
/// channel's five chains are enough).
///
/// # Safety
/// `L`'s instructions are available; [`takes_blocks`] holds for the
/// block's geometry and `L` has 16 lanes and 32 registers.
#[inline(always)]
pub(super) unsafe fn dwconv_rolling_blocks<L: MaskedLanes>(job: super::Block<'_>) {
    let count = job.count();
    let super::Block { geo, skip, input, weight, bias, act, out, .. } = job;
    let (plane_in, pixels, taps) = (geo.h_in * geo.w_in, geo.out_pixels(), geo.kh * geo.kw);
    assert!(
        takes_blocks(geo) && L::N == 16 && L::REGS >= 32,
        "a block of a geometry dwconv_rolling_blocks takes, on 16 lanes"
    );
    let mut c = skip;
    while c < count {
        let ch = if geo.kh == 3 { (count - c).min(2) } else { 1 };
        let block = Block {
            geo,
            plane: &input[c * plane_in..(c + ch) * plane_in],
            plane_stride: plane_in,
            kernel: &weight[c * taps..(c + ch) * taps],
            bias: bias.map(|b| &b[c..c + ch]),
            act,
            x0: 0,
            cols: geo.w_out,
        };
        let out = &mut out[(c - skip) * pixels..(c - skip + ch) * pixels];
        // SAFETY: CPU support is the caller's; the row fits two vectors
        // under 3 × 3 at stride 1, else one (`takes_blocks`).
        unsafe {
            match (geo.kh, geo.w_out > 16, ch) {
                (3, _, 2) if geo.stride_h == 2 => block.rows_stride_2::<L, 3, 1, 2>(out),
                (3, _, _) if geo.stride_h == 2 => block.rows_stride_2::<L, 3, 1, 1>(out),
                (_, _, _) if geo.stride_h == 2 => block.rows_stride_2::<L, 5, 1, 1>(out),
                (3, false, 2) => block.rows::<L, 3, 1, 2>(out),
                (3, false, _) => block.rows::<L, 3, 1, 1>(out),
                (3, true, 2) => block.rows::<L, 3, 2, 2>(out),
                (3, true, _) => block.rows::<L, 3, 2, 1>(out),
                _ => block.rows::<L, 5, 1, 1>(out),
            }
        }
        c += ch;
    }
}

/// Output columns `x0 .. x0 + cols` of one output plane of
/// [`dwconv_rolling`], or of the planes of consecutive channels
/// ([`dwconv_rolling_blocks`]): channel `ch` reads the plane from
/// `ch·plane_stride` of `plane` (0: a channel multiplier's planes share
/// their input), its taps from `ch·kh·kw` of `kernel` and its bias
/// `bias[ch]`.
struct Block<'a> {
    geo: &'a ConvGeometry,
    plane: &'a [f32],
    plane_stride: usize,
    kernel: &'a [f32],
    bias: Option<&'a [f32]>,
    act: Activation,
    x0: usize,
    cols: usize,
}

impl Block<'_> {
    /// Every output row of the block, `C` vectors wide, for a `K × K`
    /// kernel, of `CH` channels at once (their output planes one after
    /// another in `out`; two channels on a single vector's columns keep
    /// six chains of FMAs in flight, not three). After input row `i` (of
    /// the padded frame), `acc[ch][u]` holds output row `i - u` of channel
    /// `ch`, which has had the taps of kernel rows `0..=u`; `acc[ch][K -
    /// 1]` is then complete.
    ///
    /// # Safety
    /// `L`'s instructions are available.
    #[inline(always)]
    unsafe fn rows<L: MaskedLanes, const K: usize, const C: usize, const CH: usize>(&self, out: &mut [f32]) {
        let (geo, n) = (self.geo, L::N);
        let plane_len = geo.h_in * geo.w_in;
        assert!(K == geo.kh && K == geo.kw && self.cols <= n * C && self.x0 + self.cols <= geo.w_out);
        assert!(self.plane.len() >= (CH - 1) * self.plane_stride + plane_len && self.kernel.len() >= CH * K * K);
        assert!(out.len() >= CH * geo.out_pixels() && self.bias.is_none_or(|b| b.len() >= CH));
        // Load (c, v) reads the input columns `start[c] + v·dw ..+ N`; its
        // mask keeps the lanes inside the row (the rest is the zero padding).
        // (Plain loops, not closures: a closure would not inherit the
        // caller's target features, and the mask intrinsics would become calls.)
        let mut start = [0isize; C];
        for (c, s) in start.iter_mut().enumerate() {
            *s = (self.x0 + n * c) as isize - geo.pad_left as isize;
        }
        // SAFETY: CPU support is the caller's.
        let (zero, empty) = unsafe { (L::splat(0.0), L::mask(0, 0)) };
        let mut bias = [zero; CH];
        if let Some(b) = self.bias {
            for (v, &b) in bias.iter_mut().zip(b) {
                // SAFETY: as above.
                *v = unsafe { L::splat(b) };
            }
        }
        // Each load's mask, and whether vector c has a load with lanes
        // outside the row (an edge). A vector with none loads unmasked,
        // which is faster (AVX-512 res. AVX2 on MobileNetV2's layer: 72
        // against 76 µs, 110 against 139 µs).
        let (mut masks, none) = ([[empty; C]; K], [[empty; C]; K]);
        let (mut stores, mut edge) = ([0usize; C], [false; C]);
        for c in 0..C {
            for (v, row) in masks.iter_mut().enumerate() {
                let s = start[c] + (v * geo.dilation_w) as isize;
                let lo = (-s).clamp(0, n as isize) as usize;
                let hi = (geo.w_in as isize - s).clamp(0, n as isize) as usize;
                // SAFETY: as above.
                row[c] = unsafe { L::mask(lo, hi.max(lo)) };
                edge[c] |= lo != 0 || hi != n;
            }
            // The columns vector c stores.
            stores[c] = self.cols.saturating_sub(n * c).min(n);
        }
        let mut shifts = [0isize; K];
        for (v, s) in shifts.iter_mut().enumerate() {
            *s = (v * geo.dilation_w) as isize;
        }
        let mut wv = [[[zero; K]; K]; CH];
        for (ch, wv) in wv.iter_mut().enumerate() {
            for (u, row) in wv.iter_mut().enumerate() {
                for (v, w) in row.iter_mut().enumerate() {
                    // SAFETY: CPU support as above.
                    *w = unsafe { L::splat(self.kernel[(ch * K + u) * K + v]) };
                }
            }
        }
        let mut acc = [[[zero; C]; K]; CH];
        for i in 0..geo.h_out + K - 1 {
            let iy = i as isize - geo.pad_top as isize;
            let masks_are_none = !(0..geo.h_in as isize).contains(&iy);
            let masks = if masks_are_none { &none } else { &masks };
            // Only read through where inside the plane: outside, every mask is empty.
            let row = self.plane.as_ptr().wrapping_offset(iy.wrapping_mul(geo.w_in as isize));
            for c in 0..C {
                let masked = edge[c] || masks_are_none;
                for v in 0..K {
                    for (ch, acc) in acc.iter_mut().enumerate() {
                        let p = row.wrapping_add(ch * self.plane_stride).wrapping_offset(start[c] + shifts[v]);
                        // SAFETY: the masks keep only the lanes inside row
                        // `iy` of channel ch's plane (unmasked: every lane
                        // of every shift is); CPU support as above.
                        let x = unsafe { if masked { L::load_masked(masks[v][c], p) } else { L::load(p) } };
                        for u in 0..K {
                            // SAFETY: CPU support as above.
                            acc[u][c] = unsafe { L::fma(wv[ch][u][v], x, acc[u][c]) };
                        }
                    }
                }
            }
            if let Some(r) = (i + 1).checked_sub(K).filter(|&r| r < geo.h_out) {
                for (ch, acc) in acc.iter().enumerate() {
                    let dst = out[ch * geo.out_pixels() + r * geo.w_out + self.x0..].as_mut_ptr();
                    for (c, &a) in acc[K - 1].iter().enumerate() {
                        // SAFETY: the store writes the columns
                        // `x0 + N·c + j < x0 + cols <= w_out` of row `r`; CPU as above.
                        unsafe {
                            let a = if self.bias.is_some() { L::add(a, bias[ch]) } else { a };
                            L::store_first(dst.add(n * c), L::activate(self.act, a), stores[c]);
                        }
                    }
                }
            }
            for acc in acc.iter_mut() {
                for u in (1..K).rev() {
                    acc[u] = acc[u - 1];
                }
                acc[0] = [zero; C];
            }
        }
    }
}

/// Output rows in flight at stride 2: `(K + 1) / 2` for `K` of 3 or 5.
const STRIDE_2_SLOTS: usize = 3;

impl Block<'_> {
    /// [`Block::rows`] at stride 2 both ways. Slot `s` of `acc` holds
    /// output row `⌊i / 2⌋ − s` after input row `i` (of the padded frame),
    /// which has had kernel rows `0 ..= i − 2·(⌊i / 2⌋ − s)`; an even row
    /// starts a new output row in slot 0, and output row `r` is complete
    /// after input row `2·r + K − 1`, in slot `(K − 1) / 2`. Each input
    /// row's pairs of vectors (from columns `2·x + 2p`, masked at the
    /// plane's edges) are split into their even and odd columns once, taps
    /// `2p` and `2p + 1`, for every output row the row feeds. `CH`
    /// channels at once, as in [`Block::rows`] (`acc[ch][s]`).
    ///
    /// # Safety
    /// `L`'s instructions are available.
    #[inline(always)]
    unsafe fn rows_stride_2<L: MaskedLanes, const K: usize, const C: usize, const CH: usize>(&self, out: &mut [f32]) {
        let (geo, n) = (self.geo, L::N);
        let plane_len = geo.h_in * geo.w_in;
        assert!(K == geo.kh && K == geo.kw && K % 2 == 1 && K.div_ceil(2) <= STRIDE_2_SLOTS);
        assert!(geo.stride_h == 2 && geo.stride_w == 2 && geo.dilation_h == 1 && geo.dilation_w == 1);
        assert!(self.cols <= n * C && self.x0 + self.cols <= geo.w_out && geo.h_out > 0);
        assert!(self.plane.len() >= (CH - 1) * self.plane_stride + plane_len && self.kernel.len() >= CH * K * K);
        assert!(out.len() >= CH * geo.out_pixels() && self.bias.is_none_or(|b| b.len() >= CH));
        let mut start = [0isize; C];
        for (c, s) in start.iter_mut().enumerate() {
            *s = 2 * (self.x0 + n * c) as isize - geo.pad_left as isize;
        }
        // SAFETY: CPU support is the caller's.
        let (zero, empty) = unsafe { (L::splat(0.0), L::mask(0, 0)) };
        let mut bias = [zero; CH];
        if let Some(b) = self.bias {
            for (v, &b) in bias.iter_mut().zip(b) {
                // SAFETY: as above.
                *v = unsafe { L::splat(b) };
            }
        }
        // The masks of pair p's two loads for vector c, and whether any
        // load of vector c has lanes outside the row (see `rows`).
        let mut masks = [[[empty; 2]; C]; STRIDE_2_SLOTS];
        let (mut stores, mut edge) = ([0usize; C], [false; C]);
        for c in 0..C {
            for (p, pairs) in masks.iter_mut().take(K.div_ceil(2)).enumerate() {
                for (half, m) in pairs[c].iter_mut().enumerate() {
                    let s = start[c] + (2 * p + half * n) as isize;
                    let lo = (-s).clamp(0, n as isize) as usize;
                    let hi = (geo.w_in as isize - s).clamp(0, n as isize) as usize;
                    // SAFETY: as above.
                    *m = unsafe { L::mask(lo, hi.max(lo)) };
                    edge[c] |= lo != 0 || hi != n;
                }
            }
            // The columns vector c stores.
            stores[c] = self.cols.saturating_sub(n * c).min(n);
        }
        let mut wv = [[[zero; K]; K]; CH];
        for (ch, wv) in wv.iter_mut().enumerate() {
            for (u, row) in wv.iter_mut().enumerate() {
                for (v, w) in row.iter_mut().enumerate() {
                    // SAFETY: CPU support as above.
                    *w = unsafe { L::splat(self.kernel[(ch * K + u) * K + v]) };
                }
            }
        }
        let rows = Rows2 { start: &start, masks: &masks, edge: &edge, wv: &wv };
        let mut acc = [[[zero; C]; STRIDE_2_SLOTS]; CH];
        let last = 2 * (geo.h_out - 1) + K;
        for i in (0..last).step_by(2) {
            for acc in acc.iter_mut() {
                for s in (1..STRIDE_2_SLOTS).rev() {
                    acc[s] = acc[s - 1];
                }
                acc[0] = [zero; C];
            }
            // SAFETY: CPU support as above.
            unsafe { self.feed::<L, K, C, CH, 0>(i, rows, &mut acc) };
            if let Some(r) = (i + 1).checked_sub(K).map(|d| d / 2).filter(|&r| r < geo.h_out) {
                for (ch, acc) in acc.iter().enumerate() {
                    let dst = out[ch * geo.out_pixels() + r * geo.w_out + self.x0..].as_mut_ptr();
                    for (c, &a) in acc[(K - 1) / 2].iter().enumerate() {
                        // SAFETY: the store writes the columns
                        // `x0 + N·c + j < x0 + cols <= w_out` of row `r`; CPU as above.
                        unsafe {
                            let a = if self.bias.is_some() { L::add(a, bias[ch]) } else { a };
                            L::store_first(dst.add(n * c), L::activate(self.act, a), stores[c]);
                        }
                    }
                }
            }
            if i + 1 < last {
                // SAFETY: CPU support as above.
                unsafe { self.feed::<L, K, C, CH, 1>(i + 1, rows, &mut acc) };
            }
        }
    }

    /// Input row `i` of the padded frame (`i % 2 == ODD`) into the output
    /// rows it feeds, for each of the `CH` channels: slot `s` takes kernel
    /// row `ODD + 2·s` where that is below `K`. Rows outside the plane feed
    /// zeros (every output still does all its FMAs).
    ///
    /// # Safety
    /// `L`'s instructions are available; `rows` from [`Block::rows_stride_2`].
    #[inline(always)]
    unsafe fn feed<L: MaskedLanes, const K: usize, const C: usize, const CH: usize, const ODD: usize>(
        &self,
        i: usize,
        rows: Rows2<'_, L, K, C, CH>,
        acc: &mut [[[L::V; C]; STRIDE_2_SLOTS]; CH],
    ) {
        let geo = self.geo;
        let iy = i as isize - geo.pad_top as isize;
        let inside = (0..geo.h_in as isize).contains(&iy);
        // Only read through where inside the plane.
        let row = self.plane.as_ptr().wrapping_offset(iy.wrapping_mul(geo.w_in as isize));
        // SAFETY: the caller's; the loads read lanes inside row `iy` of
        // each channel's plane only (unmasked: every lane of both halves
        // of every pair is).
        unsafe {
            let zero = L::splat(0.0);
            for c in 0..C {
                for p in 0..K.div_ceil(2) {
                    for (ch, acc) in acc.iter_mut().enumerate() {
                        let (a, b) = if !inside {
                            (zero, zero)
                        } else {
                            let at = row
                                .wrapping_add(ch * self.plane_stride)
                                .wrapping_offset(rows.start[c] + 2 * p as isize);
                            if rows.edge[c] {
                                let [m0, m1] = rows.masks[p][c];
                                (L::load_masked(m0, at), L::load_masked(m1, at.wrapping_add(L::N)))
                            } else {
                                (L::load(at), L::load(at.add(L::N)))
                            }
                        };
                        let (even, odd) = L::unzip(a, b);
                        for (s, slot) in acc.iter_mut().enumerate() {
                            let u = ODD + 2 * s;
                            if u < K {
                                slot[c] = L::fma(rows.wv[ch][u][2 * p], even, slot[c]);
                                if 2 * p + 1 < K {
                                    slot[c] = L::fma(rows.wv[ch][u][2 * p + 1], odd, slot[c]);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// What every input row of [`Block::rows_stride_2`] reads by: each
/// vector's first column, its pairs' masks and whether it has any, and the
/// weights as lanes.
struct Rows2<'a, L: MaskedLanes, const K: usize, const C: usize, const CH: usize> {
    start: &'a [isize; C],
    masks: &'a [[[L::M; 2]; C]; STRIDE_2_SLOTS],
    edge: &'a [bool; C],
    wv: &'a [[[L::V; K]; K]; CH],
}

impl<L: MaskedLanes, const K: usize, const C: usize, const CH: usize> Clone for Rows2<'_, L, K, C, CH> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<L: MaskedLanes, const K: usize, const C: usize, const CH: usize> Copy for Rows2<'_, L, K, C, CH> {}
