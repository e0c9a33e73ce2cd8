//! Pooling of channels-last images: each window walked once per output
//! pixel, in row-major window order, with all of the pixel's channels in
//! the innermost loop (contiguous in input and output, so the compiler
//! vectorises it over channels). Every channel sees exactly the operations
//! of the NCHW scans, in the same order (`scan::combine`, the same divisor,
//! the same arg-max rule and the same order of gradient additions), so the
//! results are the NCHW ones, permuted, bit for bit.

use rayon::prelude::*;

use super::PARALLEL_MIN_ELEMENTS;
use super::params::PoolGeometry;
use super::scan::{Kind, MAX_NAN, SUM, combine};

/// The forward pass of `kind` on a channels-last batch of `channels`
/// channels: `input` `[n, h, w, c]`, `output` `[n, h_out, w_out, c]`, both
/// of the lengths `g` implies. Rows of output in parallel when large.
pub(super) fn forward(kind: Kind, g: &PoolGeometry, channels: usize, input: &[f32], output: &mut [f32]) {
    // An empty output (possibly of an empty batch, whose per-image counts
    // need not fit) has nothing to compute; else every count below fits.
    if output.is_empty() {
        return;
    }
    let (c, row) = (channels, g.w.out * channels);
    let image_in = g.plane_in() * c;
    let run = |first_row: usize, out: &mut [f32]| {
        for (r, out_row) in (first_row..).zip(out.chunks_exact_mut(row)) {
            let (image, oy) = (r / g.h.out, r % g.h.out);
            let x = &input[image * image_in..][..image_in];
            for (ox, y) in out_row.chunks_exact_mut(c).enumerate() {
                match kind {
                    Kind::Max => window::<MAX_NAN>(g, x, c, oy, ox, y),
                    Kind::Avg => window::<SUM>(g, x, c, oy, ox, y),
                }
            }
        }
    };
    let rows = output.len() / row;
    let work = input.len() + output.len();
    if rows > 1 && work >= PARALLEL_MIN_ELEMENTS && rayon::current_num_threads() > 1 {
        let per_task = (PARALLEL_MIN_ELEMENTS / 4).div_ceil(row + image_in / g.h.out.max(1)).clamp(1, rows);
        output.par_chunks_mut(per_task * row).enumerate().for_each(|(t, out)| run(t * per_task, out));
    } else {
        run(0, output);
    }
}

/// One output pixel, every channel: the window's taps in row-major order
/// combined by `OP` from its initial value, the average divided once.
#[inline(always)]
fn window<const OP: u8>(g: &PoolGeometry, x: &[f32], c: usize, oy: usize, ox: usize, y: &mut [f32]) {
    y.fill(if OP == SUM { 0.0 } else { f32::NEG_INFINITY });
    let mut count = 0;
    for i in g.taps(oy, ox) {
        for (acc, &v) in y.iter_mut().zip(&x[i * c..][..c]) {
            *acc = combine::<OP>(*acc, v);
        }
        count += 1;
    }
    if OP == SUM {
        let divisor = g.divisor(oy, ox, count);
        y.iter_mut().for_each(|v| *v /= divisor);
    }
}

/// The gradient of max pooling, channels-last: each output gradient added
/// to its window's arg-max (the first maximum in row-major window order,
/// or the last NaN: the NCHW scan's rule), windows in row-major order.
pub(super) fn max_backward(g: &PoolGeometry, c: usize, input: &[f32], grad_output: &[f32], grad_input: &mut [f32]) {
    // As in `forward`: nothing to write, or counts that fit.
    if grad_input.is_empty() {
        return;
    }
    let (image_in, image_out) = (g.plane_in() * c, g.plane_out() * c);
    let images = grad_input.len() / image_in;
    let run = |first: usize, gi: &mut [f32]| {
        let mut at = vec![0usize; c];
        let mut max = vec![0.0f32; c];
        for (image, gi) in (first..).zip(gi.chunks_exact_mut(image_in)) {
            gi.fill(0.0);
            let x = &input[image * image_in..][..image_in];
            let go = &grad_output[image * image_out..][..image_out];
            for oy in 0..g.h.out {
                for ox in 0..g.w.out {
                    if !arg_max(g, x, c, oy, ox, &mut at, &mut max) {
                        continue;
                    }
                    let k = oy * g.w.out + ox;
                    for (ch, (&a, &d)) in at.iter().zip(&go[k * c..][..c]).enumerate() {
                        gi[a * c + ch] += d;
                    }
                }
            }
        }
    };
    par_images(images, image_in + image_out, grad_input, image_in, run);
}

/// The arg-max of window `(oy, ox)` of every channel of a channels-last
/// image `x` of `c` channels: `at[ch]` the input pixel `iy·w + ix` of the
/// first maximum in row-major window order (or the last NaN: the NCHW
/// scan's rule) and `max[ch]` its value. `false`, with `at` and `max` as
/// they were, for a window with no input pixel.
#[inline(always)]
fn arg_max(g: &PoolGeometry, x: &[f32], c: usize, oy: usize, ox: usize, at: &mut [usize], max: &mut [f32]) -> bool {
    let mut taps = g.taps(oy, ox);
    let Some(first) = taps.next() else { return false };
    at.fill(first);
    max.copy_from_slice(&x[first * c..][..c]);
    for i in std::iter::once(first).chain(taps) {
        for ((a, m), &v) in at.iter_mut().zip(max.iter_mut()).zip(&x[i * c..][..c]) {
            let take = v > *m || v.is_nan();
            *a = if take { i } else { *a };
            *m = if take { v } else { *m };
        }
    }
    true
}

