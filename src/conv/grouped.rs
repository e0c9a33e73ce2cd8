//! Channels-last grouped 1×1 convolutions with few channels a group
//! (ShuffleNet's): a strip of pixels against several groups at once, the
//! output channels as lanes, each input broadcast where it lies.
//!
//! The direct path runs such a layer a group at a time, in tiles of 8
//! pixels × the group's channels: with 6 input channels a group a tile's
//! product is 6 steps, and the call, the zeroed accumulators, the masks and
//! the stores cost as much again. Here one call takes `P` pixels × `G`
//! groups (one or two) × `V` vectors of each group's output channels
//! (`P·G·V` accumulators: the vector registers but the weights' `V` and a
//! broadcast), the input read where it lies (a pixel's channels of a group
//! are consecutive), the weights of a step loaded once for `P` pixels
//! (6 to 10 on AVX-512, 2 to 6 on AVX2's 16 registers). The sums run in the same order as
//! the direct path's (from +0, the input channels in order, then the bias,
//! then the activation): the same bits.

use crate::activation::Activation;
use crate::gemm::{CMatrix, KC, PanelSource, PrepackedSource};
use crate::geometry::{ConvGeometry, ConvParams};
use crate::isa::Isa;
use crate::layout::Layout;
use crate::simd::{self, Lanes, MaskedLanes, WithLanes};

/// Most input channels a group this path takes.
pub(crate) const MAX_K: usize = 64;

/// Most output channels a group this path takes: two AVX-512 vectors,
/// four AVX2 ones.
const MAX_M: usize = 32;

/// Output pixels an item computes a group block at a time: its outputs (at
/// most 256 × `c_out` floats) stay in L2 while every block of groups
/// writes its channels of them.
const PIXEL_BLOCK: usize = 256;

/// Whether this path takes a convolution of `params` with weights of
/// `weight_shape` on `isa`: channels-last, several groups, a 1×1 kernel at
/// stride 1 without padding, at most [`MAX_K`] input and [`MAX_M`] output
/// channels a group, on lanes with masks (x86's: a group's last vector is
/// stored under one). All of it is known when a plan is built.
pub(crate) fn takes(isa: Isa, params: &ConvParams, weight_shape: [usize; 4]) -> bool {
    let [c_out, cg, kh, kw] = weight_shape;
    let m = c_out / params.groups.max(1);
    params.layout == Layout::Nhwc
        && params.groups > 1
        && [kh, kw] == [1, 1]
        && params.stride == [1, 1]
        && params.padding == [0; 4]
        && (1..=MAX_K.min(KC)).contains(&cg)
        && (1..=MAX_M).contains(&m)
        && masked(isa)
}

/// Whether this path runs `geo` on `isa` (see [`takes`]).
pub(crate) fn applies(isa: Isa, geo: &ConvGeometry) -> bool {
    takes(isa, &geo.params(), [geo.c_out, geo.c_in_per_group(), geo.kh, geo.kw])
}

/// The name [`crate::Conv2dPlan::kernel_name`] gives this path on `isa`.
pub(crate) fn kernel_name(isa: Isa) -> &'static str {
    if isa == Isa::Avx512 { "grouped_1x1_avx512" } else { "grouped_1x1_avx2" }
}

/// Whether `isa`'s lanes have masks (x86's).
fn masked(isa: Isa) -> bool {
    matches!(isa, Isa::Avx512 | Isa::Avx2Fma)
}

/// One image's grouped 1×1 convolution, for its output pixels `pixels`:
/// `out` (channels-last, every group) from `input` (the same pixels) and
/// `weights[group]` (`K × m`, packed in panels of a multiple of the lanes),
/// plus the bias, then the activation.
pub(crate) struct Grouped<'a> {
    pub g: &'a ConvGeometry,
    /// The image's input, channels-last.
    pub input: &'a [f32],
    pub weights: &'a [PrepackedSource],
    pub bias: Option<&'a [f32]>,
    pub act: Activation,
    /// The image's output: pixel `p`'s channel `c` at `p·cs + c`.
    pub out: CMatrix,
    pub pixels: std::ops::Range<usize>,
}

