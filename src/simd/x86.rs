//! The x86-64 lanes: AVX2 + FMA (8 floats, `avx2`) and AVX-512F (16
//! floats, `avx512`), their activations and the 8 × 8 register transpose.

use std::arch::x86_64::*;

use super::{Lanes, MaskedLanes, Transpose, WithLanes};
use crate::activation::Activation;

/// The AVX2 + FMA lanes: only [`super::select`] makes one, on a CPU that has both.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2 {
    _detected: (),
}

impl Avx2 {
    /// # Safety
    /// The CPU has AVX2 and FMA.
    pub(super) unsafe fn new_unchecked() -> Self {
        Avx2 { _detected: () }
    }
}

/// The AVX-512F lanes: only [`super::select`] makes one, on a CPU that has
/// AVX-512F, AVX2 and FMA.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512 {
    _detected: (),
}

impl Avx512 {
    /// # Safety
    /// The CPU has AVX-512F, AVX2 and FMA.
    pub(super) unsafe fn new_unchecked() -> Self {
        Avx512 { _detected: () }
    }

    /// The AVX2 lanes of the same CPU.
    pub(crate) fn avx2(self) -> Avx2 {
        // SAFETY: an `Avx512` exists only where AVX2 and FMA do too.
        unsafe { Avx2::new_unchecked() }
    }

    /// The AVX-512DQ token, where the CPU has DQ as well.
    pub(crate) fn dq(self) -> Option<Avx512Dq> {
        crate::isa::has_avx512dq().then_some(Avx512Dq { _detected: () })
    }
}

/// Proof that the CPU has AVX-512DQ besides the AVX-512 path's features:
/// only [`Avx512::dq`] makes one. No path needs it; the max pool's NaN / −0
/// test takes one `vfpclassps` with it instead of two compares.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512Dq {
    _detected: (),
}

/// `work` compiled for AVX2 + FMA.
///
/// # Safety
/// The CPU has AVX2 and FMA (an `Avx2` exists).
#[target_feature(enable = "avx2,fma")]
unsafe fn enter_avx2<W: WithLanes>(lanes: Avx2, work: W) -> W::Output {
    work.avx2(lanes)
}

/// `work` compiled for AVX-512F (with AVX2 + FMA).
///
/// # Safety
/// The CPU has AVX-512F, AVX2 and FMA (an `Avx512` exists).
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn enter_avx512<W: WithLanes>(lanes: Avx512, work: W) -> W::Output {
    work.avx512(lanes)
}

