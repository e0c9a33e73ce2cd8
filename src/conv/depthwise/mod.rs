//! Depthwise convolution: groups with one input channel (depthwise, channel
//! multipliers, single-channel inputs), where a GEMM tile would be mostly
//! empty (M = channel multiplier, often 1), by direct SIMD kernels over
//! output pixels on the `simd` lanes: `dwconv_plane_<isa>` here (any kernel,
//! stride and dilation, from the zero-padded plane split into its stride
//! phases) and
//! `dwconv_{3x3,5x5}_rolling_<isa>` in `rolling.rs` (stride 1, and stride
//! 2 on AVX-512; masked lanes; on AVX-512 rows of 9 to 32 outputs at
//! stride 1 a block of channels a call, 3×3 two channels at a time). The blocks of
//! channels as lanes are in `blocked.rs` (with AVX-512's paired rows at
//! stride 2 in `paired.rs`). Each output still sums its taps in the
//! order of the reproducibility rule, so both are bit-identical to the GEMM
//! paths.
//! Channels-last has its own kernels (`channels_last.rs`; 3×3 and 5×5 at
//! stride 1, and at stride 2 on 32 registers, rolling sums down the rows in
//! `channels_last_rows.rs`; the weight
//! gradient in `weight_grad.rs`), with the channels as the lanes.

mod blocked;
mod channels_last;
mod channels_last_rows;
#[cfg(target_arch = "x86_64")]
mod paired;
#[cfg(target_arch = "x86_64")]
mod rolling;
pub(crate) mod weight_grad;

pub(crate) use blocked::Block;

/// The widest lanes of any path, for the stack buffers of partial vectors
/// in the channels-last kernels.
const MAX_LANES: usize = 16;

use crate::activation::Activation;
use crate::par;

use crate::error::ConvError;
use crate::gemm::KC;
use crate::geometry::ConvGeometry;
use crate::isa::Isa;
use crate::layout::Layout;
use crate::simd::{self, Lanes, PerPath, WithLanes};

/// The depthwise convolution of a channels-last batch on the lanes of
/// `isa` (`dwconv_channels_last_rows_<isa>` where it takes the geometry,
/// else `dwconv_channels_last_<isa>`): `taps` are the weights tap-major,
/// `[kh·kw][c_out]`; output rows shared among `threads` in parallel items.
/// Arguments are validated and [`applies`] holds.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_channels_last(
    isa: Isa,
    geo: &ConvGeometry,
    input: &[f32],
    taps: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    threads: usize,
    output: &mut [f32],
) -> Result<(), ConvError> {
    let row_len = geo.w_out * geo.c_out;
    let rows = geo.batch * geo.h_out;
    if row_len == 0 || rows == 0 {
        return Ok(());
    }
    let rolling_rows = channels_last_rows::takes(isa, geo);
    let item = |first: usize, out: &mut [f32]| {
        let rows = first..first + out.len() / row_len;
        let job = channels_last::ChannelsLast { geo, input, taps, bias, act, rows, out };
        if rolling_rows { simd::dispatch(isa, channels_last_rows::RollingRows(job)) } else { simd::dispatch(isa, job) }
    };
    if threads > 1 {
        // At least 4 items per thread (the rows kernel: `item_rows`), whole
        // rows each, on the crate's fork
        // (the caller works too; rayon's `par_chunks_mut` cost more than
        // 2 threads saved on small layers: Zen 5, 480 channels 5×5 on 14²,
        // 1 -> 2 threads 1.4× faster before, 1.8× after). The ISA is
        // checked first, so no item can fail.
        isa.tile()?;
        let per_item =
            if rolling_rows { channels_last_rows::item_rows(geo, rows, threads) } else { rows.div_ceil(4 * threads) };
        par::for_each_chunk_mut(threads, output, per_item * row_len, |i, out| {
            let done = item(i * per_item, out);
            debug_assert!(done.is_ok(), "the ISA was checked above");
        });
        Ok(())
    } else {
        item(0, output)
    }
}