/// Runs `job` on `isa`'s lanes.
///
/// # Panics
/// If [`applies`] is false for `job.g` on `isa`, or a buffer is too short.
///
/// # Safety
/// No one else accesses `job.pixels` of `job.out` meanwhile; `job.out`
/// holds `h_out·w_out` pixels of `c_out` channels.
pub(crate) unsafe fn run(isa: Isa, job: Grouped<'_>) {
    assert!(applies(isa, job.g), "grouped 1×1 path on a geometry it does not take");
    simd::dispatch(isa, job).expect("an available ISA");
}

impl WithLanes for Grouped<'_> {
    type Output = ();

    #[inline(always)]
    fn run<L: Lanes>(self, _: L) {
        unreachable!("`applies` takes masked lanes only")
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn avx2(self, _: simd::x86::Avx2) {
        // SAFETY: inside AVX2's features; `run`'s caller's guarantees.
        unsafe { self.masked::<simd::x86::Avx2>() }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn avx512(self, _: simd::x86::Avx512) {
        // SAFETY: inside AVX-512's features; `run`'s caller's guarantees.
        unsafe { self.masked::<simd::x86::Avx512>() }
    }
}

impl Grouped<'_> {
    /// The job on the masked lanes `L`, `P·G·V` accumulators a strip.
    ///
    /// # Safety
    /// Inside `L`'s features; as [`run`] says.
    #[inline(always)]
    unsafe fn masked<L: MaskedLanes>(self) {
        let vectors = self.g.c_out_per_group().div_ceil(L::N);
        // SAFETY: passed on.
        unsafe {
            // P·G·V accumulators, V weights and a broadcast in the registers.
            // Zen 4, 1 thread, 24 -> 112 in 4 groups on 56²: two groups of 6
            // pixels 53.5 µs, one of 12 56 µs; four of 3 left the accumulators
            // in memory (the compiler kept their loops rolled), 150 µs.
            match (vectors, L::REGS >= 32) {
                (1, true) => self.blocks::<L, 2, 10, 1>(),
                (_, true) => self.blocks::<L, 2, 6, 2>(),
                (1, false) => self.blocks::<L, 2, 6, 1>(),
                (2, false) => self.blocks::<L, 1, 6, 2>(),
                (3, false) => self.blocks::<L, 1, 3, 3>(),
                (_, false) => self.blocks::<L, 1, 2, 4>(),
            }
        }
    }

    /// The pixels in blocks of [`PIXEL_BLOCK`], each block's groups `G` at
    /// a time (the last fewer, one at a time), each block's pixels `P` at
    /// a time (the last fewer, one at a time).
    ///
    /// # Safety
    /// As [`Grouped::masked`].
    #[inline(always)]
    unsafe fn blocks<L: MaskedLanes, const G: usize, const P: usize, const V: usize>(self) {
        let geo = self.g;
        let (k, m, groups) = (geo.c_in_per_group(), geo.c_out_per_group(), geo.groups);
        let (c_in, c_out) = (geo.c_in, geo.c_out);
        assert!(self.pixels.end <= geo.out_pixels() && self.input.len() >= geo.out_pixels() * c_in);
        assert!(self.bias.is_none_or(|b| b.len() >= c_out) && self.weights.len() == groups && G <= MAX_G);
        // Where vector v of a step's weights starts in a group's panels.
        let (panel, ..) = self.weights[0].layout();
        assert!(panel.is_multiple_of(L::N) && V * L::N >= m && (V - 1) * L::N < m);
        let packed = |group: usize| {
            let w = &self.weights[group];
            assert!(w.covers(k, m) && w.layout().0 == panel, "weights of K × m in panels");
            w.packed(panel, 0, k, 0).expect("one K chunk").as_ptr()
        };
        let mut s = Strip::<L, V> {
            x: std::ptr::null(),
            c_in,
            k,
            w: [std::ptr::null(); MAX_G],
            woff: std::array::from_fn(|v| (v * L::N / panel) * k * panel + v * L::N % panel),
            panel,
            bias: std::ptr::null(),
            m,
            // SAFETY: inside `L`'s features.
            tail: unsafe { L::mask(0, m - (V - 1) * L::N) },
            act: self.act,
            out: std::ptr::null_mut(),
            c_out,
        };
        let mut p0 = self.pixels.start;
        while p0 < self.pixels.end {
            let p1 = (p0 + PIXEL_BLOCK).min(self.pixels.end);
            let mut g0 = 0;
            while g0 < groups {
                let whole = g0 + G <= groups;
                for i in 0..if whole { G } else { 1 } {
                    s.w[i] = packed(g0 + i);
                }
                s.bias = self.bias.map_or(std::ptr::null(), |b| b[g0 * m..].as_ptr());
                let mut p = p0;
                while p < p1 {
                    s.x = self.input[p * c_in + g0 * k..].as_ptr();
                    s.out = self.out.ptr.wrapping_add(p * c_out + g0 * m);
                    let full = p + P <= p1;
                    // SAFETY: the strip's pixels p .. p + P (or p + 1) are
                    // inside `pixels`, so inside the input (asserted) and
                    // this job's part of the output; its groups g0 ..
                    // g0 + G (or + 1) exist, their weights are K × m in
                    // panels of `panel` (asserted), their bias values
                    // inside `bias`.
                    unsafe {
                        match (whole, full) {
                            (true, true) => strip::<L, P, G, V>(&s),
                            (true, false) => strip::<L, 1, G, V>(&s),
                            (false, true) => strip::<L, P, 1, V>(&s),
                            (false, false) => strip::<L, 1, 1, V>(&s),
                        }
                    }
                    p += if full { P } else { 1 };
                }
                g0 += if whole { G } else { 1 };
            }
            p0 = p1;
        }
    }
}

