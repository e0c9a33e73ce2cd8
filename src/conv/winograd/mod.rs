//! Winograd convolution F(m×m, 3×3) for 3×3 kernels with stride 1 and
//! dilation 1 (`transform.rs` holds the three transforms).
//!
//! Per (image, group), the output is cut into `m × m` tiles and the tiles
//! into blocks small enough that a block's transformed inputs `V` and sums
//! `M` stay within a few MiB (about the L2 cache), whatever the image size:
//!
//! 1. input transform: each tile's `alpha × alpha` input window of each
//!    channel becomes `V[ξ][c][t]` (`ξ` one of the `alpha²` positions);
//! 2. `alpha²` GEMMs through the crate's engine: `M[ξ] = U[ξ] · V[ξ]`,
//!    `c_out × c_in` filters (transformed and packed once per plan) by
//!    `c_in × tiles`; each sum over channels in the engine's fixed order;
//! 3. output transform, bias and activation fused: `M[·][o][t]` becomes the
//!    tile's `m × m` outputs of channel `o`.
//!
//! Every output is computed by one tile and each tile's arithmetic depends
//! on nothing else, so blocks run on any thread in any order with the same
//! bits.

mod transform;

use std::marker::PhantomData;
use std::ops::Range;
use std::sync::OnceLock;

use transform::{Block36, Block64, LANES};
pub(crate) use transform::{F2, F4, F6, Tile};

use super::scratch::with_scratch;
use crate::activation::Activation;
use crate::gemm::{
    self, CMatrix, ColumnsFrom, Epilogue, KC, PackedPanels, Panels, Parallelism, PrepackedSource, StridedSource,
    copy_floats,
};
use crate::geometry::ConvGeometry;
use crate::isa::Isa;
use crate::par;
use crate::simd::{self, Lanes, WithLanes};

/// Whether Winograd F(m×m, 3×3) computes this convolution: 3×3 kernels,
/// stride 1, dilation 1 (any padding, groups, batch and plane).
pub(crate) fn applies(kernel: [usize; 2], stride: [usize; 2], dilation: [usize; 2]) -> bool {
    kernel == [3, 3] && stride == [1, 1] && dilation == [1, 1]
}

/// What [`applies`] asks, as the error of a forced call says it.
pub(crate) const REQUIREMENT: &str = "3×3 kernels, stride 1 and dilation 1";

/// The tile sizes, by output pixels a side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TileSize {
    F2,
    F4,
    F6,
}

impl TileSize {
    #[cfg(test)]
    const ALL: [TileSize; 3] = [TileSize::F2, TileSize::F4, TileSize::F6];

    fn index(self) -> usize {
        self as usize
    }

    /// The tile size for `geo`'s output plane. F(2×2)
    /// below 8 outputs a side (and see [`TileSize::by_model`]), where larger tiles are mostly outside the
    /// plane (Zen 4, 7×7: F(2×2) 0.25–0.55 ms, F(4×4) 0.57–1.5 ms).
    /// Above, F(6×6) or F(4×4) by the multiplications the GEMMs run: `α²`
    /// times the columns of their blocks, each rounded up to whole kernel
    /// tiles (a block of 49 tiles runs 64 columns). F(6×6) needs 10 %
    /// fewer and, if its blocks are one vector of tiles, a quarter fewer:
    /// then its 64 matrices `U[ξ]`, streamed from L3 for 16 columns each,
    /// bound it. Zen 5, 1 thread, F(6×6) against F(4×4) (model): 128
    /// channels on 18² and 20² +12 % and +19 % (−11 %, one vector); 24²
    /// −25 % (−41 %); 27² and 28², 96 to 512 channels, −6 % to −10 %
    /// (−11 %); 40² +4 % (+2 %); 56², 64 channels −7 % but 256 channels
    /// +6 % (−4 %); 112² −15 % (−18 %).
    ///
    /// The model counts tiles of 32 columns (AVX-512's) on every ISA: the
    /// choice depends on the shape alone, so every ISA computes the same
    /// tiles and gives the same bits.
    pub(crate) fn choose(geo: &ConvGeometry) -> TileSize {
        TileSize::by_model(geo.c_in_per_group(), geo.c_out_per_group(), geo.h_out, geo.w_out).0
    }

    /// [`TileSize::choose`] for `cg → og` channels per group and an
    /// `h_out × w_out` plane, with the multiplications its GEMMs run per
    /// pair of channels (`usize::MAX` for a plane of more tiles than any
    /// image has, possible only with an empty batch or channel count:
    /// then F(4×4), and nothing runs). F(2×2) also where its count is
    /// lower than the larger tiles' (8² to 10²: their few tiles fill a
    /// fraction of a vector): Zen 5, 1 thread, 64 to 256 channels, F(2×2)
    /// against F(4×4): 8² 1.7–2.0× faster, 9² 1.2–1.35×, 10² 1.15–1.3×;
    /// 11² and 12² (where F(4×4)'s count is lower) 0.8–0.85×.
    pub(crate) fn by_model(cg: usize, og: usize, h_out: usize, w_out: usize) -> (TileSize, usize) {
        let nr = 2 * LANES;
        let tiles_of = |m: usize| h_out.div_ceil(m).checked_mul(w_out.div_ceil(m)).filter(|&t| t <= 1 << 40);
        // (multiplications per channel pair, the most tiles a block has)
        let model = |alpha: usize, tiles: usize| {
            let blocks = Blocks::new(alpha, cg, og, tiles, 1, 1);
            let columns: usize = (0..blocks.blocks).map(|b| kernel_columns(blocks.tiles(b).len(), nr)).sum();
            (alpha * alpha * columns, blocks.capacity.min(tiles))
        };
        let (Some(tiles2), Some(tiles4), Some(tiles6)) = (tiles_of(F2::M), tiles_of(F4::M), tiles_of(F6::M)) else {
            return (TileSize::F4, usize::MAX);
        };
        let (f2, _) = model(F2::ALPHA, tiles2);
        if h_out.min(w_out) < 8 {
            return (TileSize::F2, f2);
        }
        let (f4, _) = model(F4::ALPHA, tiles4);
        let (f6, widest) = model(F6::ALPHA, tiles6);
        let larger = if f6 * 10 <= f4 * 9 && (widest > LANES || f6 * 4 <= f4 * 3) {
            (TileSize::F6, f6)
        } else {
            (TileSize::F4, f4)
        };
        if f2 < larger.1 { (TileSize::F2, f2) } else { larger }
    }