/// The depthwise convolution of one (image, group) on the lanes of `isa`:
/// `out` is `[m, h_out, w_out]` for the group's `m` output channels,
/// `weight` their `[m, kh·kw]` taps, `bias` their `m` biases; `padded` is
/// scratch. The rolling rows where they take the geometry and the lanes
/// have masks (AVX-512, AVX2), else the stream over the plane's stride
/// phases.
///
/// # Panics
/// If [`applies`] is false for `geo`, or a buffer does not match it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run(
    isa: Isa,
    geo: &ConvGeometry,
    plane: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    out: &mut [f32],
    padded: &mut Vec<f32>,
) -> Result<(), ConvError> {
    simd::dispatch(isa, Depthwise { geo, plane, weight, bias, act, out, padded })
}

/// The channels [`run_blocked`] takes at once on `isa` for `geo`, where it
/// takes it: channel multiplier 1, at most `KC` taps, lanes of 4 or more
/// floats (the path's vector: AVX-512's 16 ran 960×7² 3×3 at 22 against
/// 29 µs on AVX2's 8, and 1152×7² 5×5 at 38 against 61 µs, on Zen 5),
/// and scratch within the buffers' size.
pub(crate) fn channel_block(isa: Isa, geo: &ConvGeometry) -> Option<usize> {
    let n = match isa {
        Isa::Avx512 => 16,
        Isa::Avx2Fma => 8,
        Isa::Neon => 4,
        _ => return None,
    };
    // 3×3 and 5×5 kernels on rows of more than 8 outputs: the rolling rows
    // need no transposes. Stride 1 (Zen 4, 1 thread: 32×112² 3×3 85
    // against 290 µs, 480×14² 3×3 53 against 70 µs; on 7×7 planes the
    // blocks win, 960×7² 3×3 43–51 against 57–77 µs); stride 2 on AVX-512
    // (96×112² 3×3 143 against 276 µs, 144×56² 5×5 112–114 against
    // 132–133, 136×28² 3×3 17 against 25; on 14² planes the blocks win,
    // 576×14² 3×3 30–38 against 60–62 µs).
    // On AVX-512 the stride-1 rows of 9 to 32 outputs come back to the
    // blocks, which run them a few channels a call (`rolling::takes_blocks`).
    // AVX2 takes the blocks at every width: on Zen 3 (1 thread) the rolling
    // rows lost to them from 14² to 112² planes (576×14² 3×3 190 against
    // 83 µs, 192×28² 3×3 155 against 107, 144×56² 3×3 226 against 217,
    // 16×112² 3×3 160 against 125–137; why was not taken apart: the rows'
    // masked loads at the edges, one plane a call, 16 registers).
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 && rolling::takes(geo, n) && geo.w_out > 8 && !rolling::takes_blocks(geo) {
        return None;
    }
    let fits = blocked::scratch_len(geo, n).is_some_and(|len| scratch_budget(geo, n).is_some_and(|b| len <= b));
    (geo.c_in_per_group() == 1 && geo.c_out_per_group() == 1 && geo.kh * geo.kw <= KC && fits).then_some(n)
}

/// The kernel a block of channels runs on AVX-512: one decision for the
/// dispatch ([`Block`]'s `avx512`), the landing table and the kernel's name.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Avx512Block {
    /// `paired::dwconv_paired`: rows of 4 to 8 outputs at stride 2.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Paired,
    /// `rolling::dwconv_rolling_blocks`: rows of 9 to 32 outputs.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Rolling,
    /// `blocked::dwconv_blocked`: the padded planes' transposes.
    Blocked,
}

/// Which kernel runs the blocks of `geo` on AVX-512 (the two that read the
/// planes in place are x86 code: elsewhere `Blocked`).
fn avx512_block(geo: &ConvGeometry) -> Avx512Block {
    #[cfg(target_arch = "x86_64")]
    {
        if paired::takes(geo) {
            return Avx512Block::Paired;
        }
        if rolling::takes_blocks(geo) {
            return Avx512Block::Rolling;
        }
    }
    let _ = geo;
    Avx512Block::Blocked
}

