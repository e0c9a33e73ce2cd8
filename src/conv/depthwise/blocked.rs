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
/// `weight` their `[count, kh·kw]` taps, `bias` their biases, `out` the
/// output planes of all but the first `skip` of them; `scratch` holds the
/// transposed planes. (A last block of fewer than `N` channels is summed as
/// the `N` channels that end with it, `skip` of them the block before's
/// again, so that its transposes go a square of `N × N` floats at a time:
/// Zen 4, 136 channels on 28² 3×3 stride 2, 34 -> 29 µs.) `landing` is
/// [`landing`] of the geometry, made once a call; `borders_zero` says that
/// the block before ran in the same scratch on the same geometry, so its
/// padded plane's zero borders are still in place.
pub(crate) struct Block<'a> {
    pub geo: &'a ConvGeometry,
    pub skip: usize,
    pub landing: &'a [u32],
    pub borders_zero: bool,
    pub input: &'a [f32],
    pub weight: &'a [f32],
    pub bias: Option<&'a [f32]>,
    pub act: Activation,
    pub out: &'a mut [f32],
    pub scratch: &'a mut Vec<f32>,
}

impl Block<'_> {
    /// The channels of the block, `skip` included, from the output's
    /// length (an input of width or height 0 that padding makes valid has
    /// empty planes).
    ///
    /// # Panics
    /// If the buffers do not hold that many channels of the geometry, or
    /// there are no output pixels or no channel past `skip`.
    pub(super) fn count(&self) -> usize {
        let (geo, skip) = (self.geo, self.skip);
        let (plane_in, pixels, taps) = (geo.h_in * geo.w_in, geo.out_pixels(), geo.kh * geo.kw);
        let count = self.out.len() / pixels.max(1) + skip;
        assert!(
            pixels > 0
                && skip < count
                && self.input.len() == count * plane_in
                && self.weight.len() == count * taps
                && self.out.len() == (count - skip) * pixels
                && self.bias.is_none_or(|b| b.len() == count),
            "a block of channels of its geometry"
        );
        count
    }
}

/// The padded plane's `[height, width]` in pixels: the zero-padded input,
/// its rows widened with zeros where the output row is narrower than
/// `PIXELS`, so that the windows of `PIXELS` consecutive outputs that
/// [`shared_row`] and [`shared_row_stride_2`] sum stay inside each row.
fn padded_extent(geo: &ConvGeometry) -> Option<[usize; 2]> {
    let [hp, wp] = geo.padded_extent()?;
    let wp = match shared_row_kernel(geo) {
        // (Whether or not the lanes take the stride-2 kernel.)
        Some((kw, stride)) if geo.w_out < PIXELS => wp.max((PIXELS - 1) * stride + kw),
        _ => wp,
    };
    Some([hp, wp])
}

/// Where each input pixel lands in the padded plane, in pixels, into
/// `landing` (cleared first; no allocation once its capacity suffices): the
/// same for every block of a call, so made once (a block of 16 channels
/// of 7² computing its own took 5 % of its time on Zen 4). Left empty
/// where the padded plane does not fit `u32` pixels, where [`scratch_len`]
/// is `None` and the blocks do not apply.
pub(crate) fn landing(geo: &ConvGeometry, landing: &mut Vec<u32>) {
    landing.clear();
    let Some([hp, wp]) = padded_extent(geo) else { return };
    if hp.checked_mul(wp).is_none_or(|p| p > u32::MAX as usize) {
        return;
    }
    for y in 0..geo.h_in {
        landing.extend((0..geo.w_in).map(|x| ((geo.pad_top + y) * wp + geo.pad_left + x) as u32));
    }
}

/// Scratch floats for blocks of `n` channels, or `None` on overflow: the
/// padded plane, the weights and the output pixels (with a block of slack).
pub(super) fn scratch_len(geo: &ConvGeometry, n: usize) -> Option<usize> {
    let [hp, wp] = padded_extent(geo)?;
    // (The landing places are `u32` pixels.)
    let plane = hp.checked_mul(wp).filter(|&p| p <= u32::MAX as usize)?;
    let taps = geo.kh.checked_mul(geo.kw)?;
    // (+ 16 floats to start the pixels on a 64-byte line.)
    plane.checked_add(taps)?.checked_add(geo.out_pixels())?.checked_add(PIXELS)?.checked_mul(n)?.checked_add(16)
}