/// Max pooling with switches, channels-last: `output` and `indices`
/// `[n, h_out, w_out, c]`, each index the arg-max's pixel `iy·w + ix` inside
/// its channel's plane (as in NCHW), or `no_index` (and −∞) for a window
/// with no input pixel. Whole images per task.
pub(super) fn max_with_indices(
    g: &PoolGeometry,
    c: usize,
    no_index: usize,
    input: &[f32],
    output: &mut [f32],
    indices: &mut [usize],
) {
    // As in `forward`: nothing to write, or counts that fit.
    if output.is_empty() {
        return;
    }
    let (image_in, image_out) = (g.plane_in() * c, g.plane_out() * c);
    let one = |image: usize, (y, at): (&mut [f32], &mut [usize])| {
        let x = &input[image * image_in..][..image_in];
        for (k, (y, at)) in y.chunks_exact_mut(c).zip(at.chunks_exact_mut(c)).enumerate() {
            let (oy, ox) = (k / g.w.out, k % g.w.out);
            if !arg_max(g, x, c, oy, ox, at, y) {
                at.fill(no_index);
                y.fill(f32::NEG_INFINITY);
            }
        }
    };
    let images = output.len() / image_out;
    if images > 1 && images * (image_in + 2 * image_out) >= PARALLEL_MIN_ELEMENTS && rayon::current_num_threads() > 1 {
        let pairs = output.par_chunks_mut(image_out).zip(indices.par_chunks_mut(image_out));
        pairs.enumerate().for_each(|(image, pair)| one(image, pair));
    } else {
        output.chunks_mut(image_out).zip(indices.chunks_mut(image_out)).enumerate().for_each(|(i, p)| one(i, p));
    }
}

/// `max_unpool2d` channels-last: `output` (`[n, h, w, c]`, `plane_out`
/// pixels an image) zeroed, then each `input` value (`[n, h_in, w_in, c]`,
/// `plane_in` pixels an image) written at pixel `indices[k]` of its
/// channel, pixels in order (the last of several at one position stays, as
/// in NCHW); `no_index` entries skipped. Indices were checked by the caller.
pub(super) fn unpool(
    c: usize,
    (plane_in, plane_out): (usize, usize),
    no_index: usize,
    input: &[f32],
    indices: &[usize],
    output: &mut [f32],
) {
    let (image_in, image_out) = (plane_in * c, plane_out * c);
    let one = |((y, x), at): ((&mut [f32], &[f32]), &[usize])| {
        y.fill(0.0);
        for (x, at) in x.chunks_exact(c).zip(at.chunks_exact(c)) {
            for (ch, (&v, &i)) in x.iter().zip(at).enumerate() {
                if i != no_index {
                    y[i * c + ch] = v;
                }
            }
        }
    };
    let images = output.len() / image_out;
    if images > 1 && images * (2 * image_in + image_out) >= PARALLEL_MIN_ELEMENTS && rayon::current_num_threads() > 1 {
        output
            .par_chunks_mut(image_out)
            .zip(input.par_chunks(image_in))
            .zip(indices.par_chunks(image_in))
            .for_each(one);
    } else {
        output.chunks_mut(image_out).zip(input.chunks(image_in)).zip(indices.chunks(image_in)).for_each(one);
    }
}

/// The gradient of average pooling, channels-last: each output gradient
/// divided by its window's divisor and added to each of its taps, windows
/// in row-major order.
pub(super) fn avg_backward(g: &PoolGeometry, c: usize, grad_output: &[f32], grad_input: &mut [f32]) {
    // As in `forward`: nothing to write, or counts that fit.
    if grad_input.is_empty() {
        return;
    }
    let (image_in, image_out) = (g.plane_in() * c, g.plane_out() * c);
    let images = grad_input.len() / image_in;
    let run = |first: usize, gi: &mut [f32]| {
        let mut val = vec![0.0f32; c];
        for (image, gi) in (first..).zip(gi.chunks_exact_mut(image_in)) {
            gi.fill(0.0);
            let go = &grad_output[image * image_out..][..image_out];
            for oy in 0..g.h.out {
                for ox in 0..g.w.out {
                    let count = g.taps(oy, ox).count();
                    let divisor = g.divisor(oy, ox, count);
                    let k = oy * g.w.out + ox;
                    for (v, &d) in val.iter_mut().zip(&go[k * c..][..c]) {
                        *v = d / divisor;
                    }
                    for i in g.taps(oy, ox) {
                        for (acc, &v) in gi[i * c..][..c].iter_mut().zip(&val) {
                            *acc += v;
                        }
                    }
                }
            }
        }
    };
    par_images(images, image_in + image_out, grad_input, image_in, run);
}

/// `run(first_image, images)` over `out` (images of `image_len` floats),
/// whole images per task, in parallel when the batch is large enough.
fn par_images(
    images: usize,
    work_per_image: usize,
    out: &mut [f32],
    image_len: usize,
    run: impl Fn(usize, &mut [f32]) + Sync,
) {
    if images > 1 && images * work_per_image >= PARALLEL_MIN_ELEMENTS && rayon::current_num_threads() > 1 {
        out.par_chunks_mut(image_len).enumerate().for_each(|(i, gi)| run(i, gi));
    } else {
        run(0, out);
    }
}