    /// The kernel name [`crate::Conv2dPlan::kernel_name`] reports.
    pub(crate) fn kernel_name(self) -> &'static str {
        match self {
            TileSize::F2 => "winograd_f2x2",
            TileSize::F4 => "winograd_f4x4",
            TileSize::F6 => "winograd_f6x6",
        }
    }
}

/// A plan's transformed filters: for each tile size used so far, per
/// group, per position `ξ`, `U[ξ]ᵀ` (`c_in/groups × c_out/groups`) packed in
/// the kernel's A panels. Built on first need for each tile size.
pub(crate) struct WinogradWeights {
    /// The (flipped if asked) OIHW weights the transforms start from.
    weight: Vec<f32>,
    shape: [usize; 4],
    groups: usize,
    isa: Isa,
    /// Per output channel, whether its weights are all finite.
    finite: Vec<bool>,
    packed: [OnceLock<Vec<PrepackedSource>>; 3],
}

impl WinogradWeights {
    /// Takes the weights by value: the gradient builds its rotated copy for
    /// this and hands it over, a plan copies what it was lent.
    pub(crate) fn new(weight: Vec<f32>, shape: [usize; 4], groups: usize, isa: Isa) -> Self {
        let taps = shape[1] * shape[2] * shape[3];
        let finite = weight.chunks(taps.max(1)).map(|k| k.iter().all(|w| w.is_finite())).collect();
        WinogradWeights { weight, shape, groups, isa, finite, packed: Default::default() }
    }

    /// The packed `U` of `tile`: `[group · alpha² + ξ]`.
    fn packed(&self, tile: TileSize) -> &[PrepackedSource] {
        self.packed[tile.index()].get_or_init(|| match tile {
            TileSize::F2 => self.transform::<F2>(),
            TileSize::F4 => self.transform::<F4>(),
            TileSize::F6 => self.transform::<F6>(),
        })
    }

    fn transform<T: Tile>(&self) -> Vec<PrepackedSource> {
        let [c_out, cg, _, _] = self.shape;
        let og = c_out / self.groups.max(1);
        let a2 = T::ALPHA * T::ALPHA;
        let mut out = Vec::with_capacity(self.groups * a2);
        // u[ξ][o][c] for one group.
        let mut u = vec![0.0f32; a2 * og * cg];
        let mut tile = [0.0f32; 64];
        for g in 0..self.groups {
            for o in 0..og {
                for c in 0..cg {
                    let kernel = &self.weight[((g * og + o) * cg + c) * 9..][..9];
                    transform::filter::<T>(kernel, &mut tile);
                    for (xi, &v) in tile[..a2].iter().enumerate() {
                        u[(xi * og + o) * cg + c] = v;
                    }
                }
            }
            for xi in 0..a2 {
                // SAFETY: u[ξ] is og × cg row-major, read as its transpose
                // (cg × og): element (c, o) at c + o·cg, inside u.
                let a_t = unsafe { StridedSource::new(u[xi * og * cg..].as_ptr(), 1, cg as isize) };
                let packed = gemm::prepack(self.isa, &a_t, Panels::A, cg, og);
                out.push(packed.expect("the plan's ISA was checked when it was built"));
            }
        }
        out
    }
}

/// An output pointer shared by the blocks of one call, each writing only
/// its own tiles' pixels.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: blocks write disjoint pixels (each output belongs to one tile,
// each tile to one block) and the call waits for every block.
unsafe impl Send for OutPtr {}
// SAFETY: as for Send.
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The pointer `offset` floats further (a method, so closures capture
    /// the whole `OutPtr`, which is `Sync`, not its raw field).
    ///
    /// # Safety
    /// As for `pointer::add`.
    unsafe fn add(self, offset: usize) -> OutPtr {
        // SAFETY: the caller's.
        OutPtr(unsafe { self.0.add(offset) })
    }
}

/// The whole convolution (every image and group) by Winograd on `isa`'s
/// GEMM kernel, tiles of `tile`. `output` is written whole; arguments are
/// validated and [`applies`] holds.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run(
    isa: Isa,
    geo: &ConvGeometry,
    weights: &WinogradWeights,
    tile: TileSize,
    input: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    threads: usize,
    output: &mut [f32],
) {
    match tile {
        TileSize::F2 => run_tiles::<F2>(isa, geo, weights, input, bias, act, threads, output),
        TileSize::F4 => run_tiles::<F4>(isa, geo, weights, input, bias, act, threads, output),
        TileSize::F6 => run_tiles::<F6>(isa, geo, weights, input, bias, act, threads, output),
    }
}

/// Bytes of `V` and `M` a block aims at: about the L2 cache (at least
/// 512 KiB, at most 4 MiB), so the GEMMs read `V` and the output transform
/// reads `M` from cache.
fn block_budget() -> usize {
    gemm::cache_sizes().l2.clamp(512 << 10, 4 << 20)
}

/// Tiles per block for `cg` input and `og` output channels: as many
/// multiples of [`LANES`] as the budget holds, at least
/// [`MIN_BLOCK_TILES`] and at most 256, no more than the plane has.
fn block_tiles(alpha: usize, cg: usize, og: usize, tiles: usize) -> usize {
    let per_tile = cg.saturating_add(og).saturating_mul(alpha * alpha * 4);
    let fit = (block_budget() / per_tile.max(1)) / LANES * LANES;
    fit.clamp(MIN_BLOCK_TILES, 256).min(tiles.div_ceil(LANES).saturating_mul(LANES))
}

/// The fewest tiles a block takes, whatever the budget: the GEMMs' N, two
/// panels of the widest kernel (AVX-512's 32 columns), so each `U[ξ]`
/// streamed from L2 or L3 serves 64 columns. Measured on Zen 4 (256→256
/// channels on 56×56, 1 thread): blocks of 16 tiles 38 ms, 32 about 16 ms,
/// 64 to 256 within the noise of each other.
const MIN_BLOCK_TILES: usize = 64;

