//! Direct convolution on the GEMM microkernel with the roles turned: a tile
//! is output pixels (rows) × output channels (columns, the vector lanes).
//!
//! The image is never packed. Its values are broadcast by the kernel from
//! the zero-padded band of `implicit.rs`, where they lie: for one kernel tap,
//! a tile's 8 pixels of an output row read 8 band floats `stride_w` apart
//! ([`MicroKernel::run_a_taps`] with that step; for a stride the kernel
//! does not take as a step, the band rows are split into phases and the
//! floats are consecutive). Without padding the band is the input itself.
//! The weights are the vector operand, packed once per plan in `NR`-wide
//! panels. Where the implicit path copies every
//! im2col element into a panel once per use (a cost that `c_out` FMAs per
//! element repay only partly for 64 output channels), this path copies only
//! the band.
//!
//! The tile is stored pixel-major into a block of scratch (the K chunks add
//! up there, in order), then transposed into the NCHW output with the bias
//! and the activation: the same operations on each element as the GEMM
//! paths, so the same bits. A channels-last output is pixel-major already:
//! the tiles are stored into it, the last K chunk's store adding the bias
//! (one per column: `StoreSpec::bias_cols`) and applying the activation,
//! with no block and no second pass.

use std::cell::Cell;

use super::GroupConv;
use super::implicit::{Band, BuildBand, band_fits, band_taps, put_band, take_band};
use crate::activation::Activation;
use crate::error::ConvError;
use crate::gemm::{
    self, CMatrix, KC, MicroKernel, PanelSource, PrepackedSource, Store, StoreSpec, TileOut, WithKernel, cache_sizes,
};
use crate::geometry::ConvGeometry;
use crate::isa::Isa;
use crate::layout::Layout;
use crate::par;
use crate::simd::{Lanes, Transpose, WithLanes};

/// Output pixels times output channels per block: 128 KiB of scratch, in
/// L2 with the block's band and the weights of a K chunk.
const BLOCK_FLOATS: usize = 32 << 10;

/// Output pixels up to which an NCHW 1×1 convolution reads a transposed
/// (pixel-major) copy of its input: 7×7 and 8×8 planes.
const TRANSPOSED_MAX_PIXELS: usize = 64;

/// The floats of a block for weights of `weight_bytes`: [`BLOCK_FLOATS`],
/// or, for weights beyond L2 (which every block streams from L3 again),
/// blocks as large as half of L2 holds, so that fewer blocks stream them
/// (ResNet-50's 1×1 512 -> 2048 on 7×7, 4 MiB of weights: 4 blocks of 2
/// rows became 1 of 7; Zen 5, 1 thread, 494 -> 468 µs).
fn block_floats(weight_bytes: usize) -> usize {
    let l2 = cache_sizes().l2;
    if weight_bytes > l2 { (l2 / 2 / 4).max(BLOCK_FLOATS) } else { BLOCK_FLOATS }
}

/// How many blocks of output rows the direct path makes of the output
/// rows `rows` for `m` output channels and `threads` threads: blocks of at
/// most [`block_floats`], at least 4 per thread when there are threads to
/// share them, as many as a multiple of the threads (so each thread gets
/// the same number), and no more than there are rows. Block `b` of
/// `blocks` holds the rows of [`block_range`], whose sizes differ by at
/// most one.
fn row_blocks(g: &ConvGeometry, rows: &std::ops::Range<usize>, m: usize, threads: usize) -> usize {
    let h = rows.len().max(1);
    let floats = block_floats(4 * g.patch_len() * m);
    let fits = (floats / (g.w_out * m).max(1)).clamp(1, h);
    let blocks = h.div_ceil(fits);
    if threads > 1 { blocks.max(4 * threads).next_multiple_of(threads).min(h) } else { blocks }
}

