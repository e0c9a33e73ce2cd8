//! The pooling table: max/avg pooling against one plain copy of the input
//! (`copy_from_slice`, the floor for a memory-bound pass), timed side by
//! side (interleaved medians) in one run, on 1 thread and on all threads.
//! Issue 7's target: ResNet-50's 3×3/2 max pool and VGG's 2×2/2 avg pool
//! each within 2× of the copy.
//!
//! ```text
//! cargo bench --bench pool             # full table
//! cargo bench --bench pool -- quick    # fewer rounds
//! cargo bench --bench pool -- resnet50 # only the cases whose name holds it
//! ```
//!
//! Bytes moved: pooling reads the input once and writes the output; the
//! copy reads and writes the input. GB/s below counts those bytes.

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use convgemm::{PoolParams, avg_pool2d, global_avg_pool2d, max_pool2d, pool2d_output_shape};
use support::{interleaved_medians, pool, values};

#[derive(Clone, Copy)]
enum Op {
    Max,
    Avg,
    Global,
}

struct Case {
    name: &'static str,
    shape: [usize; 4],
    op: Op,
    kernel: usize,
    stride: usize,
    pad: usize,
}

const CASES: [Case; 5] = [
    Case { name: "resnet50 maxpool 3x3/2 p1", shape: [1, 64, 112, 112], op: Op::Max, kernel: 3, stride: 2, pad: 1 },
    Case { name: "vgg16 avgpool 2x2/2", shape: [1, 64, 224, 224], op: Op::Avg, kernel: 2, stride: 2, pad: 0 },
    Case { name: "vgg16 maxpool 2x2/2", shape: [1, 64, 224, 224], op: Op::Max, kernel: 2, stride: 2, pad: 0 },
    Case { name: "alexnet maxpool 3x3/2", shape: [1, 96, 55, 55], op: Op::Max, kernel: 3, stride: 2, pad: 0 },
    Case { name: "resnet50 global avg", shape: [1, 2048, 7, 7], op: Op::Global, kernel: 7, stride: 1, pad: 0 },
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let quick = args.iter().any(|a| a == "quick");
    let filters: Vec<&String> = args.iter().filter(|a| *a != "quick").collect();
    let (rounds, sample) = if quick { (7, Duration::from_millis(20)) } else { (31, Duration::from_millis(40)) };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("| case | input | threads | copy µs | pool µs | pool / copy | copy GB/s | pool GB/s |");
    println!("|---|---|---|---|---|---|---|---|");
    for c in CASES.iter().filter(|c| filters.is_empty() || filters.iter().any(|f| c.name.contains(f.as_str()))) {
        let x = values(c.shape.iter().product(), 1);
        let mut params = PoolParams::new([c.kernel; 2]);
        params.stride = [c.stride; 2];
        params.padding = [c.pad; 4];
        let out_len = match c.op {
            Op::Global => c.shape[0] * c.shape[1],
            _ => pool2d_output_shape(c.shape, &params).unwrap().iter().product(),
        };
        let mut copy = vec![0.0f32; x.len()];
        let mut y = vec![0.0f32; out_len];
        for t in [1, threads] {
            let pool = pool(t);
            let (x, params, op) = (&x, &params, c.op);
            let mut run_copy = || copy.copy_from_slice(x);
            let mut run_pool = || {
                match op {
                    Op::Max => max_pool2d(x, c.shape, params, &mut y),
                    Op::Avg => avg_pool2d(x, c.shape, params, &mut y),
                    Op::Global => global_avg_pool2d(x, c.shape, &mut y),
                }
                .unwrap()
            };
            // Both contenders run inside the pool, as in a framework that
            // works in its rayon pool: no cross-thread wake-up per call
            // (`install` around each call added ~15 µs to a 115 µs pool).
            let m = pool.install(|| interleaved_medians(&mut [&mut run_copy, &mut run_pool], rounds, sample));
            let bytes_copy = 8.0 * x.len() as f64;
            let bytes_pool = 4.0 * (x.len() + out_len) as f64;
            println!(
                "| {} | {:?} | {t} | {:.1} | {:.1} | {:.2} | {:.1} | {:.1} |",
                c.name,
                c.shape,
                m[0] * 1e6,
                m[1] * 1e6,
                m[1] / m[0],
                bytes_copy / m[0] * 1e-9,
                bytes_pool / m[1] * 1e-9
            );
        }
    }
}
