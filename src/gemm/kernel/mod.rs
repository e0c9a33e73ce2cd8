//! The microkernel contract: what every `<isa>_<mr>x<nr>` kernel computes, how
//! its packed operands are laid out, and what it may read and write. The
//! kernels themselves live one per file; they know nothing of blocking.

pub(crate) mod portable;

use super::loops::KC;

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;

#[cfg(target_arch = "aarch64")]
pub(crate) mod neon;

/// What a kernel does with the tile of C it finishes.
///
/// Elementwise, after the activation-free product `acc = Σ_k a·b` of this
/// chunk, with `v = alpha · acc`:
/// - `Overwrite`: `c = v` (C is not read: NaN or garbage in it is ignored),
/// - `Update`: `c = mul_add(beta, c, v)` (one rounding: `beta·c + v`).
///
/// Then, only on the last K chunk: `c = c + bias[row]` if there is a bias,
/// then `c = activation(c)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Store {
    Overwrite,
    Update,
}

/// An activation fused into the store of the last K chunk.
///
/// `Relu` maps `x < 0` to `0` and keeps NaN; `Clamp` maps `x < min` to `min`
/// and `x > max` to `max`, keeping NaN.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Activation {
    /// The identity.
    #[default]
    None,
    /// `max(x, 0)`, NaN stays NaN.
    Relu,
    /// `min(max(x, min), max)`, NaN stays NaN.
    Clamp {
        /// Lower bound.
        min: f32,
        /// Upper bound.
        max: f32,
    },
}

impl Activation {
    /// The activation of one value; the SIMD kernels compute exactly this.
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::None => x,
            Activation::Relu => {
                if x < 0.0 {
                    0.0
                } else {
                    x
                }
            }
            Activation::Clamp { min, max } => {
                let y = if x < min { min } else { x };
                if y > max { max } else { y }
            }
        }
    }
}

/// A zeroed packed panel on the stack, aligned as the kernels' packed
/// operands are: room for `KC` rows of the widest panel (`avx512_8x32`'s 32).
#[repr(C, align(64))]
struct StackPanel([f32; KC * 32]);

impl StackPanel {
    fn new() -> Self {
        StackPanel([0.0; KC * 32])
    }

    /// The first `kc × width` floats; panics past the room.
    fn get(&mut self, kc: usize, width: usize) -> &mut [f32] {
        assert!(kc <= KC && width <= 32, "stack panel of {kc} × {width} floats: more than KC × 32");
        &mut self.0[..kc * width]
    }
}

/// Where a kernel writes: a `rows × cols` block of C (`rows <= MR`,
/// `cols <= NR`) with element `(i, j)` at `c + i·rsc + j·csc`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TileOut {
    pub c: *mut f32,
    pub rsc: isize,
    pub csc: isize,
    pub rows: usize,
    pub cols: usize,
}

/// How a kernel combines its accumulators with C (see [`Store`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct StoreSpec {
    pub alpha: f32,
    pub beta: f32,
    pub store: Store,
    /// Bias of the tile's first row (`rows` values follow), or null for none.
    /// Only set on the last K chunk.
    pub bias: *const f32,
    /// Only other than `None` on the last K chunk.
    pub act: Activation,
}

/// A register-tile microkernel: `C[MR×NR] (op)= alpha · A_panel · B_panel`.
///
/// # Packed operands
/// - `a`: an A micro-panel, `kc` columns of `MR` values each: element
///   `(i, k)` at `a[k·MR + i]`. Rows past the tile's `rows` hold zeros.
/// - `b`: a B micro-panel, `kc` rows of `NR` values each: element `(k, j)` at
///   `b[k·NR + j]`. Columns past `cols` hold zeros. Both 32-byte aligned.
///
/// # The arithmetic (the reproducibility rule)
/// Every accumulator starts at `+0.0` and takes, for `k = 0, 1, …, kc−1` in
/// that order, `acc = mul_add(a(i,k), b(k,j), acc)`: one fused multiply-add,
/// one rounding. Then the tile is stored as [`Store`] says. Every kernel of
/// every ISA performs exactly this sequence on each element, so all agree
/// bit for bit with the portable kernel (the unfused fallback excepted).
///
/// # Memory
/// The kernel reads `kc·MR` floats at `a`, `kc·NR` floats at `b`, `rows`
/// floats at `bias` (when not null) and reads/writes exactly the
/// `rows × cols` elements of C described by `out` — nothing else.
pub(crate) trait MicroKernel: Copy + Send + Sync {
    /// Tile rows.
    const MR: usize;
    /// Tile columns.
    const NR: usize;
    /// `<isa>_<mr>x<nr>`, as tests and benches call it.
    const NAME: &'static str;

