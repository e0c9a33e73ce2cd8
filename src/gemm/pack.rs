//! Packing: copies a block of an operand into the micro-panels a kernel
//! streams (see `kernel::MicroKernel` for the layout). Operands arrive through
//! [`PanelSource`], so a strided matrix and an image read as im2col columns
//! pack through the same engine. Also the aligned, reusable packing buffers.

use crate::simd::{Lanes, WithLanes};

/// A `K × W` matrix the engine can pack into panels of `P` columns: the B
/// operand (`K × N`, panels of `NR`) or the transpose of A (`K × M`, panels
/// of `MR`).
pub(crate) trait PanelSource: Sync {
    /// Packs rows `k0 .. k0+kc` and columns `j0 .. j0+w` into `ceil(w / P)`
    /// panels (`P = panel`, a width [`with_panel_width`] lists) laid one after another,
    /// each `kc × P` row-major: `dst[p·kc·P + kk·P + jj]` = element
    /// `(k0 + kk, j0 + p·P + jj)`, and zeros in the columns of the last panel
    /// past `w`. The caller keeps `k0 + kc <= K` and `j0 + w <= W`; `dst`
    /// holds at least `ceil(w / P)·kc·P` floats. `lanes` are the running
    /// kernel's: a packer that copies by vectors runs on them.
    #[allow(clippy::too_many_arguments)]
    fn pack<L: Lanes>(&self, lanes: L, panel: usize, k0: usize, kc: usize, j0: usize, w: usize, dst: &mut [f32]);

    /// The panels `pack(panel, k0, kc, j0, ..)` would write, if the source
    /// already holds them packed (`j0` a multiple of `panel`, `k0` the start
    /// of a K chunk); the engine then skips packing.
    fn packed(&self, _panel: usize, _k0: usize, _kc: usize, _j0: usize) -> Option<&[f32]> {
        None
    }

    /// `(ptr, row_stride)` if the source is rows of contiguous floats in
    /// memory, element `(k, j)` at `ptr + k·row_stride + j`: a kernel can
    /// then read B where it lies instead of packing it.
    fn rows(&self) -> Option<(*const f32, isize)> {
        None
    }

    /// Whether packing a block of B costs a setup per block (the implicit
    /// im2col's band of padded input rows) that wider blocks share out: then
    /// the narrow loop orders fill their quarter of L2 with as many columns
    /// as a short K leaves room for ([`super::Blocking::nc_narrow_for`]).
    fn setup_per_block(&self) -> bool {
        false
    }
}

/// An operand packed once for every K chunk and reused across calls (the
/// weights of a convolution plan), laid out as [`PackedPanels`] describes.
pub(crate) struct PrepackedSource {
    data: PackBuf,
    panel: usize,
    /// W rounded up to a multiple of the panel width.
    padded_w: usize,
    /// Rows (K) and the rows per chunk it was cut into.
    k: usize,
    chunk: usize,
}

impl PrepackedSource {
    /// Packs the `k × w` source `src` with panels of `panel` columns, cutting K every `chunk` rows.
    pub(crate) fn new<S: PanelSource, L: Lanes>(
        lanes: L,
        src: &S,
        panel: usize,
        k: usize,
        w: usize,
        chunk: usize,
    ) -> Self {
        let padded_w = w.div_ceil(panel) * panel;
        let mut data = PackBuf::default();
        let buf = data.get(k * padded_w);
        for k0 in (0..k).step_by(chunk.max(1)) {
            let kc = chunk.min(k - k0);
            src.pack(lanes, panel, k0, kc, 0, w, &mut buf[k0 * padded_w..(k0 + kc) * padded_w]);
        }
        PrepackedSource { data, panel, padded_w, k, chunk: chunk.max(1) }
    }

    /// `(panel width, W rounded up to it, rows per K chunk, the packed
    /// floats)`: chunk `c` at `c·chunk·padded_w`, its panel `p` of `kc`
    /// rows `p·kc·panel` floats after that.
    pub(crate) fn layout(&self) -> (usize, usize, usize, &[f32]) {
        (self.panel, self.padded_w, self.chunk, self.data.as_slice())
    }

    /// Whether this is a `k × w` source packed whole.
    pub(crate) fn covers(&self, k: usize, w: usize) -> bool {
        self.k == k && self.padded_w >= w && self.data.as_slice().len() >= k * self.padded_w
    }

    /// The packed floats as a borrowed source.
    fn view(&self) -> PackedPanels<'_> {
        PackedPanels {
            data: self.data.as_slice(),
            panel: self.panel,
            padded_w: self.padded_w,
            k: self.k,
            chunk: self.chunk,
        }
    }
}