#[allow(clippy::too_many_arguments)]
fn run_tiles<T: Tile>(
    isa: Isa,
    geo: &ConvGeometry,
    weights: &WinogradWeights,
    input: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    threads: usize,
    output: &mut [f32],
) {
    let (cg, og) = (geo.c_in_per_group(), geo.c_out_per_group());
    let packed = weights.packed(T::SIZE);
    let (tiles_h, tiles_w) = (geo.h_out.div_ceil(T::M), geo.w_out.div_ceil(T::M));
    let tiles = tiles_h.saturating_mul(tiles_w);
    let images = geo.batch * geo.groups;
    let split = Blocks::new(T::ALPHA, cg, og, tiles, threads, images);
    let (blocks, nt) = (split.blocks, split.capacity);
    let v_rows = VRows::for_kernel(isa, cg, nt);
    let jobs = images * blocks;
    let out = OutPtr(output.as_mut_ptr());
    // Job `index` for the output channels `outs` of its group; `inner`:
    // the job splits its own steps among the threads.
    let job = |index: usize, outs: Range<usize>, inner: bool, scratch: &mut Vec<f32>| {
        let (image_group, block) = (index / blocks, index % blocks);
        let (image, group) = (image_group / geo.groups, image_group % geo.groups);
        let channels = geo.group_input(input, image, group);
        let Range { start: t0, end: t1 } = split.tiles(block);
        assert!(t1 - t0 <= nt, "a block holds at most its capacity");
        let block = Block {
            geo,
            tiles_w,
            t0,
            count: t1 - t0,
            stride: nt,
            v_rows,
            v_plane: cg * v_rows.width + PLANE_PAD,
            m_plane: og * nt + PLANE_PAD,
            finite_weights: &weights.finite[group * og..][..og],
        };
        let a2 = T::ALPHA * T::ALPHA;
        let (v_len, m_len) = (a2 * block.v_plane, a2 * block.m_plane);
        if scratch.len() < v_len + m_len {
            scratch.resize(v_len + m_len, 0.0);
        }
        let (v, m) = scratch.split_at_mut(v_len);
        let m = &mut m[..m_len];
        // With jobs that do not share out evenly, each job splits its own
        // three steps: channels, positions ξ, output channels.
        let parts = if inner { 4 * threads } else { 1 };
        let v_out = OutPtr(v.as_mut_ptr());
        for_ranges(cg, parts, threads, |range| {
            let work = InputTransform::<T> { block: &block, channels, range, v: v_out, tile: PhantomData };
            let done = simd::dispatch(isa, work);
            debug_assert!(done.is_ok());
        });
        let packed = &packed[group * a2..][..a2];
        let v = &*v;
        let rows = outs.len();
        let product = |(xi, m_xi): (usize, &mut [f32])| {
            let v_xi = &v[xi * block.v_plane..][..cg * v_rows.width];
            // Rows `outs` of U[ξ] (columns of the packed transpose) into
            // the same rows of M[ξ].
            let a_t = ColumnsFrom { src: &packed[xi], first: outs.start };
            let c = CMatrix { ptr: m_xi[outs.start * nt..].as_mut_ptr(), rs: nt as isize, cs: 1 };
            let epi = Epilogue { alpha: 1.0, beta: 0.0, bias: std::ptr::null(), act: Activation::None };
            let done = match v_rows.panel {
                Some(panel) => {
                    let b = PackedPanels { data: v_xi, panel, padded_w: v_rows.width, k: cg, chunk: KC };
                    // SAFETY: C is rows `outs` of og × count with row stride
                    // nt, inside this plane of `m`; A and B cover their extents.
                    unsafe { gemm::gemm(isa, rows, block.count, cg, &a_t, &b, c, &epi, Parallelism::Serial) }
                }
                None => {
                    // SAFETY: V[ξ] is cg × count with row stride `width`, in `v_xi`.
                    let b = unsafe { StridedSource::new(v_xi.as_ptr(), v_rows.width as isize, 1) };
                    // SAFETY: as above.
                    unsafe { gemm::gemm(isa, rows, block.count, cg, &a_t, &b, c, &epi, Parallelism::Serial) }
                }
            };
            debug_assert!(done.is_ok());
        };
        if inner {
            par::for_each_chunk_mut(rayon::current_num_threads(), m, block.m_plane, |xi, m_xi| product((xi, m_xi)));
        } else {
            m.chunks_mut(block.m_plane).enumerate().for_each(product);
        }
        let m = &*m;
        let bias = bias.map(|b| &b[group * og..][..og]);
        // SAFETY: the plane of this (image, group)'s first output channel;
        // the block writes only its own tiles' pixels of its og planes.
        let out_planes = unsafe { out.add(image * geo.c_out * geo.out_pixels() + group * og * geo.output_strides().c) };
        for_ranges(rows, parts, threads, |range| {
            let range = outs.start + range.start..outs.start + range.end;
            let work = OutputTransform::<T> { block: &block, m, range, bias, act, out: out_planes, tile: PhantomData };
            let done = simd::dispatch(isa, work);
            debug_assert!(done.is_ok());
        });
    };
    if threads > 1 && (jobs.is_multiple_of(threads) || jobs >= 4 * threads) {
        par::for_each(threads, jobs, |index| with_scratch(|s| job(index, 0..og, false, s)));
    } else if threads > 1 && u_fits_l2(T::ALPHA, cg, og) {
        // Too few jobs to share out, and a `U` that fits L2: each job's
        // output channels are split among the threads at whole A panels,
        // each thread transforming the whole input for itself (one fork
        // per job; the split steps fork three times, which on small layers
        // cost more than the repeated transform).
        let mr = isa.tile().map_or(1, |(mr, _)| mr);
        let panels = og.div_ceil(mr);
        let parts = threads.min(panels);
        for index in 0..jobs {
            par::for_each(threads, parts, |p| {
                let outs = (panels * p / parts * mr).min(og)..(panels * (p + 1) / parts * mr).min(og);
                with_scratch(|s| job(index, outs, false, s))
            });
        }
    } else {
        with_scratch(|s| (0..jobs).for_each(|index| job(index, 0..og, threads > 1, s)));
    }
}