/// The output rows of block `b` of `blocks` of `rows`: 55 rows in 10
/// blocks go 5, 6, 5, 6, … (two threads get 27 and 28 rows), not 6, 6, …,
/// 6, 1.
fn block_range(rows: &std::ops::Range<usize>, b: usize, blocks: usize) -> std::ops::Range<usize> {
    let h = rows.len();
    rows.start + b * h / blocks..rows.start + (b + 1) * h / blocks
}

/// Whether the direct path takes weights of `c_in_per_group` input channels,
/// `m` output channels per group and `k` products per output on `isa`.
pub(crate) fn takes_weights(isa: Isa, c_in_per_group: usize, m: usize, k: usize) -> bool {
    struct Takes(usize, usize, usize);
    impl WithKernel for Takes {
        type Output = bool;
        fn run<K: MicroKernel>(self, _: K) -> bool {
            kernel_takes_weights::<K>(self.0, self.1, self.2)
        }
    }
    gemm::dispatch(isa, Takes(c_in_per_group, m, k)).unwrap_or(false)
}

/// Whether `Algorithm::Auto` may take the direct path for an NCHW layer on
/// `isa` (the rules on K in `select` decide where): on kernels whose tiles
/// are 32 channels wide (AVX-512's 8 × 32). A tile of 16 (AVX2's 6 × 16)
/// reads 6 pixels a k step for 12 FMAs of 8 lanes, where 8 × 32 reads 8 for
/// 16 of 16 lanes, and its outputs still pay the transpose into NCHW: on
/// Zen 4 with the AVX2 path forced, 1 thread, direct against the GEMM
/// paths, µs: 64 -> 64 3×3 on 56² 3069 against 2491, 256 -> 1024 1×1 on
/// 14² 1099 against 982, 512 -> 512 3×3 on 28² 38.7 against 39.9 ms. So
/// NCHW stays on the GEMM paths there; channels-last, whose GEMM paths
/// gather the image and store C by columns, takes the direct path on
/// every kernel that reads A in place.
pub(crate) fn auto_nchw(isa: Isa) -> bool {
    struct Wide;
    impl WithKernel for Wide {
        type Output = bool;
        fn run<K: MicroKernel>(self, _: K) -> bool {
            K::NR >= 32
        }
    }
    gemm::dispatch(isa, Wide).unwrap_or(false)
}

/// Whether the direct path takes this (image, group) on `isa`.
pub(crate) fn applies(isa: Isa, g: &ConvGeometry) -> bool {
    struct Applies<'a>(&'a ConvGeometry);
    impl WithKernel for Applies<'_> {
        type Output = bool;
        fn run<K: MicroKernel>(self, _: K) -> bool {
            kernel_applies::<K>(self.0)
        }
    }
    gemm::dispatch(isa, Applies(g)).unwrap_or(false)
}

/// The convolution of one (image, group) with the kernel of `isa`: `job.out`
/// = the group's channels convolved with the weights `job.weights` (`K × m`,
/// packed in `NR` panels for every K chunk), plus the bias, then the
/// activation. Blocks of output rows run in parallel when `job.par` allows
/// and the work repays a fork; each block is computed the same way on any
/// thread, so the bits do not depend on it.
///
/// # Panics
/// If [`applies`] is false for `job.g` on `isa` (the caller checks).
pub(crate) fn run(isa: Isa, job: GroupConv<'_>) -> Result<(), ConvError> {
    gemm::dispatch(isa, Direct(job))
}

/// [`run`]'s job, as code generic over the kernel.
struct Direct<'a>(GroupConv<'a>);

/// Whether the direct path takes weights of `c_in_per_group` input channels,
/// `m` output channels per group and `k` products per output on kernel `K`:
/// a kernel that reads A by taps, several input channels per group (one
/// channel per group is the depthwise kernel's), and enough output channels
/// to fill a vector (fewer waste the lanes: the GEMM paths tile them as rows).
fn kernel_takes_weights<K: MicroKernel>(c_in_per_group: usize, m: usize, k: usize) -> bool {
    K::reads_a_taps(1) && c_in_per_group >= 2 && m >= 16 && k > 0
}

