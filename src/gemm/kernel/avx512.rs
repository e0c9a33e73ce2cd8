//! `avx512_8x32`: the x86-64 AVX-512 microkernel.
//!
//! Register tile: 16 accumulators, 2 for the B row, 1 for the broadcast A
//! value (of 32 zmm registers). Zen 5 and Intel server cores run two 512-bit
//! FMAs per cycle at 4 cycles' latency, so 16 independent chains keep both
//! pipes busy; per k step the tile issues 16 FMAs against 10 loads.
//!
//! ```text
//!            b[k, 0..16]  b[k, 16..32]
//! a[0,k]  |  acc[0][0]    acc[0][1]  |
//! a[1,k]  |  acc[1][0]    acc[1][1]  |
//!  ...    |     ...          ...     |     acc[i][h] += a[i,k] · b[k, 16h..16h+16]
//! a[7,k]  |  acc[7][0]    acc[7][1]  |
//! ```
//!
//! Measured against 6×32, 12×32 (24 accumulators) and 16×32 (32, spilling) on
//! Zen 5, single thread, `Conv2dPlan` (GFLOP/s):
//!
//! | layer (c_in, h, c_out, k) | 6×32 | 8×32 | 12×32 | 16×32 |
//! |---|---|---|---|---|
//! | 64, 56, 64, 3×3 | 163 | 173 | 154 | 142 |
//! | 256, 56, 256, 3×3 | 204 | 212 | 189 | 172 |
//! | 64, 224, 64, 3×3 | 158 | 169 | 148 | — |
//!
//! 8 rows also tile M = 64, 128, 256 … exactly, where 12 leaves a part tile.
//!
//! Same arithmetic per element as every other kernel (one FMA per k, in
//! increasing k, from +0), so the same bits.

use std::arch::x86_64::*;

use super::{ACols, MicroKernel, RUNTIME_STEP, Store, StoreSpec, TileOut, store_tile_scalar, unrolled_k_loop};
use crate::simd::x86::{Avx512, activate_avx2, activate_avx512 as activate};

const MR: usize = 8;
const NR: usize = 32;

/// The kernel, made from the AVX-512 lanes token (proof that the CPU runs AVX-512F).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512_8x32(pub(crate) Avx512);

impl MicroKernel for Avx512_8x32 {
    const MR: usize = MR;
    const NR: usize = NR;
    const NAME: &'static str = "avx512_8x32";
    type Lanes = Avx512;

    fn lanes(self) -> Avx512 {
        self.0
    }
    const READS_B_ROWS: bool = true;
    const B_ROWS_NR: usize = B_ROWS_NR;

    fn reads_a_taps(step: usize) -> bool {
        matches!(step, 1 | 2 | 4)
    }

    fn reads_a_any_step() -> bool {
        true
    }

    /// 8 rows × (32 + 8) columns: 24 accumulators, the last 8 columns' at
    /// 256 bits (see [`HALF_LAST`]).
    const A_TAPS_WIDE: usize = NR + 8;

    /// 16 rows for a tile of one vector of columns: 16 accumulators, as
    /// the full 8 × 32 tile has (8 would leave the two FMA pipes' 8 chains
    /// no slack). Packed too: Zen 5, 1 thread, Winograd under `Relaxed`,
    /// whose GEMMs have 16 columns on 12² to 14² planes (F(4×4)) and 7²
    /// (F(2×2)): 256→256 on 14² 0.531 → 0.477 ms, 384→384 on 12² 1.06 →
    /// 0.99 ms, 512→512 on 7² 0.83 → 0.75 ms.
    fn a_taps_rows(cols: usize) -> usize {
        if cols <= 16 { 2 * MR } else { MR }
    }

