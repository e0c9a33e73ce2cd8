//! Channels-last next to NCHW (issue 18): every layer of a suite through
//! `Conv2dPlan::run` in both layouts, timed interleaved in one run (medians),
//! 1 and 2 threads, with ONNX Runtime's NCHW times from the same sitting.
//!
//! ```text
//! .venv-peers/bin/python ../shared/peers/ort_conv.py --layers benches/layers.json --threads 1 --json /tmp/ort1.json
//! .venv-peers/bin/python ../shared/peers/ort_conv.py --layers benches/layers.json --threads 2 --json /tmp/ort2.json
//! cargo bench --bench layout_table -- ort1=/tmp/ort1.json ort2=/tmp/ort2.json
//! cargo bench --bench layout_table -- networks ort1=.. ort2=..   # the network suite, per network
//! cargo bench --bench layout_table -- quick only=mobilenet      # fewer rounds, some layers
//! cargo bench --bench layout_table -- winograd relaxed ort1=/tmp/ort_w1.json ort2=/tmp/ort_w2.json
//! ```
//!
//! `relaxed` times both layouts under `Precision::Relaxed` (Winograd where
//! `Auto` takes it); `winograd` runs `benches/winograd_layers.json`;
//! `line_offset=K` starts the input and output `K` floats past a 64-byte
//! line (0: on one) instead of where the allocator put them:
//!
//! ```text
//! cargo bench --bench layout_table -- networks quick only=mobilenet_v2 line_offset=0
//! cargo bench --bench layout_table -- networks quick only=mobilenet_v2 line_offset=4
//! ```
//!
//! Prints, per layer, NCHW and NHWC µs, NHWC / NCHW (above 1: NHWC slower)
//! and ORT / NHWC (above 1: NHWC faster than ORT), then the geomeans and
//! (with `networks`) each network's conv time `Σ count × median`.

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use convgemm::{Conv2dPlan, ConvOptions, ConvParams, Isa, Layout, Precision};
use support::{
    Layer, geomean, interleaved_medians, layers, layers_in, network_layers, networks_of, only_arg, ort_args, pool,
    print_cross_core, rounds_arg, threads_and_peaks, values,
};

/// `len` floats of `buf`, starting `offset` floats past a 64-byte line
/// (`buf` holds `len + 32`), or at its start without an offset.
fn placed(buf: &mut [f32], len: usize, offset: Option<usize>) -> &mut [f32] {
    let start = offset.map_or(0, |k| buf.as_ptr().align_offset(64) + k % 16);
    &mut buf[start..start + len]
}

