//! The one place that chooses a convolution algorithm ([`prefers_direct`]
//! from the weights when a plan is built, [`choose`] per call from the
//! input), and [`execute`], the loop over (image, group) that runs the
//! chosen one. Each algorithm lives in a module of its own.

use super::GroupConv;
use super::implicit::ImageSource;
use super::options::{Algorithm, ConvOptions, Threads};
use super::scratch::{with_indices, with_scratch};
use super::winograd::{self, TileSize, WinogradWeights};
use super::{banded, depthwise, direct, explicit, grouped, pointwise};
use crate::error::ConvError;
use crate::gemm::{self, CMatrix, Epilogue, PanelSource, Parallelism, PrepackedSource};
use crate::geometry::{ConvGeometry, ConvParams};
use crate::isa::Isa;
use crate::layout::Layout;
use crate::par;

/// Whether a plan keeps its weights for the direct path (NR panels): the
/// path takes them on `isa` (see `direct::takes_weights`) and `algorithm`
/// asks for it, or leaves it to `Auto` and each output sums at least
/// [`DIRECT_MIN_K`] products on a kernel that pays for NCHW
/// (`direct::auto_nchw`), or the activations are channels-last (where
/// the GEMM paths pack the image by gathers and store C by columns, and the
/// direct path neither: measured on Zen 4, 1 thread, NHWC: VGG conv1_1
/// (K = 27) 3.1 ms direct against 4.4–6.4 ms implicit, ResNet 1×1 64→256
/// on 56² 1.20 against 1.37 ms pointwise).
pub(crate) fn prefers_direct(
    isa: Isa,
    algorithm: Algorithm,
    layout: Layout,
    c_in_per_group: usize,
    m: usize,
    k: usize,
) -> bool {
    direct::takes_weights(isa, c_in_per_group, m, k)
        && match algorithm {
            Algorithm::Direct => true,
            Algorithm::Auto if layout == Layout::Nhwc => true,
            Algorithm::Auto => k >= DIRECT_MIN_K && !banded_wins(isa, c_in_per_group, k) && direct::auto_nchw(isa),
            _ => false,
        }
}

/// Whether a plan keeps its weights in NR panels for the grouped 1×1
/// path (`grouped.rs`): `algorithm` leaves it to `Auto` or asks for the
/// direct path (which it is a form of: channels as lanes, the image
/// broadcast where it lies), and the path takes the layer on `isa`.
pub(crate) fn prefers_grouped(isa: Isa, algorithm: Algorithm, params: &ConvParams, weight_shape: [usize; 4]) -> bool {
    matches!(algorithm, Algorithm::Auto | Algorithm::Direct) && grouped::takes(isa, params, weight_shape)
}

/// Whether the implicit im2col reads the band in place (`banded.rs`)
/// rather than packing it, for `c_in_per_group` input channels and `k`
/// products per output on `isa`: first layers (at most 4 input channels,
/// one K chunk), whose short K leaves packing as costly as the product, on
/// a kernel that reads B's rows in place (AVX-512's; AVX2's 6×16 did, on
/// Zen 5, at 0.6× the packed path's speed, and was left out).
/// Measured on Zen 5, 1 thread (packed implicit or direct, against
/// in place): 3→32 3×3 stride 2 on 224² 145 against 119 µs, 3→64 3×3 on
/// 224² 1.03 against 0.85 ms, 3→64 7×7 stride 2 (direct) 0.99 against
/// 0.97 ms; with more channels the band's rows of a tile outgrow L1 and
/// it lost: 24→96 3×3 on 56² 0.53 (direct) against 0.76 ms, 8→256 3×3 on
/// 56² 0.47 (packed) against 0.54 ms.
pub(crate) fn banded_wins(isa: Isa, c_in_per_group: usize, k: usize) -> bool {
    c_in_per_group <= 4 && k <= gemm::KC && banded::reads_in_place(isa)
}

