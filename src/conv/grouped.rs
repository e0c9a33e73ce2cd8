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
//! (6 to 10 on AVX-512, 2 to 6 on AVX2's 16 registers). On AVX-512 a
//! group's last vector of at most 8 channels is a 256-bit one (ShuffleNet's
//! 34 channels a group: 16 + 16 + 2), whose FMAs a core that splits 512-bit
//! ones (Zen 4) runs in half the time. The sums run in the same order as
//! the direct path's (from +0, the input channels in order, then the bias,
//! then the activation): the same bits.

// (Only x86 has masked lanes: elsewhere `takes` is false and the kernel unused.)
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

use crate::activation::Activation;
use crate::gemm::{CMatrix, KC, PanelSource, PrepackedSource};
use crate::geometry::{ConvGeometry, ConvParams};
use crate::isa::Isa;
use crate::layout::Layout;
use crate::simd::{self, Lanes, MaskedLanes, WithLanes};

/// Most input channels a group this path takes.
pub(crate) const MAX_K: usize = 64;

/// Most output channels a group this path takes on `isa`: three AVX-512
/// vectors, five AVX2 ones; none on lanes without masks (a group's last
/// vector is stored under one).
fn max_m(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 => 48,
        Isa::Avx2Fma => 40,
        _ => 0,
    }
}

/// Output pixels an item computes a group block at a time: its outputs (at
/// most 256 × `c_out` floats) stay in L2 while every block of groups
/// writes its channels of them.
const PIXEL_BLOCK: usize = 256;

/// Whether this path takes a convolution of `params` with weights of
/// `weight_shape` on `isa`: channels-last, several groups, a 1×1 kernel at
/// stride 1 without padding, at most [`MAX_K`] input and [`max_m`] output
/// channels a group (x86 only). All of it is known when a plan is built.
pub(crate) fn takes(isa: Isa, params: &ConvParams, weight_shape: [usize; 4]) -> bool {
    let [c_out, cg, kh, kw] = weight_shape;
    let m = c_out / params.groups.max(1);
    params.layout == Layout::Nhwc
        && params.groups > 1
        && [kh, kw] == [1, 1]
        && params.stride == [1, 1]
        && params.padding == [0; 4]
        && (1..=MAX_K.min(KC)).contains(&cg)
        && (1..=max_m(isa)).contains(&m)
}

/// Whether this path runs `geo` on `isa` (see [`takes`]).
pub(crate) fn applies(isa: Isa, geo: &ConvGeometry) -> bool {
    takes(isa, &geo.params(), [geo.c_out, geo.c_in_per_group(), geo.kh, geo.kw])
}

/// The name [`crate::Conv2dPlan::kernel_name`] gives this path on `isa`.
pub(crate) fn kernel_name(isa: Isa) -> &'static str {
    if isa == Isa::Avx512 { "grouped_1x1_avx512" } else { "grouped_1x1_avx2" }
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
        use simd::x86::Avx2;
        // SAFETY: inside AVX2's features; `run`'s caller's guarantees.
        // P·G·(F + 1) accumulators, F + 1 weights and a broadcast in 16
        // registers. Five vectors (ShuffleNet's 34 channels a group: 8 · 4
        // + 2), Zen 4 with the AVX2 path forced, 1 thread, 136 -> 136 in 4
        // groups: on 28² 115 µs on the direct path, 90 here (NCHW 84); on
        // 14² 29.1 and 22.0 (NCHW 21.8).
        unsafe {
            match self.g.c_out_per_group().div_ceil(8) {
                1 => self.blocks::<Avx2, Avx2, 2, 6, 0>(),
                2 => self.blocks::<Avx2, Avx2, 1, 6, 1>(),
                3 => self.blocks::<Avx2, Avx2, 1, 3, 2>(),
                4 => self.blocks::<Avx2, Avx2, 1, 2, 3>(),
                _ => self.blocks::<Avx2, Avx2, 1, 2, 4>(),
            }
        }
    }

    /// A group's last vector of at most 8 channels runs at 256 bits (AVX2's
    /// lanes): a core that splits 512-bit FMAs in two (Zen 4) runs it in
    /// half the time.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn avx512(self, _: simd::x86::Avx512) {
        use simd::x86::{Avx2, Avx512};
        let m = self.g.c_out_per_group();
        let half = (m - 1) % 16 < 8;
        // SAFETY: inside AVX-512's features (so AVX2's); `run`'s caller's
        // guarantees. P·G·(F + 1) accumulators, F + 1 weights and a
        // broadcast (two with a half vector) in 32 registers. Zen 4, 1
        // thread, 24 -> 112 in 4 groups on 56²: two groups of 6 pixels
        // 53.5 µs, one of 12 56 µs; four of 3 left the accumulators in
        // memory (the compiler kept their loops rolled), 150 µs.
        unsafe {
            match ((m - 1) / 16, half) {
                (0, true) => self.blocks::<Avx512, Avx2, 2, 10, 0>(),
                (0, false) => self.blocks::<Avx512, Avx512, 2, 10, 0>(),
                (1, true) => self.blocks::<Avx512, Avx2, 2, 6, 1>(),
                (1, false) => self.blocks::<Avx512, Avx512, 2, 6, 1>(),
                (_, true) => self.blocks::<Avx512, Avx2, 1, 9, 2>(),
                (_, false) => self.blocks::<Avx512, Avx512, 1, 9, 2>(),
            }
        }
    }
}

