//! Steady state allocates nothing: after a warm-up call, `Conv2dPlan::run`
//! (every algorithm, on the calling thread) and a serial `sgemm` make no heap
//! allocation. And Winograd's memory is bounded: a first run of VGG-16's
//! conv1_2 (64 channels on 224×224) raises the heap's peak by at most
//! 16 MiB, whatever the image size (its tiles go through blocks of a few
//! MiB, never a transformed copy of the image). Counted with a global
//! allocator; this file is its own test binary, and its one test runs alone
//! so no other thread allocates meanwhile.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use convgemm::{Algorithm, Conv2dPlan, ConvOptions, ConvParams, Precision, Threads, sgemm};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
/// Bytes allocated now, and the most there have been since the last reset.
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grow(bytes: usize) {
    let now = LIVE.fetch_add(bytes, Ordering::SeqCst) + bytes;
    PEAK.fetch_max(now, Ordering::SeqCst);
}

// SAFETY: forwards to the system allocator; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        grow(layout.size());
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
        grow(new_size);
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
    let depthwise = ConvParams { padding: [1, 1, 1, 1], groups: 6, ..ConvParams::default() };
    let layers: [([usize; 4], [usize; 4], ConvParams); 6] = [
        ([2, 8, 20, 20], [16, 8, 3, 3], ConvParams { padding: [1, 1, 1, 1], ..ConvParams::default() }),
        ([1, 6, 9, 9], [6, 1, 3, 3], depthwise),
        // The blocks of channels (7-pixel rows) and, at stride 2 on
        // AVX-512, the paired rows.
        ([2, 6, 7, 7], [6, 1, 3, 3], depthwise),
        ([2, 6, 12, 12], [6, 1, 3, 3], ConvParams { stride: [2, 2], ..depthwise }),
        ([1, 16, 7, 7], [32, 16, 1, 1], ConvParams::default()),
        ([1, 300, 5, 5], [8, 300, 1, 2], ConvParams { stride: [2, 1], ..ConvParams::default() }),
    ];
    let both_layouts = layers.iter().flat_map(|&(x, w, p)| {
        [ConvParams { layout: convgemm::Layout::Nchw, ..p }, ConvParams { layout: convgemm::Layout::Nhwc, ..p }]
            .map(|p| (x, w, p))
    });
    for (input_shape, weight_shape, params) in both_layouts {
        for algorithm in [Algorithm::Auto, Algorithm::Im2col, Algorithm::Implicit] {
            let options = ConvOptions { algorithm, threads: Threads::Single, ..ConvOptions::default() };
            let x = vec![0.5f32; input_shape.iter().product()];
            let w = vec![0.25f32; weight_shape.iter().product()];
            let b = vec![1.0f32; weight_shape[0]];
            let plan = Conv2dPlan::new(&w, weight_shape, Some(&b), &params, &options).unwrap();
            let mut y = vec![0.0f32; plan.output_shape(input_shape).unwrap().iter().product()];
            let n = allocations_during(|| plan.run(&x, input_shape, &mut y).unwrap());
            assert_eq!(n, 0, "{algorithm:?} {input_shape:?} {weight_shape:?} {:?}: {n} allocations", params.layout);
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

    // Winograd: nothing in steady state either, and a bounded first run.
    // (Forced: `Auto` leaves 7×7 planes of 64 channels to the exact paths.)
    let relaxed = ConvOptions {
        precision: Precision::Relaxed,
        algorithm: Algorithm::Winograd,
        threads: Threads::Single,
        ..ConvOptions::default()
    };
    let params = ConvParams { padding: [1, 1, 1, 1], ..ConvParams::default() };
    for (input_shape, weight_shape) in [([1, 64, 30, 30], [64, 64, 3, 3]), ([1, 64, 7, 7], [72, 64, 3, 3])] {
        let x = vec![0.5f32; input_shape.iter().product()];
        let w = vec![0.25f32; weight_shape.iter().product()];
        let plan = Conv2dPlan::new(&w, weight_shape, None, &params, &relaxed).unwrap();
        assert_eq!(plan.algorithm(input_shape).unwrap(), Algorithm::Winograd);
        let mut y = vec![0.0f32; plan.output_shape(input_shape).unwrap().iter().product()];
        let n = allocations_during(|| plan.run(&x, input_shape, &mut y).unwrap());
        assert_eq!(n, 0, "Winograd {input_shape:?}: {n} allocations");
    }
    let input_shape = [1, 64, 224, 224];
    let x = vec![0.5f32; input_shape.iter().product()];
    let w = vec![0.25f32; 64 * 64 * 9];
    let mut y = vec![0.0f32; x.len()];
    // Each thread has its own blocks: the bound is for two (this machine's
    // count), as the target says; a 2-thread pool is built first.
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    for threads in [Threads::Single, Threads::Pool] {
        let options = ConvOptions { threads, ..relaxed };
        let plan = Conv2dPlan::new(&w, [64, 64, 3, 3], None, &params, &options).unwrap();
        assert_eq!(plan.algorithm(input_shape).unwrap(), Algorithm::Winograd);
        let before = LIVE.load(Ordering::SeqCst);
        PEAK.store(before, Ordering::SeqCst);
        pool.install(|| plan.run(&x, input_shape, &mut y)).unwrap();
        let grown = PEAK.load(Ordering::SeqCst) - before;
        eprintln!("VGG-16 conv1_2 by Winograd, {threads:?}: peak heap +{:.1} MiB", grown as f64 / 1048576.0);
        assert!(grown <= 16 << 20, "{threads:?}: the first run raised the peak by {grown} bytes");
    }
    channels_last_takes_no_tensor_sized_scratch();
}

/// Channels-last is read and written where it lies: no path but the
/// explicit im2col (whose K × N matrix is its design) copies the tensor, so
/// a first run on a 3.2 MB input raises the heap's peak by far less than it.
/// (Part of the one test above: the counters are global, a second test
/// running beside it would count its allocations.)
fn channels_last_takes_no_tensor_sized_scratch() {
    let nhwc = |p: ConvParams| ConvParams { layout: convgemm::Layout::Nhwc, ..p };
    let padded = nhwc(ConvParams { padding: [1; 4], ..ConvParams::default() });
    type Case = ([usize; 4], [usize; 4], ConvParams, &'static [Algorithm]);
    let cases: [Case; 4] = [
        ([1, 64, 112, 112], [64, 64, 3, 3], padded, &[Algorithm::Auto, Algorithm::Implicit, Algorithm::Direct]),
        ([1, 64, 112, 112], [64, 64, 1, 1], nhwc(ConvParams::default()), &[Algorithm::Auto, Algorithm::Pointwise]),
        ([1, 64, 112, 112], [64, 1, 3, 3], ConvParams { groups: 64, ..padded }, &[Algorithm::Depthwise]),
        ([1, 64, 112, 112], [64, 64, 3, 3], padded, &[Algorithm::Winograd]),
    ];
    for (input_shape, weight_shape, params, algorithms) in cases {
        let x = vec![0.5f32; input_shape.iter().product()];
        let w = vec![0.25f32; weight_shape.iter().product()];
        for &algorithm in algorithms {
            let options = ConvOptions { algorithm, threads: Threads::Single, ..ConvOptions::default() };
            let plan = Conv2dPlan::new(&w, weight_shape, None, &params, &options).unwrap();
            let mut y = vec![0.0f32; plan.output_shape(input_shape).unwrap().iter().product()];
            let before = LIVE.load(Ordering::SeqCst);
            PEAK.store(before, Ordering::SeqCst);
            plan.run(&x, input_shape, &mut y).unwrap();
            let grown = PEAK.load(Ordering::SeqCst) - before;
            let tensor = 4 * x.len();
            // Winograd's blocks are sized from the L2 (a few MiB, tested
            // above on NCHW), whatever the input.
            let bound = if algorithm == Algorithm::Winograd { 16 << 20 } else { tensor / 4 };
            assert!(grown <= bound, "{algorithm:?} {weight_shape:?}: peak +{grown} bytes for a {tensor}-byte input");
        }
    }
}