/// Whether the direct path takes this (image, group) on kernel `K`: its
/// weights (see [`kernel_takes_weights`]), and a band of bounded size for every block (checked
/// for one output row and for the largest block: the band and its bound
/// both grow linearly with the rows).
fn kernel_applies<K: MicroKernel>(g: &ConvGeometry) -> bool {
    let (m, k) = (g.c_out_per_group(), g.patch_len());
    kernel_takes_weights::<K>(g.c_in_per_group(), m, k)
        && g.is_compact()
        && g.out_pixels() > 0
        && (reads_in_place::<K>(g)
            || K::reads_a_any_step() && is_subsampled(g)
            || band_fits(g, 0, KC.min(k), 0, g.w_out)
                && band_fits(g, 0, KC.min(k), 0, g.h_out.div_ceil(row_blocks(g, &(0..g.h_out), m, 1)) * g.w_out))
}

/// Whether a 1×1 kernel's windows skip input (a stride past 1) and the
/// direct path copies only the pixels they read ([`subsample`]): always
/// for channels-last (whose unpadded inputs are read in place instead),
/// for NCHW on planes of at most 64 output pixels. Measured on Zen 5, 1
/// thread, NCHW, stride 2, packed implicit against subsampled direct:
/// 1024 -> 2048 on 14² 1015 -> 849 µs, but 512 -> 1024 on 28² 852 -> 950
/// and 256 -> 512 on 56² 800 -> 1060 (the transposes into NCHW cost).
fn is_subsampled(g: &ConvGeometry) -> bool {
    g.kh == 1
        && g.kw == 1
        && (g.stride_h > 1 || g.stride_w > 1)
        && (g.layout == Layout::Nhwc || g.out_pixels() <= TRANSPOSED_MAX_PIXELS)
}

/// `band` = the input pixels that the 1×1 windows of output rows `rows`
/// read, pixel-major: output pixel `p` of the block at `p·kc`, its
/// channels `chunk` (relative to the group's) one after another, zeros for
/// a window in the padding.
fn subsample(
    g: &ConvGeometry,
    channels: &[f32],
    chunk: std::ops::Range<usize>,
    rows: std::ops::Range<usize>,
    band: &mut Vec<f32>,
) {
    let kc = chunk.len();
    let at = g.input_strides();
    band.clear();
    band.resize(rows.len() * g.w_out * kc, 0.0);
    // Input column of output column ox, if inside the image.
    let ix = |ox: usize| (ox * g.stride_w).checked_sub(g.pad_left).filter(|&x| x < g.w_in);
    // 16 channels at a time: a pixel's 16 floats fill one line of the
    // copy, and the 16 input lines they come from serve the next pixels
    // of the row too.
    for c0 in (0..kc).step_by(16) {
        let cs = c0..(c0 + 16).min(kc);
        for (r, oy) in rows.clone().enumerate() {
            let Some(iy) = (oy * g.stride_h).checked_sub(g.pad_top).filter(|&y| y < g.h_in) else { continue };
            for ox in 0..g.w_out {
                let Some(x) = ix(ox) else { continue };
                let src = (chunk.start + c0) * at.c + iy * at.y + x * at.x;
                let dst = &mut band[(r * g.w_out + ox) * kc..][cs.clone()];
                for (i, d) in dst.iter_mut().enumerate() {
                    *d = channels[src + i * at.c];
                }
            }
        }
    }
}

/// Whether every block reads its band in place from the input: a
/// channels-last input without padding ([`reads_in_place`]), or an NCHW
/// one without padding at a stride the kernel steps (not a 1×1 kernel on a
/// plane that takes a pixel-major copy).
fn band_in_place<K: MicroKernel>(g: &ConvGeometry) -> bool {
    let unpadded = [g.pad_top, g.pad_left, g.pad_bottom, g.pad_right] == [0; 4];
    let copied = reads_transposed::<K>(g) || is_subsampled(g);
    reads_in_place::<K>(g) || (g.layout == Layout::Nchw && unpadded && K::reads_a_taps(g.stride_w) && !copied)
}

