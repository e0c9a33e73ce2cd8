//! `C = A·B (+ bias, activation)` for a B of a few columns (`n <=`
//! [`NARROW_N`]: a 1×1 convolution of a squeeze-and-excite block or a
//! classifier head on a 1×1 to 2×2 plane), straight from A's prepacked
//! panels: per column of B a matrix-vector product that streams A once at
//! memory speed, where the register tiles would compute `NR` columns and
//! keep one. The same sequence of operations as every GEMM path (see
//! [`super::KC`]), so the same bits.

use std::ops::Range;

use super::pack::PrepackedSource;
use crate::activation::Activation;
use crate::error::ConvError;
use crate::isa::Isa;
use crate::par;
use crate::simd::{self, Lanes, WithLanes};
#[cfg(target_arch = "x86_64")]
use crate::simd::{Fused, Scalar};

/// The widest B this path takes.
pub(crate) const NARROW_N: usize = 8;

/// Panels of A summed side by side: independent FMA chains that hide the
/// latency of each (a column's sum over K is one chain per output).
const PANELS: usize = 4;

/// From this many bytes of A up, [`gemm_narrow`] splits A's panels among
/// the threads it is given: the product streams A once, so two cores pull
/// it at twice one core's bandwidth (Zen 5, 2 threads: DenseNet's
/// classifier 1024 -> 1000, 4 MB, and MobileNetV3's 960 -> 1280), and a
/// fork of a few µs is repaid from about 10 µs of streaming.
const SPLIT_MIN_BYTES: usize = 256 << 10;

/// Whether [`gemm_narrow`] splits an `m × k` A among threads (when given
/// more than one): from [`SPLIT_MIN_BYTES`] of weights.
pub(crate) fn narrow_split_pays(m: usize, k: usize) -> bool {
    m.saturating_mul(k).saturating_mul(4) >= SPLIT_MIN_BYTES
}

/// `out (m × n, row-major) = A·b + bias`, then `act`, where `a_t` is the
/// `k × m` transpose of A prepacked by [`super::prepack`] and `b` the
/// `k × n` matrix, row-major; on up to `threads` threads of the current
/// rayon pool (each row is computed the same way on any of them).
///
/// # Panics
/// If `n > NARROW_N` or a buffer does not match the shapes.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_narrow(
    isa: Isa,
    (m, n, k): (usize, usize, usize),
    a_t: &PrepackedSource,
    b: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    out: &mut [f32],
    threads: usize,
) -> Result<(), ConvError> {
    let (panel, _, chunk, _) = a_t.layout();
    assert!(
        n <= NARROW_N && b.len() == k * n && out.len() == m * n && bias.is_none_or(|b| b.len() == m),
        "a narrow product's buffers"
    );
    assert!(a_t.covers(k, m) && panel <= 32 && chunk > 0, "A prepacked for k × m");
    let panels = m.div_ceil(panel);
    let parts = if threads > 1 && narrow_split_pays(m, k) { threads.min(panels) } else { 1 };
    if parts == 1 {
        // (No list of parts: a squeeze-and-excite layer's call allocates nothing.)
        return simd::dispatch(isa, Narrow { m, n, k, a_t, b, bias, act, out, panels: 0..panels });
    }
    // Part i: panels i·per_part .. (i+1)·per_part and their rows of `out`,
    // on the crate's fork (the caller takes parts too; rayon's parallel
    // iterator cost more than it saved on MobileNetV3's 960 -> 240 on two
    // threads). The ISA is checked first, so no part can fail.
    isa.tile()?;
    let per_part = panels.div_ceil(parts);
    par::for_each_chunk_mut(threads, out, per_part * panel * n, |i, out| {
        let panels = i * per_part..((i + 1) * per_part).min(panels);
        let done = simd::dispatch(isa, Narrow { m, n, k, a_t, b, bias, act, out, panels });
        debug_assert!(done.is_ok(), "the ISA was checked above");
    });
    Ok(())
}

/// The name of [`gemm_narrow`]'s kernel on `isa` (on the portable paths,
/// the unfused one included, its products as those paths' GEMM rounds them).
pub(crate) fn narrow_kernel_name(isa: Isa) -> &'static str {
    match isa {
        Isa::Avx512 | Isa::Avx2Fma => "gemv_avx2",
        Isa::Neon => "gemv_neon",
        _ => "gemv_portable",
    }
}

struct Narrow<'a> {
    m: usize,
    n: usize,
    k: usize,
    a_t: &'a PrepackedSource,
    b: &'a [f32],
    bias: Option<&'a [f32]>,
    act: Activation,
    /// The rows of this part's panels.
    out: &'a mut [f32],
    /// The panels of A this part computes.
    panels: Range<usize>,
}