/// Median seconds per run of `l` in NCHW and in NHWC, interleaved; the
/// buffers placed `line_offset` floats past a 64-byte line where given.
fn time_layouts(
    l: &Layer,
    precision: Precision,
    (threads, rounds, min_sample): (usize, usize, Duration),
    line_offset: Option<usize>,
) -> [f64; 2] {
    let x_len = l.input_shape().iter().product();
    let mut x_buf = values(x_len + 32, 1);
    let x = placed(&mut x_buf, x_len, line_offset);
    let w = values(l.weight_shape().iter().product(), 2);
    let b = values(l.c_out, 3);
    let options = ConvOptions { precision, ..ConvOptions::default() };
    let plan = |layout| {
        let params = ConvParams { layout, ..l.params() };
        Conv2dPlan::new(&w, l.weight_shape(), Some(&b), &params, &options).expect("valid")
    };
    let (nchw, nhwc) = (plan(Layout::Nchw), plan(Layout::Nhwc));
    // The same values in either order: the speed does not depend on them.
    let y_len = l.output_shape().iter().product();
    let (mut y1_buf, mut y2_buf) = (vec![0.0f32; y_len + 32], vec![0.0f32; y_len + 32]);
    let (y1, y2) = (placed(&mut y1_buf, y_len, line_offset), placed(&mut y2_buf, y_len, line_offset));
    pool(threads).install(|| {
        let mut a = || nchw.run(x, l.input_shape(), y1).expect("valid");
        let mut b = || nhwc.run(x, l.input_shape(), y2).expect("valid");
        let m = interleaved_medians(&mut [&mut a, &mut b], rounds, min_sample);
        [m[0], m[1]]
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let networks = args.iter().any(|a| a == "networks");
    let ort = ort_args(&args);
    let (rounds, min_sample) = rounds_arg(&args);
    let (threads_max, peaks) = threads_and_peaks();
    let isa = Isa::detect();
    let precision = if args.iter().any(|a| a == "relaxed") { Precision::Relaxed } else { Precision::Exact };
    let line_offset =
        args.iter().find_map(|a| a.strip_prefix("line_offset=")).map(|k| k.parse().expect("line_offset=K"));
    println!("# conv2d NCHW vs NHWC, path {} ({}), {precision:?}", isa.name(), isa.kernel_name());
    if let Some(k) = line_offset {
        println!("buffers {k} floats past a 64-byte line");
    }
    for (t, p) in peaks.iter().enumerate() {
        println!("FMA peak, {} thread(s): {p:.1} GFLOP/s", t + 1);
    }
    let only = only_arg(&args);
    let suite = if networks {
        network_layers()
    } else if args.iter().any(|a| a == "winograd") {
        layers_in(include_str!("winograd_layers.json"))
    } else {
        layers()
    };
    let layers: Vec<Layer> =
        suite.into_iter().filter(|l| only.is_empty() || only.iter().any(|o| l.name.contains(o.as_str()))).collect();
    // [thread][layer] = [nchw, nhwc] seconds.
    let times: Vec<Vec<[f64; 2]>> = (1..=threads_max)
        .map(|t| {
            if t > 1 {
                print_cross_core("before the 2-thread runs");
            }
            let per_layer =
                layers.iter().map(|l| time_layouts(l, precision, (t, rounds, min_sample), line_offset)).collect();
            if t > 1 {
                print_cross_core("after them");
            }
            per_layer
        })
        .collect();
    println!();
    println!(
        "| layer | threads | NCHW µs | NHWC µs | NHWC GFLOP/s | % peak | NHWC / NCHW time | ORT µs | ORT / NHWC |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (t, per_layer) in times.iter().enumerate() {
        let (mut slowdowns, mut speedups) = (Vec::new(), Vec::new());
        for (l, &[nchw, nhwc]) in layers.iter().zip(per_layer) {
            let gflops = l.flops() / nhwc / 1e9;
            let ort_us = ort[t].as_ref().and_then(|o| o.get(&l.name)).map(|ms| ms * 1e3);
            slowdowns.push(nhwc / nchw);
            if let Some(u) = ort_us {
                speedups.push(u / 1e6 / nhwc);
            }
            println!(
                "| {} | {} | {:.1} | {:.1} | {gflops:.1} | {:.0}% | {:.2} | {} | {} |",
                l.name,
                t + 1,
                nchw * 1e6,
                nhwc * 1e6,
                100.0 * gflops / peaks[t],
                nhwc / nchw,
                ort_us.map_or("—".to_string(), |u| format!("{u:.1}")),
                ort_us.map_or("—".to_string(), |u| format!("{:.2}×", u / 1e6 / nhwc)),
            );
        }
        let lo = speedups.iter().copied().fold(f64::INFINITY, f64::min);
        let worst = slowdowns.iter().copied().fold(0.0, f64::max);
        println!(
            "| geomean | {} | | | | | {:.2} (worst {worst:.2}) | | {} |",
            t + 1,
            geomean(&slowdowns),
            if speedups.is_empty() {
                "—".to_string()
            } else {
                format!("{:.2}× (lowest {lo:.2}×)", geomean(&speedups))
            }
        );
    }
    if networks {
        let nets = networks_of(&layers);
        println!();
        println!("| network | threads | NCHW ms | NHWC ms | NHWC / NCHW | ORT ms | ORT / NHWC |");
        println!("|---|---|---|---|---|---|---|");
        for (t, per_layer) in times.iter().enumerate() {
            for net in &nets {
                let idx: Vec<usize> = (0..layers.len()).filter(|&i| layers[i].net.as_ref() == Some(net)).collect();
                let total = |f: &dyn Fn(usize) -> f64| idx.iter().map(|&i| layers[i].count as f64 * f(i)).sum::<f64>();
                let (nchw, nhwc) = (total(&|i| per_layer[i][0]), total(&|i| per_layer[i][1]));
                let ort_s = ort[t]
                    .as_ref()
                    .filter(|o| idx.iter().all(|&i| o.contains_key(&layers[i].name)))
                    .map(|o| total(&|i| o[&layers[i].name] / 1e3));
                println!(
                    "| {net} | {} | {:.2} | {:.2} | {:.2} | {} | {} |",
                    t + 1,
                    nchw * 1e3,
                    nhwc * 1e3,
                    nhwc / nchw,
                    ort_s.map_or("—".to_string(), |s| format!("{:.2}", s * 1e3)),
                    ort_s.map_or("—".to_string(), |s| format!("{:.2}×", s / nhwc)),
                );
            }
        }
    }
}
