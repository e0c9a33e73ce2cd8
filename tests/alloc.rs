//! Steady state allocates nothing: after a warm-up call, `Conv2dPlan::run`
//! (every algorithm, on the calling thread) and a serial `sgemm` make no heap
//! allocation. Counted with a global allocator; this file is its own test
//! binary, and its one test runs alone so no other thread allocates meanwhile.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use convgemm::{Algorithm, Conv2dPlan, ConvOptions, ConvParams, Threads, sgemm};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(mut f: impl FnMut()) -> usize {
    f(); // warm-up: per-thread buffers grow here
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    for _ in 0..3 {
        f();
    }
    ALLOCATIONS.load(Ordering::SeqCst) - before
}

#[test]
fn steady_state_allocates_nothing() {
    let layers: [([usize; 4], [usize; 4], ConvParams); 4] = [
        ([2, 8, 20, 20], [16, 8, 3, 3], ConvParams { padding: [1, 1, 1, 1], ..ConvParams::default() }),
        ([1, 6, 9, 9], [6, 1, 3, 3], ConvParams { padding: [1, 1, 1, 1], groups: 6, ..ConvParams::default() }),
        ([1, 16, 7, 7], [32, 16, 1, 1], ConvParams::default()),
        ([1, 300, 5, 5], [8, 300, 1, 2], ConvParams { stride: [2, 1], ..ConvParams::default() }),
    ];
    for (input_shape, weight_shape, params) in layers {
        for algorithm in [Algorithm::Auto, Algorithm::Im2col, Algorithm::Implicit] {
            let options = ConvOptions { algorithm, threads: Threads::Single, ..ConvOptions::default() };
            let x = vec![0.5f32; input_shape.iter().product()];
            let w = vec![0.25f32; weight_shape.iter().product()];
            let b = vec![1.0f32; weight_shape[0]];
            let plan = Conv2dPlan::new(&w, weight_shape, Some(&b), &params, &options).unwrap();
            let mut y = vec![0.0f32; plan.output_shape(input_shape).unwrap().iter().product()];
            let n = allocations_during(|| plan.run(&x, input_shape, &mut y).unwrap());
            assert_eq!(n, 0, "{algorithm:?} {input_shape:?} {weight_shape:?}: {n} allocations");
        }
    }
    let (m, k, n) = (6, 25, 784); // LeNet-5 conv1 as a GEMM: below the fork threshold
    let (a, bm, mut c) = (vec![1.0f32; m * k], vec![1.0f32; k * n], vec![0.0f32; m * n]);
    let allocs = allocations_during(|| {
        // SAFETY: row-major m×k, k×n, m×n buffers of exactly those sizes.
        unsafe {
            sgemm(
                m,
                k,
                n,
                1.0,
                a.as_ptr(),
                k as isize,
                1,
                bm.as_ptr(),
                n as isize,
                1,
                0.0,
                c.as_mut_ptr(),
                n as isize,
                1,
            )
        }
    });
    assert_eq!(allocs, 0, "sgemm {m}x{k}x{n}: {allocs} allocations");
}