impl Grouped<'_> {
    /// The pixels in blocks of [`PIXEL_BLOCK`], each block's groups `G` at
    /// a time (the last fewer, one at a time), each block's pixels `P` at
    /// a time (the last fewer, one at a time); a group's channels as `F`
    /// vectors of `L` and a last one of `T` under a mask.
    ///
    /// # Safety
    /// Inside `L`'s and `T`'s features; as [`run`] says.
    #[inline(always)]
    unsafe fn blocks<L: MaskedLanes, T: MaskedLanes, const G: usize, const P: usize, const F: usize>(self) {
        let geo = self.g;
        let (k, m, groups) = (geo.c_in_per_group(), geo.c_out_per_group(), geo.groups);
        let (c_in, c_out) = (geo.c_in, geo.c_out);
        assert!(self.pixels.end <= geo.out_pixels() && self.input.len() >= geo.out_pixels() * c_in);
        assert!(self.bias.is_none_or(|b| b.len() >= c_out) && self.weights.len() == groups && G <= MAX_G);
        // The channels of the full vectors, then the tail's.
        let (full, tail) = (F * L::N, m - F * L::N);
        let (panel, ..) = self.weights[0].layout();
        assert!(panel.is_multiple_of(L::N) && L::N.is_multiple_of(T::N) && F < MAX_V && (1..=T::N).contains(&tail));
        let packed = |group: usize| {
            let w = &self.weights[group];
            assert!(w.covers(k, m) && w.layout().0 == panel, "weights of K × m in panels");
            w.packed(panel, 0, k, 0).expect("one K chunk").as_ptr()
        };
        // Where a step's weights of channel j start in a group's panels.
        let at = |j: usize| (j / panel) * k * panel + j % panel;
        let mut s = Strip {
            x: std::ptr::null(),
            c_in,
            k,
            w: [std::ptr::null(); MAX_G],
            woff: std::array::from_fn(|v| at((v * L::N).min(full))),
            panel,
            bias: std::ptr::null(),
            m,
            act: self.act,
            out: std::ptr::null_mut(),
            c_out,
        };
        // SAFETY: inside `T`'s features.
        let (tail, tail_len) = (unsafe { T::mask(0, tail) }, tail);
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
                    let all = p + P <= p1;
                    // SAFETY: the strip's pixels p .. p + P (or p + 1) are
                    // inside `pixels`, so inside the input (asserted) and
                    // this job's part of the output; its groups g0 ..
                    // g0 + G (or + 1) exist, their weights are K × m in
                    // panels of `panel` (asserted: each vector's floats lie
                    // in one panel), their bias values inside `bias`.
                    unsafe {
                        match (whole, all) {
                            (true, true) => strip::<L, T, P, G, F>(&s, tail, tail_len),
                            (true, false) => strip::<L, T, 1, G, F>(&s, tail, tail_len),
                            (false, true) => strip::<L, T, P, 1, F>(&s, tail, tail_len),
                            (false, false) => strip::<L, T, 1, 1, F>(&s, tail, tail_len),
                        }
                    }
                    p += if all { P } else { 1 };
                }
                g0 += if whole { G } else { 1 };
            }
            p0 = p1;
        }
    }
}

