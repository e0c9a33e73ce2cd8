//! The five loops of the Goto/BLIS algorithm around a microkernel, the K
//! chunking that makes results reproducible, and the split of C among
//! threads. Generic over the kernel and the operand sources; names no ISA.
//!
//! Letters (defined here, for the whole engine): C (m × n) = A (m × k) ·
//! B (k × n); `mr × nr` is the kernel tile; the loops are BLIS's — jc over
//! blocks of `nc` columns, pc over K chunks of `kc <= KC` (`gemm::KC`), ic
//! over blocks of `mc` rows (`blocking.rs`), then jr and ir over the tiles
//! of one block (`macro_kernel`). [`LoopOrder`] names the orders of jc, pc
//! and ic this file runs.

use std::cell::RefCell;
use std::ops::Range;

use super::KC;
use super::blocking::{Blocking, cache_sizes};
use super::kernel::{MicroKernel, Store, StoreSpec, TileOut};
use super::pack::{PackBuf, PanelSource};
use crate::activation::Activation;
use crate::par;

/// The C operand: element `(i, j)` at `ptr + i·rs + j·cs`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CMatrix {
    pub ptr: *mut f32,
    pub rs: isize,
    pub cs: isize,
}

impl CMatrix {
    /// The matrix whose element (0, 0) lies `offset` floats further (a
    /// method, so a closure captures the whole `CMatrix`, which is `Sync`,
    /// not its raw pointer).
    pub(crate) fn shifted(self, offset: usize) -> CMatrix {
        CMatrix { ptr: self.ptr.wrapping_add(offset), ..self }
    }
}

// SAFETY: threads write disjoint tiles of C (the split below never gives two
// tasks the same element), and the creator guarantees the memory outlives the call.
unsafe impl Send for CMatrix {}
// SAFETY: as for Send.
unsafe impl Sync for CMatrix {}

/// Everything of `C = alpha·A·B + beta·C (+ bias, activation)` but the operands.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Epilogue {
    pub alpha: f32,
    pub beta: f32,
    /// `m` per-row biases, or null.
    pub bias: *const f32,
    pub act: Activation,
}

// SAFETY: `bias` is only read, and the creator guarantees it outlives the call.
unsafe impl Send for Epilogue {}
// SAFETY: as for Send.
unsafe impl Sync for Epilogue {}

/// Whether the call may fork onto the caller's rayon pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Parallelism {
    /// Stay on the calling thread.
    Serial,
    /// Split C among the threads of the current rayon pool when the problem
    /// is large enough to repay the fork.
    Rayon,
}

impl Parallelism {
    /// The threads a problem of `flops` runs on: the current rayon pool's
    /// when forking is allowed and the problem repays it
    /// ([`PARALLEL_MIN_FLOPS`]), else 1.
    pub(crate) fn threads(self, flops: f64) -> usize {
        match self {
            Parallelism::Rayon if flops >= PARALLEL_MIN_FLOPS => rayon::current_num_threads(),
            _ => 1,
        }
    }
}

/// Below this many flops a fork costs more than it saves; the GEMM paths
/// and the direct path share it. It was 4 MFLOP for the GEMM (the peers of
/// an early machine all got slower with 2 threads under it: PEERS.md) and
/// 1.5 for the direct path (Zen 5: Inception v1's 832 -> 48 1×1 on 6², 2.9
/// MFLOP, 16 -> 13 µs). Zen 4, 2 threads, 1×1 layers between the two, 4
/// MFLOP against this threshold, alternated runs (one thread alone):
/// 48 -> 192 on 13² (3.1 MFLOP) 32.2 -> 20.1–23.3 µs (32.4), 96 -> 96 on 14²
/// (3.6) 37.0–39.6 -> 22.5–24.5 (38–40), 64 -> 64 on 16² (2.1) 21.2–22.4 ->
/// 12.3–15.3 (22), 64 -> 96 on 12² (1.8) 18.2–19.5 -> 12.7–19.6 (18.6).
pub(crate) const PARALLEL_MIN_FLOPS: f64 = 1.5e6;

/// Up to this many kernel tiles of rows, a kernel that reads B in place
/// ([`MicroKernel::READS_B_ROWS`]) gets B unpacked.
const IN_PLACE_MAX_TILES: usize = 2;