/// The depthwise convolution of one block (see [`Block`]).
///
/// # Safety
/// `L`'s instructions are available.
#[inline(always)]
pub(super) unsafe fn dwconv_blocked<L: Lanes>(job: Block<'_>) {
    let count = job.count();
    let Block { geo, skip, landing, borders_zero, input, weight, bias, act, out, scratch } = job;
    let n = L::N;
    let pixels = geo.out_pixels();
    let taps = geo.kh * geo.kw;
    assert!(count <= n, "a block of at most N channels");
    let [hp, wp] = padded_extent(geo).expect("applies() checked the sizes");
    scratch.resize(scratch_len(geo, n).expect("applies() checked the sizes"), 0.0);
    // Pixels that straddle cache lines load and store at half speed: start
    // on a 64-byte line (N·4 bytes a pixel divide 64).
    let line_skip = scratch.as_ptr().align_offset(64).min(16);
    let (padded, rest) = scratch[line_skip..].split_at_mut(hp * wp * n);
    let (weights, pixels_out) = rest.split_at_mut(taps * n);

    // SAFETY: CPU support is the caller's guarantee.
    unsafe { transpose_in::<L>(geo, input, count, (landing, borders_zero), padded) };
    // The weights as lanes, `[taps][N]`: N × N transposes of the
    // `[count][taps]` block where it is whole (the last one overlapping the
    // one before), else float by float.
    if count == n && taps >= n {
        let w = weights.as_mut_ptr();
        let mut t = 0;
        while t < taps {
            let t0 = t.min(taps - n);
            // SAFETY: reads weight[c·taps + t0 .. + N] for c < N = count
            // (t0 + N <= taps), writes weights[(t0 + j)·N .. + N] for j < N
            // (inside taps·N); CPU support is the caller's.
            unsafe { L::transpose_square(weight.as_ptr().add(t0), taps, |j| w.add((t0 + j) * n)) };
            t = t0 + n;
        }
    } else {
        for (t, w) in weights.chunks_exact_mut(n).enumerate() {
            for (c, w) in w.iter_mut().enumerate() {
                *w = if c < count { weight[c * taps + t] } else { 0.0 };
            }
        }
    }
    let mut bias_lanes = [0.0f32; 16];
    if let Some(b) = bias {
        bias_lanes[..count].copy_from_slice(b);
    }

    // Each tap's offset from a window's corner, in floats.
    let mut small = [0usize; 49];
    let mut large = Vec::new();
    let offsets = if taps <= small.len() {
        &mut small[..taps]
    } else {
        large.resize(taps, 0);
        &mut large[..]
    };
    for (u, row) in offsets.chunks_exact_mut(geo.kw).enumerate() {
        for (v, o) in row.iter_mut().enumerate() {
            *o = (u * geo.dilation_h * wp + v * geo.dilation_w) * n;
        }
    }

    // Each output row PIXELS pixels at a time; a row's last block repeats
    // its last pixel, storing into the next row's first pixels (computed
    // after it) or, on the last row, into the slack.
    // (Strides as taken: a stride of 2^61 with one output overflowed here.)
    let [stride_h, stride_w] = geo.taken_strides();
    // (And dilations as taken: a one-row kernel with a huge row dilation overflowed.)
    let [dilation_h, _] = geo.taken_dilations();
    let step = stride_w * n;
    // (Stride 2 holds a row's 14 + kw input pixels in registers: not on
    // 16-register lanes.)
    let shared = shared_row_kernel(geo).filter(|&(_, stride)| stride == 1 || L::REGS >= 32);
    for oy in 0..geo.h_out {
        let row = oy * stride_h * wp * n;
        let mut ox = 0;
        while let (Some(shape), true) = (shared, ox < geo.w_out) {
            // The last block of a row wider than PIXELS moves back to end
            // at the row's end (its first pixels are summed again, to the
            // same bits); a narrower row's block runs past it into the
            // zero columns of the widened padded row.
            let first = if geo.w_out >= PIXELS { ox.min(geo.w_out - PIXELS) } else { ox };
            // SAFETY: the windows of pixels first .. first + PIXELS of row
            // oy lie inside the padded plane (its rows are widened for a
            // row narrower than PIXELS); their PIXELS·N output floats from
            // pixel oy·w_out + first lie inside `pixels_out` (pixels +
            // PIXELS of room); CPU support is the caller's.
            unsafe {
                let x = padded.as_ptr().add(row + first * step);
                let rows = RowSteps { kh: geo.kh, step: dilation_h * wp * n };
                let acc = match shape {
                    (3, 1) => shared_row::<L, 3>(x, weights.as_ptr(), rows),
                    (5, 1) => shared_row::<L, 5>(x, weights.as_ptr(), rows),
                    (_, 1) => shared_row::<L, 7>(x, weights.as_ptr(), rows),
                    (3, _) => shared_row_stride_2::<L, 3>(x, weights.as_ptr(), rows),
                    _ => shared_row_stride_2::<L, 5>(x, weights.as_ptr(), rows),
                };
                let dst = pixels_out.as_mut_ptr().add((oy * geo.w_out + first) * n);
                store_pixels::<L>(&acc, bias.map(|_| &bias_lanes), act, dst);
            }
            ox = first + PIXELS;
        }
        while ox < geo.w_out {
            let corners: [usize; PIXELS] = std::array::from_fn(|r| row + (ox + r).min(geo.w_out - 1) * step);
            // SAFETY: every corner + offset + N is inside the padded plane
            // (the windows fit it); the PIXELS·N floats of output from pixel
            // oy·w_out + ox inside `pixels_out` (pixels + PIXELS of room);
            // CPU support is the caller's.
            unsafe {
                let mut acc = [L::splat(0.0); PIXELS];
                let (xp, wt) = (padded.as_ptr(), weights.as_ptr());
                for (t, &offset) in offsets.iter().enumerate() {
                    let w = L::load(wt.add(t * n));
                    let x = xp.add(offset);
                    for (a, &corner) in acc.iter_mut().zip(&corners) {
                        *a = L::fma(w, L::load(x.add(corner)), *a);
                    }
                }
                let dst = pixels_out.as_mut_ptr().add((oy * geo.w_out + ox) * n);
                store_pixels::<L>(&acc, bias.map(|_| &bias_lanes), act, dst);
            }
            ox += PIXELS;
        }
    }
    // SAFETY: CPU support is the caller's guarantee.
    unsafe { transpose_out::<L>(pixels_out, pixels, (skip, count), out) };
}

