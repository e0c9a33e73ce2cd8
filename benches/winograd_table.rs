//! Winograd (`Precision::Relaxed`) against the exact path and ONNX Runtime
//! on `benches/winograd_layers.json`: the 3×3 stride-1 layers with at least
//! 16 channels per group in and out of `benches/layers.json` and
//! `benches/networks.json`, one per distinct shape (issue 21), at 1 and 2
//! threads, and optionally each tile size F(2×2), F(4×4), F(6×6) side by side.
//!
//! ```text
//! .venv-peers/bin/python ../shared/peers/ort_conv.py --layers benches/winograd_layers.json --threads 1 --json /tmp/ort_w1.json
//! .venv-peers/bin/python ../shared/peers/ort_conv.py --layers benches/winograd_layers.json --threads 2 --json /tmp/ort_w2.json
//! cargo bench --bench winograd_table -- ort1=/tmp/ort_w1.json ort2=/tmp/ort_w2.json
//! cargo bench --bench winograd_table -- quick tiles only=res3,vgg19
//! ```
//!
//! The suite file is derived, not written by hand: the layers of the two
//! suites with `kh = kw = 3`, both strides and dilations 1, and
//! `c_in / groups ≥ 16` and `c_out / groups ≥ 16`, keeping the first layer
//! of each shape (batch, channels, plane, groups, padding). It is checked
//! in because `ort_conv.py` times a file.
//!
//! `tiles` adds a column per tile size (the forced size through
//! `testing::WinogradTiles`); `only=A,B` keeps the layers whose name
//! contains `A` or `B`; `layers=FILE` times the layers of another file in
//! the suite's format instead.

#[path = "support/mod.rs"]
mod support;

use convgemm::testing::WinogradTiles;
use convgemm::{Conv2dPlan, ConvOptions, Isa, Precision};
use support::{
    Layer, geomean, interleaved_medians, layers_in, only_arg, ort_args, pool, print_cross_core, rounds_arg,
    threads_and_peaks, values,
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let tiles = args.iter().any(|a| a == "tiles");
    let only = only_arg(&args);
    // `layers=FILE`: another suite in the same format (probing shapes the
    // checked-in suite lacks); the default is the derived suite.
    let file = args
        .iter()
        .find_map(|a| a.strip_prefix("layers="))
        .map(|path| std::fs::read_to_string(path).unwrap_or_else(|e| panic!("layers={path}: {e}")));
    let suite: Vec<Layer> = layers_in(file.as_deref().unwrap_or(include_str!("winograd_layers.json")))
        .into_iter()
        .filter(|l| only.is_empty() || only.iter().any(|o| l.name.contains(o.as_str())))
        .collect();
    let ort = ort_args(&args);
    let (rounds, min_sample) = rounds_arg(&args);
    let (threads_max, peaks) = threads_and_peaks();
    let isa = Isa::detect();
    println!("# Winograd (Precision::Relaxed) vs exact vs ORT, path {} ({})", isa.name(), isa.kernel_name());
    let exact = ConvOptions::default();
    let relaxed = ConvOptions { precision: Precision::Relaxed, ..ConvOptions::default() };
    for threads in 1..=threads_max {
        let peak = peaks[threads - 1];
        println!("\n## {threads} thread(s), FMA peak {peak:.1} GFLOP/s (GFLOP/s below count the direct sum's FLOPs)\n");
        if threads > 1 {
            print_cross_core("before the 2-thread runs");
            println!();
        }
        print!("| layer | MFLOP | exact ms | relaxed ms | kernel | relaxed/exact |");
        if tiles {
            print!(" F2 ms | F4 ms | F6 ms |");
        }
        let ort_t = ort.get(threads - 1).and_then(Option::as_ref);
        if ort_t.is_some() {
            print!(" ORT ms | relaxed vs ORT | exact vs ORT |");
        }
        println!(" relaxed GFLOP/s | % peak |");
        let columns = 8 + if tiles { 3 } else { 0 } + if ort_t.is_some() { 3 } else { 0 };
        println!("{}|", "|---".repeat(columns));
        let mut ratios_ort = Vec::new();
        let mut ratios_exact = Vec::new();
        for l in &suite {
            let x = values(l.input_shape().iter().product(), 1);
            let w = values(l.weight_shape().iter().product(), 2);
            let b = values(l.c_out, 3);
            let mut y = vec![0.0f32; l.output_shape().iter().product()];
            let plans: Vec<Conv2dPlan> = [&exact, &relaxed]
                .iter()
                .map(|o| Conv2dPlan::new(&w, l.weight_shape(), Some(&b), &l.params(), o).expect("valid"))
                .collect();
            let kernel = plans[1].kernel_name(l.input_shape()).expect("valid");
            let forced: Vec<WinogradTiles> = if tiles {
                [2, 4, 6]
                    .iter()
                    .filter_map(|&m| WinogradTiles::new(m, isa, &w, l.weight_shape(), Some(&b), &l.params()))
                    .collect()
            } else {
                Vec::new()
            };
            let medians = pool(threads).install(|| {
                let mut y2 = y.clone();
                let mut runs: Vec<Box<dyn FnMut()>> = Vec::new();
                for p in &plans {
                    let (x, y) = (&x, &mut y as *mut Vec<f32>);
                    // SAFETY: the closures run one at a time (interleaved_medians calls them in turn).
                    runs.push(Box::new(move || p.run(x, l.input_shape(), unsafe { &mut *y }).expect("valid")));
                }
                for f in &forced {
                    let (x, y) = (&x, &mut y2 as *mut Vec<f32>);
                    // SAFETY: as above.
                    runs.push(Box::new(move || f.run(x, l.input_shape(), threads, unsafe { &mut *y }).expect("valid")));
                }
                let mut refs: Vec<&mut dyn FnMut()> = runs.iter_mut().map(|f| &mut **f as &mut dyn FnMut()).collect();
                interleaved_medians(&mut refs, rounds, min_sample)
            });
            let (t_exact, t_relaxed) = (medians[0], medians[1]);
            ratios_exact.push(t_exact / t_relaxed);
            print!(
                "| {} | {:.0} | {:.3} | {:.3} | {kernel} | {:.2}× |",
                l.name,
                l.flops() / 1e6,
                t_exact * 1e3,
                t_relaxed * 1e3,
                t_exact / t_relaxed
            );
            for t in &medians[2..] {
                print!(" {:.3} |", t * 1e3);
            }
            if let Some(o) = ort_t {
                match o.get(&l.name) {
                    Some(&ms) => {
                        ratios_ort.push(ms / (t_relaxed * 1e3));
                        print!(" {ms:.3} | {:.2}× | {:.2}× |", ms / (t_relaxed * 1e3), ms / (t_exact * 1e3));
                    }
                    None => print!(" – | – | – |"),
                }
            }
            let gflops = l.flops() / t_relaxed / 1e9;
            println!(" {gflops:.1} | {:.0} % |", 100.0 * gflops / peak);
        }
        if threads > 1 {
            println!();
            print_cross_core("after them");
        }
        println!("\ngeomean relaxed/exact: {:.2}×", geomean(&ratios_exact));
        if !ratios_ort.is_empty() {
            let min = ratios_ort.iter().copied().fold(f64::INFINITY, f64::min);
            println!(
                "geomean relaxed vs ORT: {:.2}× (lowest {min:.2}×, {} layers)",
                geomean(&ratios_ort),
                ratios_ort.len()
            );
        }
    }
}
