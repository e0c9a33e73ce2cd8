//! Which instruction set runs: detected once and cached, overridable per
//! call (tests, benches) or per process (`CONVGEMM_ISA`). The only place that
//! detects CPU features or matches on [`Isa`].

use std::sync::OnceLock;

use super::kernel::MicroKernel;
use super::kernel::portable::{PORTABLE, PORTABLE_UNFUSED};
use crate::ConvError;

/// An instruction-set path: a microkernel family and what it needs.
///
/// Every path but [`Isa::PortableUnfused`] gives bit-identical results (see
/// the crate docs on reproducibility).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Isa {
    /// Plain Rust with `f32::mul_add`: runs everywhere, the reference the SIMD
    /// paths must match bit for bit. Slow where FMA is a library call.
    Portable,
    /// Plain Rust with `a * b + c` (two roundings): the path for CPUs without
    /// FMA. Differs from the others by rounding only.
    PortableUnfused,
    /// x86-64 AVX2 + FMA (`avx2_fma_6x16`).
    Avx2Fma,
    /// x86-64 AVX-512F and DQ (`avx512_8x32`): twice AVX2's FMA width, which
    /// Zen 5 and Intel server cores run at full rate. Needs AVX2 too: the
    /// depthwise kernel, the average pool and the exact max-pool scan run
    /// their AVX2 code on this path.
    Avx512,
    /// aarch64 NEON (`neon_8x12`).
    Neon,
}

impl Isa {
    /// Every path, in order of preference from slowest to fastest.
    pub const ALL: [Isa; 5] = [Isa::Portable, Isa::PortableUnfused, Isa::Avx2Fma, Isa::Avx512, Isa::Neon];

    /// The short name used in `CONVGEMM_ISA`, test output and bench ids.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::PortableUnfused => "portable_unfused",
            Isa::Avx2Fma => "avx2_fma",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
        }
    }

    /// The path named `name` (as [`Isa::name`] spells it).
    pub fn from_name(name: &str) -> Option<Isa> {
        Isa::ALL.into_iter().find(|isa| isa.name() == name)
    }

    /// Whether this CPU (and this build's target) can run the path.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Portable | Isa::PortableUnfused => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => super::kernel::avx2::Avx2Fma6x16::new().is_some(),
            // The path also runs AVX2 code (depthwise, pooling) and AVX-512DQ
            // (pooling's NaN/−0 test): it needs all three.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                super::kernel::avx512::Avx512_8x32::new().is_some()
                    && super::kernel::avx2::Avx2Fma6x16::new().is_some()
                    && is_x86_feature_detected!("avx512dq")
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => super::kernel::neon::Neon8x12::new().is_some(),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The paths this CPU can run.
    pub fn available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|isa| isa.is_available()).collect()
    }

    /// The path `conv2d` and `sgemm` use: `CONVGEMM_ISA` if it names an
    /// available path, else the fastest available one. Decided once per process.
    pub fn detect() -> Isa {
        static DETECTED: OnceLock<Isa> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            std::env::var("CONVGEMM_ISA")
                .ok()
                .and_then(|name| Isa::from_name(name.trim()))
                .filter(|isa| isa.is_available())
                .unwrap_or_else(Isa::best)
        })
    }

    /// The fastest available path, ignoring `CONVGEMM_ISA`.
    pub fn best() -> Isa {
        if Isa::Avx512.is_available() {
            Isa::Avx512
        } else if Isa::Avx2Fma.is_available() {
            Isa::Avx2Fma
        } else if Isa::Neon.is_available() {
            Isa::Neon
        } else if has_fast_fma() {
            Isa::Portable
        } else {
            Isa::PortableUnfused
        }
    }

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
}

