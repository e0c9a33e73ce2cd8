//! The microkernel contract: what every `<isa>_<mr>x<nr>` kernel computes, how
//! its packed operands are laid out, and what it may read and write. The
//! kernels themselves live one per file; they know nothing of blocking.

pub(crate) mod portable;

#[cfg(test)]
mod tests;

use super::KC;
use crate::activation::Activation;
use crate::simd::Lanes;

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
/// Then, only on the last K chunk: `c = c + bias[row]` (or `bias[col]`,
/// see [`StoreSpec::bias_cols`]) if there is a bias, then `c = activation(c)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Store {
    Overwrite,
    Update,
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
    /// Bias of the tile's first row (`rows` values follow), or, with
    /// `bias_cols`, of its first column (`cols` values follow); null for
    /// none. Only set on the last K chunk.
    pub bias: *const f32,
    /// Whether the bias runs along the tile's columns (a channels-last
    /// output: pixels as rows, channels as columns) rather than its rows.
    pub bias_cols: bool,
    /// Only other than `None` on the last K chunk.
    pub act: Activation,
}

impl StoreSpec {
    /// The spec of the tile's columns from `j` on: a bias along the
    /// columns starts `j` values later (a null bias stays null).
    pub(crate) fn at_col(&self, j: usize) -> StoreSpec {
        let along_cols = self.bias_cols && !self.bias.is_null();
        StoreSpec { bias: if along_cols { self.bias.wrapping_add(j) } else { self.bias }, ..*self }
    }
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
/// The kernel reads `kc·MR` floats at `a` (`kc·MR` per panel of a tile
/// taller than `MR`), `kc·NR` floats at `b` (`2·kc·NR` for a tile wider
/// than `NR`: [`MicroKernel::A_TAPS_WIDE`]), `rows`
/// (with `bias_cols`, `cols`) floats at `bias` (when not null) and reads/writes exactly the
/// `rows × cols` elements of C described by `out` — nothing else.
pub(crate) trait MicroKernel: Copy + Send + Sync {
    /// Tile rows.
    const MR: usize;
    /// Tile columns.
    const NR: usize;
    /// `<isa>_<mr>x<nr>`, as tests and benches call it.
    const NAME: &'static str;
    /// The vector lanes of the same instruction set: the packers run on them.
    type Lanes: Lanes;

    /// The lanes token the kernel was made from.
    fn lanes(self) -> Self::Lanes;

    /// # Safety
    /// `a`, `b`, `out` and `spec.bias` must be valid as the trait docs say,
    /// and `rows <= a_taps_rows(cols)`, `cols <= NR`.
    unsafe fn run(self, kc: usize, a: *const f32, b: *const f32, out: &TileOut, spec: &StoreSpec);

    /// Whether [`MicroKernel::run_b_rows`] reads B where it lies. Only then
    /// does the engine skip packing B for it (for a few rows of C, packing B
    /// costs as much as the product): the default method copies.
    const READS_B_ROWS: bool = false;

    /// The widest tile `run_b_rows` takes: `out.cols <= B_ROWS_NR`. Wider
    /// than `NR` lets a kernel keep enough FMA chains in flight when the
    /// tile has a row or two.
    const B_ROWS_NR: usize = Self::NR;

    /// The widest tile [`MicroKernel::run_a_taps`] takes: a tile of `NR <
    /// out.cols <= A_TAPS_WIDE` columns (at most `MR` rows) reads its
    /// columns from `NR` on from the next packed panel, `kc·NR` floats past
    /// `b`. A kernel with registers to spare runs the last few columns of a
    /// matrix (40 channels: 32 + 8) with the panel before them, where a
    /// tile of their own would fill a fraction of its vectors. `NR`: none.
    const A_TAPS_WIDE: usize = Self::NR;

    /// Whether [`MicroKernel::run_a_taps`] reads A where it lies for a
    /// pixel step of `step` floats (else it gathers, as the default does).
    fn reads_a_taps(step: usize) -> bool {
        let _ = step;
        false
    }

    /// Whether [`MicroKernel::run_a_taps`] reads A in place at any step
    /// (not only those `reads_a_taps` names, which it reads fastest), so that
    /// a caller may hand it rows of pixels `stride · c_in` floats apart.
    fn reads_a_any_step() -> bool {
        false
    }