impl Lanes for Avx2 {
    const N: usize = 8;
    const REGS: usize = 16;
    type V = __m256;
    #[inline(always)]
    fn enter<W: WithLanes>(self, work: W) -> W::Output {
        #[cfg(test)]
        super::probe::enter();
        // SAFETY: `self` exists only where AVX2 and FMA do.
        unsafe { enter_avx2(self, work) }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m256 {
        // SAFETY: the caller guarantees AVX.
        unsafe { _mm256_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        // SAFETY: the caller guarantees AVX and 8 readable floats.
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        // SAFETY: the caller guarantees AVX and 8 writable floats.
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: the caller guarantees FMA.
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        // SAFETY: the caller guarantees AVX.
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn activate(act: Activation, v: __m256) -> __m256 {
        // SAFETY: the caller guarantees AVX2 and FMA.
        unsafe { activate_avx2(act, v) }
    }
    #[inline(always)]
    unsafe fn transpose_square(src: *const f32, src_stride: usize, dst: impl Fn(usize) -> *mut f32) {
        // SAFETY: the caller guarantees AVX2 and the 8 rows of 8 floats at
        // both ends (N is 8).
        unsafe { Self::transpose_8x8(src, src_stride, dst) }
    }
    #[inline(always)]
    unsafe fn deinterleave(p: *const f32) -> (__m256, __m256) {
        // SAFETY: the caller guarantees AVX2 and 16 readable floats.
        unsafe { <Self as MaskedLanes>::unzip(_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))) }
    }
    #[inline(always)]
    unsafe fn transpose_rows_8x8(rows: &[*const f32; 8], dst: impl Fn(usize) -> *mut f32) {
        // SAFETY: the caller guarantees AVX2 and the 8 rows of 8 floats at both ends.
        unsafe { transpose_rows_8x8_avx(rows, dst) }
    }
    #[inline(always)]
    unsafe fn transpose_8x8_tiles(t: &Transpose) -> (usize, usize) {
        // SAFETY: the caller's guarantees, forwarded.
        unsafe { transpose_tiles_avx2(t) }
    }
}

impl MaskedLanes for Avx2 {
    type M = __m256i;
    #[inline(always)]
    unsafe fn mask(lo: usize, hi: usize) -> __m256i {
        // SAFETY: the caller guarantees AVX2.
        unsafe {
            let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let from = _mm256_cmpgt_epi32(lane, _mm256_set1_epi32(lo as i32 - 1));
            _mm256_and_si256(from, _mm256_cmpgt_epi32(_mm256_set1_epi32(hi as i32), lane))
        }
    }
    #[inline(always)]
    unsafe fn load_masked(m: __m256i, p: *const f32) -> __m256 {
        // SAFETY: the caller guarantees AVX and the masked lanes readable;
        // `vmaskmovps` does not access the others.
        unsafe { _mm256_maskload_ps(p, m) }
    }
    /// Whole, or in pieces of 4, 2 and 1 lanes, not by `vmaskmovps`: on
    /// Zen 3 that store takes ~17 cycles against 1 for a plain one (the
    /// depthwise rolling rows, one such store per output row and vector:
    /// 576×14² 3×3 251 -> 190 µs, 1 thread).
    #[inline(always)]
    unsafe fn store_first(p: *mut f32, v: __m256, len: usize) {
        // SAFETY: the caller guarantees AVX and `p[0..len]` writable; each
        // store below writes inside it (`len` counts down what is left).
        unsafe {
            if len >= 8 {
                return _mm256_storeu_ps(p, v);
            }
            let (mut p, mut len, mut part) = (p, len, _mm256_castps256_ps128(v));
            if len >= 4 {
                _mm_storeu_ps(p, part);
                (p, len, part) = (p.add(4), len - 4, _mm256_extractf128_ps::<1>(v));
            }
            if len >= 2 {
                _mm_storel_epi64(p.cast(), _mm_castps_si128(part));
                (p, len, part) = (p.add(2), len - 2, _mm_movehl_ps(part, part));
            }
            if len == 1 {
                _mm_store_ss(p, part);
            }
        }
    }
    #[inline(always)]
    unsafe fn unzip(a: __m256, b: __m256) -> (__m256, __m256) {
        // SAFETY: the caller guarantees AVX2.
        unsafe {
            // Per 128-bit half: [a0 a2 b0 b2 | a4 a6 b4 b6], then the 64-bit
            // pairs in the order 0 2 1 3: [a0 a2 a4 a6 b0 b2 b4 b6].
            let even = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
            let odd = _mm256_shuffle_ps::<0b11_01_11_01>(a, b);
            let order = |v: __m256| _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)));
            (order(even), order(odd))
        }
    }
}

impl Lanes for Avx512 {
    const N: usize = 16;
    const REGS: usize = 32;
    type V = __m512;
    #[inline(always)]
    fn enter<W: WithLanes>(self, work: W) -> W::Output {
        #[cfg(test)]
        super::probe::enter();
        // SAFETY: `self` exists only where AVX-512F, AVX2 and FMA do.
        unsafe { enter_avx512(self, work) }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F and 16 readable floats.
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        // SAFETY: the caller guarantees AVX-512F and 16 writable floats.
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn deinterleave(p: *const f32) -> (__m512, __m512) {
        // SAFETY: the caller guarantees AVX-512F and 32 readable floats.
        unsafe { <Self as MaskedLanes>::unzip(_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16))) }
    }
    #[inline(always)]
    unsafe fn activate(act: Activation, v: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { activate_avx512(act, v) }
    }
    #[inline(always)]
    unsafe fn transpose_square(src: *const f32, src_stride: usize, dst: impl Fn(usize) -> *mut f32) {
        // SAFETY: the caller guarantees AVX-512F and the 16 rows of 16
        // floats at both ends (N is 16).
        unsafe {
            let mut rows = [_mm512_setzero_ps(); 16];
            for (i, row) in rows.iter_mut().enumerate() {
                *row = _mm512_loadu_ps(src.add(i * src_stride));
            }
            for (j, v) in transpose_16x16(rows).into_iter().enumerate() {
                _mm512_storeu_ps(dst(j), v);
            }
        }
    }
    #[inline(always)]
    unsafe fn transpose_rows_8x8(rows: &[*const f32; 8], dst: impl Fn(usize) -> *mut f32) {
        // SAFETY: the caller guarantees AVX-512 (so AVX2) and the 8 rows of 8 floats at both ends.
        unsafe { transpose_rows_8x8_avx(rows, dst) }
    }
    #[inline(always)]
    unsafe fn transpose_8x8_tiles(t: &Transpose) -> (usize, usize) {
        // SAFETY: the caller's guarantees; the AVX-512 path has AVX2 and FMA.
        unsafe { transpose_tiles_avx2(t) }
    }
}

