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

use super::{Activation, MicroKernel, Store, StoreSpec, TileOut, store_tile_scalar};

const MR: usize = 8;
const NR: usize = 32;

/// Proof that the CPU runs AVX-512F: only [`Avx512_8x32::new`] makes one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512_8x32 {
    _detected: (),
}

impl Avx512_8x32 {
    pub(crate) fn new() -> Option<Self> {
        is_x86_feature_detected!("avx512f").then_some(Self { _detected: () })
    }
}

impl MicroKernel for Avx512_8x32 {
    const MR: usize = MR;
    const NR: usize = NR;
    const NAME: &'static str = "avx512_8x32";

    unsafe fn run(self, kc: usize, a: *const f32, b: *const f32, out: &TileOut, spec: &StoreSpec) {
        // SAFETY: `self` exists only when AVX-512F was detected; the pointer
        // guarantees are the caller's, passed on unchanged.
        unsafe {
            if out.cols <= 16 { kernel_8x32::<1>(kc, a, b, out, spec) } else { kernel_8x32::<2>(kc, a, b, out, spec) }
        }
    }
}

/// The tile's product with `H` of the B panel's two 16-column halves: a
/// tile of at most 16 columns (an edge of N) skips the FMAs of the other
/// half, which only zeros would feed. Full and partial tiles with unit
/// column stride store through (masked) vector stores.
#[target_feature(enable = "avx512f")]
unsafe fn kernel_8x32<const H: usize>(kc: usize, a: *const f32, b: *const f32, out: &TileOut, spec: &StoreSpec) {
    // Start pulling the C tile toward L1 now; it is needed only after the k loop.
    if out.csc == 1 {
        for i in 0..out.rows {
            let row = out.c.wrapping_offset(i as isize * out.rsc);
            _mm_prefetch::<_MM_HINT_T0>(row.cast());
            _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(out.cols - 1).cast());
        }
    }
    let mut acc = [[_mm512_setzero_ps(); H]; MR];
    let step = |acc: &mut [[__m512; H]; MR], k: usize| {
        // SAFETY: k < kc, and the caller guarantees kc·NR floats at `b` and kc·MR at `a`.
        unsafe {
            let bk = b.add(k * NR);
            let bh: [__m512; H] = std::array::from_fn(|h| _mm512_loadu_ps(bk.add(16 * h)));
            let ak = a.add(k * MR);
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm512_set1_ps(*ak.add(i));
                for h in 0..H {
                    row[h] = _mm512_fmadd_ps(ai, bh[h], row[h]);
                }
            }
        }
    };
    let mut k = 0;
    while k + 4 <= kc {
        step(&mut acc, k);
        step(&mut acc, k + 1);
        step(&mut acc, k + 2);
        step(&mut acc, k + 3);
        k += 4;
    }
    while k < kc {
        step(&mut acc, k);
        k += 1;
    }

    if out.csc == 1 {
        let alpha = _mm512_set1_ps(spec.alpha);
        let beta = _mm512_set1_ps(spec.beta);
        for (i, row) in acc.iter().enumerate().take(out.rows) {
            // SAFETY: row i < rows of the tile; its columns are contiguous (csc == 1).
            let c = unsafe { out.c.offset(i as isize * out.rsc) };
            // SAFETY: `rows` bias values are readable when bias is not null.
            let bias = (!spec.bias.is_null()).then(|| _mm512_set1_ps(unsafe { *spec.bias.add(i) }));
            for (h, &acc_h) in row.iter().enumerate() {
                let lanes = out.cols.saturating_sub(16 * h).min(16);
                if lanes == 0 {
                    break;
                }
                let mask = if lanes == 16 { 0xffff } else { ((1u32 << lanes) - 1) as __mmask16 };
                // Columns 16h .. 16h + lanes of the row, inside the tile; the
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
    } else {
        let mut tile = [0.0f32; MR * NR];
        for (i, row) in acc.iter().enumerate() {
            for (h, &acc_h) in row.iter().enumerate() {
                // SAFETY: `tile` holds MR·NR floats; row i's half h starts at i·NR + 16h.
                unsafe { _mm512_storeu_ps(tile.as_mut_ptr().add(i * NR + 16 * h), acc_h) };
            }
        }
        // SAFETY: the caller's guarantees for `out` and `spec` are passed on;
        // columns past 16·H are past `cols`, never stored.
        unsafe { store_tile_scalar::<NR>(&tile, out, spec) }
    }
}

/// [`Activation::apply`] on 16 lanes, bit for bit (NaN kept, `-0.0` kept:
/// `max_ps(a, b)` returns `b` when either is NaN or both are zero).
#[inline]
#[target_feature(enable = "avx512f")]
fn activate(act: Activation, v: __m512) -> __m512 {
    match act {
        Activation::None => v,
        Activation::Relu => _mm512_max_ps(_mm512_setzero_ps(), v),
        Activation::Clamp { min, max } => _mm512_min_ps(_mm512_set1_ps(max), _mm512_max_ps(_mm512_set1_ps(min), v)),
    }
}