    unsafe fn run(self, kc: usize, a: *const f32, b: *const f32, out: &TileOut, spec: &StoreSpec) {
        // SAFETY: `self` exists only when AVX-512F was detected; the pointer
        // guarantees are the caller's, passed on unchanged.
        unsafe { with_tile_shape::<0>(kc, ACols { ptr: a, taps: std::ptr::null(), step: 0 }, b, out, spec) }
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
                1 => with_tile_shape::<1>(kc, a_cols, b, out, spec),
                2 => with_tile_shape::<2>(kc, a_cols, b, out, spec),
                4 => with_tile_shape::<4>(kc, a_cols, b, out, spec),
                _ => with_tile_shape::<RUNTIME_STEP>(kc, a_cols, b, out, spec),
            }
        }
    }

    unsafe fn run_b_rows(self, kc: usize, a: *const f32, b: *const f32, rsb: isize, out: &TileOut, spec: &StoreSpec) {
        // SAFETY: as in `run`; `in_place` keeps every read in the `cols` columns.
        unsafe { in_place_rows::<false>(kc, a, b, (rsb, std::ptr::null()), out, spec) }
    }

    const READS_B_TAPS: bool = true;

    unsafe fn run_b_taps(
        self,
        kc: usize,
        a: *const f32,
        b: *const f32,
        taps: *const usize,
        out: &TileOut,
        spec: &StoreSpec,
    ) {
        // SAFETY: as in `run`; `in_place` keeps every read in the `cols`
        // columns of the rows the taps name.
        unsafe { in_place_rows::<true>(kc, a, b, (0, taps), out, spec) }
    }
}

/// `run_b_rows` (rows `rsb` apart) or, with `B_TAPS`, `run_b_taps` (row `k`
/// at `taps[k]`): the in-place tile compiled for its row count.
///
/// # Safety
/// AVX-512F; as [`MicroKernel::run_b_rows`] or [`MicroKernel::run_b_taps`].
#[inline(always)]
unsafe fn in_place_rows<const B_TAPS: bool>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    rows: (isize, *const usize),
    out: &TileOut,
    spec: &StoreSpec,
) {
    // SAFETY: the caller's guarantees, passed on.
    unsafe {
        match out.rows {
            1 => in_place::<1, 8, B_TAPS>(kc, a, b, rows, out, spec),
            2 => in_place::<2, 8, B_TAPS>(kc, a, b, rows, out, spec),
            3 => in_place::<3, 4, B_TAPS>(kc, a, b, rows, out, spec),
            4 => in_place::<4, 4, B_TAPS>(kc, a, b, rows, out, spec),
            5 => in_place::<5, 2, B_TAPS>(kc, a, b, rows, out, spec),
            6 => in_place::<6, 2, B_TAPS>(kc, a, b, rows, out, spec),
            7 => in_place::<7, 2, B_TAPS>(kc, a, b, rows, out, spec),
            _ => in_place::<8, 2, B_TAPS>(kc, a, b, rows, out, spec),
        }
    }
}

/// The widest in-place tile: 8 vectors of 16 columns for a tile of one or
/// two rows, so that 8 or 16 FMA chains are in flight (2 pipes × 4 cycles
/// of latency need 8).
const B_ROWS_NR: usize = 128;

/// `run_b_rows` for a tile of `R` rows, in slices of `H` vectors (`16·H`
/// columns): `R·H` = 8 to 16 accumulators, whatever the row count.
///
/// # Safety
/// AVX-512F; as [`MicroKernel::run_b_rows`].
#[inline(always)]
unsafe fn in_place<const R: usize, const H: usize, const B_TAPS: bool>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    (rsb, taps): (isize, *const usize),
    out: &TileOut,
    spec: &StoreSpec,
) {
    for j in (0..out.cols).step_by(16 * H) {
        let cols = (out.cols - j).min(16 * H);
        let masks = std::array::from_fn(|h| lane_mask(cols, h));
        let b = BRows { ptr: b.wrapping_add(j), stride: rsb, next: 0, masks, taps };
        let out = TileOut { c: out.c.wrapping_offset(j as isize * out.csc), cols, ..*out };
        let spec = &spec.at_col(j);
        // SAFETY: columns j .. j + cols of the caller's tile and of B's rows;
        // the masks cover exactly those columns (all lanes of a full slice).
        unsafe {
            let a = ACols { ptr: a, taps: std::ptr::null(), step: 0 };
            if cols == 16 * H {
                kernel_8x32::<R, H, WHOLE, 0, B_TAPS>(kc, a, b, &out, spec)
            } else if H > 1 && cols <= 16 {
                // A last slice of one vector or less: one vector's FMAs, not
                // H (a 112-pixel row in slices of 32: 3 + a half-empty 4th).
                let b = BRows { ptr: b.ptr, stride: rsb, next: 0, masks: [b.masks[0]], taps };
                if cols == 16 {
                    kernel_8x32::<R, 1, WHOLE, 0, B_TAPS>(kc, a, b, &out, spec)
                } else {
                    kernel_8x32::<R, 1, MASKED, 0, B_TAPS>(kc, a, b, &out, spec)
                }
            } else {
                kernel_8x32::<R, H, MASKED, 0, B_TAPS>(kc, a, b, &out, spec)
            }
        }
    }
}