/// Most groups a call takes (the register blocks above take one or two).
const MAX_G: usize = 2;

/// Most vectors of a group's output channels.
const MAX_V: usize = 5;

/// One call's operands: pixels from `x` (`c_in` floats apart), groups
/// `k` floats apart, group `i`'s weights at `w[i]` (vector `v` of step
/// `kk` at `woff[v] + kk·panel`, the tail after the full vectors), its
/// bias at `bias + i·m` (or none), its outputs at `out + i·m` for the
/// first pixel, pixels `c_out` floats apart.
struct Strip {
    x: *const f32,
    c_in: usize,
    k: usize,
    w: [*const f32; MAX_G],
    woff: [usize; MAX_V],
    panel: usize,
    bias: *const f32,
    m: usize,
    act: Activation,
    out: *mut f32,
    c_out: usize,
}

/// `P` pixels × `G` groups × (`F` vectors of `L` and a tail of `T`, its
/// first `tail_len` lanes, under the mask `tail`) of `s`: from +0, the `k`
/// input channels in order, then the bias, then the activation.
///
/// # Safety
/// Inside `L`'s and `T`'s features; the operands as [`Strip`] says, for
/// `P` pixels and `G` groups of `F·L::N` channels and the tail's.
// (Index loops: the accumulators in registers need every index a constant
// once the loops are unrolled; the activation over flattened iterators left
// them in memory.)
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn strip<L: MaskedLanes, T: MaskedLanes, const P: usize, const G: usize, const F: usize>(
    s: &Strip,
    tail: T::M,
    tail_len: usize,
) {
    // SAFETY: the caller's guarantees, for every pointer below.
    unsafe {
        let mut acc = [[[L::splat(0.0); F]; G]; P];
        let mut acc_t = [[T::splat(0.0); G]; P];
        for kk in 0..s.k {
            for g in 0..G {
                let mut w = [L::splat(0.0); F];
                for v in 0..F {
                    w[v] = L::load(s.w[g].add(s.woff[v] + kk * s.panel));
                }
                let w_t = T::load(s.w[g].add(s.woff[F] + kk * s.panel));
                for p in 0..P {
                    let x = *s.x.add(p * s.c_in + g * s.k + kk);
                    let xv = L::splat(x);
                    for v in 0..F {
                        acc[p][g][v] = L::fma(xv, w[v], acc[p][g][v]);
                    }
                    acc_t[p][g] = T::fma(T::splat(x), w_t, acc_t[p][g]);
                }
            }
        }
        // (Each pass below a loop of few instructions, which the compiler
        // unrolls whole: the accumulators stay in registers.)
        if !s.bias.is_null() {
            for g in 0..G {
                for v in 0..F {
                    let b = L::load(s.bias.add(g * s.m + v * L::N));
                    for p in 0..P {
                        acc[p][g][v] = L::add(acc[p][g][v], b);
                    }
                }
                let b = T::load_masked(tail, s.bias.add(g * s.m + F * L::N));
                for p in 0..P {
                    acc_t[p][g] = T::add(acc_t[p][g], b);
                }
            }
        }
        if s.act != Activation::None {
            for p in 0..P {
                for g in 0..G {
                    for v in 0..F {
                        acc[p][g][v] = L::activate(s.act, acc[p][g][v]);
                    }
                    acc_t[p][g] = T::activate(s.act, acc_t[p][g]);
                }
            }
        }
        for p in 0..P {
            for g in 0..G {
                let out = s.out.add(p * s.c_out + g * s.m);
                for v in 0..F {
                    L::store(out.add(v * L::N), acc[p][g][v]);
                }
                T::store_first(out.add(F * L::N), acc_t[p][g], tail_len);
            }
        }
    }
}
