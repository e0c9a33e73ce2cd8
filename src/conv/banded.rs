//! Implicit im2col read in place, for convolutions whose patch fits one K
//! chunk (`K <= KC`: first layers, 3 input channels, K = 27): the kernel's
//! B rows are the rows of the zero-padded band of `implicit.rs`, read where
//! they lie, so nothing of the image is packed.
//!
//! For a tap `k` and an output row, the pixels of the row read consecutive
//! band floats (the band's rows are split into `stride_w` phases), so row
//! `k` of a tile of B is `band[row + x0 + taps[k] ..]`
//! ([`MicroKernel::run_b_taps`]); A is the plan's packed weights (`MR`
//! channels a panel), and each tile is stored straight into the output
//! with the bias and the activation. Where the packed implicit path copies
//! every im2col element into a panel once (for a first layer of 32
//! channels, as much time as the product's 27 steps take), this path
//! copies only the band. One chunk, from +0, in increasing k, then the
//! store: the GEMM's arithmetic (`gemm::KC`), so the same bits.

use super::GroupConv;
use super::implicit::{Band, BuildBand, band_fits, band_taps, put_band, take_band};
use crate::error::ConvError;
use crate::gemm::{
    self, KC, MicroKernel, PanelSource, PrepackedSource, Store, StoreSpec, TileOut, WithKernel, cache_sizes,
};
use crate::geometry::ConvGeometry;
use crate::isa::Isa;
use crate::par;
use crate::simd::Lanes;

/// Floats of band per block of output rows: 64 KiB, in L2 beside the
/// output rows it feeds.
const BAND_FLOATS: usize = 16 << 10;

/// Whether the path takes this (image, group) with the weights `a_t` on
/// `isa`: a kernel that reads B's rows in place, weights packed in its `MR`
/// panels, a patch of one K chunk, and a band of bounded size for a block
/// of output rows.
pub(crate) fn applies(isa: Isa, g: &ConvGeometry, a_t: &PrepackedSource) -> bool {
    struct Applies<'a>(&'a ConvGeometry, &'a PrepackedSource);
    impl WithKernel for Applies<'_> {
        type Output = bool;
        fn run<K: MicroKernel>(self, _: K) -> bool {
            kernel_applies::<K>(self.0, self.1)
        }
    }
    gemm::dispatch(isa, Applies(g, a_t)).unwrap_or(false)
}

/// Whether the kernel of `isa` reads B's rows in place
/// ([`MicroKernel::READS_B_TAPS`]): only then does this path run.
pub(crate) fn reads_in_place(isa: Isa) -> bool {
    struct Reads;
    impl WithKernel for Reads {
        type Output = bool;
        fn run<K: MicroKernel>(self, _: K) -> bool {
            K::READS_B_TAPS
        }
    }
    gemm::dispatch(isa, Reads).unwrap_or(false)
}

fn kernel_applies<K: MicroKernel>(g: &ConvGeometry, a_t: &PrepackedSource) -> bool {
    let k = g.patch_len();
    K::READS_B_TAPS
        && a_t.packed(K::MR, 0, k, 0).is_some_and(|p| p.len() >= g.c_out_per_group().div_ceil(K::MR) * K::MR * k)
        && g.is_compact()
        && k > 0
        && k <= KC
        && g.out_pixels() > 0
        && band_fits(g, 0, k, 0, g.w_out)
        && band_fits(g, 0, k, 0, block_rows(g).min(g.h_out) * g.w_out)
}

/// Output rows per block: as many as [`BAND_FLOATS`] of band hold, at least 1.
fn block_rows(g: &ConvGeometry) -> usize {
    let per_row = g.c_in_per_group().saturating_mul(g.stride_h).saturating_mul(g.pad_left + g.w_in + g.pad_right);
    (BAND_FLOATS / per_row.max(1)).max(1)
}

/// The convolution of one (image, group) on `isa`: `job.out` = the weights
/// `job.weights` (the plan's `k × m`, packed in `MR` panels) times the
/// group's channels read as their im2col matrix, plus the bias, then the
/// activation. Blocks of output rows run in parallel when `job.par` allows
/// and the work repays a fork; each is computed the same way on any thread.
///
/// # Panics
/// If [`applies`] is false for `job.g` on `isa` (the caller checks).
pub(crate) fn run(isa: Isa, job: GroupConv<'_>) -> Result<(), ConvError> {
    gemm::dispatch(isa, Banded(job))
}

/// [`run`]'s job, as code generic over the kernel.
struct Banded<'a>(GroupConv<'a>);

