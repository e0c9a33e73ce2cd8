//! `avx2_fma_6x16`: the x86-64 AVX2+FMA microkernel.
//!
//! Register tile (16 ymm registers): 12 accumulators, 2 for the B row, 1 for
//! the broadcast A value.
//!
//! ```text
//!            b[k, 0..8]  b[k, 8..16]
//! a[0,k]  |  acc[0][0]   acc[0][1]  |
//! a[1,k]  |  acc[1][0]   acc[1][1]  |
//!  ...    |     ...         ...     |     acc[i][h] += a[i,k] · b[k, 8h..8h+8]
//! a[5,k]  |  acc[5][0]   acc[5][1]  |
//! ```
//!
//! A reads from a packed panel (`run`) or where it lies, each column at a
//! tap offset and its rows a pixel step apart (`run_a_taps`: the direct
//! convolution path, channels-last images read in place). The tile is
//! compiled for its row count and for one or two vectors of columns, so an
//! edge tile issues only its own FMAs and never reads A past its rows. A
//! tile of one vector of columns takes 12 rows (`a_taps_rows`).

use std::arch::x86_64::*;

use super::{ACols, MicroKernel, RUNTIME_STEP, Store, StoreSpec, TileOut, store_tile_scalar, unrolled_k_loop};
use crate::simd::MaskedLanes;
use crate::simd::x86::{Avx2, activate_avx2 as activate};

const MR: usize = 6;
const NR: usize = 16;

/// The kernel, made from the AVX2 lanes token (proof that the CPU runs AVX2 and FMA).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2Fma6x16(pub(crate) Avx2);

impl MicroKernel for Avx2Fma6x16 {
    const MR: usize = MR;
    const NR: usize = NR;
    const NAME: &'static str = "avx2_fma_6x16";
    type Lanes = Avx2;

    fn lanes(self) -> Avx2 {
        self.0
    }

    fn reads_a_taps(step: usize) -> bool {
        matches!(step, 1 | 2 | 4)
    }

    fn reads_a_any_step() -> bool {
        true
    }

    /// 12 rows for a tile of one vector of columns: 12 accumulators, as
    /// the full 6 × 16 tile has (6 would leave the two FMA pipes, 4 cycles
    /// deep, 6 chains of the 8 they need). Such tiles are the last 8
    /// columns of 24, 40, 72 or 120 channels on the direct path, and the
    /// edges of N in the GEMM.
    fn a_taps_rows(cols: usize) -> usize {
        if cols <= 8 { 2 * MR } else { MR }
    }

    unsafe fn run(self, kc: usize, a: *const f32, b: *const f32, out: &TileOut, spec: &StoreSpec) {
        // SAFETY: `self` exists only when AVX2 and FMA were detected; the
        // pointer guarantees are the caller's, passed on unchanged.
        unsafe { tile_shape::<0>(kc, ACols { ptr: a, taps: std::ptr::null(), step: 0 }, b, out, spec) }
    }

    unsafe fn run_a_taps(
        self,
        kc: usize,
        a: *const f32,
        step: usize,
        taps: *const usize,
        b: *const f32,
        out: &TileOut,
        spec: &StoreSpec,
    ) {
        let a_cols = ACols { ptr: a, taps, step };
        // SAFETY: as in `run`, with A's columns where the caller says.
        unsafe {
            match step {
                1 => tile_shape::<1>(kc, a_cols, b, out, spec),
                2 => tile_shape::<2>(kc, a_cols, b, out, spec),
                4 => tile_shape::<4>(kc, a_cols, b, out, spec),
                _ => tile_shape::<RUNTIME_STEP>(kc, a_cols, b, out, spec),
            }
        }
    }
}

