//! The five loops of the Goto/BLIS algorithm around a microkernel, the K
//! chunking that makes results reproducible, and the split of C among
//! threads. Generic over the kernel and the operand sources; names no ISA.
//!
//! Letters: C (m × n) = A (m × k) · B (k × n); `mr × nr` is the kernel tile;
//! `mc`, `nc` block the ic and jc loops (`blocking.rs`); `KC` cuts K.

use std::cell::RefCell;
use std::ops::Range;

use rayon::prelude::*;

use super::KC;
use super::blocking::{Blocking, cache_sizes};
use super::kernel::{MicroKernel, Store, StoreSpec, TileOut};
use super::pack::{PackBuf, PanelSource};
use crate::activation::Activation;

/// The C operand: element `(i, j)` at `ptr + i·rs + j·cs`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CMatrix {
    pub ptr: *mut f32,
    pub rs: isize,
    pub cs: isize,
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

/// Below this many flops a fork costs more than it saves (the peers on this
/// machine all get slower with 2 threads under ~4 MFLOP: PEERS.md).
pub(crate) const PARALLEL_MIN_FLOPS: f64 = 4.0e6;

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
        split(m, n, k, K::MR, K::NR, threads).into_par_iter().for_each(run);
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

/// The serial five-loop nest over the sub-block `rows × cols` of C.
///
/// Three loop orders, same arithmetic (each C tile still takes the K chunks
/// in order): when the rows fit one ic block, B streams through L2 in narrow
/// blocks (`nc_narrow`) — a B block that is used by one ic block only gains
/// nothing from L3 and costs the write and re-read of a large buffer. Then
/// with A prepacked (a convolution plan's weights) the order is jc, pc, ic,
/// so a narrow block of C stays in L2 across the K chunks; else pc, jc, ic,
/// so that A is packed once per K chunk. Otherwise the classic BLIS order
/// jc, pc, ic keeps a wide B block in L3 for all the ic blocks.
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
    let (mr, nr) = (K::MR, K::NR);
    let chunks = k.div_ceil(KC).max(1);
    let Workspace { a: a_buf, b: b_buf } = ws;
    let mut packed_a = |pc: usize, kc: usize, ic: usize, mc: usize| -> *const f32 {
        match a.packed(mr, pc, kc, ic) {
            Some(panels) => panels.as_ptr(),
            None => {
                let buf = a_buf.get(mc.div_ceil(mr) * mr * kc);
                a.pack(kern.lanes(), mr, pc, kc, ic, mc, buf);
                buf.as_ptr()
            }
        }
    };
    let mut packed_b = |pc: usize, kc: usize, jc: usize, nc: usize| -> *const f32 {
        match b.packed(nr, pc, kc, jc) {
            Some(panels) => panels.as_ptr(),
            None => {
                // One panel row more than the panels: room for a packer's
                // whole-row copies to spill past the last panel.
                let buf = b_buf.get((nc.div_ceil(nr) * kc + 1) * nr);
                b.pack(kern.lanes(), nr, pc, kc, jc, nc, buf);
                buf.as_ptr()
            }
        }
    };
    let mut packed_b = |pc, kc, jc, nc| BBlock::Packed(packed_b(pc, kc, jc, nc));
    // Whether this part of C is too large to stay in the L3 share of a
    // core (a quarter of L3, as for B's blocks), so that even its first
    // writes wait for lines from memory.
    let c_from_memory = rows.len() * cols.len() * 4 > blk.l3 / 4;
    let block = |chunk: usize, (ic, mc): (usize, usize), (jc, nc): (usize, usize), ap: *const f32, bp: BBlock| {
        // SAFETY: the panels were packed for this chunk and these blocks (B's
        // rows lie in the source's extent); the caller's guarantees cover C and the bias.
        unsafe { macro_kernel(kern, chunk, chunks, k, (ic, mc), (jc, nc), ap, bp, c, epi, c_from_memory) }
    };
    // A prepacked whole (a convolution plan's weights) needs no packing per
    // ic block, so the narrow order pays for up to 3/4 of L2 of it.
    let prepacked = a.packed(mr, 0, KC.min(k), rows.start).is_some();
    let narrow = rows.len() <= blk.mc || (prepacked && rows.len() * KC * 4 <= blk.l2 * 3 / 4);
    // Without prepacking, A packed whole for every K chunk up front when
    // that fits half of L2 (its rows are then one ic block).
    let rows_padded = rows.len().div_ceil(mr) * mr;
    let whole_a = !prepacked && narrow && chunks > 1 && rows_padded * k * 4 <= blk.l2 / 2;
    if let Some((ptr, stride)) = b.rows().filter(|_| K::READS_B_ROWS && rows.len() <= IN_PLACE_MAX_TILES * mr) {
        // A few rows of C: each B element feeds a handful of FMAs, so a copy
        // of B would cost about as much as the product. The kernel reads
        // B's rows where they lie; A is packed once per K chunk.
        for chunk in 0..chunks {
            let (pc, kc) = (chunk * KC, KC.min(k - chunk * KC));
            let ap = packed_a(pc, kc, rows.start, rows.len());
            // Row pc, column cols.start of B (wrapping: with k == 0 there is
            // no row, and the kernel reads none).
            let ptr = ptr.wrapping_offset(pc as isize * stride + cols.start as isize);
            block(chunk, (rows.start, rows.len()), (cols.start, cols.len()), ap, BBlock::Rows { ptr, stride });
        }
    } else if narrow && (prepacked || whole_a) {
        // Nothing to pack for A per block: each block of C stays in L2 across
        // the K chunks, instead of one sweep over all of C per chunk (C of a
        // large convolution layer lives in L3 or memory; A in L2 or L3).
        let whole = whole_a.then(|| {
            let all = a_buf.get(rows_padded * k);
            for chunk in 0..chunks {
                let (pc, kc) = (chunk * KC, KC.min(k - chunk * KC));
                a.pack(
                    kern.lanes(),
                    mr,
                    pc,
                    kc,
                    rows.start,
                    rows.len(),
                    &mut all[pc * rows_padded..(pc + kc) * rows_padded],
                );
            }
            all.as_ptr()
        });
        for jc in cols.clone().step_by(blk.nc_narrow) {
            let nc = blk.nc_narrow.min(cols.end - jc);
            for chunk in 0..chunks {
                let (pc, kc) = (chunk * KC, KC.min(k - chunk * KC));
                let bp = packed_b(pc, kc, jc, nc);
                for ic in rows.clone().step_by(blk.mc) {
                    let mc = blk.mc.min(rows.end - ic);
                    let ap = match whole {
                        // SAFETY: chunk `chunk`'s panels start at pc·rows_padded
                        // of the rows_padded·k floats packed above (one ic block).
                        Some(all) => unsafe { all.add(pc * rows_padded) },
                        None => a.packed(mr, pc, kc, ic).expect("prepacked A").as_ptr(),
                    };
                    block(chunk, (ic, mc), (jc, nc), ap, bp);
                }
            }
        }
    } else if narrow {
        // A packed once per K chunk, its rows in one ic block.
        for chunk in 0..chunks {
            let (pc, kc) = (chunk * KC, KC.min(k - chunk * KC));
            let ap = packed_a(pc, kc, rows.start, rows.len());
            for jc in cols.clone().step_by(blk.nc_narrow) {
                let nc = blk.nc_narrow.min(cols.end - jc);
                block(chunk, (rows.start, rows.len()), (jc, nc), ap, packed_b(pc, kc, jc, nc));
            }
        }
    } else {
        for jc in cols.clone().step_by(blk.nc) {
            let nc = blk.nc.min(cols.end - jc);
            for chunk in 0..chunks {
                let (pc, kc) = (chunk * KC, KC.min(k - chunk * KC));
                let bp = packed_b(pc, kc, jc, nc);
                for ic in rows.clone().step_by(blk.mc) {
                    let mc = blk.mc.min(rows.end - ic);
                    let ap = packed_a(pc, kc, ic, mc);
                    block(chunk, (ic, mc), (jc, nc), ap, bp);
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
/// `(ic, jc)` for K chunk `chunk` (of `chunks`), from packed A panels,
/// hinting C's tiles toward L2 ahead of use where they are read (later
/// chunks) or where C is `c_from_memory`.
///
/// # Safety
/// `ap` holds the block's A panels (`ceil(mc/MR)` panels of `kc × MR`), `b`
/// its B panels or rows (`kc` rows of `nc` readable floats), `kc` the
/// chunk's length; the block lies inside C; `epi.bias` is null or covers the
/// rows.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn macro_kernel<K: MicroKernel>(
    kern: K,
    chunk: usize,
    chunks: usize,
    k: usize,
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
    let kc = KC.min(k - chunk * KC);
    let last = chunk + 1 == chunks;
    let spec = StoreSpec {
        alpha: epi.alpha,
        beta: if chunk == 0 { epi.beta } else { 1.0 },
        store: if chunk == 0 && epi.beta == 0.0 { Store::Overwrite } else { Store::Update },
        bias: std::ptr::null(),
        act: if last { epi.act } else { Activation::None },
    };
    for jr in (0..nc).step_by(nr) {
        for ir in (0..mc).step_by(mr) {
            let (i, j) = (ic + ir, jc + jr);
            let out = TileOut {
                // SAFETY: (i, j) is inside C (i < m, j < n).
                c: unsafe { c.ptr.offset(i as isize * c.rs + j as isize * c.cs) },
                rsc: c.rs,
                csc: c.cs,
                rows: mr.min(mc - ir),
                cols: nr.min(nc - jr),
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