/// Most groups a call takes.
const MAX_G: usize = 4;

/// One call's operands: pixels from `x` (`c_in` floats apart), groups
/// `k` floats apart, group `i`'s weights at `w[i]` (vector `v` of step
/// `kk` at `woff[v] + kk·panel`), its bias at `bias + i·m` (or none), its
/// outputs at `out + i·m` for the first pixel, pixels `c_out` floats apart;
/// the last vector of a group's `m` channels under the mask `tail`.
struct Strip<L: MaskedLanes, const V: usize> {
    x: *const f32,
    c_in: usize,
    k: usize,
    w: [*const f32; MAX_G],
    woff: [usize; V],
    panel: usize,
    bias: *const f32,
    m: usize,
    tail: L::M,
    act: Activation,
    out: *mut f32,
    c_out: usize,
}

/// `P` pixels × `G` groups × `V` vectors of `s`: from +0, the `k` input
/// channels in order, then the bias, then the activation.
///
/// # Safety
/// Inside `L`'s features; the operands as [`Strip`] says, for `P` pixels
/// and `G` groups.
// (Index loops: the accumulators in registers need every index a constant
// once the loops are unrolled; the activation over flattened iterators left
// them in memory.)
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn strip<L: MaskedLanes, const P: usize, const G: usize, const V: usize>(s: &Strip<L, V>) {
    // SAFETY: the caller's guarantees, for every pointer below.
    unsafe {
        let mut acc = [[[L::splat(0.0); V]; G]; P];
        for kk in 0..s.k {
            for g in 0..G {
                let mut w = [L::splat(0.0); V];
                for v in 0..V {
                    w[v] = L::load(s.w[g].add(s.woff[v] + kk * s.panel));
                }
                for (p, acc) in acc.iter_mut().enumerate() {
                    let x = L::splat(*s.x.add(p * s.c_in + g * s.k + kk));
                    for v in 0..V {
                        acc[g][v] = L::fma(x, w[v], acc[g][v]);
                    }
                }
            }
        }
        // (Each pass below a loop of few instructions, which the compiler
        // unrolls whole: the accumulators stay in registers.)
        if !s.bias.is_null() {
            for g in 0..G {
                for v in 0..V {
                    let at = s.bias.add(g * s.m + v * L::N);
                    let b = if v + 1 == V { L::load_masked(s.tail, at) } else { L::load(at) };
                    for acc in acc.iter_mut() {
                        acc[g][v] = L::add(acc[g][v], b);
                    }
                }
            }
        }
        if s.act != Activation::None {
            for p in 0..P {
                for g in 0..G {
                    for v in 0..V {
                        acc[p][g][v] = L::activate(s.act, acc[p][g][v]);
                    }
                }
            }
        }
        for p in 0..P {
            for g in 0..G {
                for v in 0..V - 1 {
                    L::store(s.out.add(p * s.c_out + g * s.m + v * L::N), acc[p][g][v]);
                }
                L::store_masked(s.tail, s.out.add(p * s.c_out + g * s.m + (V - 1) * L::N), acc[p][g][V - 1]);
            }
        }
    }
}