/// How the tiles of one (image, group) are cut into blocks.
struct Blocks {
    tiles: usize,
    /// How many blocks.
    blocks: usize,
    /// The most tiles a block holds, a multiple of [`LANES`].
    capacity: usize,
}

impl Blocks {
    /// Blocks of equal size (a partial last block left a thread idle), as
    /// many as [`block_tiles`] asks, their count a multiple of the threads
    /// where the `images` (images × groups) do not share out and the plane
    /// has tiles enough. Blocks take whole groups of [`LANES`] tiles, so
    /// that only the plane's last block has a partial group: the GEMMs' N
    /// is then a multiple of 16 but for that one.
    fn new(alpha: usize, cg: usize, og: usize, tiles: usize, threads: usize, images: usize) -> Blocks {
        let mut blocks = tiles.div_ceil(block_tiles(alpha, cg, og, tiles));
        // A plane of fewer than `threads` vectors of tiles is split too
        // where its `U` (every block streams all of it) fits L2: else the
        // job splits its steps (see `run_tiles`). Zen 5, 2 threads, 25
        // tiles as 16 + 9: 32→128 on 27² and 128→32 on 28² (`U` 1 MiB)
        // 0.140 → 0.109 and 0.155 → 0.098 ms; 96→128 (3 MiB) 0.168 → 0.189.
        let split_small = tiles > threads.saturating_sub(1) * LANES && u_fits_l2(alpha, cg, og);
        if threads > 1 && !images.is_multiple_of(threads) && (tiles >= threads * LANES || split_small) {
            blocks = blocks.next_multiple_of(threads);
        }
        let groups = tiles.div_ceil(LANES);
        let blocks = blocks.min(groups).max(1);
        Blocks { tiles, blocks, capacity: groups.div_ceil(blocks).saturating_mul(LANES) }
    }

    /// The tiles of block `block` (row-major over the plane's tiles).
    fn tiles(&self, block: usize) -> Range<usize> {
        let groups = self.tiles.div_ceil(LANES);
        // `groups / blocks` and the remainder, not `block · groups / blocks`
        // (that product could overflow on a plane of 2^36 tiles).
        let (even, extra) = (groups / self.blocks, groups % self.blocks);
        let g0 = block * even + block.min(extra);
        let g1 = g0 + even + usize::from(block < extra);
        g0 * LANES..(g1 * LANES).min(self.tiles)
    }
}

/// Whether one group's transformed filters `U` (`alpha²` matrices of
/// `cg × og`) fit L2: then each thread can stream all of them for its own
/// share of a small plane (blocks of tiles, or output channels).
fn u_fits_l2(alpha: usize, cg: usize, og: usize) -> bool {
    (alpha * alpha * 4).saturating_mul(cg).saturating_mul(og) <= gemm::cache_sizes().l2
}

/// The columns a GEMM of `n` columns runs on a kernel `nr` wide: whole
/// tiles, but a last tile of at most one vector ([`LANES`]) runs as one.
fn kernel_columns(n: usize, nr: usize) -> usize {
    let whole = n / nr * nr;
    whole + if n - whole <= LANES && n > whole { LANES } else { (n - whole).next_multiple_of(nr) }
}

/// `f` on `0..count` cut into at most `parts` equal ranges: on `threads`
/// threads (the caller's and the current rayon pool's) when there are
/// several ranges, else on the calling thread.
fn for_ranges(count: usize, parts: usize, threads: usize, f: impl Fn(Range<usize>) + Sync) {
    let n = parts.min(count).max(1);
    if n > 1 {
        par::for_each(threads, n, |p| f(p * count / n..(p + 1) * count / n));
    } else {
        f(0..count);
    }
}

/// One block of tiles of one (image, group).
struct Block<'a> {
    geo: &'a ConvGeometry,
    tiles_w: usize,
    /// The first tile (row-major over the tiles of the plane) and how many.
    t0: usize,
    count: usize,
    /// The block's capacity in tiles (a multiple of [`LANES`]): `V[ξ][c]`
    /// and `M[ξ][o]` are rows of this many floats.
    stride: usize,
    /// How each `V[ξ]` lays out its `cg` rows.
    v_rows: VRows,
    /// Floats from `V[ξ]` to `V[ξ+1]` (`cg` rows of `v_rows.width`, plus
    /// [`PLANE_PAD`]) and from `M[ξ]` to `M[ξ+1]` (`og` rows of `stride`).
    v_plane: usize,
    m_plane: usize,
    /// Per output channel of the group, whether its weights are all finite:
    /// then an output whose window lies in the padding is +0 (plus its
    /// bias). A NaN or infinite weight times
    /// the padding's zeros is NaN on every path, so then it is left as the
    /// tile computes it.
    finite_weights: &'a [bool],
}

/// The layout of each `V[ξ]` (`cg × stride`, the GEMMs' B): already in
/// the kernel's B panels where they are whole vectors of tiles wide (`NR` a
/// multiple of [`LANES`]: AVX-512, AVX2), so the GEMMs read `V` where the
/// input transform wrote it instead of packing a copy (128→128 on 28², 1
/// thread: packing was 12 % of the time); else rows of `width` floats.
#[derive(Clone, Copy)]
struct VRows {
    /// `NR` when in panels.
    panel: Option<usize>,
    /// Floats a row: the block's capacity, rounded up to a whole panel.
    width: usize,
    /// Rows (input channels of the group).
    rows: usize,
}

impl VRows {
    fn for_kernel(isa: Isa, cg: usize, stride: usize) -> VRows {
        let nr = isa.tile().map_or(0, |(_, nr)| nr);
        if nr > 0 && nr.is_multiple_of(LANES) {
            VRows { panel: Some(nr), width: stride.next_multiple_of(nr), rows: cg }
        } else {
            VRows { panel: None, width: stride, rows: cg }
        }
    }

