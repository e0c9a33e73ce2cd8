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

use std::arch::x86_64::*;

use super::{MicroKernel, Store, StoreSpec, TileOut, store_tile_scalar, unrolled_k_loop};
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

    unsafe fn run(self, kc: usize, a: *const f32, b: *const f32, out: &TileOut, spec: &StoreSpec) {
        // SAFETY: `self` exists only when AVX2 and FMA were detected; the
        // pointer guarantees are the caller's, passed on unchanged.
        unsafe { kernel_6x16(kc, a, b, out, spec) }
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_6x16(kc: usize, a: *const f32, b: *const f32, out: &TileOut, spec: &StoreSpec) {
    // Start pulling the C tile toward L1 now; it is needed only after the k loop.
    if out.csc == 1 {
        for i in 0..out.rows {
            let row = out.c.wrapping_offset(i as isize * out.rsc);
            _mm_prefetch::<_MM_HINT_T0>(row.cast());
            _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(NR - 1).cast());
        }
    }
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    let step = |acc: &mut [[__m256; 2]; MR], k: usize| {
        // SAFETY: k < kc, and the caller guarantees kc·NR floats at `b` and kc·MR at `a`.
        unsafe {
            let bk = b.add(k * NR);
            let (b0, b1) = (_mm256_loadu_ps(bk), _mm256_loadu_ps(bk.add(8)));
            let ak = a.add(k * MR);
            if k.is_multiple_of(2) {
                // The next A panel, as in the AVX-512 kernel (two k steps
                // are 48 bytes: every line of it gets a hint).
                _mm_prefetch::<_MM_HINT_T0>(ak.wrapping_add(kc * MR).cast());
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm256_broadcast_ss(&*ak.add(i));
                row[0] = _mm256_fmadd_ps(ai, b0, row[0]);
                row[1] = _mm256_fmadd_ps(ai, b1, row[1]);
            }
        }
    };
    unrolled_k_loop(kc, |k| step(&mut acc, k));

    if out.cols == NR && out.csc == 1 {
        let alpha = _mm256_set1_ps(spec.alpha);
        let beta = _mm256_set1_ps(spec.beta);
        for (i, row) in acc.iter().enumerate().take(out.rows) {
            // SAFETY: row i < rows of the tile; columns 0..16 are contiguous (csc == 1).
            let c = unsafe { out.c.offset(i as isize * out.rsc) };
            // SAFETY: `rows` bias values are readable when bias is not null.
            let row_bias =
                (!spec.bias.is_null() && !spec.bias_cols).then(|| _mm256_set1_ps(unsafe { *spec.bias.add(i) }));
            for (h, &acc_h) in row.iter().enumerate() {
                // SAFETY: c + 8h .. c + 8h + 8 lies inside the tile row.
                let ch = unsafe { c.add(8 * h) };
                // SAFETY: with `bias_cols`, `cols` = 16 bias values are readable.
                let bias = row_bias
                    .or_else(|| (!spec.bias.is_null()).then(|| unsafe { _mm256_loadu_ps(spec.bias.add(8 * h)) }));
                let mut v = _mm256_mul_ps(alpha, acc_h);
                if spec.store == Store::Update {
                    // SAFETY: as above.
                    v = _mm256_fmadd_ps(beta, unsafe { _mm256_loadu_ps(ch) }, v);
                }
                if let Some(bias) = bias {
                    v = _mm256_add_ps(v, bias);
                }
                v = activate(spec.act, v);
                // SAFETY: as above.
                unsafe { _mm256_storeu_ps(ch, v) };
            }
        }
    } else {
        let mut tile = [0.0f32; MR * NR];
        for (i, row) in acc.iter().enumerate() {
            // SAFETY: `tile` holds MR·NR floats; row i starts at i·NR.
            unsafe {
                _mm256_storeu_ps(tile.as_mut_ptr().add(i * NR), row[0]);
                _mm256_storeu_ps(tile.as_mut_ptr().add(i * NR + 8), row[1]);
            }
        }
        // SAFETY: the caller's guarantees for `out` and `spec` are passed on.
        unsafe { store_tile_scalar(&tile, NR, out, spec) }
    }
}
