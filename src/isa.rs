//! Which instruction-set path runs: the CPU's features, detected once per
//! process (the only place that asks the CPU), the [`Isa`] paths they allow,
//! and the choice among them (`CONVGEMM_ISA`, or the fastest). Code below
//! receives the path's token from `simd::select`, never asks again.

use std::sync::OnceLock;

/// What this CPU can run, read once.
#[derive(Clone, Copy, Debug, Default)]
struct Features {
    avx2_fma: bool,
    avx512f: bool,
    /// AVX-512DQ: not needed by any path, used by the max pool where present.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    avx512dq: bool,
    neon: bool,
    /// `f32::mul_add` is one instruction.
    fast_fma: bool,
}

/// The CPU's features, detected on first use.
fn features() -> Features {
    static FEATURES: OnceLock<Features> = OnceLock::new();
    *FEATURES.get_or_init(|| {
        #[allow(unused_mut)]
        let mut f = Features::default();
        #[cfg(target_arch = "x86_64")]
        {
            f.avx2_fma = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            f.avx512f = is_x86_feature_detected!("avx512f");
            f.avx512dq = is_x86_feature_detected!("avx512dq");
            f.fast_fma = is_x86_feature_detected!("fma");
        }
        #[cfg(target_arch = "aarch64")]
        {
            f.neon = std::arch::is_aarch64_feature_detected!("neon");
        }
        // aarch64, riscv64 (D), powerpc64 and most others have a fused multiply-add.
        #[cfg(not(target_arch = "x86_64"))]
        {
            f.fast_fma = true;
        }
        f
    })
}

/// Whether the CPU has AVX-512DQ (for `simd::x86::Avx512::dq`, the one
/// optional feature a path uses where present).
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx512dq() -> bool {
    features().avx512dq
}

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
    /// x86-64 AVX-512F (`avx512_8x32`): twice AVX2's FMA width, which
    /// Zen 5 and Intel server cores run at full rate. Needs AVX2 and FMA
    /// too (every AVX-512 CPU has them): the depthwise kernels outside the
    /// rolling rows, the direct path's transpose and the exact max-pool scan
    /// run 8-lane code on this path.
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
        let f = features();
        match self {
            Isa::Portable | Isa::PortableUnfused => true,
            Isa::Avx2Fma => cfg!(target_arch = "x86_64") && f.avx2_fma,
            Isa::Avx512 => cfg!(target_arch = "x86_64") && f.avx512f && f.avx2_fma,
            Isa::Neon => cfg!(target_arch = "aarch64") && f.neon,
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
        } else if features().fast_fma {
            Isa::Portable
        } else {
            Isa::PortableUnfused
        }
    }
}

#[cfg(test)]
impl Isa {
    /// Says that a test skipped this path, or fails if `CONVGEMM_REQUIRE_ISA`
    /// (a comma-separated list of names) requires it: CI sets it so that no
    /// path the CPU has passes by being skipped.
    pub(crate) fn skip_unless_required(self) {
        let required = std::env::var("CONVGEMM_REQUIRE_ISA").unwrap_or_default();
        assert!(
            !required.split(',').any(|r| r.trim() == self.name()),
            "{} is required (CONVGEMM_REQUIRE_ISA) but not available",
            self.name()
        );
        eprintln!("skipped {}: not available on this CPU", self.name());
    }
}