/// Where each input pixel lands in the padded plane of the blocks of
/// channels as lanes (`blocked::landing`), into `landing`, made once a
/// call for [`run_blocked`] on `isa`; left empty where the blocks of `geo`
/// go to a kernel that reads the planes in place (AVX-512's paired and
/// rolling rows), which would not read it (a table of every input pixel).
pub(crate) fn landing(isa: Isa, geo: &ConvGeometry, landing: &mut Vec<u32>) {
    if isa == Isa::Avx512 && avx512_block(geo) != Avx512Block::Blocked {
        landing.clear();
    } else {
        blocked::landing(geo, landing);
    }
}

/// The depthwise convolution of one block of [`channel_block`] channels of
/// one image on the lanes of `isa` (see [`Block`]).
///
/// # Panics
/// If `channel_block` is `None` for `geo`, or a buffer does not match it.
pub(crate) fn run_blocked(isa: Isa, block: Block<'_>) -> Result<(), ConvError> {
    simd::dispatch(isa, block)
}

impl WithLanes for Block<'_> {
    type Output = ();

    #[inline(always)]
    fn run<L: Lanes>(self, _: L) {
        // SAFETY: a token of `L` exists and `simd::dispatch` entered its features.
        unsafe { blocked::dwconv_blocked::<L>(self) }
    }

    /// Output rows of 4 to 8 pixels at stride 2 (two rows a vector) and
    /// of 9 to 32 at stride 1 (the rolling rows, a block at a time): no
    /// transposes.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn avx512(self, lanes: simd::x86::Avx512) {
        match avx512_block(self.geo) {
            // SAFETY: a token of `Avx512` exists and `simd::dispatch`
            // entered its features; `paired::takes` holds.
            Avx512Block::Paired => unsafe { paired::dwconv_paired(self) },
            // SAFETY: as above; `takes_blocks` holds, and AVX-512 has 16
            // lanes and 32 registers.
            Avx512Block::Rolling => unsafe { rolling::dwconv_rolling_blocks::<simd::x86::Avx512>(self) },
            Avx512Block::Blocked => self.run(lanes),
        }
    }
}

/// The name of the kernel the depthwise path takes on `isa` for `geo`:
/// channels-last `dwconv_channels_last_rows_<isa>` or
/// `dwconv_channels_last_<isa>` ([`run_channels_last`]); NCHW
/// `dwconv_blocked_<isa>` or, on AVX-512 where `paired::takes`,
/// `dwconv_paired_rows_avx512`, where `rolling::takes_blocks`,
/// `dwconv_{3x3,5x5}_rolling_avx512` a block at a time ([`run_blocked`]), else
/// `dwconv_{3x3,5x5}_rolling_<isa>` or
/// `dwconv_plane_<isa>` ([`run`]).
pub(crate) fn kernel_name(isa: Isa, geo: &ConvGeometry) -> &'static str {
    if geo.layout == Layout::Nhwc {
        let [plain, rows] = match isa {
            Isa::Portable => ["dwconv_channels_last_portable", "dwconv_channels_last_rows_portable"],
            Isa::PortableUnfused => {
                ["dwconv_channels_last_portable_unfused", "dwconv_channels_last_rows_portable_unfused"]
            }
            Isa::Avx2Fma => ["dwconv_channels_last_avx2", "dwconv_channels_last_rows_avx2"],
            Isa::Avx512 => ["dwconv_channels_last_avx512", "dwconv_channels_last_rows_avx512"],
            _ => ["dwconv_channels_last_neon", "dwconv_channels_last_rows_neon"],
        };
        return if channels_last_rows::takes(isa, geo) { rows } else { plain };
    }
    if channel_block(isa, geo).is_some() {
        return match isa {
            Isa::Neon => "dwconv_blocked_neon",
            Isa::Avx512 => match avx512_block(geo) {
                Avx512Block::Paired => "dwconv_paired_rows_avx512",
                Avx512Block::Rolling if geo.kh == 3 => "dwconv_3x3_rolling_avx512",
                Avx512Block::Rolling => "dwconv_5x5_rolling_avx512",
                Avx512Block::Blocked => "dwconv_blocked_avx512",
            },
            _ => "dwconv_blocked_avx2",
        };
    }
    struct Name<'a>(#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] &'a ConvGeometry);
    #[cfg(target_arch = "x86_64")]
    impl Name<'_> {
        fn rolling(&self, lanes: usize, names: [&'static str; 2]) -> Option<&'static str> {
            rolling::takes(self.0, lanes).then_some(if self.0.kh == 3 { names[0] } else { names[1] })
        }
    }
    impl PerPath for Name<'_> {
        type Output = &'static str;
        fn portable(self, _: simd::Scalar<simd::Fused>) -> &'static str {
            "dwconv_plane_portable"
        }
        fn portable_unfused(self, _: simd::Scalar<simd::Unfused>) -> &'static str {
            "dwconv_plane_portable_unfused"
        }
        #[cfg(target_arch = "x86_64")]
        fn avx2(self, _: simd::x86::Avx2) -> &'static str {
            self.rolling(8, ["dwconv_3x3_rolling_avx2", "dwconv_5x5_rolling_avx2"]).unwrap_or("dwconv_plane_avx2")
        }
        #[cfg(target_arch = "x86_64")]
        fn avx512(self, _: simd::x86::Avx512) -> &'static str {
            self.rolling(16, ["dwconv_3x3_rolling_avx512", "dwconv_5x5_rolling_avx512"])
                .unwrap_or("dwconv_plane_avx512")
        }
        #[cfg(target_arch = "aarch64")]
        fn neon(self, _: simd::neon::Neon) -> &'static str {
            "dwconv_plane_neon"
        }
    }
    simd::select(isa, Name(geo)).unwrap_or("unavailable")
}