/// The sums of `PIXELS` output pixels stored from `dst`, `N` floats a
/// pixel: plus the bias lanes if any, then the activation.
///
/// # Safety
/// `L`'s instructions are available; `PIXELS·N` floats from `dst` are
/// writable.
#[inline(always)]
unsafe fn store_pixels<L: Lanes>(acc: &[L::V; PIXELS], bias: Option<&[f32; 16]>, act: Activation, dst: *mut f32) {
    // SAFETY: the caller's guarantees; the bias lanes hold 16 >= N floats.
    unsafe {
        let b = bias.map(|b| L::load(b.as_ptr()));
        for (r, &a) in acc.iter().enumerate() {
            let v = match b {
                Some(b) => L::add(a, b),
                None => a,
            };
            L::store(dst.add(r * L::N), L::activate(act, v));
        }
    }
}

/// The kernel width and stride along the row of [`shared_row`] or
/// [`shared_row_stride_2`] for `geo`, where one takes it: kernels 3, 5 and
/// 7 wide at stride 1, 3 and 5 wide at stride 2, no dilation along the row.
fn shared_row_kernel(geo: &ConvGeometry) -> Option<(usize, usize)> {
    let stride = geo.taken_strides()[1];
    let takes = match stride {
        1 => matches!(geo.kw, 3 | 5 | 7),
        2 => matches!(geo.kw, 3 | 5),
        _ => false,
    };
    (takes && geo.dilation_w == 1).then_some((geo.kw, stride))
}