/// The algorithm a call runs: the one asked for where it applies to
/// `geo` and the weights in hand, else the implicit im2col (or the explicit
/// one for geometries too large to index compactly).
pub(crate) fn choose(geo: &ConvGeometry, asked: Algorithm, weights: &Weights) -> Algorithm {
    let depthwise = weights.direct.is_some() && depthwise::applies(geo);
    match asked {
        Algorithm::Auto | Algorithm::Winograd if weights.winograd.is_some() => Algorithm::Winograd,
        Algorithm::Auto | Algorithm::Depthwise if depthwise => Algorithm::Depthwise,
        Algorithm::Auto | Algorithm::Direct if weights.packed_nr.is_some() => Algorithm::Direct,
        Algorithm::Auto | Algorithm::Pointwise if pointwise::applies(geo) => Algorithm::Pointwise,
        _ if !geo.is_compact() => Algorithm::Im2col,
        Algorithm::Auto | Algorithm::Pointwise | Algorithm::Depthwise | Algorithm::Direct | Algorithm::Winograd => {
            Algorithm::Implicit
        }
        other => other,
    }
}

/// The kernel a call runs, as [`crate::Conv2dPlan::kernel_name`] reports it.
pub(crate) fn kernel_name(geo: &ConvGeometry, options: &ConvOptions, weights: &Weights) -> &'static str {
    match choose(geo, options.algorithm, weights) {
        Algorithm::Winograd => weights.winograd.map_or("", |(_, tile)| tile.kernel_name()),
        Algorithm::Depthwise => depthwise::kernel_name(options.isa, geo),
        Algorithm::Direct if grouped::applies(options.isa, geo) => grouped::kernel_name(options.isa),
        Algorithm::Pointwise if geo.out_pixels() <= gemm::NARROW_N && geo.layout == Layout::Nchw => {
            gemm::narrow_kernel_name(options.isa)
        }
        _ => options.isa.kernel_name(),
    }
}

/// The weights in the forms the algorithms read.
pub(crate) struct Weights<'a> {
    /// Per group, packed A panels (GEMM paths); empty on the direct path.
    pub packed: &'a [PrepackedSource],
    /// Per group, the same in the kernel's NR panels, when the direct path runs.
    pub packed_nr: Option<&'a [PrepackedSource]>,
    /// When each group has one input channel, flipped if asked: OIHW for
    /// NCHW, tap-major (`[kh·kw][c_out]`) for channels-last.
    pub direct: Option<&'a [f32]>,
    /// Winograd's transformed filters and the tile size for this input,
    /// when the plan runs Winograd on it.
    pub winograd: Option<(&'a WinogradWeights, TileSize)>,
}