/// The arguments of [`run`], as code generic over the lanes.
struct Depthwise<'a> {
    geo: &'a ConvGeometry,
    plane: &'a [f32],
    weight: &'a [f32],
    bias: Option<&'a [f32]>,
    act: Activation,
    out: &'a mut [f32],
    padded: &'a mut Vec<f32>,
}

impl WithLanes for Depthwise<'_> {
    type Output = ();

    #[inline(always)]
    fn run<L: Lanes>(self, _: L) {
        // SAFETY: a token of `L` exists and `simd::dispatch` entered its features.
        unsafe { dwconv_plane::<L>(self) }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn avx2(self, lanes: simd::x86::Avx2) {
        if rolling::takes(self.geo, 8) { self.rolling::<simd::x86::Avx2>() } else { self.run(lanes) }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn avx512(self, lanes: simd::x86::Avx512) {
        if rolling::takes(self.geo, 16) { self.rolling::<simd::x86::Avx512>() } else { self.run(lanes.avx2()) }
    }
}

#[cfg(target_arch = "x86_64")]
impl Depthwise<'_> {
    /// The rolling rows on the masked lanes `L`, for a geometry `rolling::takes`.
    #[inline(always)]
    fn rolling<L: simd::MaskedLanes>(self) {
        // SAFETY: called from `L`'s path of `simd::dispatch`, inside its features.
        unsafe { rolling::dwconv_rolling::<L>(self) }
    }
}

/// The zero-padded plane split into its stride phases, so that every tap of
/// every stride reads consecutive floats: phase `(a, b)` (`a < stride_h`,
/// `b < stride_w`) is the `hq × wq` plane of padded pixels
/// `(i·stride_h + a, j·stride_w + b)`, zero past the padded plane. Output
/// pixel `(oy, ox)` at position `oy·wq + ox` of the output stream reads tap
/// `(u, v)` from phase `(u·dh mod sh, v·dw mod sw)` at position
/// `pos + (u·dh / sh)·wq + v·dw / sw`: a stride-1 sum over one stream, so a
/// vector covers `N` outputs whatever the strides, and planes narrower than a
/// vector still fill whole vectors (the `wq − w_out` columns past each output
/// row are computed and dropped).
#[derive(Clone, Copy, Debug)]
struct Phases {
    sh: usize,
    sw: usize,
    hq: usize,
    wq: usize,
}

/// Output vectors summed together, at most: `BLOCK` accumulators, a
/// broadcast weight and an input fit in AVX2's 16 registers.
const BLOCK: usize = 12;

