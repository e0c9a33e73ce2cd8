//! Pooling: the maximum or the average over sliding windows of NCHW or
//! channels-last f32 images (`channels_last.rs`: channels as the inner loop), forward (`forward.rs`) and backward (`backward.rs`), with
//! PyTorch's semantics (`torch.nn.functional.max_pool2d` / `avg_pool2d`),
//! and global average pooling; parameters and output sizes in `params.rs`.
//!
//! Pooling does one operation per element it reads, so it is bound by memory,
//! not arithmetic: the floor is one pass over the input. The forward pass is
//! vectorised over output columns, one window per lane (`scan.rs`, and the
//! x86-64 max kernels `maxpool_separable_<isa>`, `maxpool_fused_avx512`,
//! `maxpool_exact_rows_avx2`), and every lane walks its window in row-major
//! order, exactly like the scalar code at the image borders. Results are
//! therefore bit-identical on every instruction set and for any number of
//! threads (planes are independent; nothing is reordered).

mod backward;
mod channels_last;
mod forward;
mod indices;
mod params;
mod scan;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod separable;

pub use backward::{avg_pool2d_backward, max_pool2d_backward};
#[cfg(test)]
pub(crate) use forward::max_pool2d_with;
pub use forward::{avg_pool2d, global_avg_pool2d, global_avg_pool2d_with_layout, max_pool2d};
pub use indices::{MAX_POOL_NO_INDEX, max_pool2d_with_indices, max_unpool2d, max_unpool2d_with_layout};
pub use params::{PoolParams, pool2d_output_shape};

use rayon::prelude::*;

use params::PoolGeometry;

/// Below this many elements (all buffers together) the planes run on the
/// calling thread; above it, each parallel task takes at least this many.
const PARALLEL_MIN_ELEMENTS: usize = 1 << 15;

/// Runs `f(out_plane, a_plane, b_plane)` for every plane, in parallel when
/// the call is large enough (tasks of whole planes, at least
/// `PARALLEL_MIN_ELEMENTS / 4` elements each, so that small planes are not
/// one task each). `out` holds planes of `out.len() / planes` elements, and
/// likewise `a` and `b` (which may be empty).
fn for_each_plane<F>(g: &PoolGeometry, out: &mut [f32], a: &[f32], b: &[f32], f: F)
where
    F: Fn(&mut [f32], &[f32], &[f32]) + Sync,
{
    if g.planes == 0 {
        return;
    }
    let (o, pa, pb) = (out.len() / g.planes, a.len() / g.planes, b.len() / g.planes);
    let work = out.len() + a.len() + b.len();
    let run = |first: usize, y: &mut [f32]| {
        for (p, y) in (first..).zip(y.chunks_mut(o)) {
            f(y, chunk(a, pa, p), chunk(b, pb, p));
        }
    };
    if g.planes > 1 && work >= PARALLEL_MIN_ELEMENTS && rayon::current_num_threads() > 1 {
        let per_task = (PARALLEL_MIN_ELEMENTS / 4).div_ceil(o + pa + pb).clamp(1, g.planes);
        out.par_chunks_mut(o * per_task).enumerate().for_each(|(t, y)| run(t * per_task, y));
    } else {
        run(0, out);
    }
}

/// Plane `p` of `s`, planes of `len` elements (none when `s` is empty).
fn chunk(s: &[f32], len: usize, p: usize) -> &[f32] {
    if len == 0 { &[] } else { &s[p * len..][..len] }
}