impl PanelSource for PrepackedSource {
    fn pack<L: Lanes>(&self, lanes: L, panel: usize, k0: usize, kc: usize, j0: usize, w: usize, dst: &mut [f32]) {
        self.view().pack(lanes, panel, k0, kc, j0, w, dst)
    }

    fn packed(&self, panel: usize, k0: usize, kc: usize, j0: usize) -> Option<&[f32]> {
        let start = self.view().packed_start(panel, k0, kc, j0)?;
        Some(&self.data.as_slice()[start..(k0 + kc) * self.padded_w])
    }
}

/// A `k × W` matrix already in a kernel's panels, in memory the caller
/// owns (a plan's weights, or operands written packed in the first place,
/// like Winograd's transformed inputs): K cut into chunks of `chunk` rows;
/// chunk `c` (rows `k0 = c·chunk ..`, `kc` of them) at `k0·padded_w`, as
/// `padded_w / panel` panels of `kc × panel` one after another, row-major.
/// [`PackedPanels::offset`] gives the place of each element.
#[derive(Clone, Copy)]
pub(crate) struct PackedPanels<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) panel: usize,
    pub(crate) padded_w: usize,
    pub(crate) k: usize,
    pub(crate) chunk: usize,
}

impl PackedPanels<'_> {
    /// Where element `(k, j)` lies (`k < K`, `j < padded_w`), for a matrix
    /// of `k_total` rows in this layout.
    #[inline(always)]
    pub(crate) fn offset(panel: usize, padded_w: usize, k_total: usize, chunk: usize, k: usize, j: usize) -> usize {
        let k0 = k / chunk * chunk;
        let kc = chunk.min(k_total - k0);
        k0 * padded_w + (j / panel) * kc * panel + (k - k0) * panel + j % panel
    }

    /// Element `(k, j)`, `k < K`, `j < W`.
    fn get(&self, k: usize, j: usize) -> f32 {
        self.data[Self::offset(self.panel, self.padded_w, self.k, self.chunk, k, j)]
    }

    /// Where the panels `pack(panel, k0, kc, j0, ..)` would write start, if
    /// they lie here already: the same panel width, `j0` a panel's first
    /// column, `(k0, kc)` a whole chunk.
    fn packed_start(&self, panel: usize, k0: usize, kc: usize, j0: usize) -> Option<usize> {
        let whole_chunk = k0.is_multiple_of(self.chunk) && kc == self.chunk.min(self.k - k0);
        (panel == self.panel && j0.is_multiple_of(panel) && whole_chunk).then_some(k0 * self.padded_w + j0 * kc)
    }
}

impl PanelSource for PackedPanels<'_> {
    fn pack<L: Lanes>(&self, _: L, panel: usize, k0: usize, kc: usize, j0: usize, w: usize, dst: &mut [f32]) {
        if let Some(src) = self.packed(panel, k0, kc, j0) {
            let len = w.div_ceil(panel) * panel * kc;
            dst[..len].copy_from_slice(&src[..len]);
            return;
        }
        // Another panel width (or chunking): element by element.
        for (p, panel_dst) in dst.chunks_exact_mut(kc * panel).take(w.div_ceil(panel)).enumerate() {
            for (kk, row) in panel_dst.chunks_exact_mut(panel).enumerate() {
                for (jj, x) in row.iter_mut().enumerate() {
                    let j = j0 + p * panel + jj;
                    *x = if j < j0 + w { self.get(k0 + kk, j) } else { 0.0 };
                }
            }
        }
    }

    fn packed(&self, panel: usize, k0: usize, kc: usize, j0: usize) -> Option<&[f32]> {
        let start = self.packed_start(panel, k0, kc, j0)?;
        Some(&self.data[start..(k0 + kc) * self.padded_w])
    }
}

/// The columns `first ..` of another source (for Aᵀ: rows `first ..` of
/// A), so that a product can compute some rows of C from a prepacked A.
/// Packed panels pass through where `first` is a multiple of the panel
/// width.
pub(crate) struct ColumnsFrom<'a, S> {
    pub(crate) src: &'a S,
    pub(crate) first: usize,
}

impl<S: PanelSource> PanelSource for ColumnsFrom<'_, S> {
    fn pack<L: Lanes>(&self, lanes: L, panel: usize, k0: usize, kc: usize, j0: usize, w: usize, dst: &mut [f32]) {
        self.src.pack(lanes, panel, k0, kc, self.first + j0, w, dst)
    }

    fn packed(&self, panel: usize, k0: usize, kc: usize, j0: usize) -> Option<&[f32]> {
        self.src.packed(panel, k0, kc, self.first + j0)
    }
}