/// Where the kernel reads B: row `k` at `ptr + k·stride`, its `H` vectors
/// of 16 columns loaded under `masks` (lanes off are not read, so cannot
/// fault). Unmasked (`B_LOAD` other than [`MASKED`]: a packed panel, a
/// full slice of rows in place), all `16·H` lanes are read.
#[derive(Clone, Copy)]
struct BRows<const H: usize> {
    ptr: *const f32,
    stride: isize,
    /// Floats from a row's first column to its column 32, in the next
    /// packed panel: the wide tile's third vector (`H == 3`, `HALF_LAST`).
    next: usize,
    masks: [__mmask16; H],
    /// With `B_TAPS`, row `k` at `ptr + taps[k]` instead (`stride` unused).
    taps: *const usize,
}

/// How the kernel loads and multiplies B's vectors (its `B_LOAD`): each
/// whole, 16 floats of a packed panel or of a full slice of rows in place;
/// each under its mask (`BRows::masks`: rows in place, an edge of N); or
/// whole but the last, whose lower 8 columns only are loaded and multiplied
/// at 256 bits (see `product`).
const WHOLE: u8 = 0;
/// See [`WHOLE`].
const MASKED: u8 = 1;
/// See [`WHOLE`].
const HALF_LAST: u8 = 2;

/// [`tile_shape`], or for a wide tile (`A_TAPS_WIDE`: 33 to 40 columns
/// over two panels) the 8 × 40 tile.
///
/// # Safety
/// As [`tile_shape`]; a wide tile's two panels of `kc × NR` floats at `b`.
#[inline(always)]
unsafe fn with_tile_shape<const A_STEP: usize>(kc: usize, a: ACols, b: *const f32, out: &TileOut, spec: &StoreSpec) {
    if out.cols > NR {
        // A wide tile (`A_TAPS_WIDE`): columns 32 .. 40 from the next panel.
        debug_assert!(out.cols <= NR + 8 && out.rows <= MR);
        let b = BRows { ptr: b, stride: NR as isize, next: NR * kc, masks: [0xffff; 3], taps: std::ptr::null() };
        // SAFETY: the caller's guarantees: two packed panels of kc × NR
        // floats at `b`; R is the tile's row count.
        unsafe {
            return match out.rows {
                8 => kernel_8x32::<8, 3, HALF_LAST, A_STEP, false>(kc, a, b, out, spec),
                7 => kernel_8x32::<7, 3, HALF_LAST, A_STEP, false>(kc, a, b, out, spec),
                // Fewer rows: the panel's tile, then the next panel's.
                _ => {
                    tile_shape::<A_STEP>(kc, a, b.ptr, &TileOut { cols: NR, ..*out }, spec);
                    let rest = TileOut { c: out.c.wrapping_offset(NR as isize * out.csc), cols: out.cols - NR, ..*out };
                    tile_shape::<A_STEP>(kc, a, b.ptr.wrapping_add(NR * kc), &rest, &spec.at_col(NR))
                }
            };
        }
    }
    // SAFETY: the caller's guarantees, passed on.
    unsafe { tile_shape::<A_STEP>(kc, a, b, out, spec) }
}