/// Whether an NCHW 1×1 layer's blocks read a pixel-major (transposed)
/// copy of their input: on planes of at most [`TRANSPOSED_MAX_PIXELS`]
/// output pixels, on a kernel that takes any step (see `direct_block`).
fn reads_transposed<K: MicroKernel>(g: &ConvGeometry) -> bool {
    K::reads_a_any_step()
        && g.layout == Layout::Nchw
        && g.kh == 1
        && g.kw == 1
        && g.out_pixels() <= TRANSPOSED_MAX_PIXELS
}

/// Whether every block reads its band in place from the input (no copy,
/// so no bound on a band's size): a channels-last input without padding
/// on a kernel that takes any step. Windows may then skip input (a 1×1
/// kernel with stride 2: ResNet's projections), which a band would copy for
/// nothing (Zen 5, 1 thread, 512 -> 1024 stride 2 on 28², packed implicit
/// against direct: 988 -> 778 µs). (NCHW read in place at step 2 lost to
/// the packed implicit path: 852 -> 1015 µs on the same layer.)
fn reads_in_place<K: MicroKernel>(g: &ConvGeometry) -> bool {
    K::reads_a_any_step() && g.layout == Layout::Nhwc && [g.pad_top, g.pad_left, g.pad_bottom, g.pad_right] == [0; 4]
}