/// Whether `Algorithm::Auto` under `Precision::Relaxed` takes Winograd for
/// a 3×3 stride-1 layer with `cg` input and `og` output channels per group
/// and an output plane of `h_out × w_out`: the GEMMs over channels must be
/// long and wide enough to run near the peak ([`winograd_channels_pay`]),
/// and the plane large enough. Measured on Zen 4, 1 thread
/// (`benches/winograd_table.rs`): with 64 channels and more each way
/// Winograd won on every layer of the suite (1.08–2.25× the exact path);
/// on 6×6 planes (Inception v1's 160→320) it lost (0.91×), until the
/// twenty-second sitting's padded-plane input transform (below).
///
/// Remeasured on Zen 5 (eleventh sitting, after the output transform's
/// stores went by vectors), Winograd against exact, 1 and 2 threads:
/// - 7×7 planes (F(2×2)) need 128 channels each way: 160→224 and 192→320
///   1.15× on 1 thread, 0.94–1.06× on 2; 64→64 0.82× and 0.72×.
/// - Fewer than 64 channels one way pay where `1/cg + 1/og ≤ 0.04` on
///   planes of 24 outputs a side and more: 128→32 on 28² and 32→128 on
///   27² 1.37–1.46× on 1 thread, 1.03–1.09× on 2. On smaller planes only
///   where F(4×4)'s `U` is at most 1 MiB, which two threads
///   split by output channels (see `winograd::run_tiles`): 128→32 on 14²
///   and 32→128 on 13² 1.19–1.37× on 1 thread, 1.04× and 1.34× on 2;
///   48→192 on 13² (1.3 MiB) won on 1 thread but lost on 2 (0.88×).
///
/// Twelfth sitting, Zen 5, 1 thread: on planes of 8 to 12 a side the
/// tiles fill a fraction of a vector and Winograd lost where the rules
/// above said it pays (64 channels each way, F(4×4): 8² 0.56×, 10² 0.81×;
/// 32→128 on 10² 0.74×). So `Auto` asks the GEMMs of the chosen tile size
/// ([`TileSize::by_model`]) to run fewer multiplications than the direct
/// sum: 2.4 times fewer from 48 channels each way (and for the small-`U`
/// layers), 1.6 times from 128, since lowered to 1.2 (below). F(2×2) on 7²
/// saves 1.7×, F(4×4) on 13² 2.6×, on 14² 3.1×. Measured, with the tile size the model picks: 64
/// channels 0.99× on 8² (saves 2.25×) and 1.07× on 12² (2.25×), 128
/// channels 1.23× on 8², 1.36× on 10² (1.76×), 1.12× on 11² (1.89×);
/// 256 channels 1.26× on 9², which saves only 1.42× and then stayed
/// exact.
///
/// From 128 channels each way, 1.2 times fewer (twenty-second sitting,
/// Zen 4, after the small planes' input transform was copied once a
/// channel into a padded plane): F(2×2) on 6² saves 1.27× and won on 1
/// and 2 threads, 160→320 272 against 302 µs and 143 against 155, 192→384
/// 379 against 433 and 194 against 222.
///
/// From 48 channels each way rather than 64 (twelfth sitting, Zen 5,
/// Winograd against exact on 1 and 2 threads, the vCPUs far apart):
/// 48→192 on 13² 1.30× and 0.93× (1.35× on 2 threads with them near),
/// on 14² 1.52× and 1.02×, on 20² 1.76× and 1.14×; 192→48 on 14² 1.45×
/// and 0.96×, on 20² 1.80× and 1.18×; 48→256 on 14² 1.58× and 1.09×
/// (64→192 on 13², which the rule took already: 1.41× and 1.01×).
///
/// Few channels on large planes (seventeenth sitting, Zen 4, F(4×4) or
/// F(6×6) against exact; 1 thread, then the range of 2-thread runs): from
/// 16 channels one way and 64 both ways together, on planes of 48 outputs
/// a side and more, Winograd won: 16→64 on 55² 1.20–1.25× and 1.04–1.17×,
/// on 112² 1.40–1.53× and 1.15–1.40×; 64→16 on 55² 1.28–1.32× and
/// 0.99–1.34×; 16→48 on 56² 1.17–1.33× and 1.08–1.16×. It lost or barely
/// won with fewer channels (16→16 on 56² 0.96×, 16→32 1.15× and 1.11×)
/// and on smaller planes at 2 threads (16→128 on 28² 0.69×, 24→96 on 28²
/// 0.94×), which stay exact. (Zen 5 gave smaller margins than Zen 4 on the
/// layers measured on both, 32→128 on 27²: 1.03–1.09× against 1.53× on 2
/// threads; these layers were not measured there.)
pub(crate) fn winograd_pays(cg: usize, og: usize, h_out: usize, w_out: usize) -> bool {
    let side = h_out.min(w_out);
    if !channel_ratio_pays(cg, og) {
        return few_channels_pay(cg, og) && side >= FEW_CHANNELS_MIN_SIDE;
    }
    let least = cg.min(og);
    // The direct sum's multiplications per channel pair against the
    // GEMMs' of the tile size the plane takes, in tenths.
    let (_, winograd) = TileSize::by_model(cg, og, h_out, w_out);
    let direct = h_out.saturating_mul(w_out).saturating_mul(9);
    let saves = |tenths: usize| direct.saturating_mul(10) >= winograd.saturating_mul(tenths);
    let wide = (least >= WINOGRAD_MIN_CHANNELS && saves(24)) || (least >= 128 && saves(12));
    let small_u = cg.saturating_mul(og).saturating_mul(36 * 4) <= 1 << 20;
    wide || side >= 24 || (small_u && saves(24))
}