/// Calls [`kernel_8x32`] on a packed B panel, compiled for the tile's row
/// count (1..=8) and B halves (1 or 2), so a tile of few rows (M = 6, an
/// edge of M) or columns (an edge of N) issues only its own FMAs.
///
/// # Safety
/// AVX-512F; the pointer guarantees of [`MicroKernel::run`] (of
/// [`MicroKernel::run_a_taps`] with a step `A_STEP > 0`).
#[inline(always)]
unsafe fn tile_shape<const A_STEP: usize>(kc: usize, a: ACols, b: *const f32, out: &TileOut, spec: &StoreSpec) {
    macro_rules! rows {
        ($h:literal) => {{
            let b = BRows { ptr: b, stride: NR as isize, next: 0, masks: [0xffff; $h], taps: std::ptr::null() };
            // SAFETY: the caller's guarantees; R is the tile's row count.
            unsafe {
                match out.rows {
                    1 => kernel_8x32::<1, $h, WHOLE, A_STEP, false>(kc, a, b, out, spec),
                    2 => kernel_8x32::<2, $h, WHOLE, A_STEP, false>(kc, a, b, out, spec),
                    3 => kernel_8x32::<3, $h, WHOLE, A_STEP, false>(kc, a, b, out, spec),
                    4 => kernel_8x32::<4, $h, WHOLE, A_STEP, false>(kc, a, b, out, spec),
                    5 => kernel_8x32::<5, $h, WHOLE, A_STEP, false>(kc, a, b, out, spec),
                    6 => kernel_8x32::<6, $h, WHOLE, A_STEP, false>(kc, a, b, out, spec),
                    7 => kernel_8x32::<7, $h, WHOLE, A_STEP, false>(kc, a, b, out, spec),
                    _ => kernel_8x32::<8, $h, WHOLE, A_STEP, false>(kc, a, b, out, spec),
                }
            }
        }};
    }
    if out.rows == MR && (17..=24).contains(&out.cols) {
        // A full-height tile of 17 to 24 columns (24 output channels on
        // the direct path): the second vector's FMAs at 256 bits.
        let b = BRows { ptr: b, stride: NR as isize, next: 0, masks: [0xffff; 2], taps: std::ptr::null() };
        // SAFETY: the caller's guarantees; a packed panel row holds NR floats.
        return unsafe { kernel_8x32::<8, 2, HALF_LAST, A_STEP, false>(kc, a, b, out, spec) };
    }
    if out.cols <= 16 && out.rows > MR {
        // A tall tile of one vector of columns (`a_taps_rows`).
        debug_assert!(out.rows <= 2 * MR);
        let b = BRows { ptr: b, stride: NR as isize, next: 0, masks: [0xffff; 1], taps: std::ptr::null() };
        // SAFETY: the caller's guarantees; R is the tile's row count.
        unsafe {
            match out.rows {
                9 => kernel_8x32::<9, 1, WHOLE, A_STEP, false>(kc, a, b, out, spec),
                10 => kernel_8x32::<10, 1, WHOLE, A_STEP, false>(kc, a, b, out, spec),
                11 => kernel_8x32::<11, 1, WHOLE, A_STEP, false>(kc, a, b, out, spec),
                12 => kernel_8x32::<12, 1, WHOLE, A_STEP, false>(kc, a, b, out, spec),
                13 => kernel_8x32::<13, 1, WHOLE, A_STEP, false>(kc, a, b, out, spec),
                14 => kernel_8x32::<14, 1, WHOLE, A_STEP, false>(kc, a, b, out, spec),
                15 => kernel_8x32::<15, 1, WHOLE, A_STEP, false>(kc, a, b, out, spec),
                _ => kernel_8x32::<16, 1, WHOLE, A_STEP, false>(kc, a, b, out, spec),
            }
        }
    } else if out.cols <= 16 {
        rows!(1)
    } else {
        rows!(2)
    }
}