/// Calls `$f::<P>($args)` with `P` the const equal to `$panel`, one of the
/// panel widths kernels use (every MR and NR), so packing loops are
/// monomorphized and their copies have a fixed length.
macro_rules! with_panel_width {
    ($panel:expr, $f:ident ( $($arg:expr),* )) => {
        match $panel {
            4 => $f::<4>($($arg),*),
            6 => $f::<6>($($arg),*),
            8 => $f::<8>($($arg),*),
            12 => $f::<12>($($arg),*),
            16 => $f::<16>($($arg),*),
            32 => $f::<32>($($arg),*),
            p => unreachable!("panel width {p} is no kernel's MR or NR"),
        }
    };
}
pub(crate) use with_panel_width;

/// A matrix in caller memory: element `(k, j)` at `ptr + k·row_stride + j·col_stride`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StridedSource {
    ptr: *const f32,
    row_stride: isize,
    col_stride: isize,
}

// SAFETY: the source only reads, and `new`'s contract makes every read valid
// for as long as the source lives, from any thread.
unsafe impl Sync for StridedSource {}
// SAFETY: as for Sync.
unsafe impl Send for StridedSource {}

impl StridedSource {
    /// # Safety
    /// For the `K × W` extent the source will be packed over, every
    /// `ptr + k·row_stride + j·col_stride` must be readable while the
    /// source is in use.
    pub(crate) unsafe fn new(ptr: *const f32, row_stride: isize, col_stride: isize) -> Self {
        StridedSource { ptr, row_stride, col_stride }
    }

    /// # Safety
    /// `(k, j)` inside the extent promised to `new`.
    #[inline(always)]
    unsafe fn at(&self, k: usize, j: usize) -> *const f32 {
        // SAFETY: the caller keeps (k, j) in the promised extent.
        unsafe { self.ptr.offset(k as isize * self.row_stride + j as isize * self.col_stride) }
    }
}

impl PanelSource for StridedSource {
    fn pack<L: Lanes>(&self, lanes: L, panel: usize, k0: usize, kc: usize, j0: usize, w: usize, dst: &mut [f32]) {
        with_panel_width!(panel, enter_pack(lanes, self, k0, kc, j0, w, dst))
    }

    fn rows(&self) -> Option<(*const f32, isize)> {
        (self.col_stride == 1).then_some((self.ptr, self.row_stride))
    }
}

/// A source with a packer of its own for whole blocks, worth running inside
/// the lanes' target features: its fixed-length copies then move as whole
/// vectors (the x86-64 baseline moves 4 floats at a time).
pub(crate) trait PackRows: Sync {
    /// [`PanelSource::pack`] for panels `P` wide (implementations are
    /// `#[inline(always)]`, so they compile with the lanes' features).
    fn pack_rows<L: Lanes, const P: usize>(&self, lanes: L, k0: usize, kc: usize, j0: usize, w: usize, dst: &mut [f32]);
}

/// One block of a [`PackRows`] source, as code run on lanes.
struct PackBlock<'a, S, const P: usize> {
    src: &'a S,
    k0: usize,
    kc: usize,
    j0: usize,
    w: usize,
    dst: &'a mut [f32],
}

impl<S: PackRows, const P: usize> WithLanes for PackBlock<'_, S, P> {
    type Output = ();
    #[inline(always)]
    fn run<L: Lanes>(self, lanes: L) {
        let PackBlock { src, k0, kc, j0, w, dst } = self;
        src.pack_rows::<L, P>(lanes, k0, kc, j0, w, dst)
    }
}

/// Packs a block of `src` in panels `P` wide on `lanes`: one entry into
/// their target features per panel width, so that each width compiles to a
/// function of its own (one function holding every width ran sgemm's
/// packers 4–7 % slower on Zen 4).
pub(crate) fn enter_pack<const P: usize>(
    lanes: impl Lanes,
    src: &impl PackRows,
    k0: usize,
    kc: usize,
    j0: usize,
    w: usize,
    dst: &mut [f32],
) {
    lanes.enter(PackBlock::<_, P> { src, k0, kc, j0, w, dst })
}

impl PackRows for StridedSource {
    #[inline(always)]
    fn pack_rows<L: Lanes, const P: usize>(&self, _: L, k0: usize, kc: usize, j0: usize, w: usize, dst: &mut [f32]) {
        pack_strided::<P>(self, k0, kc, j0, w, dst)
    }
}