impl Phases {
    /// The phases of `geo`, or `None` if their sizes overflow.
    fn of(geo: &ConvGeometry) -> Option<Phases> {
        let [sh, sw] = geo.taken_strides();
        let [hp, wp] = geo.padded_extent()?;
        let phases = Phases { sh, sw, hq: hp.div_ceil(sh), wq: wp.div_ceil(sw) };
        phases.scratch_len(1)?;
        Some(phases)
    }

    /// Floats of one phase plane.
    fn plane_len(&self) -> usize {
        self.hq * self.wq
    }

    /// Output positions in the stream: `(h_out − 1)·wq + w_out`.
    fn stream_len(&self, geo: &ConvGeometry) -> usize {
        (geo.h_out.max(1) - 1) * self.wq + geo.w_out
    }

    /// Scratch floats for lanes of `n` floats: the phase planes, then the
    /// output stream, each with room for whole blocks of vectors past its end.
    fn scratch_len(&self, n: usize) -> Option<usize> {
        // Every step checked: hostile paddings make each factor huge (fuzz
        // `api_hostile`).
        let plane = self.hq.checked_mul(self.wq)?;
        let planes = self.sh.checked_mul(self.sw)?.checked_mul(plane)?;
        let stream = plane.checked_add(BLOCK.checked_mul(n)?)?;
        planes.checked_add(self.wq)?.checked_add(stream.checked_mul(2)?)
    }
}

/// Whether the depthwise kernels take `geo`: one input channel per group,
/// and scratch (the phase planes of `dwconv_plane`, at most 16 floats per
/// lane) no larger than the buffers the caller gave, so it stays bounded.
pub(crate) fn applies(geo: &ConvGeometry) -> bool {
    if geo.layout == Layout::Nhwc {
        // Multiplier 1 (channels as lanes in and out) and one K chunk (the
        // taps sum from +0 in one pass); other channels-last groups of one
        // channel take the GEMM paths.
        return geo.groups == geo.c_in && geo.c_out == geo.c_in && geo.kh * geo.kw <= KC && geo.is_compact();
    }
    let fits = |len: usize| scratch_budget(geo, 1).is_some_and(|b| len <= b);
    geo.c_in_per_group() == 1 && Phases::of(geo).and_then(|p| p.scratch_len(16)).is_some_and(fits)
}

/// The scratch the depthwise kernels may take for `n` channels at once:
/// four times the input and output planes, plus 4,096 floats, per channel
/// (`None` past `usize`: hostile shapes of a plan's `kernel_name`, which
/// needs no buffers, reach it).
fn scratch_budget(geo: &ConvGeometry, n: usize) -> Option<usize> {
    let planes = geo.h_in.checked_mul(geo.w_in)?.checked_add(geo.out_pixels())?;
    planes.checked_mul(4)?.checked_add(4096)?.checked_mul(n)
}