/// The channel half of [`winograd_pays`]: a plan keeps Winograd's filters
/// for `Auto` only where some input could take them.
pub(crate) fn winograd_channels_pay(cg: usize, og: usize) -> bool {
    channel_ratio_pays(cg, og) || few_channels_pay(cg, og)
}

/// `1/cg + 1/og ≤ 0.04`, which 64 channels each way meet: the GEMMs over
/// channels are long and wide enough on most planes.
fn channel_ratio_pays(cg: usize, og: usize) -> bool {
    // (Saturating: an empty layer's other channel count may be any size.)
    cg.saturating_add(og).saturating_mul(25) <= cg.saturating_mul(og)
}

/// At least 16 channels one way and 64 both ways together: Winograd pays
/// on planes of [`FEW_CHANNELS_MIN_SIDE`] outputs a side and more only.
fn few_channels_pay(cg: usize, og: usize) -> bool {
    cg.min(og) >= 16 && cg.saturating_add(og) >= 64
}

/// The smallest output plane side on which [`few_channels_pay`] layers
/// take Winograd.
const FEW_CHANNELS_MIN_SIDE: usize = 48;

/// Fewest channels per group, in and out, for which `Auto` takes Winograd.
const WINOGRAD_MIN_CHANNELS: usize = 48;