#[inline(always)]
fn pack_strided<const P: usize>(src: &StridedSource, k0: usize, kc: usize, j0: usize, w: usize, dst: &mut [f32]) {
    let s = src;
    {
        if kc == 0 {
            return;
        }
        let mut first = 0;
        if s.col_stride == 1 {
            // Whole panels of rows of contiguous floats (B row-major, A
            // column-major), row by row across the block: each source row
            // is read front to back once (in panel order, 2 lines a row a
            // panel at a stride of a whole row, the memory prefetchers fell
            // behind: 256 × 2304 × 3136 spent 14 % of its time here). A last
            // partial panel is left to the loop below.
            first = w / P;
            for kk in 0..kc {
                // SAFETY: (k0 + kk, j0 .. j0 + first·P) is inside the extent and contiguous.
                let src = unsafe { std::slice::from_raw_parts(s.at(k0 + kk, j0), first * P) };
                for (p, piece) in src.chunks_exact(P).enumerate() {
                    dst[(p * kc + kk) * P..][..P].copy_from_slice(piece);
                }
            }
        }
        for (p, panel) in dst.chunks_exact_mut(kc * P).take(w.div_ceil(P)).enumerate().skip(first) {
            let jp = j0 + p * P;
            let wp = P.min(j0 + w - jp);
            if s.row_stride == 1 {
                // Columns contiguous along k (A row-major packed as Aᵀ, B
                // column-major, a plan's weights).
                // SAFETY: (k0, jp) is inside the extent.
                let base = unsafe { s.at(k0, jp) };
                if P <= 8 {
                    // A narrow panel (A's MR): read its P columns side by
                    // side, write each panel row contiguously.
                    let gather = |row: &mut [f32], kk: usize, w: usize| {
                        for (jj, x) in row.iter_mut().enumerate().take(w) {
                            // SAFETY: (k0 + kk, jp + jj) is inside the extent (kk < kc, jj < wp).
                            *x = unsafe { *base.offset(kk as isize + jj as isize * s.col_stride) };
                        }
                    };
                    if wp == P {
                        // The common full panel: a fixed-length inner loop.
                        for (kk, row) in panel.chunks_exact_mut(P).enumerate() {
                            gather(row, kk, P);
                        }
                    } else {
                        for (kk, row) in panel.chunks_exact_mut(P).enumerate() {
                            gather(row, kk, wp);
                        }
                        zero_tail::<P>(panel, wp);
                    }
                    continue;
                }
                // A wide panel: in 8 × 8 blocks, each a fixed-size transpose.
                // SAFETY: (k0 .. k0 + kc, jp + jj) is inside the extent for
                // jj < wp, and contiguous (row stride 1).
                let col =
                    |jj: usize| unsafe { std::slice::from_raw_parts(base.offset(jj as isize * s.col_stride), kc) };
                let (w8, k8) = (wp / 8 * 8, kc / 8 * 8);
                for j in (0..w8).step_by(8) {
                    let cols: [&[f32]; 8] = std::array::from_fn(|jj| col(j + jj));
                    for k in (0..k8).step_by(8) {
                        let block: [[f32; 8]; 8] = std::array::from_fn(|jj| cols[jj][k..k + 8].try_into().unwrap());
                        for kk in 0..8 {
                            let row: &mut [f32; 8] = (&mut panel[(k + kk) * P + j..][..8]).try_into().unwrap();
                            *row = std::array::from_fn(|jj| block[jj][kk]);
                        }
                    }
                    for k in k8..kc {
                        for jj in 0..8 {
                            panel[k * P + j + jj] = cols[jj][k];
                        }
                    }
                }
                for jj in w8..wp {
                    for (row, &x) in panel.chunks_exact_mut(P).zip(col(jj)) {
                        row[jj] = x;
                    }
                }
                zero_tail::<P>(panel, wp);
            } else if s.col_stride == 1 {
                // The last partial panel of contiguous rows (B row-major):
                // each row's `wp` floats in fixed-size moves (a float at a
                // time, with a test per float, it took a fifth of
                // ShuffleNet's 272-channel 1×1 in 4 groups on 7², 49 = 32 +
                // 17 columns; Zen 4, 1 thread).
                for (kk, row) in panel.chunks_exact_mut(P).enumerate() {
                    // SAFETY: (k0 + kk, jp .. jp + wp) is inside the extent, contiguous (column stride 1).
                    let src = unsafe { std::slice::from_raw_parts(s.at(k0 + kk, jp), wp) };
                    let (head, tail) = row.split_at_mut(wp);
                    copy_floats(head, src);
                    zero_floats(tail);
                }
            } else {
                for (kk, row) in panel.chunks_exact_mut(P).enumerate() {
                    for (jj, x) in row.iter_mut().enumerate() {
                        // SAFETY: (k0 + kk, jp + jj) is inside the extent for jj < wp.
                        *x = if jj < wp { unsafe { *s.at(k0 + kk, jp + jj) } } else { 0.0 };
                    }
                }
            }
        }
    }
}

