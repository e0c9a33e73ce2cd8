//! From an [`Isa`] to its microkernel: the lanes token `simd::select` hands
//! each path becomes that path's kernel type, and code generic over
//! [`MicroKernel`] runs with it (monomorphized per kernel).

use super::kernel::MicroKernel;
use super::kernel::portable::Portable4x8;
use crate::error::ConvError;
use crate::isa::Isa;
use crate::simd::{self, Fused, PerPath, Scalar, Unfused};

/// Code generic over the microkernel, run with the kernel of an [`Isa`].
pub(crate) trait WithKernel {
    type Output;
    fn run<K: MicroKernel>(self, kern: K) -> Self::Output;
}

/// Runs `work` with the kernel of `isa`, or says the path is unavailable.
pub(crate) fn dispatch<W: WithKernel>(isa: Isa, work: W) -> Result<W::Output, ConvError> {
    simd::select(isa, Kernels(work))
}

/// [`dispatch`] as a [`PerPath`]: each path's lanes token makes its kernel.
struct Kernels<W>(W);

impl<W: WithKernel> PerPath for Kernels<W> {
    type Output = W::Output;
    fn portable(self, lanes: Scalar<Fused>) -> W::Output {
        self.0.run(Portable4x8(lanes))
    }
    fn portable_unfused(self, lanes: Scalar<Unfused>) -> W::Output {
        self.0.run(Portable4x8(lanes))
    }
    #[cfg(target_arch = "x86_64")]
    fn avx2(self, lanes: simd::x86::Avx2) -> W::Output {
        #[cfg(test)]
        simd::probe::enter();
        self.0.run(super::kernel::avx2::Avx2Fma6x16(lanes))
    }
    #[cfg(target_arch = "x86_64")]
    fn avx512(self, lanes: simd::x86::Avx512) -> W::Output {
        #[cfg(test)]
        simd::probe::enter();
        self.0.run(super::kernel::avx512::Avx512_8x32(lanes))
    }
    #[cfg(target_arch = "aarch64")]
    fn neon(self, lanes: simd::neon::Neon) -> W::Output {
        #[cfg(test)]
        simd::probe::enter();
        self.0.run(super::kernel::neon::Neon8x12(lanes))
    }
}

impl Isa {
    /// The microkernel's name, `<isa>_<mr>x<nr>`.
    pub fn kernel_name(self) -> &'static str {
        struct Name;
        impl WithKernel for Name {
            type Output = &'static str;
            fn run<K: MicroKernel>(self, _: K) -> &'static str {
                K::NAME
            }
        }
        dispatch(self, Name).unwrap_or("unavailable")
    }

    /// The kernel's tile `(MR, NR)`, for operands packed ahead of time.
    pub(crate) fn tile(self) -> Result<(usize, usize), ConvError> {
        struct Tile;
        impl WithKernel for Tile {
            type Output = (usize, usize);
            fn run<K: MicroKernel>(self, _: K) -> (usize, usize) {
                (K::MR, K::NR)
            }
        }
        dispatch(self, Tile)
    }
}
