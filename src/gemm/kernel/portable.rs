//! Portable kernels in plain Rust: `portable_4x8` built on `f32::mul_add` is
//! the oracle every SIMD kernel must match bit for bit (and the path Miri
//! runs); `portable_unfused_4x8` is the fallback for CPUs without FMA.

use super::{MicroKernel, StoreSpec, TileOut, store_tile_scalar};
#[cfg(test)]
use crate::simd::Scalar;
use crate::simd::{Fused, MulAdd, Unfused};

const MR: usize = 4;
const NR: usize = 8;

/// `portable_4x8` (`Scalar<Fused>` lanes) or `portable_unfused_4x8` (`Scalar<Unfused>`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Portable4x8<M>(pub(crate) crate::simd::Scalar<M>);

/// The oracle kernel (tests run every other kernel against it).
#[cfg(test)]
pub(crate) const PORTABLE: Portable4x8<Fused> = Portable4x8(Scalar(Fused));

/// The kernel's name for each multiply-add.
trait Named {
    const NAME: &'static str;
}
impl Named for Fused {
    const NAME: &'static str = "portable_4x8";
}
impl Named for Unfused {
    const NAME: &'static str = "portable_unfused_4x8";
}

#[allow(private_bounds)]
impl<M: MulAdd + Named> MicroKernel for Portable4x8<M> {
    const MR: usize = MR;
    const NR: usize = NR;
    const NAME: &'static str = <M as Named>::NAME;
    type Lanes = crate::simd::Scalar<M>;

    fn lanes(self) -> crate::simd::Scalar<M> {
        self.0
    }

    unsafe fn run(self, kc: usize, a: *const f32, b: *const f32, out: &TileOut, spec: &StoreSpec) {
        // SAFETY: the caller guarantees kc·MR readable floats at `a` and kc·NR at `b`.
        let (a, b) = unsafe { (std::slice::from_raw_parts(a, kc * MR), std::slice::from_raw_parts(b, kc * NR)) };
        let mut acc = [0.0f32; MR * NR];
        for (ak, bk) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
            for i in 0..MR {
                for j in 0..NR {
                    acc[i * NR + j] = M::madd(ak[i], bk[j], acc[i * NR + j]);
                }
            }
        }
        // SAFETY: the caller's guarantees for `out` and `spec` are passed on.
        unsafe { store_tile_scalar(&acc, NR, out, spec) }
    }
}