impl WithLanes for Narrow<'_> {
    type Output = ();

    #[inline(always)]
    fn run<L: Lanes>(self, _: L) {
        let (panel, ..) = self.a_t.layout();
        // SAFETY: a token of `L` exists and `simd::dispatch` entered its
        // features; each arm's panel is `V·N` floats wide.
        unsafe {
            match panel / L::N {
                _ if !panel.is_multiple_of(L::N) => unreachable!("panel {panel} of whole vectors of {}", L::N),
                1 => narrow::<L, 1>(self),
                2 => narrow::<L, 2>(self),
                4 => narrow::<L, 4>(self),
                6 => narrow::<L, 6>(self),
                8 => narrow::<L, 8>(self),
                v => unreachable!("{v} vectors a panel row"),
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn avx2(self, lanes: simd::x86::Avx2) {
        // AVX2's kernel packs A 6 rows a panel: one float at a time, its
        // multiply-adds still fused (this runs inside the AVX2 + FMA features).
        if self.a_t.layout().0.is_multiple_of(8) { self.run(lanes) } else { self.run(Scalar(Fused)) }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn avx512(self, lanes: simd::x86::Avx512) {
        self.avx2(lanes.avx2())
    }
}

/// [`gemm_narrow`] with panels of `V` vectors of `L`.
///
/// # Safety
/// `L`'s instructions are available; the panel width is `V·N`.
#[inline(always)]
unsafe fn narrow<L: Lanes, const V: usize>(job: Narrow<'_>) {
    let Narrow { m, n, k, a_t, b, bias, act, out, panels } = job;
    let (panel, padded_w, chunk, data) = a_t.layout();
    assert_eq!(panel, V * L::N);
    let row0 = panels.start * panel;
    for j in 0..n {
        let mut p0 = panels.start;
        while p0 < panels.end {
            // The running C of PANELS panels (or of the last one), then its rows out.
            let mut c = [[0.0f32; 32]; PANELS];
            let count = if p0 + PANELS <= panels.end { PANELS } else { 1 };
            for (index, k0) in (0..k).step_by(chunk).enumerate() {
                let kc = chunk.min(k - k0);
                let first = &data[k0 * padded_w + p0 * kc * panel..];
                let x = &b[k0 * n + j..];
                assert!(first.len() >= count * kc * panel && x.len() > (kc - 1) * n);
                // SAFETY: panels p0..p0 + count of this chunk, kc rows of
                // `panel` floats each, and x[kk·n] for kk < kc, are inside
                // (asserted); CPU support is the caller's.
                let sums = unsafe {
                    if count == PANELS {
                        chunk_sums::<L, V, PANELS>(first, kc, panel, x, n)
                    } else {
                        let [one] = chunk_sums::<L, V, 1>(first, kc, panel, x, n);
                        let mut sums = [[0.0f32; 32]; PANELS];
                        sums[0] = one;
                        sums
                    }
                };
                for (c, s) in c.iter_mut().zip(&sums).take(count) {
                    for (c, &s) in c.iter_mut().zip(s).take(panel) {
                        // The first chunk stores, later ones add (rounded once).
                        *c = if index == 0 { s } else { *c + s };
                    }
                }
            }
            for (q, c) in c.iter().enumerate().take(count) {
                for (r, &v) in c.iter().enumerate().take(panel) {
                    let i = (p0 + q) * panel + r;
                    if i < m {
                        out[(i - row0) * n + j] = act.apply(bias.map_or(v, |b| v + b[i]));
                    }
                }
            }
            p0 += count;
        }
    }
}

/// One K chunk of `P` panels side by side: `Σ_kk a[kk][r] · x[kk·n]` for
/// each of their rows `r`, in order from `+0.0`.
///
/// # Safety
/// `L`'s instructions are available; `a` holds `P` panels of `kc × V·N`
/// floats, `x` has `x[kk·n]` for `kk < kc`.
#[inline(always)]
unsafe fn chunk_sums<L: Lanes, const V: usize, const P: usize>(
    a: &[f32],
    kc: usize,
    panel: usize,
    x: &[f32],
    n: usize,
) -> [[f32; 32]; P] {
    // SAFETY: CPU support is the caller's guarantee.
    let mut acc = [[unsafe { L::splat(0.0) }; V]; P];
    for kk in 0..kc {
        // SAFETY: row kk of each panel (`panel` floats at q·kc·panel +
        // kk·panel) and x[kk·n] are inside (the caller's extents); CPU as above.
        unsafe {
            let xv = L::splat(*x.get_unchecked(kk * n));
            for (q, acc) in acc.iter_mut().enumerate() {
                let row = a.as_ptr().add(q * kc * panel + kk * panel);
                for (v, acc) in acc.iter_mut().enumerate() {
                    *acc = L::fma(L::load(row.add(v * L::N)), xv, *acc);
                }
            }
        }
    }
    let mut sums = [[0.0f32; 32]; P];
    for (s, acc) in sums.iter_mut().zip(&acc) {
        for (v, &a) in acc.iter().enumerate() {
            // SAFETY: V·N = panel <= 32 floats; CPU support as above.
            unsafe { L::store(s.as_mut_ptr().add(v * L::N), a) };
        }
    }
    sums
}
