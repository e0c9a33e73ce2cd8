//! `neon_8x12`: the aarch64 NEON microkernel.
//!
//! Register tile (32 q registers): 24 accumulators, 3 for the B row, 2 for
//! the 8 A values, used by lane (`fmla v.4s, b.4s, a.s[lane]`).
//!
//! ```text
//!                b[k,0..4]  b[k,4..8]  b[k,8..12]
//! a0[0] a[0,k] | acc[0][0]  acc[0][1]  acc[0][2] |
//!  ...         |    ...                          |   acc[i][h] += a[i,k] · b[k, 4h..4h+4]
//! a1[3] a[7,k] | acc[7][0]  acc[7][1]  acc[7][2] |
//! ```

use std::arch::aarch64::*;

use super::{MicroKernel, Store, StoreSpec, TileOut, store_tile_scalar};
use crate::simd::neon::{Neon, activate_neon as activate};

const MR: usize = 8;
const NR: usize = 12;

/// The kernel, made from the NEON lanes token (proof that the CPU runs NEON).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Neon8x12(pub(crate) Neon);

impl MicroKernel for Neon8x12 {
    const MR: usize = MR;
    const NR: usize = NR;
    const NAME: &'static str = "neon_8x12";
    type Lanes = Neon;

    fn lanes(self) -> Neon {
        self.0
    }

    unsafe fn run(self, kc: usize, a: *const f32, b: *const f32, out: &TileOut, spec: &StoreSpec) {
        // SAFETY: `self` exists only when NEON was detected; the pointer
        // guarantees are the caller's, passed on unchanged.
        unsafe { kernel_8x12(kc, a, b, out, spec) }
    }
}

/// `row[h] += b[h] · a[LANE]`, fused, for the three column vectors.
#[inline]
#[target_feature(enable = "neon")]
fn fma_row<const LANE: i32>(row: &mut [float32x4_t; 3], b: &[float32x4_t; 3], a: float32x4_t) {
    for h in 0..3 {
        row[h] = vfmaq_laneq_f32::<LANE>(row[h], b[h], a);
    }
}

#[target_feature(enable = "neon")]
unsafe fn kernel_8x12(kc: usize, a: *const f32, b: *const f32, out: &TileOut, spec: &StoreSpec) {
    let mut acc = [[vdupq_n_f32(0.0); 3]; MR];
    for k in 0..kc {
        // SAFETY: k < kc, and the caller guarantees kc·NR floats at `b` and kc·MR at `a`.
        let (bk, a0, a1) = unsafe {
            let bk = b.add(k * NR);
            let ak = a.add(k * MR);
            ([vld1q_f32(bk), vld1q_f32(bk.add(4)), vld1q_f32(bk.add(8))], vld1q_f32(ak), vld1q_f32(ak.add(4)))
        };
        let [r0, r1, r2, r3, r4, r5, r6, r7] = &mut acc;
        fma_row::<0>(r0, &bk, a0);
        fma_row::<1>(r1, &bk, a0);
        fma_row::<2>(r2, &bk, a0);
        fma_row::<3>(r3, &bk, a0);
        fma_row::<0>(r4, &bk, a1);
        fma_row::<1>(r5, &bk, a1);
        fma_row::<2>(r6, &bk, a1);
        fma_row::<3>(r7, &bk, a1);
    }

    if out.cols == NR && out.csc == 1 {
        let alpha = vdupq_n_f32(spec.alpha);
        let beta = vdupq_n_f32(spec.beta);
        for (i, row) in acc.iter().enumerate().take(out.rows) {
            // SAFETY: row i < rows of the tile; columns 0..12 are contiguous (csc == 1).
            let c = unsafe { out.c.offset(i as isize * out.rsc) };
            // SAFETY: `rows` bias values are readable when bias is not null.
            let row_bias = (!spec.bias.is_null() && !spec.bias_cols).then(|| vdupq_n_f32(unsafe { *spec.bias.add(i) }));
            for (h, &acc_h) in row.iter().enumerate() {
                // SAFETY: c + 4h .. c + 4h + 4 lies inside the tile row.
                let ch = unsafe { c.add(4 * h) };
                // SAFETY: with `bias_cols`, `cols` = NR bias values are readable.
                let bias =
                    row_bias.or_else(|| (!spec.bias.is_null()).then(|| unsafe { vld1q_f32(spec.bias.add(4 * h)) }));
                let mut v = vmulq_f32(alpha, acc_h);
                if spec.store == Store::Update {
                    // SAFETY: as above.
                    v = vfmaq_f32(v, beta, unsafe { vld1q_f32(ch) });
                }
                if let Some(bias) = bias {
                    v = vaddq_f32(v, bias);
                }
                v = activate(spec.act, v);
                // SAFETY: as above.
                unsafe { vst1q_f32(ch, v) };
            }
        }
    } else {
        let mut tile = [0.0f32; MR * NR];
        for (i, row) in acc.iter().enumerate() {
            for (h, &acc_h) in row.iter().enumerate() {
                // SAFETY: `tile` holds MR·NR floats; i·NR + 4h + 4 <= MR·NR.
                unsafe { vst1q_f32(tile.as_mut_ptr().add(i * NR + 4 * h), acc_h) };
            }
        }
        // SAFETY: the caller's guarantees for `out` and `spec` are passed on.
        unsafe { store_tile_scalar(&tile, NR, out, spec) }
    }
}