/// One GEMM per (image, group), `out = W_g · B + bias`, then the activation,
/// with B the image as `options.algorithm` feeds it. Arguments are validated.
/// Parallel over (image, group) when there are at least as many of those as
/// threads (grouped pointwise GEMMs of fewer than 4 a thread on planes of
/// [`POINTWISE_PART_MIN_PIXELS`] a part, and channels-last groups sharing
/// lines, over parts of their rows), else
/// inside each GEMM; either way bit-identical.
pub(crate) fn execute(
    geo: &ConvGeometry,
    options: &ConvOptions,
    input: &[f32],
    weights: &Weights,
    bias: Option<&[f32]>,
    output: &mut [f32],
) {
    let (m, k, n) = (geo.c_out_per_group(), geo.patch_len(), geo.out_pixels());
    if output.is_empty() {
        return;
    }
    let out_at = geo.output_strides();
    if k == 0 {
        // No input channels: each output is its bias, then the activation.
        for image in output.chunks_exact_mut(geo.c_out * n) {
            for co in 0..geo.c_out {
                let b = options.activation.apply(bias.map_or(0.0, |b| b[co]));
                (0..n).for_each(|p| image[co * out_at.c + p * out_at.x] = b);
            }
        }
        return;
    }
    let algorithm = choose(geo, options.algorithm, weights);
    let jobs = geo.batch * geo.groups;
    let total_flops = 2.0 * jobs as f64 * m as f64 * n as f64 * k as f64;
    let threads = match options.threads {
        Threads::Pool if total_flops >= parallel_min_flops(algorithm, geo) => rayon::current_num_threads(),
        _ => 1,
    };
    if let (Algorithm::Winograd, Some((w, tile))) = (algorithm, weights.winograd) {
        winograd::run(options.isa, geo, w, tile, input, bias, options.activation, threads, output);
        return;
    }
    if algorithm == Algorithm::Depthwise && geo.layout == Layout::Nhwc {
        let direct = weights.direct.expect("direct weights chosen above");
        let done =
            depthwise::run_channels_last(options.isa, geo, input, direct, bias, options.activation, threads, output);
        debug_assert!(done.is_ok(), "the plan's ISA was checked when it was built");
        return;
    }
    let image_len = geo.c_in * geo.h_in * geo.w_in;
    if algorithm == Algorithm::Direct && grouped::applies(options.isa, geo) {
        // Channels-last grouped 1×1 with few channels a group: every group
        // of a part of the pixels an item.
        let w = weights.packed_nr.expect("NR weights chosen above");
        let out = CMatrix { ptr: output.as_mut_ptr(), rs: 1, cs: geo.c_out as isize };
        let parts = if threads > 1 { (4 * threads).min(n) } else { 1 };
        par::for_each(threads, geo.batch * parts, |item| {
            let (image, part) = (item / parts, item % parts);
            let job = grouped::Grouped {
                g: geo,
                input: &input[image * image_len..][..image_len],
                weights: w,
                bias,
                act: options.activation,
                out: out.shifted(image * geo.c_out * n),
                pixels: part * n / parts..(part + 1) * n / parts,
            };
            // SAFETY: item (image, part) writes the part's pixels of the
            // image's channels-last output (`c_out · n` floats, inside
            // `output`), which no other item writes.
            unsafe { grouped::run(options.isa, job) };
        });
        return;
    }
    if let (Algorithm::Depthwise, Some(lanes)) = (algorithm, depthwise::channel_block(options.isa, geo)) {
        // Channel multiplier 1: blocks of `lanes` channels per image.
        let plane = geo.h_in * geo.w_in;
        let direct = weights.direct.expect("direct weights chosen above");
        // (A thread's reused indices: the steady state allocates nothing.)
        with_indices(|landing| {
            depthwise::landing(options.isa, geo, landing);
            let landing = &*landing;
            // (`borders_zero`: the block before ran in the same scratch.)
            let block = |image: usize, index: usize, out: &mut [f32], scratch: &mut Vec<f32>, borders_zero: bool| {
                let (c0, count) = (index * lanes, out.len() / n);
                // A last block of fewer than `lanes` channels is summed as the
                // `lanes` channels that end with it (see `Block`).
                let skip = if count < lanes && geo.c_out >= lanes { lanes - count } else { 0 };
                let (c0, count) = (c0 - skip, count + skip);
                let job = depthwise::Block {
                    geo,
                    skip,
                    landing,
                    borders_zero,
                    input: &input[image * image_len + c0 * plane..][..count * plane],
                    weight: &direct[c0 * k..][..count * k],
                    bias: bias.map(|b| &b[c0..c0 + count]),
                    act: options.activation,
                    out,
                    scratch,
                };
                let done = depthwise::run_blocked(options.isa, job);
                debug_assert!(done.is_ok(), "the plan's ISA was checked when it was built");
            };
            let per_image = geo.c_out * n;
            if threads > 1 {
                // Items of several blocks, about 4 a thread, so that a block
                // after the first of its item finds the zero borders in place.
                let blocks_per_item = geo.c_out.div_ceil(lanes).div_ceil(4 * threads).max(1);
                for (image, planes) in output.chunks_mut(per_image).enumerate() {
                    par::for_each_chunk_mut(threads, planes, blocks_per_item * lanes * n, |item, outs| {
                        with_scratch(|scratch| {
                            for (j, out) in outs.chunks_mut(lanes * n).enumerate() {
                                block(image, item * blocks_per_item + j, out, scratch, j > 0);
                            }
                        })
                    });
                }
            } else {
                with_scratch(|scratch| {
                    for (image, planes) in output.chunks_mut(per_image).enumerate() {
                        for (index, out) in planes.chunks_mut(lanes * n).enumerate() {
                            block(image, index, out, scratch, image > 0 || index > 0);
                        }
                    }
                });
            }
        });
        return;
    }
    // The output of (image, group): m × n, channel co and pixel p at
    // co·rs + p·cs (NCHW: contiguous, channels-last: pixels c_out apart).
    let base = CMatrix { ptr: output.as_mut_ptr(), rs: out_at.c as isize, cs: out_at.x as isize };
    let out_of = |index: usize| {
        let (image, group) = (index / geo.groups, index % geo.groups);
        // Inside `output`: the first of the (image, group)'s outputs.
        base.shifted(image * geo.c_out * n + group * m * out_at.c)
    };
    // NCHW: the (image, group)'s m·n outputs, contiguous.
    let planes = |out: CMatrix| {
        assert!(geo.layout == Layout::Nchw && out.cs == 1 && out.rs == n as isize, "NCHW planes");
        // SAFETY: under NCHW (asserted), `out` is that block of `output`, and only this job uses it.
        unsafe { std::slice::from_raw_parts_mut(out.ptr, m * n) }
    };
    // Job `index` (image, group), its output rows `rows` only (all but on
    // the direct and pointwise paths: see below).
    let job = |index: usize, par: Parallelism, rows: std::ops::Range<usize>, cols: &mut Vec<f32>| {
        let (image, group) = (index / geo.groups, index % geo.groups);
        let channels = geo.group_input(input, image, group);
        let out = out_of(index);
        let bias = bias.map(|b| &b[group * m..][..m]);
        let a_t = || &weights.packed[group];
        let done = match algorithm {
            Algorithm::Depthwise => {
                let w = &weights.direct.expect("direct weights chosen above")[group * m * k..][..m * k];
                depthwise::run(options.isa, geo, channels, w, bias, options.activation, planes(out), cols)
            }
            Algorithm::Direct => {
                let w = &weights.packed_nr.expect("NR weights chosen above")[group];
                let job = GroupConv { g: geo, channels, weights: w, bias, act: options.activation, out, rows, par };
                direct::run(options.isa, job)
            }
            Algorithm::Im2col => explicit::with_columns(geo, channels, cols, |b| {
                group_gemm(options.isa, par, (m, n, k), a_t(), b, bias, options, out)
            }),
            // A plane of a few pixels: matrix-vector products from the
            // prepacked weights.
            Algorithm::Pointwise if n <= gemm::NARROW_N && geo.layout == Layout::Nchw => gemm::gemm_narrow(
                options.isa,
                (m, n, k),
                a_t(),
                channels,
                bias,
                options.activation,
                planes(out),
                if jobs >= threads { 1 } else { threads },
            ),
            // Output rows `rows`: pixels `rows.start·w ..` of input and
            // output alike (1×1, stride 1, no padding).
            Algorithm::Pointwise => {
                let (first, len) = (rows.start * geo.w_out, rows.len() * geo.w_out);
                let out = out.shifted(first * out_at.x);
                pointwise::with_source(geo, channels, first, |b| {
                    group_gemm(options.isa, par, (m, len, k), a_t(), b, bias, options, out)
                })
            }
            // A first layer: the band's rows read in place.
            Algorithm::Implicit
                if banded_wins(options.isa, geo.c_in_per_group(), k) && banded::applies(options.isa, geo, a_t()) =>
            {
                let job = GroupConv { g: geo, channels, weights: a_t(), bias, act: options.activation, out, rows, par };
                banded::run(options.isa, job)
            }
            _ => group_gemm(options.isa, par, (m, n, k), a_t(), &ImageSource::new(geo, channels), bias, options, out),
        };
        debug_assert!(done.is_ok(), "the plan's ISA was checked when it was built");
    };
    let all_rows = 0..geo.h_out;
    // Groups that share out their rows rather than the groups (see below).
    let by_rows = threads > 1
        && geo.groups > 1
        && match algorithm {
            Algorithm::Direct => geo.layout == Layout::Nhwc && m % 16 != 0,
            // (Planes wide enough for parts: never the narrow planes'
            // matrix-vector path, which computes all the rows of its job.)
            Algorithm::Pointwise => {
                geo.layout == Layout::Nchw && jobs < 4 * threads && n >= 4 * threads * POINTWISE_PART_MIN_PIXELS
            }
            _ => false,
        };
    if by_rows {
        // Channels-last groups whose channels do not fill whole cache lines
        // share their pixels' lines: threads on different groups of the
        // same pixels wrote the same lines back and forth (Zen 5, 2
        // threads: ShuffleNet's 24 -> 112 1×1 in 4 groups, 28 channels each,
        // on 56² 47 µs on one thread, 90–175 µs on two). (Groups of whole
        // lines stay split by group: each thread then streams only its
        // groups' weights; AlexNet conv5's 2 groups of 128 channels on two
        // threads split by rows 313 -> 399 µs.) And few grouped pointwise
        // GEMMs (ShuffleNet's, NCHW): a group an item, a thread starting
        // late left the other whole groups to finish alone (Zen 4, 2
        // threads, 24 -> 112 1×1 in 4 groups on 56²: medians 88–108 µs in
        // ten runs, minimums 45–60; by rows: medians 60–87, minimums
        // 54–56, the narrower GEMMs losing a few µs in the best runs).
        // Each item runs every group of its rows.
        let parts = (4 * threads).min(geo.h_out).max(1);
        par::for_each(threads, geo.batch * parts, |item| {
            let (image, part) = (item / parts, item % parts);
            let rows = part * geo.h_out / parts..(part + 1) * geo.h_out / parts;
            with_scratch(|cols| {
                (0..geo.groups)
                    .for_each(|group| job(image * geo.groups + group, Parallelism::Serial, rows.clone(), cols))
            })
        });
    } else if threads > 1 && jobs >= threads {
        // Items of several jobs: a depthwise channel of 14×14 is ~60 ns of
        // work, less than dealing it out to two cores costs.
        let per_item = jobs.div_ceil(8 * threads);
        par::for_each(threads, jobs.div_ceil(per_item), |item| {
            let indices = item * per_item..((item + 1) * per_item).min(jobs);
            with_scratch(|cols| indices.for_each(|index| job(index, Parallelism::Serial, all_rows.clone(), cols)))
        });
    } else {
        // The GEMM, banded and direct paths decide for themselves: each
        // forks only past `PARALLEL_MIN_FLOPS` of its own work.
        let par = if threads > 1 { Parallelism::Rayon } else { Parallelism::Serial };
        with_scratch(|cols| (0..jobs).for_each(|index| job(index, par, all_rows.clone(), cols)));
    }
}