    /// Where `V[ξ]`'s element (channel `c`, tile `q`) lies in its plane:
    /// for a `q` that is a multiple of [`LANES`], the next `LANES` tiles
    /// follow it.
    #[inline(always)]
    fn at(&self, c: usize, q: usize) -> usize {
        match self.panel {
            Some(panel) => PackedPanels::offset(panel, self.width, self.rows, KC, c, q),
            None => c * self.width + q,
        }
    }
}

/// Floats between the planes of `V` and `M` past their rows: without it
/// the planes lie a power of two apart for power-of-two channel counts, so
/// the transforms' `alpha²` streams (one per plane) share the same L1 sets.
const PLANE_PAD: usize = 16;

/// Step 1 on the lanes: the block's input windows of every channel to `V`.
struct InputTransform<'a, T> {
    block: &'a Block<'a>,
    channels: &'a [f32],
    /// The channels this call transforms.
    range: Range<usize>,
    /// `V`: `alpha²` planes of `v_plane` floats; this call writes the rows
    /// of its channels only.
    v: OutPtr,
    tile: PhantomData<T>,
}

impl<T: Tile> WithLanes for InputTransform<'_, T> {
    type Output = ();
    #[inline(always)]
    fn run<L: Lanes>(self, _: L) {
        input_block::<T, L>(self.block, self.channels, self.range, self.v)
    }
}

/// The most floats of the zero-padded plane a small plane's channels are
/// copied into (see `input_block`): 4 KiB, 32 × 32.
const PADDED_MAX: usize = 1024;

/// Eight zeros: the window rows of lanes past the block's tiles.
static ZERO_ROW: [f32; 8] = [0.0; 8];