/// The per-thread packing buffers, reused across calls.
#[derive(Default)]
struct Workspace {
    a: PackBuf,
    b: PackBuf,
}

thread_local! {
    static WORKSPACE: RefCell<Workspace> = RefCell::new(Workspace::default());
}

/// Runs `f` with this thread's packing buffers (or fresh ones if they are in use).
fn with_workspace<R>(f: impl FnOnce(&mut Workspace) -> R) -> R {
    WORKSPACE.with(|cell| match cell.try_borrow_mut() {
        Ok(mut ws) => f(&mut ws),
        Err(_) => f(&mut Workspace::default()),
    })
}

/// `C = alpha·A·B + beta·C`, then bias and activation, as [`KC`] describes.
/// `a` is the `k × m` source of Aᵀ, `b` the `k × n` source of B.
///
/// # Safety
/// `a` and `b` cover their extents; `c` addresses `m × n` writable elements,
/// no two of them the same; `epi.bias` is null or `m` readable floats.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm<K: MicroKernel, A: PanelSource, B: PanelSource>(
    kern: K,
    m: usize,
    n: usize,
    k: usize,
    a: &A,
    b: &B,
    c: CMatrix,
    epi: &Epilogue,
    par: Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    let blk = Blocking::new(cache_sizes(), K::MR, K::NR);
    let threads = par.threads(2.0 * m as f64 * n as f64 * k as f64);
    let run = |(rows, cols): (Range<usize>, Range<usize>)| {
        with_workspace(|ws| {
            // SAFETY: the caller's guarantees; the tasks' rectangles are disjoint.
            unsafe { nest(kern, &blk, rows, cols, k, a, b, c, epi, ws) }
        })
    };
    if threads == 1 {
        // No task list: a serial call allocates nothing.
        run((0..m, 0..n));
    } else {
        let parts = split(m, n, k, K::MR, K::NR, threads);
        par::for_each(threads, parts.len(), |i| run(parts[i].clone()));
    }
}

/// Cuts C into at most `threads` disjoint rectangles along the dimension
/// whose split repacks less: splitting N repacks A (`m·k`) per extra task,
/// splitting M repacks B (`k·n`). Boundaries fall on whole tiles.
fn split(m: usize, n: usize, k: usize, mr: usize, nr: usize, threads: usize) -> Vec<(Range<usize>, Range<usize>)> {
    let (m_tiles, n_tiles) = (m.div_ceil(mr), n.div_ceil(nr));
    let by_n = n_tiles >= threads && (m * k <= k * n || m_tiles < threads);
    let (tiles, unit, len) = if by_n { (n_tiles, nr, n) } else { (m_tiles, mr, m) };
    let parts = threads.min(tiles).max(1);
    (0..parts)
        .map(|p| {
            let lo = (tiles * p / parts * unit).min(len);
            let hi = (tiles * (p + 1) / parts * unit).min(len);
            if by_n { (0..m, lo..hi) } else { (lo..hi, 0..n) }
        })
        .collect()
}

/// The K chunks `(pc, kc)`: `[0, KC), [KC, 2·KC), …`, and one empty chunk
/// when `k == 0` (so that C is still stored, with its bias).
fn k_chunks(k: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..k.div_ceil(KC).max(1)).map(move |chunk| (chunk * KC, KC.min(k - chunk * KC)))
}

/// How one thread's block of C is traversed. Every order gives each C tile
/// its K chunks in increasing `pc`, so the bits do not depend on the order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LoopOrder {
    /// A few rows of C (at most [`IN_PLACE_MAX_TILES`] kernel tiles) and a
    /// kernel that reads B's rows where they lie: each B element feeds a
    /// handful of FMAs, so a copy of B would cost about as much as the
    /// product. pc, then one ic and one jc block: A packed once per K chunk.
    PcBInPlace,
    /// The rows fit one ic block (or A is prepacked and fits 3/4 of L2) and
    /// nothing of A is packed per block (prepacked by a plan, or packed
    /// whole for every chunk up front): jc in narrow (`nc_narrow`) blocks
    /// that stay in L2, then pc, then ic, so each block of C stays in L2
    /// across the K chunks instead of one sweep over all of C per chunk.
    JcNarrowPcIc,
    /// The rows fit one ic block, A packed once per K chunk: pc, then jc in
    /// narrow blocks; a B block used by one ic block gains nothing from L3.
    PcJcNarrow,
    /// The classic BLIS order: jc (a wide B block kept in L3), pc, ic.
    JcPcIc,
}