/// Whether `Auto` takes the pointwise GEMM over the direct path that
/// `prefers_direct` chose for a 1×1 convolution on `geo` (NCHW): when
/// there are at least 1.5 output channels per input channel and a plane of
/// 128 pixels or more. The GEMM packs the image's `k × n` once for all `m`
/// rows, where the direct path transposes `m × n` outputs and runs tiles of
/// `k` steps; on planes under 128 pixels (7×7) its 49 columns fill the
/// kernel's 64. Measured on Zen 5, 1 thread (direct against pointwise):
/// 256→1024 on 14² 500 against 442 µs, 512→1000 on 13² 829 against 756,
/// 128→512 on 28² 492 against 417; 1024→512 on 14² even (929, 920);
/// direct ahead on 512→128 on 28² by 2 %, 1024→256 on 14² by 5 %,
/// 480→192 on 13² by 8 %, and on 7² planes by 6–22 %.
pub(crate) fn pointwise_wins(geo: &ConvGeometry) -> bool {
    let (m, k) = (geo.c_out_per_group(), geo.patch_len());
    pointwise::applies(geo) && geo.layout == Layout::Nchw && 2 * m >= 3 * k && geo.out_pixels() >= 128
}

/// `Algorithm::Auto` takes the direct path from this many multiply-adds per
/// output (K) up: each tile then runs long enough to repay its store and the
/// transpose of the output. Measured on Zen 5 (1 thread): ResNet res2 1×1
/// (K = 64) 560 µs direct against 440 µs pointwise, VGG conv1_1 (K = 27)
/// even; LeNet conv2 (K = 150) 4.0 against 6.1 µs, res5 1×1 (K = 2048)
/// 495 against 550 µs.
const DIRECT_MIN_K: usize = 128;

