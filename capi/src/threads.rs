//! `cg_set_num_threads` / `cg_get_num_threads`: which rayon pool the C entry
//! points run on. By default, rayon's global pool, as a Rust caller gets
//! (sized by `RAYON_NUM_THREADS` or the CPU count), at no extra cost per
//! call; after `cg_set_num_threads(n)`, a pool of `n` threads this library
//! owns.

use std::sync::{Arc, PoisonError, RwLock};

use rayon::{ThreadPool, ThreadPoolBuilder};

use crate::status::{Failure, call, cg_status};

/// More threads than any machine this runs on has cores: a larger count is a
/// mistake (an unset or negative value), not a request.
pub const CG_MAX_THREADS: usize = 1024;

/// The pool later calls run on: `None` is rayon's global pool.
static POOL: RwLock<Option<Arc<ThreadPool>>> = RwLock::new(None);

fn current() -> Option<Arc<ThreadPool>> {
    POOL.read().unwrap_or_else(PoisonError::into_inner).clone()
}

/// Runs `body` on the chosen pool (handing it to that pool's threads unless
/// the caller is already one of them).
pub(crate) fn run<T: Send>(body: impl FnOnce() -> T + Send) -> T {
    match current() {
        None => body(),
        Some(pool) => pool.install(body),
    }
}

/// Sets how many threads later calls may use: `n >= 1` builds a pool of `n`
/// threads owned by this library; `n == 0` goes back to the default, rayon's
/// global pool (as many threads as `RAYON_NUM_THREADS` or the CPU count say).
///
/// May be called at any time, from any thread. A call already running
/// finishes on the pool it started on; a call that starts after this one
/// returns uses the new setting. The old pool's threads exit once their work
/// is done. Results are bit-identical whatever the thread count.
///
/// With a pool of its own, each call hands its work to that pool's threads,
/// which costs about as much as waking a thread (10 µs measured on AMD Zen 5
/// for a small layer): worth it for large layers. The default adds nothing.
/// `n == 1` computes everything on the pool's one thread.
///
/// Returns CG_ERROR_BAD_PARAMETER for `n > CG_MAX_THREADS` and
/// CG_ERROR_THREAD_POOL if the threads cannot be created; either way the
/// previous setting stays.
#[unsafe(no_mangle)]
pub extern "C" fn cg_set_num_threads(n: usize) -> cg_status {
    call(move || {
        if n > CG_MAX_THREADS {
            return Err(Failure::new(
                cg_status::CG_ERROR_BAD_PARAMETER,
                format!("bad parameter n = {n}: must be at most {CG_MAX_THREADS} threads (0: the default)"),
            ));
        }
        let pool = match n {
            0 => None,
            n => Some(Arc::new(ThreadPoolBuilder::new().num_threads(n).build().map_err(|e| {
                Failure::new(cg_status::CG_ERROR_THREAD_POOL, format!("cannot start {n} threads: {e}"))
            })?)),
        };
        *POOL.write().unwrap_or_else(PoisonError::into_inner) = pool;
        Ok(())
    })
}

/// The number of threads a call made now may use (that of the pool set by
/// `cg_set_num_threads`, else of rayon's global pool; 1 if that pool cannot
/// start).
#[unsafe(no_mangle)]
pub extern "C" fn cg_get_num_threads() -> usize {
    // Asking rayon starts its global pool, which panics if no thread can be
    // started: that must not unwind into C (1: the calling thread).
    std::panic::catch_unwind(|| match current() {
        Some(pool) => pool.current_num_threads(),
        None => rayon::current_num_threads(),
    })
    .unwrap_or(1)
}
