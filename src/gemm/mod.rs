//! The matrix-multiply engine: `sgemm` (matrixmultiply's contract) and the
//! crate-internal entry the convolution code calls with its own operand
//! sources. Knows nothing of images or convolution. This file is the one
//! surface the rest of the crate imports from the engine.

mod blocking;
mod dispatch;
mod kernel;
mod loops;
mod narrow;
mod pack;

pub(crate) use blocking::cache_sizes;
pub(crate) use dispatch::{WithKernel, dispatch};
pub(crate) use kernel::{MicroKernel, Store, StoreSpec, TileOut};
pub(crate) use loops::{CMatrix, Epilogue, PARALLEL_MIN_FLOPS, Parallelism};
pub(crate) use narrow::{NARROW_N, gemm_narrow, narrow_kernel_name, narrow_split_pays};
pub(crate) use pack::{
    ColumnsFrom, PackRows, PackedPanels, PanelSource, PrepackedSource, StridedSource, copy_floats, enter_pack,
    with_panel_width, zero_floats,
};

use crate::activation::Activation;
use crate::error::ConvError;
use crate::isa::Isa;

/// The fixed length of a K chunk, the same on every ISA (the reproducibility
/// rule). Also the pc-loop step: a `KC × NR` B micro-panel is 16 KiB with
/// `NR = 16`, half of a 32 KiB L1.
///
/// The exact sequence of operations for `C = alpha·A·B + beta·C` (then
/// `+ bias`, then the activation), for each element `c(i, j)`:
///
/// 1. K is cut into chunks `[0, KC), [KC, 2·KC), …` (one empty chunk when `k == 0`).
/// 2. For each chunk, `acc = +0.0`, then for each `l` of the chunk in
///    increasing order `acc = mul_add(a(i,l), b(l,j), acc)`.
/// 3. The first chunk stores `c = alpha·acc` when `beta == 0` (C unread),
///    else `c = mul_add(beta, c, alpha·acc)`; each later chunk stores
///    `c = mul_add(1, c, alpha·acc)`, i.e. `c + alpha·acc` rounded once.
/// 4. After the last chunk, `c = c + bias(i)` if there is a bias, then
///    `c = activation(c)`.
///
/// No step depends on the thread count, on how C is split, or on the ISA.
pub(crate) const KC: usize = 256;

/// `C = alpha·A·B + beta·C` for an `m × k` matrix A and a `k × n` matrix B,
/// the same call as `matrixmultiply::sgemm`.
///
/// Element `(i, j)` of A is at `a + i·rsa + j·csa`, likewise for B and C;
/// strides are in elements and may be negative or zero-padded (any layout).
/// When `beta == 0`, C is only written (NaN or garbage in it is overwritten).
/// Runs on the path [`Isa::detect`] picks, in the current rayon pool when the
/// product is large enough (about 1.5 MFLOP) to repay a fork.
///
/// The result is reproducible: bit-identical for any thread count and on
/// every FMA path (AVX2, NEON, portable); the crate docs give the exact
/// sequence of operations.
///
/// # Safety
/// As for `matrixmultiply::sgemm`: for every `i < m`, `j < n`, `l < k`, the
/// addresses `a + i·rsa + l·csa` and `b + l·rsb + j·csb` must be readable and
/// `c + i·rsc + j·csc` readable and writable, the elements of C pairwise
/// distinct, C not overlapping A or B, and no other thread writing any of them.
///
/// # Example
/// ```
/// // [1 2; 3 4] · [5 6; 7 8] = [19 22; 43 50], all row-major.
/// let a = [1.0f32, 2.0, 3.0, 4.0];
/// let b = [5.0f32, 6.0, 7.0, 8.0];
/// let mut c = [0.0f32; 4];
/// // SAFETY: 2x2 row-major matrices (row stride 2, column stride 1), in bounds.
/// unsafe {
///     convgemm::sgemm(2, 2, 2, 1.0, a.as_ptr(), 2, 1, b.as_ptr(), 2, 1, 0.0, c.as_mut_ptr(), 2, 1);
/// }
/// assert_eq!(c, [19.0, 22.0, 43.0, 50.0]);
/// ```
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: *const f32,
    rsa: isize,
    csa: isize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    beta: f32,
    c: *mut f32,
    rsc: isize,
    csc: isize,
) {
    // SAFETY: the caller's guarantees, passed on; the detected path is available.
    let done = unsafe { sgemm_with_isa(Isa::detect(), m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc) };
    debug_assert!(done.is_ok(), "the detected path is always available");
}