thread_local! {
    /// The pixel-major block of [`run`], reused across calls.
    static BLOCK: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

impl WithKernel for Direct<'_> {
    type Output = ();

    fn run<K: MicroKernel>(self, kern: K) {
        let GroupConv { g, channels, weights: w_b, bias, act, out, rows: out_rows, par } = self.0;
        assert!(out_rows.end <= g.h_out, "output rows past the plane");
        assert!(kernel_applies::<K>(g), "direct path on a geometry it does not take");
        let (m, k, n) = (g.c_out_per_group(), g.patch_len(), out_rows.len() * g.w_out);
        let threads = par.threads(2.0 * m as f64 * n as f64 * k as f64);
        // Threads share the work by row blocks, each block reading all the
        // weights, or, for a small image (too few row blocks to share out
        // evenly) or weights beyond L2 that more blocks would read again from
        // L3 than a second band build costs, by output channels (one part of
        // whole panels per thread, each part taking every block of one thread's
        // blocking, and building its own bands). AlexNet conv3 on 2 threads
        // (3.5 MiB of weights, 13 rows: 8 blocks against 3): 763 -> 674 µs;
        // ResNet res3_s2 (590 KiB, in L2) stays by rows (533 against 553 µs).
        let mut blocks = row_blocks(g, &out_rows, m, threads);
        let panels = m.div_ceil(K::NR);
        let (one_thread_blocks, weight_bytes) = (row_blocks(g, &out_rows, m, 1), 4 * k * m);
        let rereads = weight_bytes * (blocks - one_thread_blocks) / threads.max(1);
        // A band read in place costs a part nothing to "build": splitting by
        // channels then only saves the weights' rereads, which count where
        // the weights take a quarter of L2 or more. Zen 5 (tenth sitting),
        // 2 threads, channels-last, by channels against by rows: 512 -> 256
        // 1×1 on 28² (512 KiB) 449 -> 466 GFLOP/s, 192 -> 128 (96 KiB)
        // 400 -> 428. Zen 4 (eighteenth), the other way, µs: 192 -> 128
        // 199–259 against 184–195 by rows, 32 -> 128 on 27² (16 KiB) 55–124
        // against 39–40, 64 -> 64 on 56² 174–310 against 141, 512 -> 112 on
        // 13² 117–149 against 105–108; 512 -> 256 1000–1094 against
        // 993–1010. Small weights go by rows.
        let free_band = band_in_place::<K>(g);
        let second_band = if free_band { 0 } else { 4 * g.c_in_per_group() * g.h_in * g.w_in };
        let l2 = cache_sizes().l2;
        // Channels-last, parts by channels write the same cache lines
        // unless a pixel's channels fill whole lines (40 channels: panel 1's
        // 8 share a line with the next pixel's first 8), and split unevenly
        // where the last panel is narrow (32 + 8). Zen 4, 2 threads, 1×1
        // on 28², by channels against by rows (alternated, 3 runs):
        // 120 -> 40 88–111 -> 52–56 µs, 72 -> 40 66–80 -> 33–54, 40 -> 120
        // 123–141 -> 57–58 (NCHW 55–70).
        let lines_apart = g.layout == Layout::Nchw || m.is_multiple_of(16);
        let by_channels = blocks < 4 * threads
            || ((weight_bytes > l2 || free_band && weight_bytes >= l2 / 4)
                && lines_apart
                && rereads > second_band
                && panels.is_multiple_of(threads));
        let parts = if threads > 1 && by_channels {
            blocks = one_thread_blocks;
            // One block and fewer panels than threads (DenseNet's 128 -> 32
            // on 7²: one panel, one block): the threads share its rows
            // through the (panel, row) units below, not one thread alone.
            if blocks == 1 { threads } else { panels.min(threads) }
        } else {
            1
        };
        let job = Job { kern, g, channels, w_b, bias, act, out };
        let cols_of = |panels: std::ops::Range<usize>| (panels.start * K::NR).min(m)..(panels.end * K::NR).min(m);
        if parts > 1 && blocks == 1 && !panels.is_multiple_of(parts) {
            // One block of rows, panels that do not share out evenly (7 for
            // 224 channels on 2 threads: 4 against 3): each thread takes an
            // equal share of the (panel, row) units in panel-major order, a
            // panel split by rows where the shares meet (Zen 5, 2 threads,
            // 224 -> 224 3×3 on 7²: 131 -> 112 µs, 160 -> 224 86 -> 81 µs).
            let (h, units) = (out_rows.len(), panels * out_rows.len());
            par::for_each(threads, parts, |part| {
                let mut block = BLOCK.with(Cell::take);
                for (panels, rows) in unit_rects(units * part / parts..units * (part + 1) / parts, h) {
                    let rows = out_rows.start + rows.start..out_rows.start + rows.end;
                    // SAFETY: the rectangles of the parts' unit ranges are
                    // disjoint: each writes its pixels of its channels of
                    // `out` (m × n, as `run`'s caller guarantees), no other.
                    unsafe { direct_block(&job, rows, cols_of(panels), &mut block) };
                }
                BLOCK.with(|cell| cell.set(block));
            });
            return;
        }
        let run = |item: usize| {
            let (part, b) = (item / blocks, item % blocks);
            let rows = block_range(&out_rows, b, blocks);
            let cols = cols_of(panels * part / parts..panels * (part + 1) / parts);
            let mut block = BLOCK.with(Cell::take);
            // SAFETY: the item writes pixels rows.start·w_out .. rows.end·w_out
            // of the channels `cols` of `out` (m × n, as `run`'s caller
            // guarantees), and no other item writes those.
            unsafe { direct_block(&job, rows, cols, &mut block) };
            BLOCK.with(|cell| cell.set(block));
        };
        par::for_each(threads, blocks * parts, run);
    }
}

/// The units `units` of a grid of panels × `h` rows, numbered panel-major
/// (unit `u`: panel `u / h`, row `u % h`), as at most three rectangles
/// (panels, rows): the rest of a first panel, whole panels, the start of
/// a last one.
fn unit_rects(
    units: std::ops::Range<usize>,
    h: usize,
) -> impl Iterator<Item = (std::ops::Range<usize>, std::ops::Range<usize>)> {
    let (p0, r0, p1, r1) = (units.start / h, units.start % h, units.end / h, units.end % h);
    let rects = if p0 == p1 {
        [(p0..p0 + 1, r0..r1), (0..0, 0..0), (0..0, 0..0)]
    } else {
        let first = if r0 > 0 { (p0..p0 + 1, r0..h) } else { (0..0, 0..0) };
        let whole = p0 + usize::from(r0 > 0)..p1;
        [first, (whole, 0..h), (p1..p1 + 1, 0..r1)]
    };
    rects.into_iter().filter(|(p, r)| !p.is_empty() && !r.is_empty())
}