impl WithKernel for Banded<'_> {
    type Output = ();

    fn run<K: MicroKernel>(self, kern: K) {
        let job = self.0;
        let g = job.g;
        assert!(kernel_applies::<K>(g, job.weights), "banded path on a geometry it does not take");
        let out_rows = job.rows.clone();
        assert!(out_rows.end <= g.h_out, "output rows past the plane");
        let h = out_rows.len();
        let (m, k, n) = (g.c_out_per_group(), g.patch_len(), h * g.w_out);
        let threads = job.par.threads(2.0 * m as f64 * n as f64 * k as f64);
        let per_block = block_rows(g).min(h.max(1));
        let mut blocks = h.div_ceil(per_block);
        if threads > 1 {
            // At least 4 blocks a thread, as many on each (rows permitting).
            blocks = blocks.max(4 * threads).next_multiple_of(threads).min(h);
        }
        let block = |b: usize| {
            let rows = out_rows.start + b * h / blocks..out_rows.start + (b + 1) * h / blocks;
            // SAFETY: block b writes the pixels of output rows `rows` of
            // every channel of `out` (m × n, as `run`'s caller
            // guarantees); no other block writes those.
            unsafe { banded_block(kern, &job, rows) };
        };
        par::for_each(threads, blocks, block);
    }
}

/// Output rows `rows` of [`run`], every channel.
///
/// # Safety
/// No one else accesses those rows of `job.out` meanwhile.
unsafe fn banded_block<K: MicroKernel>(kern: K, job: &GroupConv<'_>, rows: std::ops::Range<usize>) {
    let GroupConv { g, channels, weights: a_t, bias, act, out, .. } = *job;
    let (m, k, w_out) = (g.c_out_per_group(), g.patch_len(), g.w_out);
    let (p0, npx) = (rows.start * w_out, rows.len() * w_out);
    let mut band = take_band();
    // The band: the input itself where it can be (no padding, stride 1
    // across, NCHW: a band row is an input row, columns 1 apart), else built.
    let (layout, band_at) = match Band::in_input(g, 0, k, p0, npx, g.stride_w).filter(|(l, _)| l.pixel == 1) {
        Some((layout, start)) => (layout, channels[start..].as_ptr()),
        None => {
            let layout = Band::with_phases(g, 0, k, p0, npx, g.stride_w);
            kern.lanes().enter(BuildBand { g, channels, layout: &layout, band: &mut band, pixel_major: false });
            (layout, band.as_ptr())
        }
    };
    let mut taps = [0usize; KC];
    let taps = &mut taps[..k];
    band_taps(g, 0, &layout, taps);
    let panels = a_t.packed(K::MR, 0, k, 0).expect("weights packed in MR panels (`applies`)");
    // Pixels per tile: B's rows of a tile (k × cols floats) stay in half
    // of L1 while every panel of channels reads them.
    let l1_cols = cache_sizes().l1 / 2 / (4 * k);
    let tile_cols = (l1_cols / 16 * 16).clamp(16, K::B_ROWS_NR);
    let spec =
        StoreSpec { alpha: 1.0, beta: 0.0, store: Store::Overwrite, bias: std::ptr::null(), bias_cols: false, act };
    for oy in rows {
        // Output row oy's windows start at band row oy·stride_h − py0.
        let row_at = (oy * g.stride_h - layout.py0) * layout.row_len;
        for x0 in (0..w_out).step_by(tile_cols) {
            let cols = tile_cols.min(w_out - x0);
            for i0 in (0..m).step_by(K::MR) {
                let tile = TileOut {
                    c: out.ptr.wrapping_offset(i0 as isize * out.rs + (oy * w_out + x0) as isize * out.cs),
                    rsc: out.rs,
                    csc: out.cs,
                    rows: K::MR.min(m - i0),
                    cols,
                };
                let spec = StoreSpec { bias: bias.map_or(std::ptr::null(), |b| b[i0..].as_ptr()), ..spec };
                // SAFETY: B's row kk of the tile is band floats
                // row_at + x0 + taps[kk] .. + cols, inside the band built
                // (or the input read) for these rows and taps (it covers
                // every window of the block, pixels 1 apart); panel i0 / MR
                // of the packed weights holds k × MR floats; the tile is
                // channels i0 .. + rows, pixels oy·w_out + x0 .. + cols of
                // `out`, this block's alone; `rows` biases from i0.
                unsafe {
                    kern.run_b_taps(
                        k,
                        panels.as_ptr().add(i0 * k),
                        band_at.add(row_at + x0),
                        taps.as_ptr(),
                        &tile,
                        &spec,
                    )
                };
            }
        }
    }
    put_band(band);
}