/// The tile's product for its `R` rows with `H` of B's 16-column vectors:
/// a tile of at most 16 columns (an edge of N) skips the FMAs of the other
/// half, which only zeros would feed, and a tile of fewer rows those of the
/// missing rows; a wide tile (`H == 3`, `HALF_LAST`) reads its third vector
/// from the next panel. Full and partial tiles with unit column stride store through
/// (masked) vector stores.
#[target_feature(enable = "avx512f")]
unsafe fn kernel_8x32<const R: usize, const H: usize, const B_LOAD: u8, const A_STEP: usize, const B_TAPS: bool>(
    kc: usize,
    a: ACols,
    b: BRows<H>,
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
    let acc = unsafe { product::<R, H, B_LOAD, A_STEP, B_TAPS>(kc, a, b) };

    if out.csc == 1 {
        let alpha = _mm512_set1_ps(spec.alpha);
        let beta = _mm512_set1_ps(spec.beta);
        for (i, row) in acc.iter().enumerate() {
            // SAFETY: row i < rows of the tile; its columns are contiguous (csc == 1).
            let c = unsafe { out.c.offset(i as isize * out.rsc) };
            // SAFETY: `rows` bias values are readable when bias is not null.
            let row_bias =
                (!spec.bias.is_null() && !spec.bias_cols).then(|| _mm512_set1_ps(unsafe { *spec.bias.add(i) }));
            for (h, &acc_h) in row.iter().enumerate() {
                let mask = lane_mask(out.cols, h);
                if mask == 0 {
                    break;
                }
                let bias = row_bias.or_else(|| {
                    // SAFETY: with `bias_cols`, `cols` bias values are
                    // readable; the mask reads only those.
                    (!spec.bias.is_null()).then(|| unsafe { _mm512_maskz_loadu_ps(mask, spec.bias.add(16 * h)) })
                });
                // Columns 16h .. of the row the mask keeps, inside the tile; the
                // masked-off lanes are neither read nor written (no fault).
                let ch = c.wrapping_add(16 * h);
                let mut v = _mm512_mul_ps(alpha, acc_h);
                if spec.store == Store::Update {
                    // SAFETY: as above.
                    v = _mm512_fmadd_ps(beta, unsafe { _mm512_maskz_loadu_ps(mask, ch) }, v);
                }
                if let Some(bias) = bias {
                    v = _mm512_add_ps(v, bias);
                }
                v = activate(spec.act, v);
                // SAFETY: as above.
                unsafe { _mm512_mask_storeu_ps(ch, mask, v) };
            }
        }
    } else if out.rsc == 1 && R <= 8 {
        // SAFETY: the caller's guarantees for `out` and `spec`, passed on.
        unsafe { store_columns::<H>(&spill(&acc), out, spec) }
    } else {
        // SAFETY: the caller's guarantees for `out` and `spec` are passed on;
        // the tile's `rows <= R` rows and `cols <= 16·H` columns are all here.
        unsafe { store_tile_scalar(&spill(&acc).0, 16 * H, out, spec) }
    }
}

/// A tile's accumulators in memory, row-major, `16·H` floats a row (zeros
/// in rows past R), for the store paths that do not store rows of vectors.
/// Room for a wide tile's 3 vectors a row (`A_TAPS_WIDE`).
#[repr(C, align(64))]
struct Spilled([f32; SPILLED]);

/// The floats of a [`Spilled`] tile: 8 rows of 3 vectors.
const SPILLED: usize = MR * 48;

/// `acc` as a [`Spilled`] tile.
#[inline]
#[target_feature(enable = "avx512f")]
fn spill<const R: usize, const H: usize>(acc: &[[__m512; H]; R]) -> Spilled {
    const { assert!(R * 16 * H <= SPILLED) };
    let mut tile = Spilled([0.0; SPILLED]);
    for (i, row) in acc.iter().enumerate() {
        for (h, &acc_h) in row.iter().enumerate() {
            // SAFETY: vector h of row i ends at (i·H + h + 1)·16 <= R·16H <= SPILLED.
            unsafe { _mm512_store_ps(tile.0.as_mut_ptr().add((i * H + h) * 16), acc_h) };
        }
    }
    tile
}