/// What every block of one [`run`] call shares.
struct Job<'a, K> {
    kern: K,
    g: &'a ConvGeometry,
    channels: &'a [f32],
    w_b: &'a PrepackedSource,
    bias: Option<&'a [f32]>,
    act: Activation,
    /// The group's `m × n` output (rows: channels); blocks write disjoint
    /// pixels of it.
    out: CMatrix,
}

/// The output rows `rows` of [`run`] for the output channels
/// `cols` (from a multiple of NR), through the pixel-major `block`.
///
/// # Safety
/// No one else accesses those pixels of those channels of `job.out`
/// meanwhile.
unsafe fn direct_block<K: MicroKernel>(
    job: &Job<'_, K>,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    block: &mut Vec<f32>,
) {
    let &Job { kern, g, channels, w_b, bias, act, out } = job;
    let k = g.patch_len();
    // The block's channels: its row length.
    let m = cols.len();
    let nr = K::NR;
    let chunks = k.div_ceil(KC);
    let mut band = take_band();
    let mut taps = [0usize; KC];
    let (p0, npx) = (rows.start * g.w_out, rows.len() * g.w_out);
    // Where the tiles go: channels-last, into the output itself (pixel p0
    // + p's channel cols.start + j at `tile_c + p·rsc + j`), with the bias
    // and the activation in the last chunk's store; NCHW, into the
    // pixel-major block, transposed at the end.
    let channels_last = g.layout == Layout::Nhwc;
    let (tile_c, rsc) = if channels_last {
        debug_assert_eq!(out.rs, 1);
        (out.ptr.wrapping_add(cols.start + p0 * out.cs as usize), out.cs as usize)
    } else {
        block.resize(npx * m, 0.0);
        (block.as_mut_ptr(), m)
    };
    // A tile's pixels lie `step` columns apart in the band: the kernel reads
    // them along an unsplit row where it can take the stride as its step,
    // else from the row split into `stride_w` phases, one float apart. A
    // channels-last input is read in place (its columns `c_in` floats
    // apart) where the kernel takes any step.
    let any_step = K::reads_a_any_step();
    let channels_last_in_place = any_step && g.layout == Layout::Nhwc;
    // An NCHW 1×1 kernel on a plane of at most 64 pixels reads a
    // pixel-major copy: its taps are the channels, consecutive there (see
    // `build_pixel_major_band_nchw`). On larger planes its 8-pixel tiles
    // read whole lines of each plane in place, and the copy lost (Zen 5,
    // 1 thread: 1024 -> 512 on 14² 868 -> 931 µs, 256 -> 64 on 56² 2×).
    let transposed = reads_transposed::<K>(g);
    let pixel_major = channels_last_in_place || transposed;
    let step = if pixel_major || K::reads_a_taps(g.stride_w) { g.stride_w } else { 1 };
    let phases = g.stride_w / step;
    // A 1×1 kernel with a stride, not read in place: a pixel-major copy of
    // only the pixels its windows read (`subsample`), the block's pixels
    // one after another in it.
    let subsampled = any_step && is_subsampled(g) && !reads_in_place::<K>(g);
    for chunk in 0..chunks {
        let (k0, kc) = (chunk * KC, KC.min(k - chunk * KC));
        // The band: the input itself where it can be (no copy), else built.
        let in_place = if (g.layout == Layout::Nchw && !transposed && !subsampled) || channels_last_in_place {
            Band::in_input(g, k0, kc, p0, npx, phases)
        } else {
            None
        };
        let (layout, band_at) = match in_place {
            _ if subsampled => {
                subsample(g, channels, k0..k0 + kc, rows.clone(), &mut band);
                // (Only `pixel` is read below: pixels `kc` floats apart.)
                let layout = Band::pixel_major(g, k0, kc, p0, g.w_out.min(npx));
                (layout, band.as_ptr())
            }
            Some((layout, start)) => (layout, channels[start..].as_ptr()),
            None if pixel_major => {
                // Channels-last with padding: a pixel-major copy of the rows
                // (no transpose), read as the input would be; NCHW 1×1: the
                // same band, transposed from the planes.
                let layout = Band::pixel_major(g, k0, kc, p0, npx);
                kern.lanes().enter(BuildBand { g, channels, layout: &layout, band: &mut band, pixel_major: true });
                (layout, band.as_ptr())
            }
            None => {
                let layout = Band::with_phases(g, k0, kc, p0, npx, phases);
                // Inside the lanes' features: channels-last's transposing copy vectorises there.
                kern.lanes().enter(BuildBand { g, channels, layout: &layout, band: &mut band, pixel_major: false });
                (layout, band.as_ptr())
            }
        };
        let taps = &mut taps[..kc];
        if subsampled {
            // Channel k0 + i of a pixel at offset i.
            taps.iter_mut().enumerate().for_each(|(i, t)| *t = i);
        } else {
            band_taps(g, k0, &layout, taps);
        }
        let last = chunk + 1 == chunks;
        let spec = StoreSpec {
            alpha: 1.0,
            beta: if chunk == 0 { 0.0 } else { 1.0 },
            store: if chunk == 0 { Store::Overwrite } else { Store::Update },
            bias: std::ptr::null(),
            bias_cols: true,
            act: if channels_last && last { act } else { Activation::None },
        };
        let panels = w_b.packed(nr, k0, kc, 0).expect("weights packed in NR panels");
        // The block's tiles run along lines of pixels: an output row, or,
        // where output rows lie back to back in the band (stride 1 and a band
        // row as long as an output row: 1 × 1 and k × 1 kernels without
        // horizontal padding), the whole block.
        let flat = subsampled || g.stride_h == 1 && g.stride_w == 1 && layout.row_len == g.w_out * layout.pixel;
        // Floats from one of a tile's pixels to the next.
        let a_step = if subsampled { kc } else { step * layout.pixel };
        let row_at = |oy: usize| if subsampled { 0 } else { (oy * g.stride_h - layout.py0) * layout.row_len };
        let (line, lines) = if flat { (npx, 1) } else { (g.w_out, rows.len()) };
        // Panel by panel of the weights, each kept in L1 while every tile
        // of the block reads it: a K chunk of many channels' weights (256 ×
        // 2048 of ResNet's res5 1×1, 2 MiB) outgrows L2, and tile by tile
        // it came from L3 once per tile (Zen 5, 1 thread: res5 1×1 512 ->
        // 2048 on 7×7 570 -> 518 µs, 256 -> 1024 on 14×14 535 -> 500 µs).
        let mut jr = 0;
        while jr < m {
            // The last columns with the panel before them where the kernel
            // takes such a wide tile (`A_TAPS_WIDE`: 40 channels as one 8 ×
            // 40 tile, not 8 × 32 and a 16 × 8 whose vectors are half empty).
            let width = if m - jr > nr && m - jr <= K::A_TAPS_WIDE { m - jr } else { nr.min(m - jr) };
            // A line's tiles as even as whole pixels allow (49 go 7 × 7, not
            // 6 × 8 and 1): a tile of 1 to 3 rows has too few FMA chains to
            // fill the pipes (1 thread: res5 1 × 1 468 -> 449 µs, LeNet conv2
            // 3.8 -> 3.35 µs). A narrow panel (the last of m, or all of m ≤
            // 16) may take taller tiles.
            let tiles = line.div_ceil(K::a_taps_rows(width));
            for l in 0..lines {
                let (px0, at0) = (l * line, row_at(rows.start + l));
                for t in 0..tiles {
                    let (x, x_end) = (t * line / tiles, (t + 1) * line / tiles);
                    let out_tile = TileOut {
                        // Pixel px0 + x, channel cols.start + jr.
                        c: tile_c.wrapping_add((px0 + x) * rsc + jr),
                        rsc: rsc as isize,
                        csc: 1,
                        rows: x_end - x,
                        cols: width,
                    };
                    let spec = match bias {
                        // The channels' bias, on the last chunk of a channels-last output.
                        Some(b) if channels_last && last => StoreSpec { bias: b[cols.start + jr..].as_ptr(), ..spec },
                        _ => spec,
                    };
                    // SAFETY: the tile's pixel i reads band float
                    // at0 + (x + i)·a_step + taps[k], inside the band built for
                    // these rows and taps (Band::of covers every window of
                    // the block; with `flat`, pixel p of the block is band
                    // float row_at(rows.start) + p·pixel), or, read in place,
                    // inside the group's input (no padding: every window
                    // is, and the band's floats are the input's at the
                    // same offsets from band_at); panel jr / NR of the
                    // chunk's packed weights holds kc × NR floats (so does
                    // the next, which a wide tile reads); the tile
                    // lies inside the npx × m block, or, channels-last,
                    // inside this item's pixels and channels of the output
                    // (as `run`'s caller guarantees), with `cols` bias
                    // values from its first channel when there is a bias.
                    unsafe {
                        kern.run_a_taps(
                            kc,
                            band_at.add(at0 + x * a_step),
                            a_step,
                            taps.as_ptr(),
                            panels.as_ptr().add((cols.start + jr) * kc),
                            &out_tile,
                            &spec,
                        )
                    };
                }
            }
            jr += width;
        }
    }
    put_band(band);
    if !channels_last {
        // NCHW: the block, channel-major, with the bias and the activation.
        // Channel cols.start + co's pixels p0 .. p0 + npx for co < m: this item's alone.
        let bias = bias.map(|b| &b[cols.clone()]);
        let n = out.rs as usize;
        let out = out.ptr.wrapping_add(cols.start * n + p0);
        kern.lanes().enter(Transpose { block: &block[..npx * m], m, out, n, bias, act });
    }
}

