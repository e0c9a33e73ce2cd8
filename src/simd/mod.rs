//! Vector lanes: the one abstraction every hand-vectorised loop of the crate
//! is written against (depthwise, pooling, packing, the direct path's
//! epilogue), its implementations per instruction set, and the dispatch that
//! turns an [`Isa`] into the zero-sized token of its lanes. The only `match`
//! on `Isa`; knows no convolution and no GEMM.

use crate::activation::Activation;
use crate::error::ConvError;
use crate::isa::Isa;

#[cfg(target_arch = "aarch64")]
pub(crate) mod neon;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86;

/// `N` floats in a register and the operations on them. A value of a type
/// implementing `Lanes` is a token: it exists only where the CPU runs its
/// instructions ([`select`] makes them), which is what the `unsafe`
/// operations below require.
///
/// `fma(a, b, c)` is `a·b + c` rounded once, like `f32::mul_add` (except
/// `Scalar<Unfused>`, which rounds twice); `activate` is
/// [`Activation::apply`] on every lane, bit for bit.
pub(crate) trait Lanes: Copy + Send + Sync {
    /// Floats per register.
    const N: usize;
    /// Vector registers (accumulators, inputs and a broadcast must fit).
    const REGS: usize;
    /// A register of `N` floats.
    type V: Copy;

    /// Runs `work` with these lanes, compiled with their target features
    /// (`work`'s methods must be `#[inline(always)]` for the features to
    /// reach its loops).
    fn enter<W: WithLanes>(self, work: W) -> W::Output;

    /// # Safety
    /// The CPU supports the lanes' instructions.
    unsafe fn splat(x: f32) -> Self::V;
    /// # Safety
    /// `p .. p + N` readable; CPU support.
    unsafe fn load(p: *const f32) -> Self::V;
    /// # Safety
    /// `p .. p + N` writable; CPU support.
    unsafe fn store(p: *mut f32, v: Self::V);
    /// # Safety
    /// The CPU supports the lanes' instructions.
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// # Safety
    /// The CPU supports the lanes' instructions.
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    /// [`Activation::apply`] on every lane, bit for bit.
    ///
    /// # Safety
    /// The CPU supports the lanes' instructions.
    unsafe fn activate(act: Activation, v: Self::V) -> Self::V;
    /// The even and the odd floats of the `2N` at `p`:
    /// `(p[0], p[2], …, p[2N − 2])` and `(p[1], p[3], …, p[2N − 1])`.
    ///
    /// # Safety
    /// `p .. p + 2N` readable; CPU support.
    unsafe fn deinterleave(p: *const f32) -> (Self::V, Self::V);
    /// The transpose of an `N × N` block, row `j` of it stored at `dst(j)`:
    /// `dst(j)[i] = src[i·src_stride + j]` for `i, j < N` (by default float
    /// by float).
    ///
    /// # Safety
    /// Those floats readable and writable, not overlapping; CPU support.
    #[inline(always)]
    unsafe fn transpose_square(src: *const f32, src_stride: usize, dst: impl Fn(usize) -> *mut f32) {
        for j in 0..Self::N {
            let row = dst(j);
            for i in 0..Self::N {
                // SAFETY: the caller's guarantees.
                unsafe { *row.add(i) = *src.add(i * src_stride + j) };
            }
        }
    }
    /// The transpose of an 8 × 8 block, row `j` of it stored at `dst(j)`:
    /// `dst(j)[i] = src[i·src_stride + j]` for `i, j < 8` (as
    /// [`Lanes::transpose_rows_8x8`] does it).
    ///
    /// # Safety
    /// Those floats readable and writable, not overlapping; CPU support.
    #[inline(always)]
    unsafe fn transpose_8x8(src: *const f32, src_stride: usize, dst: impl Fn(usize) -> *mut f32) {
        let rows = std::array::from_fn(|i| src.wrapping_add(i * src_stride));
        // SAFETY: the caller's guarantees, row by row.
        unsafe { Self::transpose_rows_8x8(&rows, dst) }
    }
    /// The transpose of 8 rows of 8 floats, each at its own address, row
    /// `j` of it stored at `dst(j)`: `dst(j)[i] = rows[i][j]` for
    /// `i, j < 8` (in registers where the lanes have a transpose, by
    /// default float by float).
    ///
    /// # Safety
    /// `rows[i] .. rows[i] + 8` readable and `dst(j) .. dst(j) + 8`
    /// writable for `i, j < 8`, not overlapping; CPU support.
    #[inline(always)]
    unsafe fn transpose_rows_8x8(rows: &[*const f32; 8], dst: impl Fn(usize) -> *mut f32) {
        for j in 0..8 {
            let out = dst(j);
            for (i, row) in rows.iter().enumerate() {
                // SAFETY: the caller's guarantees.
                unsafe { *out.add(i) = *row.add(j) };
            }
        }
    }
    /// The transpose of `t`'s block, in whole 8 × 8 tiles where the lanes
    /// have a register transpose (none by default): the pixels `0..p8` and
    /// channels `0..m8` it returns. The caller finishes the rest.
    ///
    /// # Safety
    /// As [`Transpose`] says for `out`; CPU support.
    unsafe fn transpose_8x8_tiles(t: &Transpose) -> (usize, usize) {
        let _ = t;
        (0, 0)
    }
}