/// [`kernel`] compiled for the tile's rows (1 to 6, or 7 to 12 for a tile
/// of one vector: `a_taps_rows`) and vectors of columns (one for at most 8
/// columns, else two).
///
/// # Safety
/// AVX2 and FMA; the guarantees of [`MicroKernel::run`] (of
/// [`MicroKernel::run_a_taps`] with a step `A_STEP > 0`).
#[inline(always)]
unsafe fn tile_shape<const A_STEP: usize>(kc: usize, a: ACols, b: *const f32, out: &TileOut, spec: &StoreSpec) {
    macro_rules! rows {
        ($h:literal) => {
            // SAFETY: the caller's guarantees; R is the tile's row count.
            unsafe {
                match out.rows {
                    1 => kernel::<1, $h, A_STEP>(kc, a, b, out, spec),
                    2 => kernel::<2, $h, A_STEP>(kc, a, b, out, spec),
                    3 => kernel::<3, $h, A_STEP>(kc, a, b, out, spec),
                    4 => kernel::<4, $h, A_STEP>(kc, a, b, out, spec),
                    5 => kernel::<5, $h, A_STEP>(kc, a, b, out, spec),
                    _ => kernel::<6, $h, A_STEP>(kc, a, b, out, spec),
                }
            }
        };
    }
    if out.cols <= 8 && out.rows > MR {
        // A tall tile of one vector of columns (`a_taps_rows`).
        debug_assert!(out.rows <= 2 * MR);
        // SAFETY: the caller's guarantees; R is the tile's row count.
        unsafe {
            match out.rows {
                7 => kernel::<7, 1, A_STEP>(kc, a, b, out, spec),
                8 => kernel::<8, 1, A_STEP>(kc, a, b, out, spec),
                9 => kernel::<9, 1, A_STEP>(kc, a, b, out, spec),
                10 => kernel::<10, 1, A_STEP>(kc, a, b, out, spec),
                11 => kernel::<11, 1, A_STEP>(kc, a, b, out, spec),
                _ => kernel::<12, 1, A_STEP>(kc, a, b, out, spec),
            }
        }
    } else if out.cols <= 8 {
        rows!(1)
    } else {
        rows!(2)
    }
}

/// The tile's product ([`product`]) and its store: rows of vectors where C's
/// columns are contiguous (the last vector of a narrow tile under a mask),
/// else element by element.
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel<const R: usize, const H: usize, const A_STEP: usize>(
    kc: usize,
    a: ACols,
    b: *const f32,
    out: &TileOut,
    spec: &StoreSpec,
) {
    // Start pulling the C tile toward L1 now; it is needed only after the k loop.
    if out.csc == 1 {
        for i in 0..out.rows {
            let row = out.c.wrapping_offset(i as isize * out.rsc);
            _mm_prefetch::<_MM_HINT_T0>(row.cast());
            _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(out.cols - 1).cast());
        }
    }
    // SAFETY: the caller's guarantees for A and B, passed on.
    let acc = unsafe { product::<R, H, A_STEP>(kc, a, b) };

    if out.csc == 1 {
        // SAFETY: the caller's guarantees for `out` and `spec`, passed on.
        unsafe {
            if out.cols == 8 * H {
                store_rows::<R, H, true>(&acc, out, spec)
            } else {
                store_rows::<R, H, false>(&acc, out, spec)
            }
        }
    } else {
        let mut tile = [0.0f32; 2 * MR * NR];
        for (i, row) in acc.iter().enumerate() {
            for (h, &acc_h) in row.iter().enumerate() {
                // SAFETY: `tile` holds 2·MR·NR floats; vector h of row i
                // ends at i·NR + 8h + 8 <= R·NR <= 2·MR·NR (H is 1 past MR rows).
                unsafe { _mm256_storeu_ps(tile.as_mut_ptr().add(i * NR + 8 * h), acc_h) };
            }
        }
        // SAFETY: the caller's guarantees for `out` and `spec` are passed on;
        // the tile's `rows <= R` rows and `cols <= 8·H` columns are all here.
        unsafe { store_tile_scalar(&tile, NR, out, spec) }
    }
}

/// The store step for a tile whose columns are contiguous in C (`csc ==
/// 1`): each row's vectors whole, or with `WHOLE` false (a tile of fewer
/// than `8·H` columns) its last vector under a mask. Compiled for both,
/// so the full tiles' stores run no mask code.
///
/// # Safety
/// AVX2 and FMA; as [`MicroKernel::run`] for `out` and `spec`, with
/// `out.csc == 1` and `out.rows == R`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn store_rows<const R: usize, const H: usize, const WHOLE: bool>(
    acc: &[[__m256; H]; R],
    out: &TileOut,
    spec: &StoreSpec,
) {
    let alpha = _mm256_set1_ps(spec.alpha);
    let beta = _mm256_set1_ps(spec.beta);
    for (i, row) in acc.iter().enumerate() {
        // SAFETY: row i < rows of the tile; its columns are contiguous (csc == 1).
        let c = unsafe { out.c.offset(i as isize * out.rsc) };
        // SAFETY: `rows` bias values are readable when bias is not null.
        let row_bias = (!spec.bias.is_null() && !spec.bias_cols).then(|| _mm256_set1_ps(unsafe { *spec.bias.add(i) }));
        for (h, &acc_h) in row.iter().enumerate() {
            let lanes = if WHOLE { 8 } else { out.cols.saturating_sub(8 * h).min(8) };
            if lanes == 0 {
                break;
            }
            let whole = WHOLE || lanes == 8;
            // SAFETY: AVX2 (the caller's features).
            let mask = if whole { _mm256_set1_epi32(-1) } else { unsafe { Avx2::mask(0, lanes) } };
            // Columns 8h .. 8h + lanes of the row, inside the tile; a
            // masked load or store does not touch the lanes off.
            let ch = c.wrapping_add(8 * h);
            let bias = row_bias.or_else(|| {
                // SAFETY: with `bias_cols`, `cols` bias values are
                // readable; the mask reads only those.
                (!spec.bias.is_null()).then(|| unsafe { load(whole, mask, spec.bias.add(8 * h)) })
            });
            let mut v = _mm256_mul_ps(alpha, acc_h);
            if spec.store == Store::Update {
                // SAFETY: as above.
                v = _mm256_fmadd_ps(beta, unsafe { load(whole, mask, ch) }, v);
            }
            if let Some(bias) = bias {
                v = _mm256_add_ps(v, bias);
            }
            v = activate(spec.act, v);
            // SAFETY: as above.
            unsafe { if whole { _mm256_storeu_ps(ch, v) } else { Avx2::store_first(ch, v, lanes) } };
        }
    }
}