/// The block's epilogue: the transpose into NCHW with the bias and the
/// activation, in the lanes' 8 × 8 register transposes where they have
/// them, the rest element by element.
impl WithLanes for Transpose<'_> {
    type Output = ();
    #[inline(always)]
    fn run<L: Lanes>(self, _: L) {
        let Transpose { block, m, out, n, bias, act } = self;
        let npx = block.len() / m;
        let finish = |x: f32, co: usize| act.apply(bias.map_or(x, |b| x + b[co]));
        // SAFETY: inside the lanes' features; `out` as `Transpose` says.
        let (p8, m8) = unsafe { L::transpose_8x8_tiles(&self) };
        // What the 8 × 8 tiles left: channels past m8 for every pixel, pixels
        // past p8 for the channels below m8.
        for co in 0..m {
            for p in if co < m8 { p8 } else { 0 }..npx {
                // SAFETY: co < m, p < npx: writable, as `Transpose` says.
                unsafe { *out.add(co * n + p) = finish(block[p * m + co], co) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::unit_rects;

    /// Every split of every grid into parts: the parts' rectangles cover
    /// each unit exactly once.
    #[test]
    fn unit_rects_cover_each_unit_once() {
        for (panels, h) in [(1, 1), (3, 7), (7, 7), (5, 1), (2, 13)] {
            let units = panels * h;
            for parts in 1..=units.min(5) {
                let mut seen = vec![0; units];
                for part in 0..parts {
                    for (ps, rs) in unit_rects(units * part / parts..units * (part + 1) / parts, h) {
                        for p in ps {
                            for r in rs.clone() {
                                seen[p * h + r] += 1;
                            }
                        }
                    }
                }
                assert!(seen.iter().all(|&n| n == 1), "{panels} × {h} in {parts}: {seen:?}");
            }
        }
    }
}