/// The 8 rows of 8 floats at `rows` transposed, row `j` stored at
/// `dst(j)`, in AVX registers.
///
/// # Safety
/// AVX2; the 8 floats at each `rows[i]` readable, at each `dst(j)` writable.
#[inline(always)]
unsafe fn transpose_rows_8x8_avx(rows: &[*const f32; 8], dst: impl Fn(usize) -> *mut f32) {
    // SAFETY: the caller's guarantees.
    unsafe {
        // (`map` here measured 11-15 % faster on Winograd's input gather
        // than a loop of loads: Zen 5, 1 thread, 64 to 256 channels.)
        let rows = rows.map(|row| _mm256_loadu_ps(row));
        for (j, v) in transpose_8x8(rows).into_iter().enumerate() {
            _mm256_storeu_ps(dst(j), v);
        }
    }
}

impl MaskedLanes for Avx512 {
    type M = __mmask16;
    #[inline(always)]
    unsafe fn mask(lo: usize, hi: usize) -> __mmask16 {
        (((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as __mmask16
    }
    #[inline(always)]
    unsafe fn load_masked(m: __mmask16, p: *const f32) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F and the masked lanes
        // readable; the others are not accessed.
        unsafe { _mm512_maskz_loadu_ps(m, p) }
    }
    #[inline(always)]
    unsafe fn store_first(p: *mut f32, v: __m512, len: usize) {
        // SAFETY: the caller guarantees AVX-512F and `p[0..len]` writable;
        // the mask's lanes are those.
        unsafe { _mm512_mask_storeu_ps(p, Self::mask(0, len), v) }
    }
    #[inline(always)]
    unsafe fn unzip(a: __m512, b: __m512) -> (__m512, __m512) {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe {
            let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
            let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
            (_mm512_permutex2var_ps(a, even, b), _mm512_permutex2var_ps(a, odd, b))
        }
    }
}

/// [`Activation::apply`] on 8 lanes, bit for bit (NaN kept, `-0.0` kept:
/// `max_ps(a, b)` returns `b` when either is NaN or both are zero).
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) fn activate_avx2(act: Activation, v: __m256) -> __m256 {
    match act {
        Activation::None => v,
        Activation::Relu => _mm256_max_ps(_mm256_setzero_ps(), v),
        Activation::Clamp { min, max } => _mm256_min_ps(_mm256_set1_ps(max), _mm256_max_ps(_mm256_set1_ps(min), v)),
    }
}

/// [`Activation::apply`] on 16 lanes, bit for bit (NaN kept, `-0.0` kept:
/// `max_ps(a, b)` returns `b` when either is NaN or both are zero).
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) fn activate_avx512(act: Activation, v: __m512) -> __m512 {
    match act {
        Activation::None => v,
        Activation::Relu => _mm512_max_ps(_mm512_setzero_ps(), v),
        Activation::Clamp { min, max } => _mm512_min_ps(_mm512_set1_ps(max), _mm512_max_ps(_mm512_set1_ps(min), v)),
    }
}