    /// # Safety
    /// `a`, `b`, `out` and `spec.bias` must be valid as the trait docs say,
    /// and `rows <= MR`, `cols <= NR`.
    unsafe fn run(self, kc: usize, a: *const f32, b: *const f32, out: &TileOut, spec: &StoreSpec);

    /// Whether [`MicroKernel::run_b_rows`] reads B where it lies. Only then
    /// does the engine skip packing B for it (for a few rows of C, packing B
    /// costs as much as the product): the default method copies.
    const READS_B_ROWS: bool = false;

    /// The widest tile `run_b_rows` takes: `out.cols <= B_ROWS_NR`. Wider
    /// than `NR` lets a kernel keep enough FMA chains in flight when the
    /// tile has a row or two.
    const B_ROWS_NR: usize = Self::NR;

    /// Whether [`MicroKernel::run_a_taps`] reads A where it lies for a
    /// pixel step of `step` floats (else it gathers, as the default does).
    fn reads_a_taps(step: usize) -> bool {
        let _ = step;
        false
    }

    /// [`MicroKernel::run`] with A read in place, each of its `kc` columns
    /// a run of floats `step` apart: element `(i, k)` at
    /// `a + taps[k] + i·step`, for `i < out.rows` and `k < kc` only. A
    /// convolution reads its image this way (rows: output pixels `step`
    /// apart along an image row, columns: kernel taps). Same arithmetic, so
    /// the same bits as `run` on the packed panel.
    ///
    /// The default gathers the tile into a panel on the stack and calls `run`.
    ///
    /// # Safety
    /// As [`MicroKernel::run`] for `b`, `out` and `spec`; `kc <= KC`; `kc`
    /// offsets at `taps`; those `out.rows × kc` elements of A readable.
    #[allow(clippy::too_many_arguments)]
    unsafe fn run_a_taps(
        self,
        kc: usize,
        a: *const f32,
        step: usize,
        taps: *const usize,
        b: *const f32,
        out: &TileOut,
        spec: &StoreSpec,
    ) {
        // SAFETY: the caller's guarantees, passed on.
        unsafe { gather_a_taps(self, kc, a, step, taps, b, out, spec) }
    }

    /// [`MicroKernel::run`] with B read in place from rows of unit column
    /// stride: element `(k, j)` at `b + k·rsb + j`, for `k < kc` and
    /// `j < out.cols` only (`out.cols <= B_ROWS_NR`). Same arithmetic, so
    /// the same bits as `run` on the packed panels.
    ///
    /// The default packs the tile into a panel on the stack and calls `run`.
    ///
    /// # Safety
    /// As [`MicroKernel::run`] for `a`, `out` and `spec`; `kc <= KC`; those
    /// `kc × out.cols` elements of B readable.
    unsafe fn run_b_rows(self, kc: usize, a: *const f32, b: *const f32, rsb: isize, out: &TileOut, spec: &StoreSpec) {
        let mut panel = StackPanel::new();
        let panel = panel.get(kc, Self::NR);
        for (kk, row) in panel.chunks_exact_mut(Self::NR).take(kc).enumerate() {
            // SAFETY: the caller guarantees out.cols readable floats from row kk of B.
            let src = unsafe { std::slice::from_raw_parts(b.offset(kk as isize * rsb), out.cols) };
            row[..out.cols].copy_from_slice(src);
        }
        // SAFETY: the panel holds kc·NR floats, zeros past `cols`; the rest is the caller's.
        unsafe { self.run(kc, a, panel.as_ptr(), out, spec) }
    }
}

/// [`MicroKernel::run_a_taps`] by gathering the tile's A into a panel on the
/// stack and calling `run`: the default, and a kernel's path for the steps
/// it does not read in place.
///
/// # Safety
/// As [`MicroKernel::run_a_taps`].
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gather_a_taps<K: MicroKernel>(
    kern: K,
    kc: usize,
    a: *const f32,
    step: usize,
    taps: *const usize,
    b: *const f32,
    out: &TileOut,
    spec: &StoreSpec,
) {
    let mut panel = StackPanel::new();
    let panel = panel.get(kc, K::MR);
    for (k, col) in panel.chunks_exact_mut(K::MR).take(kc).enumerate() {
        for (i, v) in col[..out.rows].iter_mut().enumerate() {
            // SAFETY: the caller guarantees kc offsets and out.rows readable floats `step` apart at each.
            *v = unsafe { *a.add(*taps.add(k) + i * step) };
        }
    }
    // SAFETY: the panel holds kc·MR floats, zeros past `rows`; the rest is the caller's.
    unsafe { kern.run(kc, panel.as_ptr(), b, out, spec) }
}