/// One thread's part of `C = A·B`: what every loop order reads.
struct Nest<'a, K, A, B> {
    kern: K,
    blk: &'a Blocking,
    /// C's rows and columns of this part.
    rows: Range<usize>,
    cols: Range<usize>,
    k: usize,
    a: &'a A,
    b: &'a B,
    c: CMatrix,
    epi: &'a Epilogue,
    /// Whether this part of C is too large to stay in the L3 share of a
    /// core (a quarter of L3, as for B's blocks), so that even its first
    /// writes wait for lines from memory.
    c_from_memory: bool,
}

/// The serial loop nest over the sub-block `rows × cols` of C, in the
/// [`LoopOrder`] its shape calls for.
///
/// # Safety
/// As for [`gemm`], restricted to the sub-block.
#[allow(clippy::too_many_arguments)]
unsafe fn nest<K: MicroKernel, A: PanelSource, B: PanelSource>(
    kern: K,
    blk: &Blocking,
    rows: Range<usize>,
    cols: Range<usize>,
    k: usize,
    a: &A,
    b: &B,
    c: CMatrix,
    epi: &Epilogue,
    ws: &mut Workspace,
) {
    let c_from_memory = rows.len() * cols.len() * 4 > blk.l3 / 4;
    let nest = Nest { kern, blk, rows, cols, k, a, b, c, epi, c_from_memory };
    // A prepacked whole (a convolution plan's weights) needs no packing per
    // ic block, so the narrow orders pay for up to 3/4 of L2 of it.
    let (mr, rows) = (K::MR, &nest.rows);
    let prepacked = a.packed(mr, 0, KC.min(k), rows.start).is_some();
    let narrow = rows.len() <= blk.mc || (prepacked && rows.len() * KC * 4 <= blk.l2 * 3 / 4);
    // Without prepacking, A packed whole for every K chunk up front when
    // that fits half of L2 (its rows are then one ic block).
    let rows_padded = rows.len().div_ceil(mr) * mr;
    let whole_a = !prepacked && narrow && k > KC && rows_padded * k * 4 <= blk.l2 / 2;
    let order = if K::READS_B_ROWS && b.rows().is_some() && rows.len() <= IN_PLACE_MAX_TILES * mr {
        LoopOrder::PcBInPlace
    } else if narrow && (prepacked || whole_a) {
        LoopOrder::JcNarrowPcIc
    } else if narrow {
        LoopOrder::PcJcNarrow
    } else {
        LoopOrder::JcPcIc
    };
    // SAFETY: the caller's guarantees, passed on.
    unsafe {
        match order {
            LoopOrder::PcBInPlace => nest.pc_b_in_place(&mut ws.a),
            LoopOrder::JcNarrowPcIc => nest.jc_narrow_pc_ic(whole_a, &mut ws.a, &mut ws.b),
            LoopOrder::PcJcNarrow => nest.pc_jc_narrow(&mut ws.a, &mut ws.b),
            LoopOrder::JcPcIc => nest.jc_pc_ic(&mut ws.a, &mut ws.b),
        }
    }
}