/// Grouped pointwise layers split by rows (into `4 · threads` parts, or
/// one a row) only on planes of this many pixels a part on average: a
/// part packs its own columns and ends in a partial tile. Zen 4, 2 threads, ShuffleNet's 1×1 in 4
/// groups: 272 channels on 7² 40 µs by rows against 13 by group,
/// 272 on 14² 56 against 42, 136 on 28² 51 against 46; 24 -> 112 on 56²
/// (392 pixels a part) 47 by rows, 56–103 by group.
const POINTWISE_PART_MIN_PIXELS: usize = 256;

/// Below this many flops a call stays on the calling thread. Whole (image,
/// group) jobs split with no repacking, so a fork pays off earlier than the
/// GEMM's split (`gemm::PARALLEL_MIN_FLOPS`): at ~30 GFLOP/s, 1 MFLOP is ~33 µs of
/// work against a rayon fork-join of a few µs.
const JOBS_PARALLEL_MIN_FLOPS: f64 = 1.0e6;

/// The same for depthwise layers, which run at a fifth of the GEMM
/// paths' rate or less (memory-bound): 0.15 MFLOP is ~4 µs of their work.
/// MobileNetV2's 960 channels on 7×7 (0.85 MFLOP) stayed on one thread at
/// 1 MFLOP, 19 µs against ORT's 13 µs on two (Zen 5).
const DEPTHWISE_PARALLEL_MIN_FLOPS: f64 = 0.15e6;

