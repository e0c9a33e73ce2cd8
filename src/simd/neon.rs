//! The aarch64 NEON lanes (4 floats, `neon`) and their activation.

use std::arch::aarch64::*;

use super::{Lanes, WithLanes};
use crate::activation::Activation;

/// The NEON lanes: only [`super::select`] makes one, on a CPU that has NEON.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Neon {
    _detected: (),
}

impl Neon {
    /// # Safety
    /// The CPU has NEON.
    pub(super) unsafe fn new_unchecked() -> Self {
        Neon { _detected: () }
    }
}

/// `work` compiled for NEON.
///
/// # Safety
/// The CPU has NEON (a `Neon` exists).
#[target_feature(enable = "neon")]
unsafe fn enter_neon<W: WithLanes>(lanes: Neon, work: W) -> W::Output {
    work.run(lanes)
}

impl Lanes for Neon {
    const N: usize = 4;
    const REGS: usize = 32;
    type V = float32x4_t;
    #[inline(always)]
    fn enter<W: WithLanes>(self, work: W) -> W::Output {
        #[cfg(test)]
        super::probe::enter();
        // SAFETY: `self` exists only where NEON does.
        unsafe { enter_neon(self, work) }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> float32x4_t {
        // SAFETY: the caller guarantees NEON.
        unsafe { vdupq_n_f32(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> float32x4_t {
        // SAFETY: the caller guarantees NEON and 4 readable floats.
        unsafe { vld1q_f32(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: float32x4_t) {
        // SAFETY: the caller guarantees NEON and 4 writable floats.
        unsafe { vst1q_f32(p, v) }
    }
    #[inline(always)]
    unsafe fn fma(a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
        // SAFETY: the caller guarantees NEON; vfmaq_f32(c, a, b) = c + a·b, fused.
        unsafe { vfmaq_f32(c, a, b) }
    }
    #[inline(always)]
    unsafe fn add(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: the caller guarantees NEON.
        unsafe { vaddq_f32(a, b) }
    }
    #[inline(always)]
    unsafe fn transpose_square(src: *const f32, src_stride: usize, dst: impl Fn(usize) -> *mut f32) {
        // SAFETY: the caller guarantees NEON and the 4 rows of 4 floats at
        // both ends.
        unsafe {
            let r: [float32x4_t; 4] = std::array::from_fn(|i| vld1q_f32(src.add(i * src_stride)));
            // (a0 b0 a2 b2), (a1 b1 a3 b3) and the same of c, d.
            let (ab, cd) = (vtrnq_f32(r[0], r[1]), vtrnq_f32(r[2], r[3]));
            let cols = [
                vcombine_f32(vget_low_f32(ab.0), vget_low_f32(cd.0)),
                vcombine_f32(vget_low_f32(ab.1), vget_low_f32(cd.1)),
                vcombine_f32(vget_high_f32(ab.0), vget_high_f32(cd.0)),
                vcombine_f32(vget_high_f32(ab.1), vget_high_f32(cd.1)),
            ];
            for (j, v) in cols.into_iter().enumerate() {
                vst1q_f32(dst(j), v);
            }
        }
    }
    #[inline(always)]
    unsafe fn deinterleave(p: *const f32) -> (float32x4_t, float32x4_t) {
        // SAFETY: the caller guarantees NEON and 8 readable floats.
        unsafe {
            let (a, b) = (vld1q_f32(p), vld1q_f32(p.add(4)));
            (vuzp1q_f32(a, b), vuzp2q_f32(a, b))
        }
    }
    #[inline(always)]
    unsafe fn activate(act: Activation, v: float32x4_t) -> float32x4_t {
        // SAFETY: the caller guarantees NEON.
        unsafe { activate_neon(act, v) }
    }
}

/// [`Activation::apply`] on 4 lanes, bit for bit: a compare-and-select, not
/// `vmaxq` (which would turn `-0.0` into `+0.0`).
#[inline]
#[target_feature(enable = "neon")]
pub(crate) fn activate_neon(act: Activation, v: float32x4_t) -> float32x4_t {
    match act {
        Activation::None => v,
        Activation::Relu => {
            let zero = vdupq_n_f32(0.0);
            vbslq_f32(vcltq_f32(v, zero), zero, v)
        }
        Activation::Clamp { min, max } => {
            let (lo, hi) = (vdupq_n_f32(min), vdupq_n_f32(max));
            let y = vbslq_f32(vcltq_f32(v, lo), lo, v);
            vbslq_f32(vcgtq_f32(y, hi), hi, y)
        }
    }
}