/// `step(k)` for `k = 0, 1, …, kc − 1` in order, unrolled by 4: the k loop
/// of the x86-64 kernels (inlined into each, with their target features).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn unrolled_k_loop(kc: usize, mut step: impl FnMut(usize)) {
    let mut k = 0;
    while k + 4 <= kc {
        step(k);
        step(k + 1);
        step(k + 2);
        step(k + 3);
        k += 4;
    }
    while k < kc {
        step(k);
        k += 1;
    }
}

/// The store step on a tile of accumulators held in memory (`acc[i·row_len + j]`),
/// element by element, exactly as [`Store`] defines it. Kernels call it for
/// partial tiles and non-unit column strides; inlined into a kernel compiled
/// with FMA it compiles to the same fused operation as the vector path.
///
/// # Safety
/// As [`MicroKernel::run`] for `out` and `spec.bias`; `acc` holds `rows·row_len`
/// values, `cols <= row_len`.
#[inline(always)]
pub(crate) unsafe fn store_tile_scalar(acc: &[f32], row_len: usize, out: &TileOut, spec: &StoreSpec) {
    for i in 0..out.rows {
        // SAFETY: the caller guarantees `rows` bias values when bias is not null.
        let bias = (!spec.bias.is_null()).then(|| unsafe { *spec.bias.add(i) });
        for j in 0..out.cols {
            // SAFETY: (i, j) lies inside the rows × cols tile the caller owns.
            let cp = unsafe { out.c.offset(i as isize * out.rsc + j as isize * out.csc) };
            let v = spec.alpha * acc[i * row_len + j];
            let mut x = match spec.store {
                Store::Overwrite => v,
                // SAFETY: as above, `cp` is inside the tile.
                Store::Update => spec.beta.mul_add(unsafe { *cp }, v),
            };
            if let Some(b) = bias {
                x += b;
            }
            // SAFETY: as above.
            unsafe { *cp = spec.act.apply(x) };
        }
    }
}

