//! Portable kernels in plain Rust: `portable_4x8` built on `f32::mul_add` is
//! the oracle every SIMD kernel must match bit for bit (and the path Miri
//! runs); `portable_unfused_4x8` is the fallback for CPUs without FMA.

use super::{MicroKernel, StoreSpec, TileOut, store_tile_scalar};

const MR: usize = 4;
const NR: usize = 8;

/// The multiply-add a portable kernel uses.
trait MulAdd {
    /// The kernel's name.
    const NAME: &'static str;
    fn madd(a: f32, b: f32, c: f32) -> f32;
}

/// Fused: one rounding, the reproducibility rule's operation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fused;
impl MulAdd for Fused {
    const NAME: &'static str = "portable_4x8";
    #[inline(always)]
    fn madd(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

/// Unfused: `a·b + c` with two roundings, for CPUs where a fused multiply-add
/// is a slow library call. Differs from the other paths by rounding only.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Unfused;
impl MulAdd for Unfused {
    const NAME: &'static str = "portable_unfused_4x8";
    #[inline(always)]
    fn madd(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// `portable_4x8` (`Fused`) or `portable_unfused_4x8` (`Unfused`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Portable4x8<M>(M);

pub(crate) const PORTABLE: Portable4x8<Fused> = Portable4x8(Fused);
pub(crate) const PORTABLE_UNFUSED: Portable4x8<Unfused> = Portable4x8(Unfused);

#[allow(private_bounds)]
impl<M: MulAdd + Copy + Send + Sync> MicroKernel for Portable4x8<M> {
    const MR: usize = MR;
    const NR: usize = NR;
    const NAME: &'static str = M::NAME;

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