/// The 8 floats at `p`, or with `whole` false the lanes of `mask` (the
/// others `0.0`, not read).
///
/// # Safety
/// AVX2; those floats readable.
#[inline(always)]
unsafe fn load(whole: bool, mask: __m256i, p: *const f32) -> __m256 {
    // SAFETY: the caller's guarantees.
    unsafe { if whole { _mm256_loadu_ps(p) } else { _mm256_maskload_ps(p, mask) } }
}

/// `acc[i][h]` = the tile's sums for row `i`, columns `8h .. 8h + 8`, each
/// from +0 by one FMA per k in increasing k. A function of its own, so the
/// accumulators stay in registers through the k loop.
///
/// # Safety
/// AVX2 and FMA; A's `kc` columns readable as `a` says (rows `0..R`, with
/// `A_STEP > 0`), else `kc·MR` floats at `a.ptr` (a tall tile, `R > MR`:
/// the next panel's `kc·MR` after them); `kc·NR` floats at `b`.
#[inline(never)]
#[target_feature(enable = "avx2,fma")]
unsafe fn product<const R: usize, const H: usize, const A_STEP: usize>(
    kc: usize,
    a: ACols,
    b: *const f32,
) -> [[__m256; H]; R] {
    let mut acc = [[_mm256_setzero_ps(); H]; R];
    let a_step = if A_STEP == RUNTIME_STEP { a.step } else { A_STEP.max(1) };
    let step = |acc: &mut [[__m256; H]; R], k: usize| {
        // SAFETY: k < kc; the caller guarantees A's column k and B's row k.
        unsafe {
            let bk = b.add(k * NR);
            let bh: [__m256; H] = std::array::from_fn(|h| _mm256_loadu_ps(bk.add(8 * h)));
            let ak = if A_STEP > 0 { a.ptr.add(*a.taps.add(k)) } else { a.ptr.add(k * MR) };
            let next_panel = kc * MR;
            if A_STEP == 0 && k.is_multiple_of(2) {
                // The next tile's A panels, as in the AVX-512 kernel (two k
                // steps are 48 bytes: every line of them gets a hint).
                // `wrapping_add`: past the last panel the hint addresses nothing.
                let tile = if R > MR { 2 * next_panel } else { next_panel };
                _mm_prefetch::<_MM_HINT_T0>(ak.wrapping_add(tile).cast());
                if R > MR {
                    _mm_prefetch::<_MM_HINT_T0>(ak.wrapping_add(tile + next_panel).cast());
                }
            }
            // A tall tile's rows 6 and on: packed, the next A panel (packed
            // right after this one); in place, 6 steps on.
            let ak6 = match (R > MR, A_STEP) {
                (false, _) => ak,
                (true, 0) => ak.add(next_panel),
                (true, _) => ak.add(MR * a_step),
            };
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm256_broadcast_ss(&*if i < MR { ak.add(i * a_step) } else { ak6.add((i - MR) * a_step) });
                for h in 0..H {
                    row[h] = _mm256_fmadd_ps(ai, bh[h], row[h]);
                }
            }
        }
    };
    if A_STEP == RUNTIME_STEP || R > MR {
        // Not unrolled: unrolled by 4, LLVM hoisted the next step's B loads
        // and, one register short, kept an accumulator of the 6 × 16 tile on
        // the stack through every step (Zen 4, channels-last 64 -> 256 1×1
        // on 56², 1 thread: 71 GFLOP/s unrolled, 94 not); the tall tiles'
        // broadcasts, hoisted the same way, spilled 2 to 13 registers.
        for k in 0..kc {
            step(&mut acc, k);
        }
    } else {
        unrolled_k_loop(kc, |k| step(&mut acc, k));
    }
    acc
}