/// `dst.copy_from_slice(src)` (equal lengths), in at most two moves of a
/// fixed size for up to 64 floats, not a call into the C library: a 7×7
/// plane's band is ~1,000 rows of 1, 7 and 1 floats per layer, and their
/// `memcpy` / `memset` calls (each with a `vzeroupper` out of AVX-512
/// code) took a fifth of a 128 -> 32 3×3 layer (Zen 4, 1 thread; the
/// conv band builder now copies its rows here). Also a packed panel's
/// last partial rows.
#[inline(always)]
pub(crate) fn copy_floats(dst: &mut [f32], src: &[f32]) {
    let n = src.len();
    let dst = &mut dst[..n];
    macro_rules! ends {
        ($w:literal) => {{
            // The first and the last $w floats (overlapping where n < 2·$w).
            dst[..$w].copy_from_slice(&src[..$w]);
            dst[n - $w..].copy_from_slice(&src[n - $w..]);
        }};
    }
    match n {
        0 => {}
        1..=3 => {
            dst[0] = src[0];
            dst[n / 2] = src[n / 2];
            dst[n - 1] = src[n - 1];
        }
        4..=8 => ends!(4),
        9..=16 => ends!(8),
        17..=32 => ends!(16),
        33..=64 => ends!(32),
        _ => dst.copy_from_slice(src),
    }
}

/// `dst.fill(0.0)`, as [`copy_floats`] copies.
#[inline(always)]
pub(crate) fn zero_floats(dst: &mut [f32]) {
    const ZEROS: [f32; 32] = [0.0; 32];
    let n = dst.len();
    macro_rules! ends {
        ($w:literal) => {{
            dst[..$w].copy_from_slice(&ZEROS[..$w]);
            dst[n - $w..].copy_from_slice(&ZEROS[..$w]);
        }};
    }
    match n {
        0..16 => copy_floats(dst, &ZEROS[..n]),
        16..=32 => ends!(16),
        33..=64 => ends!(32),
        _ => dst.fill(0.0),
    }
}

/// Zeros columns `w..P` of every row of a `kc × P` panel.
#[inline]
pub(crate) fn zero_tail<const P: usize>(panel: &mut [f32], w: usize) {
    if w < P {
        for row in panel.chunks_exact_mut(P) {
            row[w..].fill(0.0);
        }
    }
}

/// A 64-byte aligned line of floats, the unit packing buffers grow by.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// A growable, 64-byte aligned float buffer, reused across calls.
#[derive(Default)]
pub(crate) struct PackBuf {
    lines: Vec<Line>,
    len: usize,
}

impl PackBuf {
    /// The first `len` floats, growing the buffer if needed (contents unspecified).
    pub(crate) fn get(&mut self, len: usize) -> &mut [f32] {
        let lines = len.div_ceil(16);
        if self.lines.len() < lines {
            self.lines.resize(lines, Line([0.0; 16]));
        }
        self.len = len;
        // SAFETY: `lines` holds at least `len` initialized f32s, contiguous
        // because `Line` is `repr(C)` of an f32 array with no padding.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<f32>(), len) }
    }

    /// The floats of the last `get`.
    pub(crate) fn as_slice(&self) -> &[f32] {
        // SAFETY: `lines` holds at least `len` initialized f32s (see `get`).
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<f32>(), self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_copies_and_zeros_touch_their_floats_only() {
        for n in 0..=70 {
            let src: Vec<f32> = (0..n).map(|i| i as f32 + 1.0).collect();
            let mut dst = vec![-1.0f32; n + 2];
            copy_floats(&mut dst[1..], &src);
            assert_eq!(dst[0], -1.0, "n = {n}");
            assert_eq!(&dst[1..=n], &src[..], "n = {n}");
            assert_eq!(dst[n + 1], -1.0, "n = {n}");
            let mut dst = vec![-1.0f32; n + 2];
            zero_floats(&mut dst[1..=n]);
            assert!(dst[1..=n].iter().all(|&v| v == 0.0) && dst[0] == -1.0 && dst[n + 1] == -1.0, "n = {n}");
        }
    }
}