/// The kernel tester: one battery run against every kernel the CPU has,
/// comparing bits with `portable_4x8` (the oracle), which is itself checked
/// against the f64 product. Small enough for Miri.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::dispatch::{Isa, WithKernel, dispatch};
    use crate::gemm::kernel::portable::PORTABLE;

    /// Deterministic values with mixed signs and magnitudes.
    fn values(len: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    /// The largest tile side the battery covers (every kernel's MR and NR,
    /// and the widest in-place tile).
    /// (Under Miri, which runs only the portable kernels, 32: their tiles
    /// and in-place widths are at most 8.)
    const D: usize = if cfg!(miri) { 32 } else { 128 };

    /// `all`, or under Miri (slow) its first and last entries.
    fn few<T: Copy>(all: &[T]) -> Vec<T> {
        if cfg!(miri) { vec![all[0], all[all.len() - 1]] } else { all.to_vec() }
    }

    /// Runs a kernel on one tile case; returns C (with a guard border) after the call.
    struct Case {
        kc: usize,
        rows: usize,
        cols: usize,
        /// C's column stride; 0 means column-major (row stride 1, column
        /// stride `D + 3`).
        col_stride: usize,
        spec_store: Store,
        beta: f32,
        bias: bool,
        act: Activation,
    }

    /// `(rsc, csc)` of C, and its length with a guard border.
    fn c_layout(case: &Case) -> (usize, usize, usize) {
        if case.col_stride == 0 {
            (1, D + 3, (D + 3) * (D + 2))
        } else {
            let rsc = D * case.col_stride + 3;
            (rsc, case.col_stride, rsc * (D + 2))
        }
    }

    /// How a kernel gets its operands in [`compute`].
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Mode {
        /// `run` on packed panels.
        Packed,
        /// `run_b_rows`: B's rows in place (row stride `D`), tiles `B_ROWS_NR` wide.
        BRows,
        /// `run_a_taps` with this pixel step: A's column k at `tap(k)` of
        /// a larger buffer, its rows `step` floats apart.
        ATaps(usize),
    }

    /// Column k of A in `Mode::ATaps(step)`: irregular offsets, room for
    /// `mr` rows `step` apart between them.
    fn tap(k: usize, mr: usize, step: usize) -> usize {
        (mr * step + 3) * k + k % 3
    }

    /// Computes the `rows × cols` tile of `case` with `K`, in as many
    /// kernel calls as `K`'s tile needs, into a C buffer with a guard border
    /// (returned whole, so writes outside the tile show up), taking the
    /// operands as `mode` says.
    fn compute<K: MicroKernel>(kern: K, case: &Case, mode: Mode) -> Vec<f32> {
        let (mr, nr) = (K::MR, if mode == Mode::BRows { K::B_ROWS_NR } else { K::NR });
        let a_full = values(case.kc * D, 1); // element (i, k) at k·D + i
        let b_full = values(case.kc * D, 2); // element (k, j) at k·D + j
        let bias = values(D, 3);
        let (rsc, csc, len) = c_layout(case);
        let mut c = values(len, 4);
        let step = if let Mode::ATaps(step) = mode { step } else { 1 };
        let taps: Vec<usize> = (0..case.kc).map(|k| tap(k, mr, step)).collect();
        for i0 in (0..case.rows).step_by(mr) {
            for j0 in (0..case.cols).step_by(nr) {
                let (rows, cols) = (mr.min(case.rows - i0), nr.min(case.cols - j0));
                let mut a = vec![0.0f32; case.kc * mr];
                let mut a_far = values(tap(case.kc, mr, step), 5);
                let mut b = vec![0.0f32; case.kc * nr];
                for k in 0..case.kc {
                    for i in 0..rows {
                        a[k * mr + i] = a_full[k * D + i0 + i];
                        a_far[taps[k] + i * step] = a_full[k * D + i0 + i];
                    }
                    for j in 0..cols {
                        b[k * nr + j] = b_full[k * D + j0 + j];
                    }
                }
                let out = TileOut {
                    // SAFETY: offset D + 4 leaves a guard border; the
                    // whole rows × cols tile (≤ D × D) fits inside `c`.
                    c: unsafe { c.as_mut_ptr().add(D + 4 + i0 * rsc + j0 * csc) },
                    rsc: rsc as isize,
                    csc: csc as isize,
                    rows,
                    cols,
                };
                let spec = StoreSpec {
                    alpha: 1.5,
                    beta: case.beta,
                    store: case.spec_store,
                    bias: if case.bias { bias[i0..].as_ptr() } else { std::ptr::null() },
                    act: case.act,
                };
                // SAFETY: panels hold kc·MR and kc·NR floats; kc rows of D
                // floats at b_full, columns j0 .. j0 + cols <= D; MR floats
                // `step` apart at every a_far + taps[k]; the tile lies in `c`.
                unsafe {
                    match mode {
                        Mode::Packed => kern.run(case.kc, a.as_ptr(), b.as_ptr(), &out, &spec),
                        Mode::BRows => {
                            let b_rows = b_full.as_ptr().wrapping_add(j0);
                            kern.run_b_rows(case.kc, a.as_ptr(), b_rows, D as isize, &out, &spec)
                        }
                        Mode::ATaps(step) => {
                            kern.run_a_taps(case.kc, a_far.as_ptr(), step, taps.as_ptr(), b.as_ptr(), &out, &spec)
                        }
                    }
                };
            }
        }
        c
    }

    fn run<K: MicroKernel>(kern: K, case: &Case) -> Vec<f32> {
        compute(kern, case, Mode::Packed)
    }

    fn cases(mr: usize, nr: usize) -> Vec<Case> {
        let mut out = Vec::new();
        for &kc in &[0, 1, 2, 3, 7, 16, 33] {
            let half = nr / 2;
            for &(rows, cols) in
                &[(mr, nr), (1, 1), (mr - 1, nr), (mr, nr - 1), (2, 3), (mr, half), (mr - 1, half + 1), (mr, half - 1)]
            {
                for (store, beta) in [(Store::Overwrite, 0.0), (Store::Update, 0.75), (Store::Update, 1.0)] {
                    for (col_stride, bias, act) in [
                        (1, false, Activation::None),
                        (2, true, Activation::Relu),
                        (0, true, Activation::Relu),
                        (1, true, Activation::Clamp { min: -0.5, max: 0.25 }),
                    ] {
                        out.push(Case { kc, rows, cols, col_stride, spec_store: store, beta, bias, act });
                    }
                }
            }
        }
        out
    }

    struct Battery;
    impl WithKernel for Battery {
        type Output = usize;
        fn run<K: MicroKernel>(self, kern: K) -> usize {
            let all = cases(K::MR, K::NR);
            for case in &all {
                assert_eq!(
                    bits(&run(kern, case)),
                    bits(&run(PORTABLE, case)),
                    "{} differs from portable_4x8 at kc={} rows={} cols={} store={:?} act={:?}",
                    K::NAME,
                    case.kc,
                    case.rows,
                    case.cols,
                    case.spec_store,
                    case.act
                );
            }
            all.len()
        }
    }

    /// A kernel's in-place reads (`mode`) against its own `run` on packed
    /// panels (which the battery above holds to the portable kernel's bits).
    struct InPlaceBattery(Mode);
    impl WithKernel for InPlaceBattery {
        type Output = usize;
        fn run<K: MicroKernel>(self, kern: K) -> usize {
            let mut n = 0;
            for kc in few(&[0, 1, 3, 7, 33]) {
                for rows in few(&[1, 2, 3, 4, K::MR - 1, K::MR]) {
                    for cols in few(&[1, 15, 16, 17, 31, 33, 48, 64, 100, 127, 128]).into_iter().filter(|&c| c <= D) {
                        for (store, beta, col_stride, bias, act) in [
                            (Store::Overwrite, 0.0, 1, false, Activation::None),
                            (Store::Update, 0.75, 2, true, Activation::Relu),
                            (Store::Update, 0.5, 0, true, Activation::None),
                            (Store::Update, 1.0, 1, true, Activation::Clamp { min: -0.5, max: 0.25 }),
                        ] {
                            let case = Case { kc, rows, cols, col_stride, spec_store: store, beta, bias, act };
                            let (got, want) = (bits(&compute(kern, &case, self.0)), bits(&run(kern, &case)));
                            assert!(
                                got == want,
                                "{} {:?} differs from its run on packed panels at kc={kc} rows={rows} \
                                 cols={cols} store={store:?} col_stride={col_stride}, first at index {:?}",
                                K::NAME,
                                self.0,
                                got.iter().zip(&want).position(|(g, w)| g != w),
                            );
                            n += 1;
                        }
                    }
                }
            }
            n
        }
    }

    #[test]
    fn every_kernel_reading_in_place_matches_its_packed_bits() {
        // Steps 1, 2 and 4 are read in place by the AVX-512 kernel, 3 is gathered.
        for mode in [Mode::BRows, Mode::ATaps(1), Mode::ATaps(2), Mode::ATaps(3), Mode::ATaps(4)] {
            for isa in Isa::ALL {
                match dispatch(isa, InPlaceBattery(mode)) {
                    Ok(n) => assert!(n > 0),
                    Err(_) => eprintln!("skipped {} (not available on this CPU)", isa.name()),
                }
            }
        }
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn every_available_kernel_matches_portable_bits() {
        for isa in [Isa::Avx2Fma, Isa::Avx512, Isa::Neon] {
            match dispatch(isa, Battery) {
                Ok(n) => assert!(n > 0),
                Err(_) => eprintln!("skipped {} (not available on this CPU)", isa.name()),
            }
        }
    }

    #[test]
    fn portable_kernel_matches_f64_product() {
        let case = Case {
            kc: 33,
            rows: 4,
            cols: 8,
            col_stride: 1,
            spec_store: Store::Overwrite,
            beta: 0.0,
            bias: false,
            act: Activation::None,
        };
        let c = run(PORTABLE, &case);
        let (a, b) = (values(33 * D, 1), values(33 * D, 2));
        let rsc = D + 3;
        assert_eq!(c[..rsc + 1], values(rsc * (D + 2), 4)[..rsc + 1], "guard row overwritten");
        for i in 0..4 {
            for j in 0..8 {
                let want: f64 = (0..33).map(|k| a[k * D + i] as f64 * b[k * D + j] as f64).sum::<f64>() * 1.5;
                let got = c[rsc + 1 + i * rsc + j] as f64;
                assert!((want - got).abs() < 1e-5, "({i},{j}): {got} vs {want}");
            }
        }
    }

    #[test]
    fn activation_keeps_nan_and_negative_zero() {
        assert!(Activation::Relu.apply(f32::NAN).is_nan());
        assert_eq!(Activation::Relu.apply(-0.0).to_bits(), (-0.0f32).to_bits());
        assert_eq!(Activation::Relu.apply(-3.0), 0.0);
        let clamp = Activation::Clamp { min: -1.0, max: 2.0 };
        assert_eq!((clamp.apply(-5.0), clamp.apply(5.0), clamp.apply(0.5)), (-1.0, 2.0, 0.5));
        assert!(clamp.apply(f32::NAN).is_nan());
    }
}
