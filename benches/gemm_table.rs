//! The GEMM table of BENCHMARKS.md: our sgemm next to matrixmultiply and the
//! `gemm` crate, timed side by side (interleaved medians) in one run, on
//! square sizes and the conv-shaped GEMMs of the layer suite, 1 and 2
//! threads, with the machine's FMA peak measured in the same run.
//!
//! `cargo bench --bench gemm_table` (add `-- quick` for fewer rounds,
//! `-- only=<substring>` to filter rows by name).

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use convgemm::Isa;
use support::{interleaved_medians, layers, pool, threads_and_peaks, values};

struct Shape {
    name: String,
    m: usize,
    k: usize,
    n: usize,
}

fn shapes() -> Vec<Shape> {
    let mut out: Vec<Shape> =
        [64, 128, 256, 512, 1024, 2048].iter().map(|&s| Shape { name: format!("{s}³"), m: s, k: s, n: s }).collect();
    for layer in layers() {
        let (m, k, n) = layer.gemm_shape();
        if layer.n > 1 || out.iter().any(|s| (s.m, s.k, s.n) == (m, k, n)) {
            continue; // batch 8 repeats the batch-1 GEMM; skip duplicates
        }
        out.push(Shape { name: layer.name.clone(), m, k, n });
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "quick");
    let only = args.iter().find_map(|a| a.strip_prefix("only=")).map(str::to_string);
    let (rounds, min_sample) = if quick { (5, Duration::from_millis(10)) } else { (11, Duration::from_millis(30)) };
    let (threads_max, peaks) = threads_and_peaks();
    println!("# sgemm, path {} ({})", Isa::detect().name(), Isa::detect().kernel_name());
    for (t, p) in peaks.iter().enumerate() {
        println!("FMA peak, {} thread(s): {p:.1} GFLOP/s", t + 1);
    }
    println!();
    println!("| shape | M | K | N | threads | ours GFLOP/s | % peak | matrixmultiply | gemm | ours / best peer |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut ratios = vec![Vec::new(); threads_max];
    for shape in shapes() {
        if only.as_ref().is_some_and(|o| !shape.name.contains(o.as_str())) {
            continue;
        }
        let (m, k, n) = (shape.m, shape.k, shape.n);
        let a = values(m * k, 1);
        let b = values(k * n, 2);
        let mut c = vec![0.0f32; m * n];
        let flops = 2.0 * (m * k * n) as f64;
        for threads in 1..=threads_max {
            let rayon_pool = pool(threads);
            // An address, not a pointer, so the closures can cross into the pool.
            let c_addr = c.as_mut_ptr() as usize;
            let mut ours = || {
                let c_ptr = c_addr as *mut f32;
                // SAFETY: row-major m×k, k×n, m×n buffers of exactly those sizes.
                unsafe {
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
                        c_ptr,
                        n as isize,
                        1,
                    )
                }
            };
            let mut mm = || {
                let c_ptr = c_addr as *mut f32;
                // SAFETY: as above.
                unsafe {
                    matrixmultiply::sgemm(
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
                        c_ptr,
                        n as isize,
                        1,
                    )
                }
            };
            let par = if threads == 1 { gemm::Parallelism::None } else { gemm::Parallelism::Rayon(threads) };
            let mut gemm_crate = || {
                let c_ptr = c_addr as *mut f32;
                // SAFETY: as above; gemm's dst = alpha·dst + beta·lhs·rhs, dst not read.
                unsafe {
                    gemm::gemm(
                        m,
                        n,
                        k,
                        c_ptr,
                        1,
                        n as isize,
                        false,
                        a.as_ptr(),
                        1,
                        k as isize,
                        b.as_ptr(),
                        1,
                        n as isize,
                        0.0f32,
                        1.0f32,
                        false,
                        false,
                        false,
                        par,
                    )
                }
            };
            // Everything runs on a thread of the pool, so `sgemm` sees `threads`
            // threads and no call pays a hand-off into the pool.
            // matrixmultiply is built without its own threading feature: 1 thread only.
            let times = rayon_pool.install(|| {
                if threads == 1 {
                    interleaved_medians(&mut [&mut ours, &mut mm, &mut gemm_crate], rounds, min_sample)
                } else {
                    let t = interleaved_medians(&mut [&mut ours, &mut gemm_crate], rounds, min_sample);
                    vec![t[0], f64::NAN, t[1]]
                }
            });
            let g: Vec<f64> = times.iter().map(|t| flops / t / 1e9).collect();
            let best_peer = g[1].max(g[2]);
            let best_peer = if best_peer.is_nan() { g[2] } else { best_peer };
            let ratio = g[0] / best_peer;
            ratios[threads - 1].push(ratio);
            let fmt = |x: f64| if x.is_nan() { "—".to_string() } else { format!("{x:.1}") };
            println!(
                "| {} | {m} | {k} | {n} | {threads} | {:.1} | {:.0}% | {} | {} | {:.2}× |",
                shape.name,
                g[0],
                100.0 * g[0] / peaks[threads - 1],
                fmt(g[1]),
                fmt(g[2]),
                ratio
            );
        }
    }
    for (t, r) in ratios.iter().enumerate() {
        if !r.is_empty() {
            let geo = (r.iter().map(|x| x.ln()).sum::<f64>() / r.len() as f64).exp();
            let min = r.iter().copied().fold(f64::INFINITY, f64::min);
            println!("\n{} thread(s): geometric mean ours / best peer {geo:.2}×, lowest {min:.2}×", t + 1);
        }
    }
}