/// The bits of the lanes of vector `h` that hold the first `cols` columns:
/// all 16 for a full vector, none past `cols`.
#[inline(always)]
fn lane_mask(cols: usize, h: usize) -> __mmask16 {
    ((1u32 << cols.saturating_sub(16 * h).min(16)) - 1) as __mmask16
}

/// The store step for a tile whose rows are contiguous in C (`rsc == 1`,
/// as C column-major, or a convolution's output with pixels as rows): from
/// the spilled tile (rows of `16·H` floats), each column of at most 8 rows is
/// gathered into one vector and stored whole, masked to `rows`. The same
/// operations per element as the other store paths.
///
/// # Safety
/// AVX-512F; as [`MicroKernel::run`] for `out` and `spec`, with `out.rsc == 1`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn store_columns<const H: usize>(tile: &Spilled, out: &TileOut, spec: &StoreSpec) {
    let rows = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(out.rows as i32), rows);
    let index = _mm256_mullo_epi32(rows, _mm256_set1_epi32(16 * H as i32));
    let (alpha, beta) = (_mm256_set1_ps(spec.alpha), _mm256_set1_ps(spec.beta));
    // SAFETY: `rows` bias values are readable when bias is not null; the mask
    // reads only those.
    let row_bias = (!spec.bias.is_null() && !spec.bias_cols).then(|| unsafe { _mm256_maskload_ps(spec.bias, mask) });
    for j in 0..out.cols {
        // SAFETY: with `bias_cols`, `cols` bias values are readable, j < cols.
        let bias = row_bias.or_else(|| (!spec.bias.is_null()).then(|| _mm256_set1_ps(unsafe { *spec.bias.add(j) })));
        // SAFETY: element (i, j) of the tile at i·16H + j; the mask loads
        // only rows i < rows, j < cols <= 16H: inside the spilled R·16H floats.
        let v = unsafe {
            _mm256_mask_i32gather_ps::<4>(_mm256_setzero_ps(), tile.0.as_ptr().add(j), index, _mm256_castsi256_ps(mask))
        };
        // Column j of the tile: `rows` contiguous floats (rsc == 1) inside C.
        let c = out.c.wrapping_offset(j as isize * out.csc);
        let mut v = _mm256_mul_ps(alpha, v);
        if spec.store == Store::Update {
            // SAFETY: as above; the mask reads only the tile's rows.
            v = _mm256_fmadd_ps(beta, unsafe { _mm256_maskload_ps(c, mask) }, v);
        }
        if let Some(bias) = bias {
            v = _mm256_add_ps(v, bias);
        }
        v = activate_avx2(spec.act, v);
        // SAFETY: as above; the mask writes only the tile's rows.
        unsafe { _mm256_maskstore_ps(c, mask, v) };
    }
}