/// A pixel-major block transposed into channel-major rows with a bias and
/// an activation: `out[co·n + p] = act(block[p·m + co] + bias[co])` (no `+`
/// without a bias) for the `npx = block.len() / m` pixels and `m` channels.
/// `out + co·n + p` must be writable for `co < m`, `p < npx`, and no one
/// else access those floats meanwhile.
pub(crate) struct Transpose<'a> {
    pub block: &'a [f32],
    pub m: usize,
    pub out: *mut f32,
    pub n: usize,
    pub bias: Option<&'a [f32]>,
    pub act: Activation,
}

/// [`Lanes`] with masked loads and stores (lanes off are neither read nor
/// written, so cannot fault): x86-64's.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) trait MaskedLanes: Lanes {
    /// A lane mask.
    type M: Copy;
    /// The lanes `lo .. hi` (`lo <= hi <= N`).
    ///
    /// # Safety
    /// The CPU supports the lanes' instructions.
    unsafe fn mask(lo: usize, hi: usize) -> Self::M;
    /// Lane `j` of `m` is `p[j]`, the others `0.0` and not read (slower
    /// than [`Lanes::load`]).
    ///
    /// # Safety
    /// `p + j` readable for the lanes `j` of `m`; CPU support.
    unsafe fn load_masked(m: Self::M, p: *const f32) -> Self::V;
    /// Lanes `0..len` of `v` to `p[0..len]` (`len <= N`); the floats past
    /// them are not written.
    ///
    /// # Safety
    /// `p[0..len]` writable; CPU support.
    unsafe fn store_first(p: *mut f32, v: Self::V, len: usize);
    /// The even and the odd lanes of `a` then `b`: `(a0 a2 … b0 b2 …,
    /// a1 a3 … b1 b3 …)`, [`Lanes::deinterleave`] of two loaded vectors.
    ///
    /// # Safety
    /// CPU support.
    unsafe fn unzip(a: Self::V, b: Self::V) -> (Self::V, Self::V);
}

/// Code generic over the lanes, run by [`dispatch`] or [`Lanes::enter`]
/// inside the lanes' target features. A path with a kernel of its own
/// overrides that path's method; every other path runs [`WithLanes::run`].
/// Implementations mark every method `#[inline(always)]`.
pub(crate) trait WithLanes: Sized {
    type Output;
    fn run<L: Lanes>(self, lanes: L) -> Self::Output;

    /// The AVX2 + FMA path.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn avx2(self, lanes: x86::Avx2) -> Self::Output {
        self.run(lanes)
    }

    /// The AVX-512 path (which also has AVX2 + FMA: `lanes.avx2()`).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn avx512(self, lanes: x86::Avx512) -> Self::Output {
        self.run(lanes)
    }
}

/// One method per instruction-set path, each handed its lanes token: how a
/// caller maps an [`Isa`] to its own per-path types (the GEMM to its
/// microkernels) through [`select`].
pub(crate) trait PerPath {
    type Output;
    fn portable(self, lanes: Scalar<Fused>) -> Self::Output;
    fn portable_unfused(self, lanes: Scalar<Unfused>) -> Self::Output;
    #[cfg(target_arch = "x86_64")]
    fn avx2(self, lanes: x86::Avx2) -> Self::Output;
    #[cfg(target_arch = "x86_64")]
    fn avx512(self, lanes: x86::Avx512) -> Self::Output;
    #[cfg(target_arch = "aarch64")]
    fn neon(self, lanes: neon::Neon) -> Self::Output;
}