    /// The most rows a [`MicroKernel::run`] or [`MicroKernel::run_a_taps`]
    /// tile of `cols` columns may have (`MR`, or more where a narrow tile
    /// leaves registers for more rows). `run` reads the rows past `MR`
    /// from the next A panels, packed right after the first (`kc × MR`
    /// each); a `run_a_taps` tile of more than `MR` rows must have unit
    /// column stride (`out.csc == 1`).
    fn a_taps_rows(cols: usize) -> usize {
        let _ = cols;
        Self::MR
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
    /// As [`MicroKernel::run`] for `b`, `out` and `spec`, but with
    /// `out.rows <= a_taps_rows(out.cols)`; `kc <= KC`; `kc` offsets at
    /// `taps`; those `out.rows × kc` elements of A readable.
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

    /// Whether [`MicroKernel::run_b_taps`] reads B where it lies (else it
    /// copies, as the default does, and a caller does better to pack).
    const READS_B_TAPS: bool = false;

    /// [`MicroKernel::run`] with B read in place, each of its `kc` rows a
    /// run of consecutive floats: element `(k, j)` at `b + taps[k] + j`, for
    /// `k < kc` and `j < out.cols` only (`out.cols <= B_ROWS_NR`). A
    /// convolution reads its zero-padded band this way (rows: kernel taps,
    /// columns: output pixels of one output row). Same arithmetic, so the
    /// same bits as `run` on the packed panels.
    ///
    /// The default copies the tile, `NR` columns at a time, into a panel on
    /// the stack and calls `run`.
    ///
    /// # Safety
    /// As [`MicroKernel::run`] for `a`, `out` and `spec`; `kc <= KC`; `kc`
    /// offsets at `taps`; those `kc × out.cols` elements of B readable.
    #[allow(clippy::too_many_arguments)]
    unsafe fn run_b_taps(
        self,
        kc: usize,
        a: *const f32,
        b: *const f32,
        taps: *const usize,
        out: &TileOut,
        spec: &StoreSpec,
    ) {
        for j in (0..out.cols).step_by(Self::NR) {
            let cols = Self::NR.min(out.cols - j);
            let mut panel = StackPanel::new();
            let panel = panel.get(kc, Self::NR);
            for (kk, row) in panel.chunks_exact_mut(Self::NR).take(kc).enumerate() {
                // SAFETY: the caller guarantees kc offsets at `taps` and
                // out.cols readable floats from each of B's rows.
                let src = unsafe { std::slice::from_raw_parts(b.add(*taps.add(kk) + j), cols) };
                row[..cols].copy_from_slice(src);
            }
            let slice = TileOut { c: out.c.wrapping_offset(j as isize * out.csc), cols, ..*out };
            // SAFETY: the panel holds kc·NR floats, zeros past `cols`;
            // columns j .. j + cols of the caller's tile.
            unsafe { self.run(kc, a, panel.as_ptr(), &slice, &spec.at_col(j)) }
        }
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

/// Where an x86-64 kernel reads A: with a pixel step `A_STEP > 0`, column
/// `k` of the tile at `ptr + taps[k]`, its rows `A_STEP` floats apart
/// (`run_a_taps`); with `A_STEP == 0`, a packed panel at `ptr` (`taps`
/// unused).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) struct ACols {
    pub ptr: *const f32,
    pub taps: *const usize,
    /// The rows' step where the kernel takes it at run time
    /// (`A_STEP == RUNTIME_STEP`); unused otherwise.
    pub step: usize,
}

/// The `A_STEP` of a kernel that reads A in place with `ACols::step`, a
/// step known only at run time (a channels-last image: `stride · c_in`).
#[cfg(target_arch = "x86_64")]
pub(crate) const RUNTIME_STEP: usize = usize::MAX;

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
        for j in 0..out.cols {
            // SAFETY: the caller guarantees `rows` (with `bias_cols`, `cols`)
            // bias values when bias is not null.
            let bias = (!spec.bias.is_null()).then(|| unsafe { *spec.bias.add(if spec.bias_cols { j } else { i }) });
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
