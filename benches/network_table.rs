//! The network table of BENCHMARKS.md (issue 17): every conv layer of the 12
//! CNNs of `benches/networks.json` (a copy of `shared/networks.json`) through
//! `Conv2dPlan::run`, 1 and 2 threads, and per network the conv time
//! `Σ count × median` next to ONNX Runtime's from the same sitting.
//!
//! ```text
//! .venv-peers/bin/python ../shared/peers/ort_conv.py --layers benches/networks.json --threads 1 --json /tmp/ort_net1.json
//! .venv-peers/bin/python ../shared/peers/ort_conv.py --layers benches/networks.json --threads 2 --json /tmp/ort_net2.json
//! cargo bench --bench network_table -- ort1=/tmp/ort_net1.json ort2=/tmp/ort_net2.json
//! cargo bench --bench network_table -- quick layers     # fewer rounds; also every layer's row
//! cargo bench --bench network_table -- quick layers depthwise only=mobilenet_v2,efficientnet
//! ```
//!
//! `depthwise` keeps the depthwise layers only, `only=A,B` the layers whose
//! name contains one of `A`, `B`; the network rows then sum those layers.
//! `relaxed` runs every plan under `Precision::Relaxed` (Winograd where
//! `Auto` takes it).

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use convgemm::{Conv2dPlan, ConvOptions, Isa, Precision};
use support::{
    Layer, geomean, interleaved_medians, network_layers, networks_of, only_arg, ort_args, pool, print_cross_core,
    rounds_arg, threads_and_peaks, values,
};

/// The plan's median seconds per run of `l` on `threads` threads.
fn time_layer(l: &Layer, options: &ConvOptions, threads: usize, rounds: usize, min_sample: Duration) -> f64 {
    let x = values(l.input_shape().iter().product(), 1);
    let w = values(l.weight_shape().iter().product(), 2);
    let b = values(l.c_out, 3);
    let mut y = vec![0.0f32; l.output_shape().iter().product()];
    let plan = Conv2dPlan::new(&w, l.weight_shape(), Some(&b), &l.params(), options).expect("valid");
    pool(threads).install(|| {
        let mut run = || plan.run(&x, l.input_shape(), &mut y).expect("valid");
        interleaved_medians(&mut [&mut run], rounds, min_sample)[0]
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let every_layer = args.iter().any(|a| a == "layers");
    let ort = ort_args(&args);
    let (rounds, min_sample) = rounds_arg(&args);
    let (threads_max, peaks) = threads_and_peaks();
    // `relaxed`: Precision::Relaxed (Winograd where Auto takes it).
    let precision = if args.iter().any(|a| a == "relaxed") { Precision::Relaxed } else { Precision::Exact };
    let options = ConvOptions { precision, ..ConvOptions::default() };
    let isa = Isa::detect();
    println!("# conv2d on the networks, path {} ({}), {precision:?}", isa.name(), isa.kernel_name());
    for (t, p) in peaks.iter().enumerate() {
        println!("FMA peak, {} thread(s): {p:.1} GFLOP/s", t + 1);
    }
    let only = only_arg(&args);
    let depthwise_only = args.iter().any(|a| a == "depthwise");
    let layers: Vec<Layer> = network_layers()
        .into_iter()
        .filter(|l| only.is_empty() || only.iter().any(|o| l.name.contains(o.as_str())))
        .filter(|l| !depthwise_only || (l.groups == l.c_in && l.groups > 1))
        .collect();
    // Per thread count: every layer's median seconds, ours and ORT's.
    let mut ours = vec![Vec::new(); threads_max];
    for (t, times) in ours.iter_mut().enumerate() {
        if t > 0 {
            print_cross_core("before the 2-thread runs");
        }
        for l in &layers {
            times.push(time_layer(l, &options, t + 1, rounds, min_sample));
        }
        if t > 0 {
            print_cross_core("after them");
        }
    }
    let nets = networks_of(&layers);
    println!();
    println!(
        "| network | threads | layers | GFLOP | ours ms | GFLOP/s | % peak | ORT ms | ours / ORT | worst layers (ours / ORT) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for t in 0..threads_max {
        let mut ratios = Vec::new();
        for net in &nets {
            let idx: Vec<usize> = (0..layers.len()).filter(|&i| layers[i].net.as_ref() == Some(net)).collect();
            let count = |i: usize| layers[i].count as f64;
            let flops: f64 = idx.iter().map(|&i| count(i) * layers[i].flops()).sum();
            let ours_s: f64 = idx.iter().map(|&i| count(i) * ours[t][i]).sum();
            let gflops = flops / ours_s / 1e9;
            let (ort_ms, ratio, worst) = match &ort[t] {
                Some(o) if idx.iter().all(|&i| o.contains_key(&layers[i].name)) => {
                    let ort_s: f64 = idx.iter().map(|&i| count(i) * o[&layers[i].name] / 1e3).sum();
                    // Speed ratio: ORT time over ours (above 1: we are faster).
                    let mut per: Vec<(f64, &str)> =
                        idx.iter().map(|&i| (o[&layers[i].name] / 1e3 / ours[t][i], layers[i].name.as_str())).collect();
                    per.sort_by(|a, b| a.0.total_cmp(&b.0));
                    let worst: Vec<String> = per.iter().take(3).map(|(r, n)| format!("{n} {r:.2}×")).collect();
                    ratios.push(ort_s / ours_s);
                    (format!("{:.2}", ort_s * 1e3), format!("{:.2}×", ort_s / ours_s), worst.join(", "))
                }
                _ => ("—".to_string(), "—".to_string(), "—".to_string()),
            };
            println!(
                "| {net} | {} | {} | {:.2} | {:.2} | {gflops:.1} | {:.0}% | {ort_ms} | {ratio} | {worst} |",
                t + 1,
                idx.len(),
                flops / 1e9,
                ours_s * 1e3,
                100.0 * gflops / peaks[t]
            );
        }
        if !ratios.is_empty() {
            println!("| geomean | {} | | | | | | | {:.2}× | |", t + 1, geomean(&ratios));
        }
    }
    if every_layer {
        println!();
        println!("| layer | network | count | threads | ours µs | GFLOP/s | ORT µs | ours / ORT |");
        println!("|---|---|---|---|---|---|---|---|");
        for t in 0..threads_max {
            for (i, l) in layers.iter().enumerate() {
                let ort_us = ort[t].as_ref().and_then(|o| o.get(&l.name)).map(|ms| ms * 1e3);
                println!(
                    "| {} | {} | {} | {} | {:.1} | {:.1} | {} | {} |",
                    l.name,
                    l.net.as_deref().unwrap_or("—"),
                    l.count,
                    t + 1,
                    ours[t][i] * 1e6,
                    l.flops() / ours[t][i] / 1e9,
                    ort_us.map_or("—".to_string(), |u| format!("{u:.1}")),
                    ort_us.map_or("—".to_string(), |u| format!("{:.2}×", u / 1e6 / ours[t][i])),
                );
            }
        }
    }
}