impl<K: MicroKernel, A: PanelSource, B: PanelSource> Nest<'_, K, A, B> {
    /// Columns per block of the narrow orders: a quarter of L2 of B, its
    /// rows counted as K where packing a block has a setup to share out
    /// (a block packed as plain copies stays `nc_narrow` wide, in L1 reach:
    /// a 1×1 32 → 16 on 112² ran 14 % slower with blocks of 2,048 columns).
    fn nc_narrow(&self) -> usize {
        if self.b.setup_per_block() { self.blk.nc_narrow_for(self.k, K::NR) } else { self.blk.nc_narrow }
    }

    /// A's panels for chunk `(pc, kc)` and the ic block `(ic, mc)`: the
    /// prepacked ones, or packed into `buf`.
    fn packed_a(&self, buf: &mut PackBuf, (pc, kc): (usize, usize), (ic, mc): (usize, usize)) -> *const f32 {
        let mr = K::MR;
        match self.a.packed(mr, pc, kc, ic) {
            Some(panels) => panels.as_ptr(),
            None => {
                let buf = buf.get(mc.div_ceil(mr) * mr * kc);
                self.a.pack(self.kern.lanes(), mr, pc, kc, ic, mc, buf);
                buf.as_ptr()
            }
        }
    }

    /// B's panels for chunk `(pc, kc)` and the jc block `(jc, nc)`.
    fn packed_b(&self, buf: &mut PackBuf, (pc, kc): (usize, usize), (jc, nc): (usize, usize)) -> BBlock {
        let nr = K::NR;
        BBlock::Packed(match self.b.packed(nr, pc, kc, jc) {
            Some(panels) => panels.as_ptr(),
            None => {
                // One panel row more than the panels: room for a packer's
                // whole-row copies to spill past the last panel.
                let buf = buf.get((nc.div_ceil(nr) * kc + 1) * nr);
                self.b.pack(self.kern.lanes(), nr, pc, kc, jc, nc, buf);
                buf.as_ptr()
            }
        })
    }

    /// The jr and ir loops of one block (see [`macro_kernel`]).
    ///
    /// # Safety
    /// As [`macro_kernel`]; the caller's guarantees of [`nest`].
    #[inline(always)]
    unsafe fn block(
        &self,
        (pc, kc): (usize, usize),
        ic: (usize, usize),
        jc: (usize, usize),
        ap: *const f32,
        bp: BBlock,
    ) {
        let last = pc + kc >= self.k;
        // SAFETY: the panels were packed for this chunk and these blocks (B's
        // rows lie in the source's extent); the caller's guarantees cover C and the bias.
        unsafe { macro_kernel(self.kern, (pc, kc), last, ic, jc, ap, bp, self.c, self.epi, self.c_from_memory) }
    }

    /// [`LoopOrder::PcBInPlace`].
    ///
    /// # Safety
    /// As for [`nest`]; `b.rows()` is some.
    unsafe fn pc_b_in_place(&self, a_buf: &mut PackBuf) {
        let (ptr, stride) = self.b.rows().expect("B in rows");
        let (ic, jc) = ((self.rows.start, self.rows.len()), (self.cols.start, self.cols.len()));
        for (pc, kc) in k_chunks(self.k) {
            let ap = self.packed_a(a_buf, (pc, kc), ic);
            // Row pc, column cols.start of B (wrapping: with k == 0 there is
            // no row, and the kernel reads none).
            let ptr = ptr.wrapping_offset(pc as isize * stride + self.cols.start as isize);
            // SAFETY: the caller's guarantees.
            unsafe { self.block((pc, kc), ic, jc, ap, BBlock::Rows { ptr, stride }) };
        }
    }

    /// [`LoopOrder::JcNarrowPcIc`], with A prepacked or (`whole_a`) packed
    /// whole for every K chunk into `a_buf` first.
    ///
    /// # Safety
    /// As for [`nest`].
    unsafe fn jc_narrow_pc_ic(&self, whole_a: bool, a_buf: &mut PackBuf, b_buf: &mut PackBuf) {
        let (mr, rows, k) = (K::MR, &self.rows, self.k);
        let rows_padded = rows.len().div_ceil(mr) * mr;
        let whole = whole_a.then(|| {
            let all = a_buf.get(rows_padded * k);
            for (pc, kc) in k_chunks(k) {
                let dst = &mut all[pc * rows_padded..(pc + kc) * rows_padded];
                self.a.pack(self.kern.lanes(), mr, pc, kc, rows.start, rows.len(), dst);
            }
            all.as_ptr()
        });
        let nc_narrow = self.nc_narrow();
        for jc in self.cols.clone().step_by(nc_narrow) {
            let nc = nc_narrow.min(self.cols.end - jc);
            for (pc, kc) in k_chunks(k) {
                let bp = self.packed_b(b_buf, (pc, kc), (jc, nc));
                for ic in rows.clone().step_by(self.blk.mc) {
                    let mc = self.blk.mc.min(rows.end - ic);
                    let ap = match whole {
                        // SAFETY: chunk pc's panels start at pc·rows_padded
                        // of the rows_padded·k floats packed above (one ic block).
                        Some(all) => unsafe { all.add(pc * rows_padded) },
                        None => self.a.packed(mr, pc, kc, ic).expect("prepacked A").as_ptr(),
                    };
                    // SAFETY: the caller's guarantees.
                    unsafe { self.block((pc, kc), (ic, mc), (jc, nc), ap, bp) };
                }
            }
        }
    }

    /// [`LoopOrder::PcJcNarrow`].
    ///
    /// # Safety
    /// As for [`nest`].
    unsafe fn pc_jc_narrow(&self, a_buf: &mut PackBuf, b_buf: &mut PackBuf) {
        let ic = (self.rows.start, self.rows.len());
        let nc_narrow = self.nc_narrow();
        for (pc, kc) in k_chunks(self.k) {
            let ap = self.packed_a(a_buf, (pc, kc), ic);
            for jc in self.cols.clone().step_by(nc_narrow) {
                let nc = nc_narrow.min(self.cols.end - jc);
                let bp = self.packed_b(b_buf, (pc, kc), (jc, nc));
                // SAFETY: the caller's guarantees.
                unsafe { self.block((pc, kc), ic, (jc, nc), ap, bp) };
            }
        }
    }

    /// [`LoopOrder::JcPcIc`].
    ///
    /// # Safety
    /// As for [`nest`].
    unsafe fn jc_pc_ic(&self, a_buf: &mut PackBuf, b_buf: &mut PackBuf) {
        let (rows, nc_wide, mc_max) = (&self.rows, self.blk.nc, self.blk.mc);
        for jc in self.cols.clone().step_by(nc_wide) {
            let nc = nc_wide.min(self.cols.end - jc);
            for (pc, kc) in k_chunks(self.k) {
                let bp = self.packed_b(b_buf, (pc, kc), (jc, nc));
                for ic in rows.clone().step_by(mc_max) {
                    let mc = mc_max.min(rows.end - ic);
                    let ap = self.packed_a(a_buf, (pc, kc), (ic, mc));
                    // SAFETY: the caller's guarantees.
                    unsafe { self.block((pc, kc), (ic, mc), (jc, nc), ap, bp) };
                }
            }
        }
    }
}