/// [`shared_row`] at stride 2: each kernel row's `2·(PIXELS − 1) + KW`
/// input pixels are loaded into registers first, then each tap is one FMA
/// for each of the `PIXELS` windows (3 wide: 17 loads for 24 FMAs where
/// the window-by-window loop loads 24, 8 chains of FMAs in flight; a loop
/// over the loaded pixels instead, as at stride 1, made each pixel's
/// FMAs wait on the one before: 136 channels on 28², 34 -> 43 µs on Zen 4).
///
/// # Safety
/// As [`shared_row`], with rows of `2·(PIXELS − 1) + KW` pixels; `L` has
/// 32 registers (the row's pixels, the sums and a weight).
#[inline(always)]
// (Index loops: the sums and pixels stay in registers, and `2·r + v` reads
// as the arithmetic it is.)
#[allow(clippy::needless_range_loop)]
unsafe fn shared_row_stride_2<L: Lanes, const KW: usize>(
    x: *const f32,
    w: *const f32,
    rows: RowSteps,
) -> [L::V; PIXELS] {
    const { assert!(KW <= 5) };
    let n = L::N;
    // SAFETY: the caller's guarantees.
    unsafe {
        let mut acc = [L::splat(0.0); PIXELS];
        for u in 0..rows.kh {
            let xu = x.add(u * rows.step);
            let mut xs = [L::splat(0.0); 2 * (PIXELS - 1) + 5];
            for j in 0..2 * (PIXELS - 1) + KW {
                xs[j] = L::load(xu.add(j * n));
            }
            for v in 0..KW {
                let wv = L::load(w.add((u * KW + v) * n));
                for r in 0..PIXELS {
                    acc[r] = L::fma(wv, xs[2 * r + v], acc[r]);
                }
            }
        }
        acc
    }
}

/// The kernel rows of a window: `kh` of them, `step` floats apart.
#[derive(Clone, Copy)]
struct RowSteps {
    kh: usize,
    step: usize,
}

/// The sums of `PIXELS` consecutive output pixels of one row whose first
/// window starts at `x`, for a `kh × KW` kernel at stride 1 along the
/// row: each kernel row's `PIXELS − 1 + KW` input pixels are loaded once
/// and each serves every window it falls in, so a 5-wide kernel loads 12
/// pixels for 40 FMAs where the window-by-window loop loads 40 (Zen 4, 1
/// thread: 960 channels on 7² 5×5 60 -> 46 µs, 3×3 37 -> 30 µs). Each
/// output still adds its taps in order (kernel row by row, left to right)
/// from `+0.0`.
///
/// # Safety
/// `L`'s instructions are available; the `kh` rows of `PIXELS − 1 + KW`
/// pixels of `N` floats from `x` are readable, as are the `kh·KW` weight
/// vectors at `w`.
#[inline(always)]
unsafe fn shared_row<L: Lanes, const KW: usize>(x: *const f32, w: *const f32, rows: RowSteps) -> [L::V; PIXELS] {
    let n = L::N;
    // SAFETY: the caller's guarantees.
    unsafe {
        let mut acc = [L::splat(0.0); PIXELS];
        for u in 0..rows.kh {
            let mut wu = [L::splat(0.0); KW];
            for (v, wv) in wu.iter_mut().enumerate() {
                *wv = L::load(w.add((u * KW + v) * n));
            }
            let xu = x.add(u * rows.step);
            for j in 0..PIXELS - 1 + KW {
                let xv = L::load(xu.add(j * n));
                for (r, a) in acc.iter_mut().enumerate() {
                    if j >= r && j - r < KW {
                        *a = L::fma(wu[j - r], xv, *a);
                    }
                }
            }
        }
        acc
    }
}

