//! `dwconv_blocked_<isa>`: the depthwise convolution (channel multiplier 1)
//! of `N` channels at once, the channels as the lanes: the `N` input planes
//! are transposed into one zero-padded plane of `N`-float pixels, so each tap
//! of each output pixel is one vector load and one FMA for all `N` channels,
//! whatever the stride, the dilation or the width of the plane (a 7-pixel
//! row fills whole vectors), and the `N`-float output pixels are transposed
//! back into the `N` output planes. NCHWc inside one call: the
//! transposes cost two passes over the planes, the sums none of the
//! per-row tails of [`super::dwconv_plane`], which wins on planes with
//! long rows. Each output still sums its taps in order from `+0.0`, fused,
//! then adds its bias and applies the activation, so the bits are those of
//! every other exact path.

use crate::activation::Activation;
use crate::geometry::ConvGeometry;
use crate::simd::Lanes;

/// Output pixels summed together: `PIXELS` accumulators, a weight and an
/// input fit in AVX2's 16 registers.
const PIXELS: usize = 8;

/// One block of at most `N` channels of one image: `input` their planes,
/// `weight` their `[count, kh·kw]` taps, `bias` their biases, `out` their
/// output planes; `scratch` holds the transposed planes.
pub(crate) struct Block<'a> {
    pub geo: &'a ConvGeometry,
    pub input: &'a [f32],
    pub weight: &'a [f32],
    pub bias: Option<&'a [f32]>,
    pub act: Activation,
    pub out: &'a mut [f32],
    pub scratch: &'a mut Vec<f32>,
}

/// Scratch floats for blocks of `n` channels, or `None` on overflow: the
/// padded plane, the weights and the output pixels (with a block of slack).
pub(super) fn scratch_len(geo: &ConvGeometry, n: usize) -> Option<usize> {
    let hp = geo.h_in.checked_add(geo.pad_top)?.checked_add(geo.pad_bottom)?;
    let wp = geo.w_in.checked_add(geo.pad_left)?.checked_add(geo.pad_right)?;
    let plane = hp.checked_mul(wp)?;
    let taps = geo.kh.checked_mul(geo.kw)?;
    plane.checked_add(taps)?.checked_add(geo.out_pixels())?.checked_add(PIXELS)?.checked_mul(n)
}

/// The depthwise convolution of one block (see [`Block`]).
///
/// # Safety
/// `L`'s instructions are available.
#[inline(always)]
pub(super) unsafe fn dwconv_blocked<L: Lanes>(job: Block<'_>) {
    let Block { geo, input, weight, bias, act, out, scratch } = job;
    let n = L::N;
    let plane_in = geo.h_in * geo.w_in;
    let pixels = geo.out_pixels();
    let taps = geo.kh * geo.kw;
    let count = input.len() / plane_in;
    assert!(
        (1..=n).contains(&count)
            && input.len() == count * plane_in
            && weight.len() == count * taps
            && out.len() == count * pixels
            && bias.is_none_or(|b| b.len() == count),
        "a block of at most N channels"
    );
    let wp = geo.w_in + geo.pad_left + geo.pad_right;
    let hp = geo.h_in + geo.pad_top + geo.pad_bottom;
    scratch.resize(scratch_len(geo, n).expect("applies() checked the sizes"), 0.0);
    let (padded, rest) = scratch.split_at_mut(hp * wp * n);
    let (weights, pixels_out) = rest.split_at_mut(taps * n);

    // SAFETY: CPU support is the caller's guarantee.
    unsafe { transpose_in::<L>(geo, input, count, padded) };
    for (t, w) in weights.chunks_exact_mut(n).enumerate() {
        for (c, w) in w.iter_mut().enumerate() {
            *w = if c < count { weight[c * taps + t] } else { 0.0 };
        }
    }
    let mut bias_lanes = [0.0f32; 16];
    if let Some(b) = bias {
        bias_lanes[..count].copy_from_slice(b);
    }

    // Each tap's offset from a window's corner, in floats.
    let mut small = [0usize; 64];
    let mut large = Vec::new();
    let offsets = if taps <= small.len() {
        &mut small[..taps]
    } else {
        large.resize(taps, 0);
        &mut large[..]
    };
    for (t, o) in offsets.iter_mut().enumerate() {
        let (u, v) = (t / geo.kw, t % geo.kw);
        *o = (u * geo.dilation_h * wp + v * geo.dilation_w) * n;
    }

    // The output pixels PIXELS at a time, in plane order; past the last
    // pixel a block repeats it (into the slack).
    let (mut oy, mut ox) = (0, 0);
    let mut p0 = 0;
    while p0 < pixels {
        let mut corners = [0usize; PIXELS];
        for (r, corner) in corners.iter_mut().enumerate() {
            *corner = (oy * geo.stride_h * wp + ox * geo.stride_w) * n;
            if p0 + r + 1 < pixels {
                ox += 1;
                if ox == geo.w_out {
                    (oy, ox) = (oy + 1, 0);
                }
            }
        }
        // SAFETY: every corner + offset + N is inside the padded plane (the
        // windows fit it); the block's PIXELS·N floats of output inside
        // `pixels_out` (pixels + PIXELS of room); CPU support is the caller's.
        unsafe {
            let mut acc = [L::splat(0.0); PIXELS];
            let (xp, wt) = (padded.as_ptr(), weights.as_ptr());
            for (t, &offset) in offsets.iter().enumerate() {
                let w = L::load(wt.add(t * n));
                for (a, &corner) in acc.iter_mut().zip(&corners) {
                    *a = L::fma(w, L::load(xp.add(corner + offset)), *a);
                }
            }
            let dst = pixels_out.as_mut_ptr().add(p0 * n);
            let b = L::load(bias_lanes.as_ptr());
            for (r, &a) in acc.iter().enumerate() {
                let v = if bias.is_some() { L::add(a, b) } else { a };
                L::store(dst.add(r * n), L::activate(act, v));
            }
        }
        p0 += PIXELS;
    }
    // SAFETY: CPU support is the caller's guarantee.
    unsafe { transpose_out::<L>(pixels_out, pixels, count, out) };
}