/// Writes the phase planes of `plane` into `dst` (`sh·sw·hq·wq` floats),
/// each float once, straight from the input rows (stride 2 by `L`'s
/// deinterleave).
///
/// # Safety
/// `L`'s instructions are available.
#[inline(always)]
unsafe fn split_phases<L: Lanes>(geo: &ConvGeometry, p: &Phases, plane: &[f32], dst: &mut [f32]) {
    let (len, wq, w_in, pad_left) = (p.plane_len(), p.wq, geo.w_in, geo.pad_left);
    for qi in 0..p.hq {
        for a in 0..p.sh {
            // Phase row qi of phases (a, 0..sw): padded row qi·sh + a.
            let at = a * p.sw * len + qi * wq;
            let iy = (qi * p.sh + a).checked_sub(geo.pad_top).filter(|&iy| iy < geo.h_in);
            let Some(iy) = iy else {
                for b in 0..p.sw {
                    dst[at + b * len..][..wq].fill(0.0);
                }
                continue;
            };
            let src = &plane[iy * w_in..][..w_in];
            // The padded row's column c.
            let padded = |c: usize| c.checked_sub(pad_left).and_then(|c| src.get(c)).copied().unwrap_or(0.0);
            match p.sw {
                1 => {
                    let row = &mut dst[at..at + wq];
                    let (lo, hi) = (pad_left.min(wq), (pad_left + w_in).min(wq));
                    row[..lo].fill(0.0);
                    row[lo..hi].copy_from_slice(&src[..hi - lo]);
                    row[hi..].fill(0.0);
                }
                2 => {
                    let (even, odd) = dst[at..].split_at_mut(len);
                    let (even, odd) = (&mut even[..wq], &mut odd[..wq]);
                    // Phase columns j..j + N come from input columns
                    // 2j − pad_left .. + 2N, whole vectors where inside.
                    let first = pad_left.div_ceil(2).min(wq);
                    for j in 0..first {
                        (even[j], odd[j]) = (padded(2 * j), padded(2 * j + 1));
                    }
                    let mut j = first;
                    while j + L::N <= wq && 2 * (j + L::N) <= w_in + pad_left {
                        // SAFETY: input columns 2j − pad_left .. 2(j + N) − pad_left
                        // are inside the row (2j >= pad_left, loop condition),
                        // even/odd[j .. j + N] inside (j + N <= wq); CPU
                        // support is the caller's.
                        unsafe {
                            let (e, o) = L::deinterleave(src.as_ptr().add(2 * j - pad_left));
                            L::store(even.as_mut_ptr().add(j), e);
                            L::store(odd.as_mut_ptr().add(j), o);
                        }
                        j += L::N;
                    }
                    // The rest float by float, as pairs of input columns
                    // (a float at a time through `padded`, LLVM makes gathers
                    // of it; through a copy, loads stall on the stores).
                    let rest = &src[(2 * j).saturating_sub(pad_left).min(w_in)..];
                    let pairs = rest.chunks_exact(2);
                    let last = pairs.remainder().first().copied();
                    let (even, odd) = (&mut even[j..], &mut odd[j..]);
                    let mut k = 0;
                    for ((e, o), pair) in even.iter_mut().zip(odd.iter_mut()).zip(pairs) {
                        (*e, *o, k) = (pair[0], pair[1], k + 1);
                    }
                    if let (Some(v), Some(e), Some(o)) = (last, even.get_mut(k), odd.get_mut(k)) {
                        (*e, *o, k) = (v, 0.0, k + 1);
                    }
                    even[k..].fill(0.0);
                    odd[k..].fill(0.0);
                }
                sw => {
                    for b in 0..sw {
                        for (j, d) in dst[at + b * len..][..wq].iter_mut().enumerate() {
                            *d = padded(j * sw + b);
                        }
                    }
                }
            }
        }
    }
}

/// The offset of each tap `(u, v)` (row-major) into the phase planes: phase
/// `(u·dh mod sh, v·dw mod sw)`, row `u·dh / sh`, column `v·dw / sw`, kept
/// as running quotients and remainders (no division per tap).
fn tap_offsets(geo: &ConvGeometry, p: &Phases, offsets: &mut [usize]) {
    let (len, wq) = (p.plane_len(), p.wq);
    let (dh_q, dh_r) = (geo.dilation_h / p.sh, geo.dilation_h % p.sh);
    let (dw_q, dw_r) = (geo.dilation_w / p.sw, geo.dilation_w % p.sw);
    let mut taps = offsets.iter_mut();
    let (mut qa, mut ra) = (0, 0);
    for _ in 0..geo.kh {
        let (mut qb, mut rb) = (0, 0);
        for _ in 0..geo.kw {
            *taps.next().expect("kh·kw offsets") = (ra * p.sw + rb) * len + qa * wq + qb;
            (qb, rb) = (qb + dw_q, rb + dw_r);
            if rb >= p.sw {
                (qb, rb) = (qb + 1, rb - p.sw);
            }
        }
        (qa, ra) = (qa + dh_q, ra + dh_r);
        if ra >= p.sh {
            (qa, ra) = (qa + 1, ra - p.sh);
        }
    }
}

/// The taps of one K chunk: where each reads (see [`tap_offsets`]) and its
/// weight.
#[derive(Clone, Copy)]
struct Taps<'a> {
    offsets: &'a [usize],
    weights: &'a [f32],
}