/// Hands `work` the token of `isa`'s lanes, or says the path is unavailable.
/// The one place an [`Isa`] becomes code.
pub(crate) fn select<P: PerPath>(isa: Isa, work: P) -> Result<P::Output, ConvError> {
    if !isa.is_available() {
        return Err(ConvError::IsaUnavailable { isa: isa.name() });
    }
    match isa {
        Isa::Portable => Ok(work.portable(Scalar(Fused))),
        Isa::PortableUnfused => Ok(work.portable_unfused(Scalar(Unfused))),
        // SAFETY: the path is available: the CPU has AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => Ok(work.avx2(unsafe { x86::Avx2::new_unchecked() })),
        // SAFETY: the path is available: the CPU has AVX-512F, AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => Ok(work.avx512(unsafe { x86::Avx512::new_unchecked() })),
        // SAFETY: the path is available: the CPU has NEON.
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => Ok(work.neon(unsafe { neon::Neon::new_unchecked() })),
        #[allow(unreachable_patterns)]
        _ => Err(ConvError::IsaUnavailable { isa: isa.name() }),
    }
}

/// Runs `work` on the lanes of `isa`, inside their target features.
pub(crate) fn dispatch<W: WithLanes>(isa: Isa, work: W) -> Result<W::Output, ConvError> {
    select(isa, Enter(work))
}

/// [`dispatch`] as a [`PerPath`]: enters each path's lanes.
struct Enter<W>(W);

impl<W: WithLanes> PerPath for Enter<W> {
    type Output = W::Output;
    fn portable(self, lanes: Scalar<Fused>) -> W::Output {
        lanes.enter(self.0)
    }
    fn portable_unfused(self, lanes: Scalar<Unfused>) -> W::Output {
        lanes.enter(self.0)
    }
    #[cfg(target_arch = "x86_64")]
    fn avx2(self, lanes: x86::Avx2) -> W::Output {
        lanes.enter(self.0)
    }
    #[cfg(target_arch = "x86_64")]
    fn avx512(self, lanes: x86::Avx512) -> W::Output {
        lanes.enter(self.0)
    }
    #[cfg(target_arch = "aarch64")]
    fn neon(self, lanes: neon::Neon) -> W::Output {
        lanes.enter(self.0)
    }
}

/// The multiply-add of a scalar path.
pub(crate) trait MulAdd: Copy + Send + Sync {
    fn madd(a: f32, b: f32, c: f32) -> f32;
}