/// The `count` input planes as one zero-padded plane of `N`-float pixels
/// (channels past `count` zero). The pixels go `N` at a time through
/// `L::transpose_square` in plane order (a block may span rows; the last
/// one overlaps the one before, rewriting the same floats).
///
/// # Safety
/// `L`'s instructions are available.
#[inline(always)]
unsafe fn transpose_in<L: Lanes>(
    geo: &ConvGeometry,
    input: &[f32],
    count: usize,
    (landing, borders_zero): (&[u32], bool),
    padded: &mut [f32],
) {
    let n = L::N;
    let (w_in, plane_in) = (geo.w_in, geo.h_in * geo.w_in);
    let [hp, wp] = padded_extent(geo).expect("applies() checked the sizes");
    assert!(padded.len() >= hp * wp * n && input.len() >= count * plane_in && landing.len() == plane_in);
    let zero_pixels = |from: usize, to: usize, padded: &mut [f32]| {
        for pixel in padded[from * n..to * n].chunks_exact_mut(n) {
            // SAFETY: `pixel` holds N floats; CPU support is the caller's.
            unsafe { L::store(pixel.as_mut_ptr(), L::splat(0.0)) };
        }
    };
    // (Once a run of blocks: 41 of a 7² plane's 90 padded pixels, 9 % of
    // a block's time on Zen 4.)
    if !borders_zero {
        zero_pixels(0, geo.pad_top * wp, padded);
        zero_pixels((geo.pad_top + geo.h_in) * wp, hp * wp, padded);
        for iy in 0..geo.h_in {
            let row = (geo.pad_top + iy) * wp;
            zero_pixels(row, row + geo.pad_left, padded);
            zero_pixels(row + geo.pad_left + w_in, row + wp, padded);
        }
    }
    if count == n && plane_in >= n {
        let dst = padded.as_mut_ptr();
        let mut q = 0;
        while q < plane_in {
            let q0 = q.min(plane_in - n);
            let targets = &landing[q0..q0 + n];
            // SAFETY: channel c < N reads input[c·plane_in + q0 .. + N]
            // (q0 + N <= plane_in); each target is a pixel of N floats
            // inside the padded plane; CPU support is the caller's.
            unsafe { L::transpose_square(input.as_ptr().add(q0), plane_in, |j| dst.add(targets[j] as usize * n)) };
            q = q0 + n;
        }
        return;
    }
    for (q, &at) in landing.iter().enumerate() {
        let pixel = &mut padded[at as usize * n..][..n];
        for (c, v) in pixel.iter_mut().enumerate() {
            *v = if c < count { input[c * plane_in + q] } else { 0.0 };
        }
    }
}

/// The `pixels` output pixels of `N` floats back into the output planes of
/// channels `skip .. count` (the last block of `N` pixels overlapping the
/// one before).
///
/// # Safety
/// `L`'s instructions are available.
#[inline(always)]
unsafe fn transpose_out<L: Lanes>(pixels_out: &[f32], pixels: usize, (skip, count): (usize, usize), out: &mut [f32]) {
    let n = L::N;
    assert!(pixels_out.len() >= pixels * n && out.len() == (count - skip) * pixels);
    if count == n && pixels >= n {
        // The rows of the channels not wanted land here, one over another.
        let mut unwanted = [0.0f32; 16];
        let unwanted = unwanted.as_mut_ptr();
        let dst = out.as_mut_ptr();
        let mut p = 0;
        while p < pixels {
            let p0 = p.min(pixels - n);
            // SAFETY: reads pixels p0..p0 + N of N floats, writes channel
            // j's floats p0..p0 + N for skip <= j < N = count into its
            // output plane j − skip, the rows j < skip into the N floats of
            // `unwanted`, all inside; CPU support is the caller's.
            unsafe {
                L::transpose_square(pixels_out.as_ptr().add(p0 * n), n, |j| {
                    if j < skip { unwanted } else { dst.add((j - skip) * pixels + p0) }
                })
            };
            p = p0 + n;
        }
        return;
    }
    for (c, plane) in out.chunks_exact_mut(pixels).enumerate() {
        for (q, v) in plane.iter_mut().enumerate() {
            *v = pixels_out[q * n + skip + c];
        }
    }
}
