//! The fork onto the caller's rayon pool that the hot paths share: the
//! calling thread works too, and the items are dealt out one at a time
//! from a shared counter.
//!
//! A rayon parallel iterator called from outside the pool hands the whole
//! job to a pool thread and puts the caller to sleep until it is done: two
//! wake-ups per call, which on a 2-vCPU VM cost 12–18 µs (Zen 5, a
//! throwaway program timing 2 items of 5–50 µs) — as much as a small
//! layer's whole saving from a second thread. Here the caller starts on
//! the items at once, the helpers join as they wake, and whoever is free
//! takes the next item, so a late helper costs at most its last item.
//! The caller takes items from the front, the helpers from the back.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Runs `f(i)` once for every `i < items`: on the calling thread and on
/// `threads − 1` jobs spawned onto the current rayon pool (fewer if there
/// are fewer items), each taking the next item until none is left (more
/// than 2³² − 1 items run in order on the calling thread). Which
/// thread runs an item is not fixed, so `f` must compute each item the same
/// way on any thread. With `threads <= 1` the items run in order here.
///
/// # Panics
/// If `f` panics (the panic reaches the caller once every job has ended).
pub(crate) fn for_each(threads: usize, items: usize, f: impl Fn(usize) + Sync) {
    let helpers = threads.min(items).saturating_sub(1);
    if helpers == 0 || items > LOW as usize {
        // (Past 2³² − 1 items the counter's halves could not hold them.)
        (0..items).for_each(f);
        return;
    }
    let left = Items::new(items);
    let finished = AtomicUsize::new(0);
    rayon::in_place_scope(|scope| {
        for _ in 0..helpers {
            scope.spawn(|_| {
                while let Some(i) = left.take(true) {
                    f(i)
                }
                finished.fetch_add(1, Ordering::Release);
            });
        }
        while let Some(i) = left.take(false) {
            f(i)
        }
        // A caller outside the pool would now block until the helpers end,
        // and be woken when they do: 12–15 µs on this VM, however short their
        // last item. It waits awake instead, for a while (a caller inside the
        // pool runs a helper that has not started itself, in the scope's
        // wait, and must not spin before it).
        if rayon::current_thread_index().is_none() {
            let start = Instant::now();
            while finished.load(Ordering::Acquire) < helpers && start.elapsed() < SPIN_AT_MOST {
                std::hint::spin_loop();
            }
        }
    });
}

/// How long a caller outside the pool waits awake for the helpers to end.
const SPIN_AT_MOST: Duration = Duration::from_micros(200);

/// `f(i, chunk)` for chunk `i` of `data` cut into chunks of `len`
/// elements (the last may be shorter), the chunks run as [`for_each`]
/// runs items.
pub(crate) fn for_each_chunk_mut<T: Send>(
    threads: usize,
    data: &mut [T],
    len: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    let (len, total) = (len.max(1), data.len());
    let base = SharedMut(data.as_mut_ptr());
    for_each(threads, total.div_ceil(len), |i| {
        let (start, end) = (i * len, ((i + 1) * len).min(total));
        // SAFETY: chunk i is data[start..end], inside `data`, which this
        // call borrows mutably throughout; `for_each` runs each i exactly
        // once, so no two calls of `f` hold overlapping chunks.
        let chunk = unsafe { std::slice::from_raw_parts_mut(base.at(start), end - start) };
        f(i, chunk)
    });
}

/// A slice's first element, shared by the threads of [`for_each_chunk_mut`],
/// each of which writes a part of its own.
struct SharedMut<T>(*mut T);

impl<T> SharedMut<T> {
    /// Element `i` (a method, so a closure captures the `Sync` wrapper, not its pointer).
    fn at(&self, i: usize) -> *mut T {
        self.0.wrapping_add(i)
    }
}

// SAFETY: the pointer is only turned into disjoint chunks, one per thread
// at a time (see `for_each_chunk_mut`), of elements that are `Send`.
unsafe impl<T: Send> Send for SharedMut<T> {}
// SAFETY: as for Send.
unsafe impl<T: Send> Sync for SharedMut<T> {}

/// The items not yet taken, `front .. back`, in one atomic word (front in
/// the low 32 bits): the caller takes them from the front, the helpers
/// from the back, so each thread's items lie together (neighbouring items
/// write neighbouring outputs: taken in turns, the threads would share the
/// cache lines between them all).
struct Items(AtomicU64);

impl Items {
    fn new(items: usize) -> Items {
        debug_assert!(items <= LOW as usize, "the back half holds the count");
        Items(AtomicU64::new((items as u64) << 32))
    }

    /// The next item from the back (or the front), none when all are taken.
    fn take(&self, back: bool) -> Option<usize> {
        let mut now = self.0.load(Ordering::Relaxed);
        loop {
            let (front, end) = (now & LOW, now >> 32);
            if front >= end {
                return None;
            }
            let (next, item) = if back { (front | (end - 1) << 32, end - 1) } else { (now + 1, front) };
            match self.0.compare_exchange_weak(now, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Some(item as usize),
                Err(seen) => now = seen,
            }
        }
    }
}

/// The low 32 bits.
const LOW: u64 = u32::MAX as u64;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    /// Thread counts to try: Miri runs one (rayon's deques are not clean
    /// under its borrow model), so it checks the chunks' pointers alone.
    const THREADS: &[usize] = if cfg!(miri) { &[1] } else { &[1, 2, 3, 8] };

    #[test]
    fn every_item_runs_once_on_any_thread_count() {
        let pool = (!cfg!(miri)).then(|| rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap());
        for &threads in THREADS {
            for items in [0, 1, 5, 7, 100] {
                let runs: Vec<AtomicU32> = (0..items).map(|_| AtomicU32::new(0)).collect();
                let count = |i: usize| {
                    runs[i].fetch_add(1, Ordering::Relaxed);
                };
                for_each(threads, items, count);
                if let Some(pool) = &pool {
                    pool.install(|| for_each(threads, items, count));
                    runs.iter().for_each(|r| assert_eq!(r.fetch_sub(1, Ordering::Relaxed), 2));
                }
                assert!(runs.iter().all(|r| r.load(Ordering::Relaxed) == 1), "{threads} threads, {items} items");
            }
        }
    }

    #[test]
    fn every_chunk_is_its_own() {
        for &threads in THREADS {
            for (len, total) in [(1, 0), (4, 17), (5, 5), (100, 7)] {
                let mut data = vec![usize::MAX; total];
                for_each_chunk_mut(threads, &mut data, len, |i, chunk| {
                    assert!(chunk.len() == len || (i + 1) * len >= total);
                    chunk.iter_mut().enumerate().for_each(|(j, x)| *x = i * len + j);
                });
                assert!(data.iter().enumerate().all(|(j, &x)| x == j), "{threads} threads, chunks of {len} of {total}");
            }
        }
    }
}