/// The B operand of one block, as the kernels read it.
#[derive(Clone, Copy, Debug)]
enum BBlock {
    /// `ceil(nc/NR)` packed panels of `kc × NR`.
    Packed(*const f32),
    /// In place: element `(kk, jj)` of the block at `ptr + kk·stride + jj`.
    Rows { ptr: *const f32, stride: isize },
}

/// The jr and ir loops: every kernel tile of the `mc × nc` block at
/// `(ic, jc)` for the K chunk `(pc, kc)` (the last one if `last`), from packed A panels,
/// hinting C's tiles toward L2 ahead of use where they are read (later
/// chunks) or where C is `c_from_memory`.
///
/// # Safety
/// `ap` holds the block's A panels (`ceil(mc/MR)` panels of `kc × MR`), `b`
/// its B panels or rows (`kc` rows of `nc` readable floats); the block lies inside C; `epi.bias` is null or covers the
/// rows.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn macro_kernel<K: MicroKernel>(
    kern: K,
    (pc, kc): (usize, usize),
    last: bool,
    (ic, mc): (usize, usize),
    (jc, nc): (usize, usize),
    ap: *const f32,
    b: BBlock,
    c: CMatrix,
    epi: &Epilogue,
    c_from_memory: bool,
) {
    let mr = K::MR;
    let nr = match b {
        BBlock::Packed(_) => K::NR,
        BBlock::Rows { .. } => K::B_ROWS_NR,
    };
    let first = pc == 0;
    let spec = StoreSpec {
        alpha: epi.alpha,
        beta: if first { epi.beta } else { 1.0 },
        store: if first && epi.beta == 0.0 { Store::Overwrite } else { Store::Update },
        bias: std::ptr::null(),
        bias_cols: false,
        act: if last { epi.act } else { Activation::None },
    };
    for jr in (0..nc).step_by(nr) {
        // Packed, a narrow tile may take rows from several A panels.
        let cols = nr.min(nc - jr);
        let mr = match b {
            BBlock::Packed(_) => K::a_taps_rows(cols),
            BBlock::Rows { .. } => mr,
        };
        for ir in (0..mc).step_by(mr) {
            let (i, j) = (ic + ir, jc + jr);
            let out = TileOut {
                // SAFETY: (i, j) is inside C (i < m, j < n).
                c: unsafe { c.ptr.offset(i as isize * c.rs + j as isize * c.cs) },
                rsc: c.rs,
                csc: c.cs,
                rows: mr.min(mc - ir),
                cols,
            };
            let spec = StoreSpec {
                // SAFETY: the bias holds m floats and i < m.
                bias: if last && !epi.bias.is_null() { unsafe { epi.bias.add(i) } } else { std::ptr::null() },
                ..spec
            };
            if spec.store == Store::Update || c_from_memory {
                // The tile two ahead in this loop reads C too: pull it toward
                // L2 now, so its loads do not wait on memory (C of a large
                // product is swept once per K chunk: 2048³ ran 30 % faster).
                // A first write of a C from memory waits on its lines as
                // well (64 × 27 × 50176, VGG conv1_1's 12.8 MB: 1.87 -> 1.42
                // ms); a C that stays in L3 is left alone, since the hints
                // would evict B's block from L2 (256 × 32 × 3136, 3.2 MB:
                // 222 -> 260 µs with them; 64³ lost 6 %).
                let ahead = ir + 2 * mr;
                let m_tiles = mc.div_ceil(mr) * mr;
                let (ahead_i, ahead_j) = if ahead < m_tiles { (ic + ahead, j) } else { (ic + ahead - m_tiles, j + nr) };
                if ahead_i < ic + mc && ahead_j < jc + nc {
                    prefetch_tile(c, ahead_i, ahead_j, mr.min(ic + mc - ahead_i), nr.min(jc + nc - ahead_j));
                }
            }
            // SAFETY: panel ir / MR of the packed A block, with kc rows; the
            // tile lies inside C; B as the match says.
            unsafe {
                match b {
                    // Panel jr / NR of the packed block, kc rows.
                    BBlock::Packed(bp) => kern.run(kc, ap.add(ir * kc), bp.add(jr * kc), &out, &spec),
                    // Columns jr .. jr + cols of the block's kc rows, in place.
                    BBlock::Rows { ptr, stride } => {
                        kern.run_b_rows(kc, ap.add(ir * kc), ptr.wrapping_add(jr), stride, &out, &spec)
                    }
                }
            };
        }
    }
}