/// The `count` input planes as one zero-padded plane of `N`-float pixels
/// (channels past `count` zero).
///
/// # Safety
/// `L`'s instructions are available.
#[inline(always)]
unsafe fn transpose_in<L: Lanes>(geo: &ConvGeometry, input: &[f32], count: usize, padded: &mut [f32]) {
    let n = L::N;
    let plane_in = geo.h_in * geo.w_in;
    let wp = geo.w_in + geo.pad_left + geo.pad_right;
    let row = wp * n;
    let top = geo.pad_top * row;
    let bottom = (geo.pad_top + geo.h_in) * row;
    padded[..top].fill(0.0);
    padded[bottom..].fill(0.0);
    for iy in 0..geo.h_in {
        let dst = &mut padded[top + iy * row..][..row];
        dst[..geo.pad_left * n].fill(0.0);
        dst[(geo.pad_left + geo.w_in) * n..].fill(0.0);
        let body = &mut dst[geo.pad_left * n..(geo.pad_left + geo.w_in) * n];
        let src = &input[iy * geo.w_in..];
        let mut ix = 0;
        if count == n {
            while ix + n <= geo.w_in {
                // SAFETY: channel c < N reads src[c·plane_in + ix .. + N]
                // inside the input (ix + N <= w_in); writes body[(ix + j)·N
                // .. + N] inside the row; CPU support is the caller's.
                unsafe { L::transpose_square(src.as_ptr().add(ix), plane_in, body.as_mut_ptr().add(ix * n), n) };
                ix += n;
            }
        }
        for (j, pixel) in body.chunks_exact_mut(n).enumerate().skip(ix) {
            for (c, v) in pixel.iter_mut().enumerate() {
                *v = if c < count { src[c * plane_in + j] } else { 0.0 };
            }
        }
    }
}

/// The `pixels` output pixels of `N` floats back into `count` output planes.
///
/// # Safety
/// `L`'s instructions are available.
#[inline(always)]
unsafe fn transpose_out<L: Lanes>(pixels_out: &[f32], pixels: usize, count: usize, out: &mut [f32]) {
    let n = L::N;
    assert!(pixels_out.len() >= pixels * n && out.len() == count * pixels);
    let mut p = 0;
    if count == n {
        while p + n <= pixels {
            // SAFETY: reads pixels p..p + N of N floats, writes channel c's
            // floats p..p + N for c < N = count, all inside; CPU support is
            // the caller's.
            unsafe { L::transpose_square(pixels_out.as_ptr().add(p * n), n, out.as_mut_ptr().add(p), pixels) };
            p += n;
        }
    }
    for (c, plane) in out.chunks_exact_mut(pixels).enumerate() {
        for (q, v) in plane.iter_mut().enumerate().skip(p) {
            *v = pixels_out[q * n + c];
        }
    }
}