#[inline(always)]
fn input_block<T: Tile, L: Lanes>(b: &Block, channels: &[f32], range: Range<usize>, v: OutPtr) {
    let g = b.geo;
    let (a, m) = (T::ALPHA, T::M);
    let (h, w) = (g.h_in as isize, g.w_in as isize);
    let at = g.input_strides();
    let mut d: Block64 = [[0.0; LANES]; 64];
    let mut vt: Block64 = [[0.0; LANES]; 64];
    // Channels-last: eight channels' windows at once (not built for NCHW:
    // 32 KiB to clear on every call).
    let channels_last = at.x != 1 && at.c == 1 && range.len() >= 8;
    let mut d8: Option<[Block64; 8]> = if channels_last { Some([[[0.0; LANES]; 64]; 8]) } else { None };
    // Window rows of 8 floats for the lanes that cannot read theirs in
    // place (borders): `a` rows of 8, zeros where the window leaves the
    // image.
    let mut edge = [[0.0f32; 64]; LANES];
    // For those lanes, each window row's pixels in the image:
    // `(start of the image row, first and last window column + 1)`, or
    // `None` for a row wholly in the padding.
    let mut clip = [[None::<(usize, usize, usize)>; 8]; LANES];
    // A channels-first plane of at most one vector of tiles (7², 6² under
    // F(2×2), 14² under F(4×4)) has border lanes only, each copying its
    // window rows a channel (~1000 cycles a channel for 16 lanes of 7²):
    // instead each channel is copied once into a zero-padded plane `pw`
    // floats wide, where every lane reads its window in place. Rows and
    // columns no window reaches are left out.
    let tiles_h = g.h_out.div_ceil(m);
    let (ph, pw) = (tiles_h * m + a - m, (b.tiles_w * m + a - m).max(b.tiles_w.saturating_sub(1) * m + 8));
    let padded = at.x == 1 && tiles_h * b.tiles_w <= LANES && ph * pw <= PADDED_MAX;
    let mut plane = [0.0f32; PADDED_MAX];
    for q in (0..b.count).step_by(LANES) {
        let lanes = LANES.min(b.count - q);
        // Each lane's window corner (padding applied).
        let mut corner = [(0isize, 0isize); LANES];
        for (l, c) in corner.iter_mut().enumerate().take(lanes) {
            let t = b.t0 + q + l;
            *c = (
                ((t / b.tiles_w) * m) as isize - g.pad_top as isize,
                ((t % b.tiles_w) * m) as isize - g.pad_left as isize,
            );
        }
        // Channels-first lanes whose window rows lie inside the image, 8
        // floats wide, are read where they lie; the others (borders,
        // padding, past `count`) test each pixel.
        let mut in_place = [false; LANES];
        for (l, &(y, x)) in corner.iter().enumerate().take(lanes) {
            in_place[l] = y >= 0 && x >= 0 && y + a as isize <= h && x + 8 <= w;
            if !in_place[l] && at.x == 1 && !padded {
                // The columns every row of the window shares; the padding's
                // zeros are written once here, each channel copies the rest.
                let lo = (-x).clamp(0, a as isize) as usize;
                let hi = (w - x).clamp(0, a as isize) as usize;
                edge[l] = [0.0; 64];
                for (r, rows) in clip[l].iter_mut().enumerate().take(a) {
                    let yy = y + r as isize;
                    *rows = (yy >= 0 && yy < h && lo < hi).then(|| (yy as usize * at.y, lo, hi));
                }
            }
        }
        let mut first = range.start;
        if let Some(d8) = d8.as_mut() {
            // Channels-last: a window pixel's channels lie together, so
            // eight channels of eight lanes go through one register
            // transpose per window position (pixel by pixel, the gather
            // was a fifth of 128→128 on 28²). Each lane's window pixels:
            // their offset in the image, or `usize::MAX` in the padding
            // and past `count`.
            let mut offsets = [[usize::MAX; 64]; LANES];
            for (l, &(y0, x0)) in corner.iter().enumerate().take(lanes) {
                for r in 0..a {
                    for col in 0..a {
                        let (y, xx) = (y0 + r as isize, x0 + col as isize);
                        if y >= 0 && y < h && xx >= 0 && xx < w {
                            offsets[l][r * 8 + col] = at.at(0, y as usize, xx as usize);
                        }
                    }
                }
            }
            let d8_ptr = d8.as_mut_ptr();
            while first + 8 <= range.end {
                // (A window pixel exists only in a non-empty image, whose
                // channels the slice holds.)
                let base = channels.get(first..).unwrap_or(&[]).as_ptr();
                for r in 0..a {
                    for col in 0..a {
                        let pos = r * 8 + col;
                        for half in 0..LANES / 8 {
                            let src: [*const f32; 8] = std::array::from_fn(|i| match offsets[half * 8 + i][pos] {
                                usize::MAX => ZERO_ROW.as_ptr(),
                                o => base.wrapping_add(o),
                            });
                            // SAFETY: a pixel's channels first..first + 8
                            // (< range.end ≤ cg) lie inside `channels`, or
                            // ZERO_ROW; channel j's block of `d8` holds
                            // LANES floats a position, pos < 64.
                            unsafe {
                                L::transpose_rows_8x8(&src, |j| {
                                    d8_ptr.wrapping_add(j).cast::<f32>().wrapping_add(pos * LANES + half * 8)
                                })
                            };
                        }
                    }
                }
                for (j, d) in d8.iter().enumerate() {
                    transform_and_store::<T>(b, v, first + j, q, d, &mut vt);
                }
                first += 8;
            }
        }
        for c in first..range.end {
            // (Empty for an empty image: then no pixel is read.)
            let x = channels.get(c * at.c..).unwrap_or(&[]);
            let pixel = |y: isize, xx: isize| {
                let real = y >= 0 && y < h && xx >= 0 && xx < w;
                if real { x[at.at(0, y as usize, xx as usize)] } else { 0.0 }
            };
            if at.x != 1 {
                // Channels-last: pixel by pixel into `d` (scalar stores:
                // lane inserts into vector registers cost more).
                for (l, &(y0, x0)) in corner.iter().enumerate() {
                    for r in 0..a {
                        for col in 0..a {
                            d[r * 8 + col][l] = if l < lanes { pixel(y0 + r as isize, x0 + col as isize) } else { 0.0 };
                        }
                    }
                }
            } else {
                // Each lane's first window row and the floats between rows.
                let mut rows = [(ZERO_ROW.as_ptr(), 0usize); LANES];
                if padded {
                    // Image pixel (y, x) at plane[(y + pad_top)·pw + x + pad_left].
                    let cols = (g.w_in).min(pw.saturating_sub(g.pad_left));
                    for y in 0..g.h_in.min(ph.saturating_sub(g.pad_top)) {
                        if cols > 0 {
                            let to = (y + g.pad_top) * pw + g.pad_left;
                            copy_floats(&mut plane[to..to + cols], &x[y * at.y..y * at.y + cols]);
                        }
                    }
                }
                for (l, &(y0, x0)) in corner.iter().enumerate().take(lanes) {
                    if padded {
                        // (y0 + pad_top ≥ 0, x0 + pad_left ≥ 0: the padding's
                        // own corner is the plane's.)
                        let at = (y0 + g.pad_top as isize) as usize * pw + (x0 + g.pad_left as isize) as usize;
                        debug_assert!(at + (a - 1) * pw + 8 <= ph * pw, "a window inside the padded plane");
                        rows[l] = (plane[at..].as_ptr(), pw);
                    } else if in_place[l] {
                        rows[l] = (x[at.at(0, y0 as usize, x0 as usize)..].as_ptr(), at.y);
                    } else {
                        let e = &mut edge[l];
                        for (r, &rows) in clip[l].iter().enumerate().take(a) {
                            if let Some((start, lo, hi)) = rows {
                                // Window column `col` is image column x0 + col.
                                let from = start + (x0 + lo as isize) as usize;
                                // (Fixed-size moves, not a `memcpy` call:
                                // on a 7² plane every lane is a border
                                // lane, and the calls took a fifth of a
                                // 128 -> 32 layer; Zen 4, 1 thread.)
                                copy_floats(&mut e[r * 8 + lo..r * 8 + hi], &x[from..from + hi - lo]);
                            }
                        }
                        rows[l] = (e.as_ptr(), 8);
                    }
                }
                let d_ptr = d.as_mut_ptr();
                // Window row r of eight lanes at a time, transposed into
                // `d[r·8 + col][lane]` (columns past `a` are not read).
                for r in 0..a {
                    for half in 0..LANES / 8 {
                        let row = |i: usize| {
                            let (p, step) = rows[half * 8 + i];
                            p.wrapping_add(r * step)
                        };
                        let src: [*const f32; 8] = std::array::from_fn(row);
                        // SAFETY: in place, row r of the window is 8 floats
                        // of image row y0 + r < h from column x0, x0 + 8 <=
                        // w; padded, 8 floats of the plane's row
                        // tile_y·m + r < ph from column tile_x·m, tile_x·m + 8
                        // <= pw (`ph`, `pw` cover every window); else 8
                        // floats of `edge` or ZERO_ROW (step 0).
                        // `d` has LANES floats per position and r·8 + 7 < 64
                        // positions.
                        unsafe {
                            L::transpose_rows_8x8(&src, |j| {
                                d_ptr.wrapping_add(r * 8 + j).cast::<f32>().wrapping_add(half * 8)
                            })
                        };
                    }
                }
            }
            transform_and_store::<T>(b, v, c, q, &d, &mut vt);
        }
    }
}

/// Step 3 on the lanes: `M` to the block's output tiles, bias and
/// activation applied.
struct OutputTransform<'a, T> {
    block: &'a Block<'a>,
    m: &'a [f32],
    /// The output channels this call writes.
    range: Range<usize>,
    bias: Option<&'a [f32]>,
    act: Activation,
    out: OutPtr,
    tile: PhantomData<T>,
}

impl<T: Tile> WithLanes for OutputTransform<'_, T> {
    type Output = ();
    #[inline(always)]
    fn run<L: Lanes>(self, _: L) {
        output_block::<T, L>(self.block, self.m, self.range, self.bias, self.act, self.out)
    }
}