/// The flops from which `algorithm` forks onto the caller's pool.
fn parallel_min_flops(algorithm: Algorithm, geo: &ConvGeometry) -> f64 {
    match algorithm {
        Algorithm::Depthwise => DEPTHWISE_PARALLEL_MIN_FLOPS,
        // The matrix-vector path streams its weights: one image splits
        // them by their size (`gemm::narrow_split_pays`), not by a count of
        // flops (MobileNetV3's 960 -> 240 on 1×1, 0.46 MFLOP, 921 KB, on 2
        // threads: 8.0 -> 7.0 µs, ORT 6.5).
        Algorithm::Pointwise
            if geo.out_pixels() <= gemm::NARROW_N
                && geo.layout == Layout::Nchw
                && geo.batch * geo.groups == 1
                && gemm::narrow_split_pays(geo.c_out_per_group(), geo.patch_len()) =>
        {
            0.0
        }
        _ => JOBS_PARALLEL_MIN_FLOPS,
    }
}

/// `out (m × n) = A · B + bias`, then the activation, for one (image, group).
#[allow(clippy::too_many_arguments)]
fn group_gemm<B: PanelSource>(
    isa: Isa,
    par: Parallelism,
    (m, n, k): (usize, usize, usize),
    a_t: &PrepackedSource,
    b: &B,
    bias: Option<&[f32]>,
    options: &ConvOptions,
    c: CMatrix,
) -> Result<(), ConvError> {
    let epi = Epilogue {
        alpha: 1.0,
        beta: 0.0,
        bias: bias.map_or(std::ptr::null(), <[f32]>::as_ptr),
        act: options.activation,
    };
    // SAFETY: `c` is the job's m × n outputs (`execute` computes it inside
    // `output`), `bias` m values; the sources cover k × m and k × n.
    unsafe { gemm::gemm(isa, m, n, k, a_t, b, c, &epi, par) }
}