/// Fused: one rounding, the reproducibility rule's operation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fused;
impl MulAdd for Fused {
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
    #[inline(always)]
    fn madd(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// One lane of plain `f32`, multiply-adds by `M`: the portable paths.
/// `Scalar<Fused>` is the oracle the vector lanes match bit for bit.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scalar<M>(pub(crate) M);

impl<M: MulAdd> Lanes for Scalar<M> {
    const N: usize = 1;
    const REGS: usize = 16;
    type V = f32;
    #[inline(always)]
    fn enter<W: WithLanes>(self, work: W) -> W::Output {
        work.run(self)
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> f32 {
        x
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> f32 {
        // SAFETY: the caller guarantees `p` is readable.
        unsafe { *p }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: f32) {
        // SAFETY: the caller guarantees `p` is writable.
        unsafe { *p = v }
    }
    #[inline(always)]
    unsafe fn fma(a: f32, b: f32, c: f32) -> f32 {
        M::madd(a, b, c)
    }
    #[inline(always)]
    unsafe fn add(a: f32, b: f32) -> f32 {
        a + b
    }
    #[inline(always)]
    unsafe fn activate(act: Activation, v: f32) -> f32 {
        act.apply(v)
    }
    #[inline(always)]
    unsafe fn deinterleave(p: *const f32) -> (f32, f32) {
        // SAFETY: the caller guarantees p[0] and p[1] readable.
        unsafe { (*p, *p.add(1)) }
    }
}

/// Hints the cache to fetch the line holding `p` toward L1 for a coming
/// write (`prefetchw` on x86-64, nothing elsewhere): a hint only, it reads
/// nothing and cannot fault, whatever the address.
#[inline(always)]
pub(crate) fn prefetch_for_write(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_ET0, _mm_prefetch};
        // SAFETY: a prefetch does not access memory architecturally.
        unsafe { _mm_prefetch::<_MM_HINT_ET0>(p.cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
pub(crate) mod probe {
    //! Counts, per thread, the entries into vector code (a lanes token's
    //! `enter`, a SIMD microkernel's dispatch), so a test can show that a
    //! forced portable run executes none.
    use std::cell::Cell;

    thread_local! {
        static ENTRIES: Cell<usize> = const { Cell::new(0) };
    }

    /// Notes one entry into vector code on this thread.
    pub(crate) fn enter() {
        ENTRIES.with(|c| c.set(c.get() + 1));
    }

    /// Entries so far on this thread.
    pub(crate) fn entries() -> usize {
        ENTRIES.with(Cell::get)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The transposes of every path against their definitions.
    struct Transposes;

    impl WithLanes for Transposes {
        type Output = ();
        #[inline(always)]
        fn run<L: Lanes>(self, _: L) {
            let n = L::N;
            let stride = n + 3;
            let src: Vec<f32> = (0..n * stride).map(|i| i as f32).collect();
            let mut square = vec![f32::NAN; n * n];
            let dst = square.as_mut_ptr();
            // SAFETY: N rows of N floats at `stride` apart inside `src`; N
            // rows of N floats inside `square`; the test runs on a path the
            // CPU has.
            unsafe { L::transpose_square(src.as_ptr(), stride, |j| dst.wrapping_add(j * n)) };
            for (j, row) in square.chunks(n).enumerate() {
                for (i, &v) in row.iter().enumerate() {
                    assert_eq!(v, src[i * stride + j], "square N = {n}: row {j} column {i}");
                }
            }
            // Rows at scattered addresses, in another order than memory's.
            let pool: Vec<f32> = (0..8 * 11).map(|i| i as f32 * 0.5).collect();
            let rows: [*const f32; 8] = std::array::from_fn(|i| pool[(7 - i) * 11 + i % 3..].as_ptr());
            let mut out = [[f32::NAN; 8]; 8];
            let dst = out.as_mut_ptr();
            // SAFETY: 8 floats from each row start inside `pool`, 8 rows of
            // 8 inside `out`; a path the CPU has.
            unsafe { L::transpose_rows_8x8(&rows, |j| dst.wrapping_add(j).cast::<f32>()) };
            for (j, row) in out.iter().enumerate() {
                for (i, &v) in row.iter().enumerate() {
                    assert_eq!(v, pool[(7 - i) * 11 + i % 3 + j], "rows: row {j} column {i}");
                }
            }
        }
    }

    /// `store_first` writes lanes `0..len` and nothing past them, for
    /// every `len` (AVX2 stores in pieces, AVX-512 under a mask).
    #[cfg(target_arch = "x86_64")]
    fn check_store_first<L: MaskedLanes>() {
        let n = L::N;
        let lanes: Vec<f32> = (0..n).map(|i| i as f32 + 0.5).collect();
        for len in 0..=n {
            let mut dst = vec![-1.0f32; n + 2];
            // SAFETY: the caller checked the CPU; `n` readable floats, `len
            // <= n` writable ones from `dst[1]`.
            unsafe { L::store_first(dst[1..].as_mut_ptr(), L::load(lanes.as_ptr()), len) };
            let want: Vec<f32> = (0..n + 2).map(|i| if (1..=len).contains(&i) { lanes[i - 1] } else { -1.0 }).collect();
            assert_eq!(dst, want, "N = {n}, len = {len}");
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn store_first_writes_only_its_lanes() {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            check_store_first::<x86::Avx2>();
        }
        if Isa::Avx512.is_available() {
            check_store_first::<x86::Avx512>();
        }
    }

    #[test]
    fn transposes_match_their_definitions() {
        for isa in Isa::available() {
            dispatch(isa, Transposes).expect("an available ISA");
        }
    }
}