impl Isa {
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

/// The direct one-input-channel convolution of `conv::depthwise` on the
/// lanes of `isa` (the portable paths use `f32::mul_add`, one lane).
#[allow(clippy::too_many_arguments)]
pub(crate) fn depthwise(
    isa: Isa,
    geo: &crate::conv::params::ConvGeometry,
    plane: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    act: super::Activation,
    out: &mut [f32],
    padded: &mut Vec<f32>,
) -> Result<(), ConvError> {
    use crate::conv::depthwise::{Scalar, depthwise_group};
    if !isa.is_available() {
        return Err(ConvError::IsaUnavailable { isa: isa.name() });
    }
    match isa {
        // SAFETY: scalar code needs no CPU feature.
        Isa::Portable | Isa::PortableUnfused => unsafe {
            depthwise_group::<Scalar>(geo, plane, weight, bias, act, out, padded)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: availability (AVX-512F) was checked above.
        Isa::Avx512 if crate::conv::depthwise::rolling::rolling_takes(geo) => unsafe {
            crate::conv::depthwise::x86::rolling_group_avx512(geo, plane, weight, bias, act, out)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: availability (AVX2 and FMA) was checked above.
        Isa::Avx2Fma if crate::conv::depthwise::rolling::rolling_takes(geo) => unsafe {
            crate::conv::depthwise::x86::rolling_group_avx2(geo, plane, weight, bias, act, out)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: availability (AVX2 and FMA; the AVX-512 path requires them too) was checked above.
        Isa::Avx2Fma | Isa::Avx512 => unsafe {
            crate::conv::depthwise::x86::depthwise_group_avx2(geo, plane, weight, bias, act, out, padded)
        },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: availability (NEON) was checked above.
        Isa::Neon => unsafe {
            crate::conv::depthwise::neon::depthwise_group_neon(geo, plane, weight, bias, act, out, padded)
        },
        #[allow(unreachable_patterns)]
        _ => return Err(ConvError::IsaUnavailable { isa: isa.name() }),
    }
    Ok(())
}

/// Whether the direct path (`conv::direct`) takes weights of this shape on `isa`.
pub(crate) fn direct_takes_weights(isa: Isa, c_in_per_group: usize, m: usize, k: usize) -> bool {
    struct Takes(usize, usize, usize);
    impl WithKernel for Takes {
        type Output = bool;
        fn run<K: MicroKernel>(self, _: K) -> bool {
            crate::conv::direct::takes_weights::<K>(self.0, self.1, self.2)
        }
    }
    dispatch(isa, Takes(c_in_per_group, m, k)).unwrap_or(false)
}

/// Whether the direct path (`conv::direct`) takes `geo` on `isa`.
pub(crate) fn direct_applies(isa: Isa, geo: &crate::conv::params::ConvGeometry) -> bool {
    struct Applies<'a>(&'a crate::conv::params::ConvGeometry);
    impl WithKernel for Applies<'_> {
        type Output = bool;
        fn run<K: MicroKernel>(self, _: K) -> bool {
            crate::conv::direct::applies::<K>(self.0)
        }
    }
    dispatch(isa, Applies(geo)).unwrap_or(false)
}

/// `conv::direct::direct_group` with the kernel of `isa`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn direct(
    isa: Isa,
    geo: &crate::conv::params::ConvGeometry,
    channels: &[f32],
    weights: &super::pack::PrepackedSource,
    bias: Option<&[f32]>,
    act: super::Activation,
    out: &mut [f32],
    par: super::loops::Parallelism,
) -> Result<(), ConvError> {
    struct Direct<'a> {
        geo: &'a crate::conv::params::ConvGeometry,
        channels: &'a [f32],
        weights: &'a super::pack::PrepackedSource,
        bias: Option<&'a [f32]>,
        act: super::Activation,
        out: &'a mut [f32],
        par: super::loops::Parallelism,
    }
    impl WithKernel for Direct<'_> {
        type Output = ();
        fn run<K: MicroKernel>(self, kern: K) {
            let Direct { geo, channels, weights, bias, act, out, par } = self;
            crate::conv::direct::direct_group(kern, geo, channels, weights, bias, act, out, par)
        }
    }
    dispatch(isa, Direct { geo, channels, weights, bias, act, out, par })
}

/// Whether `f32::mul_add` is a hardware instruction on this CPU.
fn has_fast_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // aarch64, riscv64 (D), powerpc64 and most others have a fused multiply-add.
        true
    }
}

/// Code generic over the microkernel, run with the kernel of an [`Isa`].
pub(crate) trait WithKernel {
    type Output;
    fn run<K: MicroKernel>(self, kern: K) -> Self::Output;
}

/// Runs `work` with the kernel of `isa`, or says the path is unavailable.
pub(crate) fn dispatch<W: WithKernel>(isa: Isa, work: W) -> Result<W::Output, ConvError> {
    let unavailable = ConvError::IsaUnavailable { isa: isa.name() };
    match isa {
        Isa::Portable => Ok(work.run(PORTABLE)),
        Isa::PortableUnfused => Ok(work.run(PORTABLE_UNFUSED)),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => super::kernel::avx2::Avx2Fma6x16::new().map(|k| work.run(k)).ok_or(unavailable),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => match (super::kernel::avx512::Avx512_8x32::new(), isa.is_available()) {
            (Some(k), true) => Ok(work.run(k)),
            _ => Err(unavailable),
        },
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => super::kernel::neon::Neon8x12::new().map(|k| work.run(k)).ok_or(unavailable),
        #[allow(unreachable_patterns)]
        _ => Err(unavailable),
    }
}