/// The transpose of 16 rows of 16 floats: column `c` of `r` as row `c`.
/// Two unpacks leave, in each 128-bit lane `j` of `u[4i + k]`, column
/// `4j + k` of rows `4i .. 4i + 4`; two lane shuffles gather lane `j` of
/// `u[k]`, `u[4 + k]`, `u[8 + k]` and `u[12 + k]` into row `4j + k`.
///
/// # Safety
/// The CPU has AVX-512F.
#[inline(always)]
unsafe fn transpose_16x16(r: [__m512; 16]) -> [__m512; 16] {
    // SAFETY: AVX-512F is the caller's guarantee.
    unsafe {
        // (Loops, not closures: a closure is compiled without the
        // function's target features, and its intrinsics become calls.)
        let mut t = [_mm512_setzero_ps(); 16];
        for i in (0..16).step_by(2) {
            t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
            t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
        }
        // u[4q + k]: k = 0, 1 from t[4q], t[4q + 2]; k = 2, 3 from t[4q + 1], t[4q + 3].
        let mut u = [_mm512_setzero_ps(); 16];
        for q in 0..4 {
            for h in 0..2 {
                let (a, b) = (_mm512_castps_pd(t[4 * q + h]), _mm512_castps_pd(t[4 * q + 2 + h]));
                u[4 * q + 2 * h] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
                u[4 * q + 2 * h + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
            }
        }
        let mut out = [_mm512_setzero_ps(); 16];
        for k in 0..4 {
            let (a, b, c, d) = (u[k], u[4 + k], u[8 + k], u[12 + k]);
            let (p0, p1) = (_mm512_shuffle_f32x4::<0x44>(a, b), _mm512_shuffle_f32x4::<0xee>(a, b));
            let (q0, q1) = (_mm512_shuffle_f32x4::<0x44>(c, d), _mm512_shuffle_f32x4::<0xee>(c, d));
            out[k] = _mm512_shuffle_f32x4::<0x88>(p0, q0);
            out[4 + k] = _mm512_shuffle_f32x4::<0xdd>(p0, q0);
            out[8 + k] = _mm512_shuffle_f32x4::<0x88>(p1, q1);
            out[12 + k] = _mm512_shuffle_f32x4::<0xdd>(p1, q1);
        }
        out
    }
}

/// The transpose of 8 rows of 8 floats: column `c` of `r` as row `c`.
///
/// # Safety
/// The CPU has AVX.
#[inline(always)]
unsafe fn transpose_8x8(r: [__m256; 8]) -> [__m256; 8] {
    // SAFETY: AVX is the caller's guarantee.
    unsafe {
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xee>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xee>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xee>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xee>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ]
    }
}

/// [`Lanes::transpose_8x8_tiles`] in 8 × 8 AVX2 register transposes:
/// pixels `0..npx/8·8`, channels `0..m/8·8`.
///
/// # Safety
/// The CPU has AVX2 and FMA; as [`Lanes::transpose_8x8_tiles`] for `out`.
#[target_feature(enable = "avx2,fma")]
unsafe fn transpose_tiles_avx2(t: &Transpose) -> (usize, usize) {
    let &Transpose { block, m, out, n, bias, act } = t;
    let npx = block.len() / m;
    for co in (0..m / 8 * 8).step_by(8) {
        for p in (0..npx / 8 * 8).step_by(8) {
            // SAFETY: rows p..p+8 <= npx of the block, channels co..co+8 <= m;
            // each a load of 8 floats inside `block`.
            let r: [__m256; 8] =
                std::array::from_fn(|i| unsafe { _mm256_loadu_ps(block.as_ptr().add((p + i) * m + co)) });
            // Column c of the 8 rows: channel co + c for pixels p..p+8.
            // SAFETY: AVX2 is this function's target feature.
            let cols = unsafe { transpose_8x8(r) };
            for (c, &v) in cols.iter().enumerate() {
                let v = match bias {
                    Some(b) => _mm256_add_ps(v, _mm256_set1_ps(b[co + c])),
                    None => v,
                };
                let v = activate_avx2(act, v);
                // SAFETY: channel co + c < m, pixels p..p+8 <= npx: the caller's guarantees.
                unsafe { _mm256_storeu_ps(out.add((co + c) * n + p), v) };
            }
        }
    }
    (npx / 8 * 8, m / 8 * 8)
}