/// Hints the cache to fetch the `rows × cols` tile of C at `(i, j)` into L2
/// (a hint only: it reads nothing and cannot fault).
#[inline(always)]
fn prefetch_tile(c: CMatrix, i: usize, j: usize, rows: usize, cols: usize) {
    #[cfg(target_arch = "x86_64")]
    if c.cs == 1 {
        use std::arch::x86_64::{_MM_HINT_T1, _mm_prefetch};
        for r in 0..rows {
            let row = c.ptr.wrapping_offset((i + r) as isize * c.rs + j as isize);
            for at in (0..cols).step_by(16).chain(std::iter::once(cols - 1)) {
                // SAFETY: a prefetch is a hint; it does not access memory
                // architecturally and cannot fault, whatever the address.
                unsafe { _mm_prefetch::<_MM_HINT_T1>(row.wrapping_add(at).cast()) };
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (c, i, j, rows, cols);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covered(parts: &[(Range<usize>, Range<usize>)], m: usize, n: usize) -> Vec<u32> {
        let mut count = vec![0u32; m * n];
        for (rows, cols) in parts {
            for i in rows.clone() {
                for j in cols.clone() {
                    count[i * n + j] += 1;
                }
            }
        }
        count
    }

    #[test]
    #[cfg_attr(miri, ignore = "counts 100k cells one by one; no unsafe code")]
    fn split_covers_c_exactly_once() {
        for &(m, n, k, t) in &[(6, 784, 25, 2), (2048, 49, 512, 2), (7, 5, 3, 4), (100, 100, 100, 3), (1, 1, 1, 8)] {
            let parts = split(m, n, k, 6, 16, t);
            assert!(parts.len() <= t);
            assert!(covered(&parts, m, n).iter().all(|&c| c == 1), "m={m} n={n} t={t}");
        }
    }

    #[test]
    fn split_prefers_the_long_side() {
        assert_eq!(split(64, 3136, 576, 6, 16, 2)[1].0, 0..64); // conv shape: split N
        assert_eq!(split(2048, 49, 512, 6, 16, 2)[1].1, 0..49); // res5 1x1: split M
    }
}