#[inline(always)]
#[allow(clippy::needless_range_loop)] // a lane is a tile: `l` indexes both
fn output_block<T: Tile, L: Lanes>(
    b: &Block,
    mm: &[f32],
    range: Range<usize>,
    bias: Option<&[f32]>,
    act: Activation,
    out: OutPtr,
) {
    let g = b.geo;
    let m = T::M;
    let at = g.output_strides();
    let mut sums: Block64 = [[0.0; LANES]; 64];
    let mut y: Block36 = [[0.0; LANES]; 36];
    let mut tiles = [[0.0f32; 48]; LANES];
    // Channels-last: eight channels' outputs at once, and where the
    // positions past a tile's edge go (not built for NCHW).
    let mut y8: Option<([Block36; 8], [[f32; 8]; 8])> =
        if at.x != 1 && at.c == 1 { Some(([[[0.0; LANES]; 36]; 8], [[0.0; 8]; 8])) } else { None };
    // An output whose window lies wholly in the padding sums zeros: +0
    // exactly, as on the exact paths (its tile's arithmetic would leave the
    // rounding of its neighbours' inputs there). With at most 2 rows and
    // columns of padding a side there is none, and bias and activation run
    // on whole vectors.
    let seen = |oy: usize, ox: usize| {
        oy + 2 >= g.pad_top && oy < g.pad_top + g.h_in && ox + 2 >= g.pad_left && ox < g.pad_left + g.w_in
    };
    let all_seen = seen(0, 0) && seen(g.h_out - 1, g.w_out - 1);
    for q in (0..b.count).step_by(LANES) {
        let lanes = LANES.min(b.count - q);
        let mut corner = [(0usize, 0usize, 0usize, 0usize); LANES];
        for (l, c) in corner.iter_mut().enumerate().take(lanes) {
            let t = b.t0 + q + l;
            let (oy0, ox0) = ((t / b.tiles_w) * m, (t % b.tiles_w) * m);
            *c = (oy0, ox0, m.min(g.h_out - oy0), m.min(g.w_out - ox0));
        }
        let mut first = range.start;
        if let (true, Some((y8, sink))) = (all_seen, y8.as_mut()) {
            // Channels-last: eight channels at a time, whose values at one
            // output pixel lie together; one register transpose per
            // position and eight lanes stores eight channels of eight
            // tiles' pixels (one float at a time, the stores were a fifth
            // of 128→128 on 28²).
            let y8_ptr = y8.as_ptr();
            while first + 8 <= range.end {
                for (k, y) in y8.iter_mut().enumerate() {
                    let o = first + k;
                    channel_outputs::<T>(b, mm, o, q, &mut sums, y);
                    finish::<L>(y, m, bias.map(|bias| bias[o]), act);
                }
                for r in 0..m {
                    for c in 0..m {
                        for half in 0..LANES / 8 {
                            let src: [*const f32; 8] = std::array::from_fn(|k| {
                                y8_ptr.wrapping_add(k).cast::<f32>().wrapping_add((r * 6 + c) * LANES + half * 8)
                            });
                            let sink_ptr = sink.as_mut_ptr();
                            let dst = |j: usize| {
                                let l = half * 8 + j;
                                let (oy0, ox0, rows, cols) = corner[l];
                                if l < lanes && r < rows && c < cols {
                                    // In the group's output: channels
                                    // first..first + 8 of pixel (oy0 + r, ox0 + c).
                                    out.0.wrapping_add(at.at(first, oy0 + r, ox0 + c))
                                } else {
                                    sink_ptr.wrapping_add(j).cast::<f32>()
                                }
                            };
                            // SAFETY: 8 floats of position (r, c) of each
                            // channel's lanes half·8..; each destination is
                            // 8 channels of one output pixel of this tile
                            // (only this tile writes them; first + 8 ≤ og),
                            // or a row of `sink`.
                            unsafe { L::transpose_rows_8x8(&src, dst) };
                        }
                    }
                }
                first += 8;
            }
        }
        for o in first..range.end {
            channel_outputs::<T>(b, mm, o, q, &mut sums, &mut y);
            // The next channel's output rows of these tiles, toward L1
            // before its stores (Zen 5, 1 thread: 3-6 % off 128 to 512
            // channels; every other tile's row start reaches each line).
            if o + 1 < range.end {
                for &(oy0, ox0, rows, _) in corner.iter().take(lanes).step_by(2) {
                    for r in 0..rows {
                        simd::prefetch_for_write(out.0.wrapping_add(at.at(o + 1, oy0 + r, ox0)));
                    }
                }
            }
            if all_seen {
                finish::<L>(&mut y, m, bias.map(|bias| bias[o]), act);
                // Each lane's tile, row r at `tiles[lane][r·8 ..]`: 8 × 8
                // transposes of each output row's positions (lane by lane
                // from `y`, a float at a time, cost more than the rest of
                // the output transform on F(6×6)).
                let tiles_ptr = tiles.as_mut_ptr();
                for r in 0..m {
                    for half in 0..LANES / 8 {
                        let src: [*const f32; 8] = std::array::from_fn(|c| {
                            if c < m { y[r * 6 + c][half * 8..].as_ptr() } else { ZERO_ROW.as_ptr() }
                        });
                        // SAFETY: 8 floats of position (r, c)'s lanes from
                        // half·8 (or ZERO_ROW), into row r of lanes half·8 + j
                        // of `tiles` (r·8 + 8 <= 48 floats a lane).
                        unsafe {
                            L::transpose_rows_8x8(&src, |j| {
                                tiles_ptr.wrapping_add(half * 8 + j).cast::<f32>().wrapping_add(r * 8)
                            })
                        };
                    }
                }
                for (l, &(oy0, ox0, rows, cols)) in corner.iter().enumerate().take(lanes) {
                    for r in 0..rows {
                        // SAFETY: (o, oy0 + r, ox0 + c) for c < cols is
                        // inside the group's output planes, and only this
                        // tile writes it.
                        let row = unsafe { out.0.add(at.at(o, oy0 + r, ox0)) };
                        let from = &tiles[l][r * 8..][..8];
                        if at.x == 1 && cols == m {
                            // SAFETY: as above, the m floats of the row
                            // contiguous; `from` holds 8.
                            unsafe { std::ptr::copy_nonoverlapping(from.as_ptr(), row, m) };
                        } else {
                            for (c, &value) in from.iter().enumerate().take(cols) {
                                // SAFETY: as above.
                                unsafe { *row.add(c * at.x) = value };
                            }
                        }
                    }
                }
                continue;
            }
            for (l, &(oy0, ox0, rows, cols)) in corner.iter().enumerate().take(lanes) {
                for r in 0..rows {
                    for c in 0..cols {
                        let (oy, ox) = (oy0 + r, ox0 + c);
                        let mut value = if seen(oy, ox) || !b.finite_weights[o] { y[r * 6 + c][l] } else { 0.0 };
                        if let Some(bias) = bias {
                            value += bias[o];
                        }
                        // SAFETY: (o, oy, ox) is inside the group's output
                        // planes, and only this tile writes it.
                        unsafe { *out.0.add(at.at(o, oy, ox)) = act.apply(value) };
                    }
                }
            }
        }
    }
}

