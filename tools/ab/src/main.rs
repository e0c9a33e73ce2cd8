//! A/B of the crate against another revision of itself (`convgemm_base`,
//! laid out by `run.sh`), in one process: every layer of the suite as a
//! `Conv2dPlan`, the GEMM table's shapes through `sgemm` and the pooling
//! bench's cases, old and new
//! interleaved sample by sample (medians), on 1 and 2 threads. Both must
//! give the same bits; the table gives new / old time per case.

#[path = "../../../benches/support/mod.rs"]
mod support;

use std::time::Duration;

use support::{interleaved_medians, layers, pool, values};

/// `new / old` of one case's median times, and whether the outputs agreed.
struct Case {
    name: String,
    threads: usize,
    old_us: f64,
    new_us: f64,
    same_bits: bool,
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn conv_cases(threads: usize, rounds: usize, min_sample: Duration, only: Option<&str>) -> Vec<Case> {
    let mut out = Vec::new();
    for l in layers() {
        if only.is_some_and(|o| !l.name.contains(o)) {
            continue;
        }
        let (x, w, b) = (
            values(l.input_shape().iter().product(), 1),
            values(l.weight_shape().iter().product(), 2),
            values(l.c_out, 3),
        );
        let p_new = l.params();
        let p_old = convgemm_base::ConvParams {
            stride: l.stride,
            padding: l.padding,
            dilation: l.dilation,
            groups: l.groups,
            flip: false,
        };
        let new =
            convgemm::Conv2dPlan::new(&w, l.weight_shape(), Some(&b), &p_new, &Default::default()).expect("valid");
        let old =
            convgemm_base::Conv2dPlan::new(&w, l.weight_shape(), Some(&b), &p_old, &Default::default()).expect("valid");
        let len: usize = l.output_shape().iter().product();
        let (mut y_new, mut y_old) = (vec![0.0f32; len], vec![0.0f32; len]);
        let times = pool(threads).install(|| {
            let mut run_old = || old.run(&x, l.input_shape(), &mut y_old).expect("valid");
            let mut run_new = || new.run(&x, l.input_shape(), &mut y_new).expect("valid");
            interleaved_medians(&mut [&mut run_old, &mut run_new], rounds, min_sample)
        });
        out.push(Case {
            name: l.name.clone(),
            threads,
            old_us: times[0] * 1e6,
            new_us: times[1] * 1e6,
            same_bits: bits(&y_new) == bits(&y_old),
        });
    }
    out
}

fn gemm_cases(threads: usize, rounds: usize, min_sample: Duration, only: Option<&str>) -> Vec<Case> {
    let mut shapes: Vec<(String, usize, usize, usize)> =
        [64, 128, 256, 512, 1024, 2048].iter().map(|&s| (format!("{s}³"), s, s, s)).collect();
    for l in layers() {
        let (m, k, n) = l.gemm_shape();
        if l.n == 1 && !shapes.iter().any(|s| (s.1, s.2, s.3) == (m, k, n)) {
            shapes.push((l.name.clone(), m, k, n));
        }
    }
    let mut out = Vec::new();
    for (name, m, k, n) in shapes {
        if only.is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let (a, b) = (values(m * k, 1), values(k * n, 2));
        let (mut c_new, mut c_old) = (vec![0.0f32; m * n], vec![0.0f32; m * n]);
        let times = pool(threads).install(|| {
            // SAFETY: row-major m × k, k × n and m × n matrices, in bounds.
            let mut run_old = || unsafe {
                convgemm_base::sgemm(
                    m,
                    k,
                    n,
                    1.0,
                    a.as_ptr(),
                    k as isize,
                    1,
                    b.as_ptr(),
                    n as isize,
                    1,
                    0.0,
                    c_old.as_mut_ptr(),
                    n as isize,
                    1,
                )
            };
            // SAFETY: as above.
            let mut run_new = || unsafe {
                convgemm::sgemm(
                    m,
                    k,
                    n,
                    1.0,
                    a.as_ptr(),
                    k as isize,
                    1,
                    b.as_ptr(),
                    n as isize,
                    1,
                    0.0,
                    c_new.as_mut_ptr(),
                    n as isize,
                    1,
                )
            };
            interleaved_medians(&mut [&mut run_old, &mut run_new], rounds, min_sample)
        });
        out.push(Case {
            name: format!("gemm {name}"),
            threads,
            old_us: times[0] * 1e6,
            new_us: times[1] * 1e6,
            same_bits: bits(&c_new) == bits(&c_old),
        });
    }
    out
}

/// The pooling cases of `benches/pool.rs`: (name, input shape, kernel,
/// stride, padding, max or average; kernel 0: global average).
const POOLS: [(&str, [usize; 4], usize, usize, usize, bool); 5] = [
    ("resnet50 maxpool 3x3/2 p1", [1, 64, 112, 112], 3, 2, 1, true),
    ("vgg16 avgpool 2x2/2", [1, 64, 224, 224], 2, 2, 0, false),
    ("vgg16 maxpool 2x2/2", [1, 64, 224, 224], 2, 2, 0, true),
    ("alexnet maxpool 3x3/2", [1, 96, 55, 55], 3, 2, 0, true),
    ("resnet50 global avg", [1, 2048, 7, 7], 0, 1, 0, false),
];

fn pool_cases(threads: usize, rounds: usize, min_sample: Duration, only: Option<&str>) -> Vec<Case> {
    let mut out = Vec::new();
    for (name, shape, kernel, stride, pad, max) in POOLS {
        if only.is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let x = values(shape.iter().product(), 1);
        let mut p_new = convgemm::PoolParams::new([kernel.max(1); 2]);
        (p_new.stride, p_new.padding) = ([stride; 2], [pad; 4]);
        let mut p_old = convgemm_base::PoolParams::new([kernel.max(1); 2]);
        (p_old.stride, p_old.padding) = ([stride; 2], [pad; 4]);
        let len = if kernel == 0 {
            shape[0] * shape[1]
        } else {
            convgemm::pool2d_output_shape(shape, &p_new).expect("valid").iter().product()
        };
        let (mut y_new, mut y_old) = (vec![0.0f32; len], vec![0.0f32; len]);
        let times = pool(threads).install(|| {
            let mut run_old = || {
                match (kernel, max) {
                    (0, _) => convgemm_base::global_avg_pool2d(&x, shape, &mut y_old),
                    (_, true) => convgemm_base::max_pool2d(&x, shape, &p_old, &mut y_old),
                    (_, false) => convgemm_base::avg_pool2d(&x, shape, &p_old, &mut y_old),
                }
                .expect("valid")
            };
            let mut run_new = || {
                match (kernel, max) {
                    (0, _) => convgemm::global_avg_pool2d(&x, shape, &mut y_new),
                    (_, true) => convgemm::max_pool2d(&x, shape, &p_new, &mut y_new),
                    (_, false) => convgemm::avg_pool2d(&x, shape, &p_new, &mut y_new),
                }
                .expect("valid")
            };
            interleaved_medians(&mut [&mut run_old, &mut run_new], rounds, min_sample)
        });
        let same_bits = bits(&y_new) == bits(&y_old);
        out.push(Case { name: name.to_string(), threads, old_us: times[0] * 1e6, new_us: times[1] * 1e6, same_bits });
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "quick");
    let only = args.iter().find_map(|a| a.strip_prefix("only=")).map(str::to_string);
    let (rounds, min_sample) = if quick { (5, Duration::from_millis(10)) } else { (15, Duration::from_millis(25)) };
    let threads_max = std::thread::available_parallelism().map_or(1, |n| n.get()).min(2);
    println!("path {} ({})", convgemm::Isa::detect().name(), convgemm::Isa::detect().kernel_name());
    println!();
    println!("| case | threads | old µs | new µs | new / old | bits |");
    println!("|---|---|---|---|---|---|");
    let mut all = Vec::new();
    for threads in 1..=threads_max {
        let mut cases = conv_cases(threads, rounds, min_sample, only.as_deref());
        cases.extend(gemm_cases(threads, rounds, min_sample, only.as_deref()));
        cases.extend(pool_cases(threads, rounds, min_sample, only.as_deref()));
        for c in &cases {
            let same = if c.same_bits { "same" } else { "DIFFER" };
            println!(
                "| {} | {} | {:.1} | {:.1} | {:.3} | {same} |",
                c.name,
                c.threads,
                c.old_us,
                c.new_us,
                c.new_us / c.old_us
            );
        }
        all.extend(cases);
    }
    println!();
    for threads in 1..=threads_max {
        let r: Vec<f64> = all.iter().filter(|c| c.threads == threads).map(|c| c.new_us / c.old_us).collect();
        let geo = (r.iter().map(|x| x.ln()).sum::<f64>() / r.len() as f64).exp();
        let worst = r.iter().cloned().fold(0.0, f64::max);
        println!("{threads} thread(s): geomean new/old time {geo:.3}, worst {worst:.3}, over {} cases", r.len());
    }
    let differ = all.iter().filter(|c| !c.same_bits).count();
    println!("cases whose bits differ: {differ}");
    assert_eq!(differ, 0, "old and new disagree");
}