/// `acc[i][h]` = the chunk's sums for row `i`, columns `16h .. 16h + 16`,
/// each from +0 by one FMA per k in increasing k. With [`HALF_LAST`], the
/// last vector's sums are for its lower 8 columns only, by 256-bit FMAs
/// (the same operation per lane, so the same bits): Zen 4 issues a 512-bit
/// FMA as two 256-bit halves, so a tile of 24 columns costs 24 lanes' FMAs
/// there rather than 32. (A 16-row tile of 8 columns at 256 bits was
/// slower: its 16 broadcasts per 8 cycles outran the load ports.) A function of its own, so
/// the accumulators stay in registers through the k loop (inlined into the
/// store code, LLVM kept a copy of every one on the stack).
///
/// # Safety
/// AVX-512F; A's `kc` columns readable as `a` says (with `A_STEP > 0`), else
/// `kc·MR` floats at `a.ptr`; B's `kc` rows readable as `b` says.
#[inline(never)]
#[target_feature(enable = "avx512f")]
unsafe fn product<const R: usize, const H: usize, const B_LOAD: u8, const A_STEP: usize, const B_TAPS: bool>(
    kc: usize,
    a: ACols,
    b: BRows<H>,
) -> [[__m512; H]; R] {
    let mut acc = [[_mm512_setzero_ps(); H]; R];
    let (b_ptr, b_stride, b_masks, b_taps, b_next) = (b.ptr, b.stride, b.masks, b.taps, b.next);
    // The wide tile (`A_TAPS_WIDE`): 32 + 8 columns over two panels.
    let wide = B_LOAD == HALF_LAST && H == 3;
    let step = |acc: &mut [[__m512; H]; R], k: usize| {
        // SAFETY: k < kc; the caller guarantees kc·MR floats at `a` and B's
        // kc rows (whole panel rows, or the masked lanes of rows in place).
        unsafe {
            let bk = if B_TAPS { b_ptr.wrapping_add(*b_taps.add(k)) } else { b_ptr.offset(k as isize * b_stride) };
            let bh: [__m512; H] = std::array::from_fn(|h| {
                if B_LOAD == MASKED {
                    _mm512_maskz_loadu_ps(b_masks[h], bk.wrapping_add(16 * h))
                } else {
                    // A wide tile's third vector: the next panel's first columns.
                    let at = if wide && h == 2 { bk.add(b_next) } else { bk.add(16 * h) };
                    if B_LOAD == HALF_LAST && h == H - 1 {
                        _mm512_castps256_ps512(_mm256_loadu_ps(at))
                    } else {
                        _mm512_loadu_ps(at)
                    }
                }
            });
            let ak = if A_STEP > 0 { a.ptr.add(*a.taps.add(k)) } else { a.ptr.add(k * MR) };
            // A tall tile's rows 8 and on: packed, the next A panel (packed
            // right after this one); in place, 8 steps on.
            let a_step = if A_STEP == RUNTIME_STEP { a.step } else { A_STEP.max(1) };
            let next_panel = kc * MR;
            if A_STEP == 0 && k.is_multiple_of(2) {
                // The next tile's A panels (the next tile down, packed right
                // after this one's), one line each per two k steps: a plan's
                // prepacked A that lives in L3 or memory (Winograd's U, 9 MiB
                // for 256 channels) otherwise stalls each tile on its first
                // pass (Zen 5, 256 -> 256 channels on 56×56, F(4×4): the
                // GEMMs 7.1 -> 5.4 ms; dense layers unchanged).
                // `wrapping_add`: past the last panel the hint addresses
                // nothing.
                let tile = if R > 8 { 2 * next_panel } else { next_panel };
                _mm_prefetch::<_MM_HINT_T0>(ak.wrapping_add(tile).cast());
                if R > 8 {
                    _mm_prefetch::<_MM_HINT_T0>(ak.wrapping_add(tile + next_panel).cast());
                }
            }
            // Rows 8 and on from a second base, at the same offsets as rows
            // 0 to 7 from the first: a tall tile's 16 row addresses then need
            // the registers of 8 (with each row's own offset, they spilled).
            let ak8 = match (R > 8, A_STEP) {
                (false, _) => ak,
                (true, 0) => ak.add(next_panel),
                (true, _) => ak.add(8 * a_step),
            };
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm512_set1_ps(if i < 8 { *ak.add(i * a_step) } else { *ak8.add((i - 8) * a_step) });
                for h in 0..H {
                    row[h] = if B_LOAD == HALF_LAST && h == H - 1 {
                        // The lower 8 lanes only (their upper lanes are
                        // never stored): one 256-bit FMA, half the cost of
                        // a 512-bit one where the core splits those (Zen 4).
                        let (a8, b8, c8) =
                            (_mm512_castps512_ps256(ai), _mm512_castps512_ps256(bh[h]), _mm512_castps512_ps256(row[h]));
                        _mm512_castps256_ps512(_mm256_fmadd_ps(a8, b8, c8))
                    } else {
                        _mm512_fmadd_ps(ai, bh[h], row[h])
                    };
                }
            }
        }
    };
    unrolled_k_loop(kc, |k| step(&mut acc, k));

    acc
}