/// Channel `c`'s windows of the lanes from tile `q`, in `d`, transformed
/// into `V` (a function, not a closure: closures lose the lanes' target
/// features where they are not inlined).
#[inline(always)]
fn transform_and_store<T: Tile>(b: &Block, v: OutPtr, c: usize, q: usize, d: &Block64, vt: &mut Block64) {
    let a = T::ALPHA;
    transform::input::<T>(d, vt);
    let at_c = b.v_rows.at(c, q);
    for i in 0..a {
        for j in 0..a {
            // SAFETY: channel c's LANES tiles from q (q + LANES ≤ stride ≤
            // width) in plane i·alpha + j of V: inside the `alpha²·v_plane`
            // floats of V, and only this call writes channel c's elements.
            unsafe { v.add((i * a + j) * b.v_plane + at_c).0.cast::<[f32; LANES]>().write_unaligned(vt[i * 8 + j]) };
        }
    }
}

/// Channel `o`'s sums `M[ξ]` of the lanes from tile `q`, through the
/// output transform into `y` (`sums` holds them on the way). `stride` is a
/// multiple of LANES: whole vectors (lanes past `count` hold what the GEMM
/// left there, and are not stored).
#[inline(always)]
fn channel_outputs<T: Tile>(b: &Block, mm: &[f32], o: usize, q: usize, sums: &mut Block64, y: &mut Block36) {
    let a = T::ALPHA;
    for i in 0..a {
        for j in 0..a {
            sums[i * 8 + j] = mm[(i * a + j) * b.m_plane + o * b.stride + q..][..LANES].try_into().expect("16");
        }
    }
    transform::output::<T>(sums, y);
}

/// Bias and activation on the `m × m` positions of [`LANES`] tiles' outputs.
#[inline(always)]
fn finish<L: Lanes>(y: &mut Block36, m: usize, bias: Option<f32>, act: Activation) {
    for r in 0..m {
        for c in 0..m {
            let lane = y[r * 6 + c].as_mut_ptr();
            for k in (0..LANES).step_by(L::N) {
                // SAFETY: L::N floats at k < LANES (a multiple of L::N) of
                // this position's LANES; the path runs on a CPU with L's
                // instructions.
                unsafe {
                    let mut v = L::load(lane.add(k));
                    if let Some(bias) = bias {
                        v = L::add(v, L::splat(bias));
                    }
                    L::store(lane.add(k), L::activate(act, v));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::ConvParams;
    use crate::reference::conv2d_direct;

    /// Values in [-1, 1) (not `testing::values`: `testing` imports this module).
    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len).map(|i| ((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.5 - 1.0).collect()
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// Every tile size on every path against the f64 reference (within
    /// `1e-5 · Σ|w·x|`), and bit-identical across paths and thread counts;
    /// shapes with partial tiles, asymmetric padding, groups, a batch and
    /// more input channels than a K chunk holds.
    /// (Under Miri: the smaller shapes, one thread: rayon's pool trips
    /// Stacked Borrows inside crossbeam-epoch, not in this crate.)
    #[test]
    fn every_tile_size_matches_reference_and_its_own_bits() {
        let all = [
            ([2, 6, 13, 11], [8, 3, 3, 3], [1, 0, 2, 1], 2),
            ([1, 20, 17, 19], [24, 20, 3, 3], [1, 1, 1, 1], 1),
            // One block of tiles: two threads split the output channels.
            ([1, 20, 6, 5], [24, 20, 3, 3], [1, 1, 1, 1], 1),
            // Past one K chunk (KC = 256): V's panels are cut into chunks.
            ([1, 300, 9, 7], [5, 300, 3, 3], [1, 0, 1, 2], 1),
            ([1, 3, 5, 4], [2, 3, 3, 3], [0, 2, 0, 3], 1),
            ([1, 2, 3, 3], [1, 2, 3, 3], [0, 0, 0, 0], 1),
        ];
        let cases = if cfg!(miri) { &all[4..] } else { &all[..] };
        let threads: &[usize] = if cfg!(miri) { &[1] } else { &[1, 2] };
        for &(input_shape, weight_shape, padding, groups) in cases {
            let params = ConvParams { padding, groups, ..ConvParams::default() };
            let geo = ConvGeometry::new(input_shape, weight_shape, &params).unwrap();
            let x = values(geo.input_len(), 3);
            let w = values(geo.weight_len(), 4);
            let b = values(weight_shape[0], 5);
            let reference = conv2d_direct(&x, input_shape, &w, weight_shape, Some(&b), &params).unwrap();
            for tile in TileSize::ALL {
                let mut first: Option<Vec<u32>> = None;
                for isa in Isa::available().into_iter().filter(|&i| i != Isa::PortableUnfused) {
                    let weights = WinogradWeights::new(w.clone(), weight_shape, groups, isa);
                    for &threads in threads {
                        let mut out = vec![f32::NAN; geo.output_len()];
                        run(isa, &geo, &weights, tile, &x, Some(&b), Activation::None, threads, &mut out);
                        if let Some((i, want, got)) = reference.first_mismatch(&out, 1e-5) {
                            panic!("{tile:?} {isa:?} {input_shape:?}: element {i} is {got}, reference {want}");
                        }
                        match &first {
                            None => first = Some(bits(&out)),
                            Some(f) => assert_eq!(f, &bits(&out), "{tile:?} {isa:?} threads {threads}"),
                        }
                    }
                }
            }
        }
    }
}