/// `out[pos] (=|+=) Σ_t w[t] · x[offset_t + pos]` over this K chunk's taps,
/// in order, from `+0.0`, for the `V·N` positions of `out` (store when
/// `first`, add when not).
///
/// # Safety
/// `L`'s instructions are available; `x` holds `max offset + V·N` floats
/// and `out` `V·N`.
#[inline(always)]
unsafe fn block<L: Lanes, const V: usize>(x: *const f32, taps: Taps<'_>, out: *mut f32, first: bool) {
    // SAFETY: CPU support is the caller's guarantee.
    let mut acc = [unsafe { L::splat(0.0) }; V];
    for (&offset, &w) in taps.offsets.iter().zip(taps.weights) {
        // SAFETY: x + offset .. + V·N is readable (the caller's extents); CPU as above.
        unsafe {
            let wv = L::splat(w);
            let src = x.add(offset);
            for (q, a) in acc.iter_mut().enumerate() {
                *a = L::fma(wv, L::load(src.add(q * L::N)), *a);
            }
        }
    }
    for (q, &a) in acc.iter().enumerate() {
        // SAFETY: out .. + V·N is writable (the caller's extents); CPU as above.
        unsafe {
            let dst = out.add(q * L::N);
            L::store(dst, if first { a } else { L::add(L::load(dst), a) });
        }
    }
}

/// The output stream of one channel and one K chunk: positions
/// `0..stream_len` rounded up to whole vectors, in blocks of [`BLOCK`]
/// vectors and one last block of 1, 2, 4, 8 or 12.
///
/// # Safety
/// `L`'s instructions are available; `x` holds `max offset + len` floats and
/// `out` `len` floats, `len` being `stream_len` rounded up to `BLOCK·N`.
#[inline(always)]
unsafe fn stream<L: Lanes>(x: &[f32], taps: Taps<'_>, stream_len: usize, out: &mut [f32], first: bool) {
    let n = L::N;
    assert_eq!(taps.offsets.len(), taps.weights.len());
    let max_offset = taps.offsets.iter().copied().max().unwrap_or(0);
    let vectors = stream_len.div_ceil(n);
    assert!(
        max_offset + vectors.next_multiple_of(BLOCK) * n <= x.len() && vectors.next_multiple_of(BLOCK) * n <= out.len(),
        "stream scratch too short"
    );
    let (xp, op) = (x.as_ptr(), out.as_mut_ptr());
    let mut v = 0;
    // SAFETY: each block's v·N .. + its vectors·N stays within the rounded
    // stream (asserted above) of `out`, and within `x` past every offset;
    // CPU support is the caller's.
    unsafe {
        while v + BLOCK <= vectors {
            block::<L, BLOCK>(xp.add(v * n), taps, op.add(v * n), first);
            v += BLOCK;
        }
        let (x, o) = (xp.add(v * n), op.add(v * n));
        match vectors - v {
            0 => {}
            1 => block::<L, 1>(x, taps, o, first),
            2 => block::<L, 2>(x, taps, o, first),
            3 | 4 => block::<L, 4>(x, taps, o, first),
            5..=8 => block::<L, 8>(x, taps, o, first),
            _ => block::<L, BLOCK>(x, taps, o, first),
        }
    }
}

/// Copies the output rows out of the stream (rows `wq` apart) into `out`
/// (`h_out × w_out`), adding the bias and applying the activation on the
/// way. A row's last vector may run into the rows after it (which are
/// written after it); only the plane's end is stored float by float.
///
/// # Safety
/// `L`'s instructions are available.
#[inline(always)]
unsafe fn finish_rows<L: Lanes>(
    geo: &ConvGeometry,
    wq: usize,
    stream: &[f32],
    bias: Option<f32>,
    act: Activation,
    out: &mut [f32],
) {
    let n = L::N;
    let w_out = geo.w_out;
    assert!(out.len() == geo.h_out * w_out && stream.len() >= (geo.h_out.max(1) - 1) * wq + w_out);
    for oy in 0..geo.h_out {
        let (src, dst) = (oy * wq, oy * w_out);
        let mut ox = 0;
        while ox < w_out && dst + ox + n <= out.len() && src + ox + n <= stream.len() {
            // SAFETY: both ranges of N floats checked above; CPU support is the caller's.
            unsafe {
                let mut v = L::load(stream.as_ptr().add(src + ox));
                if let Some(b) = bias {
                    v = L::add(v, L::splat(b));
                }
                L::store(out.as_mut_ptr().add(dst + ox), L::activate(act, v));
            }
            ox += n;
        }
        for (d, &s) in out[dst + ox.min(w_out)..dst + w_out].iter_mut().zip(&stream[src + ox.min(w_out)..]) {
            *d = act.apply(bias.map_or(s, |b| s + b));
        }
    }
}