/// [`sgemm`] on a chosen instruction-set path (tests and benchmarks use it to
/// run every path the CPU has). `Err(IsaUnavailable)` if this CPU cannot run
/// `isa`; nothing is read or written then.
///
/// # Safety
/// As for [`sgemm`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm_with_isa(
    isa: Isa,
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: *const f32,
    rsa: isize,
    csa: isize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    beta: f32,
    c: *mut f32,
    rsc: isize,
    csc: isize,
) -> Result<(), ConvError> {
    // SAFETY: A (m × k) read as its transpose (k × m): element (l, i) at
    // a + l·csa + i·rsa, which the caller guarantees; B likewise.
    let (a_t, b) = unsafe { (StridedSource::new(a, csa, rsa), StridedSource::new(b, rsb, csb)) };
    let epi = Epilogue { alpha, beta, bias: std::ptr::null(), act: Activation::None };
    let c = CMatrix { ptr: c, rs: rsc, cs: csc };
    // SAFETY: the caller's guarantees cover the extents and C.
    unsafe { gemm(isa, m, n, k, &a_t, &b, c, &epi, Parallelism::Rayon) }
}

/// The engine entry for the crate: `C = alpha·A·B + beta·C (+ bias, act)`
/// with `a_t` the `k × m` source of Aᵀ and `b` the `k × n` source of B.
///
/// # Safety
/// As for `loops::gemm`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm<A: PanelSource, B: PanelSource>(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    a_t: &A,
    b: &B,
    c: CMatrix,
    epi: &Epilogue,
    par: Parallelism,
) -> Result<(), ConvError> {
    struct Run<'a, A, B> {
        m: usize,
        n: usize,
        k: usize,
        a_t: &'a A,
        b: &'a B,
        c: CMatrix,
        epi: &'a Epilogue,
        par: Parallelism,
    }
    impl<A: PanelSource, B: PanelSource> WithKernel for Run<'_, A, B> {
        type Output = ();
        fn run<K: MicroKernel>(self, kern: K) {
            // SAFETY: `gemm`'s caller guarantees what loops::gemm needs.
            unsafe { loops::gemm(kern, self.m, self.n, self.k, self.a_t, self.b, self.c, self.epi, self.par) }
        }
    }
    dispatch(isa, Run { m, n, k, a_t, b, c, epi, par })
}

/// Which operand of the kernel a prepacked matrix feeds: its panels are
/// `MR` wide for A (read as Aᵀ) and `NR` wide for B.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Panels {
    A,
    B,
}

/// The `k × w` source `src` packed once, for every K chunk, in the panels of
/// `isa`'s kernel for the operand `panels` (packed on that path's lanes).
pub(crate) fn prepack<S: PanelSource>(
    isa: Isa,
    src: &S,
    panels: Panels,
    k: usize,
    w: usize,
) -> Result<PrepackedSource, ConvError> {
    struct Prepack<'a, S> {
        src: &'a S,
        panels: Panels,
        k: usize,
        w: usize,
    }
    impl<S: PanelSource> WithKernel for Prepack<'_, S> {
        type Output = PrepackedSource;
        fn run<K: MicroKernel>(self, kern: K) -> PrepackedSource {
            let panel = if self.panels == Panels::A { K::MR } else { K::NR };
            PrepackedSource::new(kern.lanes(), self.src, panel, self.k, self.w, KC)
        }
    }
    dispatch(isa, Prepack { src, panels, k, w })
}