/// `dwconv_plane_<isa>`: the depthwise convolution of one (image, group)
/// for any kernel, stride and dilation, from the plane's stride phases (see
/// [`Phases`]; [`run`] for the arguments).
///
/// # Safety
/// `L`'s instructions are available.
#[inline(always)]
unsafe fn dwconv_plane<L: Lanes>(job: Depthwise<'_>) {
    let Depthwise { geo, plane, weight, bias, act, out, padded: scratch } = job;
    let p = Phases::of(geo).expect("applies() checked the sizes");
    let phases_len = p.sh * p.sw * p.plane_len();
    let stream_len = p.stream_len(geo);
    let rounded = stream_len.div_ceil(L::N).next_multiple_of(BLOCK) * L::N;
    // The phase planes, zeros read by the rounded stream's last vectors
    // (past the last phase plane), and the stream.
    let reads = phases_len + p.wq + rounded;
    scratch.resize(reads + rounded, 0.0);
    let (x, stream_out) = scratch.split_at_mut(reads);
    // SAFETY: CPU support is the caller's guarantee.
    unsafe { split_phases::<L>(geo, &p, plane, &mut x[..phases_len]) };
    x[phases_len..].fill(0.0);
    let taps = geo.kh * geo.kw;
    let (mut small, mut large) = ([0usize; 64], Vec::new());
    let offsets = if taps <= small.len() {
        &mut small[..taps]
    } else {
        large.resize(taps, 0);
        &mut large[..]
    };
    tap_offsets(geo, &p, offsets);
    for (o, out_plane) in out.chunks_exact_mut(geo.out_pixels()).enumerate() {
        let kernel = &weight[o * taps..(o + 1) * taps];
        // Chunk by chunk over the whole plane: each output still takes its
        // chunks in order.
        for (chunk, (offsets, weights)) in offsets.chunks(KC).zip(kernel.chunks(KC)).enumerate() {
            // SAFETY: the largest offset is inside the phase planes (the
            // geometry's windows fit the padded plane), followed by
            // `wq + rounded` floats of room; CPU support is the caller's.
            unsafe { stream::<L>(x, Taps { offsets, weights }, stream_len, stream_out, chunk == 0) };
        }
        // SAFETY: CPU support is the caller's guarantee.
        unsafe { finish_rows::<L>(geo, p.wq, stream_out, bias.map(|b| b[o]), act, out_plane) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::ConvParams;

    /// A plane of 2^58 pixels (a valid geometry: `kernel_name` needs no
    /// buffers) has no scratch budget for 16 channels, rather than one that
    /// wrapped around `usize`; an ordinary plane has one.
    #[test]
    fn scratch_budget_of_a_huge_plane_is_none() {
        let params = ConvParams { stride: [2, 2], padding: [1; 4], groups: 1, ..ConvParams::default() };
        // (Stride 2 down, 1 across: the rolling rows take neither, so
        // `channel_block` reaches the sizes.)
        let tall = ConvParams { stride: [2, 1], ..params };
        let huge = ConvGeometry::new([1, 1, 1 << 30, 1 << 28], [1, 1, 3, 3], &tall).unwrap();
        assert_eq!(scratch_budget(&huge, 16), None);
        assert!(channel_block(Isa::Avx512, &huge).is_none());
        let small = ConvGeometry::new([1, 1, 14, 14], [1, 1, 3, 3], &params).unwrap();
        assert_eq!(scratch_budget(&small, 16), Some(16 * (4 * (196 + 49) + 4096)));
    }
}
