//! The backward-pass table: forward, backward_input and backward_weight
//! GFLOP/s per layer of the suite, timed side by side (interleaved medians)
//! in one run, on 1 thread and on all threads, with the ratios to forward
//! that issue 5 targets (≥ 70% on the 3×3 layers of VGG-16 and ResNet-50).
//!
//! ```text
//! cargo bench --bench backward                 # full table
//! cargo bench --bench backward -- quick        # fewer rounds
//! cargo bench --bench backward -- only=vgg     # layers whose name contains "vgg"
//! cargo bench --bench backward -- mem          # peak memory growth per call instead (only= picks the layers)
//! cargo bench --bench backward -- layouts      # each gradient in NCHW and channels-last, side by side
//! ```

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use convgemm::{ConvParams, Isa, Layout, conv2d, conv2d_backward_input, conv2d_backward_weight};
use support::{Layer, interleaved_medians, layers, pool, values};

/// Buffers of one layer: forward input, weight, output, and the gradients.
struct Buffers {
    x: Vec<f32>,
    w: Vec<f32>,
    y: Vec<f32>,
    dy: Vec<f32>,
    dx: Vec<f32>,
    dw: Vec<f32>,
}

impl Buffers {
    fn new(l: &Layer) -> Self {
        let (x_len, w_len) = (l.input_shape().iter().product(), l.weight_shape().iter().product());
        let y_len = l.output_shape().iter().product();
        Buffers {
            x: values(x_len, 1),
            w: values(w_len, 2),
            y: vec![0.0; y_len],
            dy: values(y_len, 3),
            dx: vec![0.0; x_len],
            dw: vec![0.0; w_len],
        }
    }
}

fn forward(l: &Layer, x: &[f32], w: &[f32], y: &mut [f32]) {
    conv2d(x, l.input_shape(), w, l.weight_shape(), None, &l.params(), y).expect("valid");
}

fn backward_input(l: &Layer, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    backward_input_in(Layout::Nchw, l, dy, w, dx)
}

fn backward_weight(l: &Layer, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    backward_weight_in(Layout::Nchw, l, x, dy, dw)
}

/// The layer's parameters with activations in `layout`.
fn params_in(layout: Layout, l: &Layer) -> ConvParams {
    ConvParams { layout, ..l.params() }
}

fn backward_input_in(layout: Layout, l: &Layer, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    let p = params_in(layout, l);
    conv2d_backward_input(dy, l.output_shape(), w, l.weight_shape(), &p, dx, l.input_shape()).expect("valid");
}

fn backward_weight_in(layout: Layout, l: &Layer, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    let p = params_in(layout, l);
    conv2d_backward_weight(x, l.input_shape(), dy, l.output_shape(), &p, dw, l.weight_shape()).expect("valid");
}

/// Milliseconds of backward_input and backward_weight in NCHW and in
/// channels-last on `threads` threads, interleaved: `[input NCHW, input
/// NHWC, weight NCHW, weight NHWC]`. (The values are random either way, so
/// the same buffers serve both layouts.)
fn bench_layouts(l: &Layer, threads: usize, rounds: usize, min_sample: Duration) -> [f64; 4] {
    let Buffers { x, w, dy, mut dx, mut dw, .. } = Buffers::new(l);
    let mut dx2 = dx.clone();
    let mut dw2 = dw.clone();
    pool(threads).install(|| {
        let mut a = || backward_input_in(Layout::Nchw, l, &dy, &w, &mut dx);
        let mut b = || backward_input_in(Layout::Nhwc, l, &dy, &w, &mut dx2);
        let mut c = || backward_weight_in(Layout::Nchw, l, &x, &dy, &mut dw);
        let mut d = || backward_weight_in(Layout::Nhwc, l, &x, &dy, &mut dw2);
        let t = interleaved_medians(&mut [&mut a, &mut b, &mut c, &mut d], rounds, min_sample);
        [0, 1, 2, 3].map(|k| t[k] * 1e3)
    })
}

/// The `layouts` table: per layer and thread count, each gradient's time in
/// both layouts and the channels-last / NCHW ratio.
fn layouts(selected: &[Layer], thread_counts: &[usize], rounds: usize, min_sample: Duration) {
    println!(
        "| layer | threads | input NCHW ms | input NHWC ms | NHWC / NCHW | weight NCHW ms | weight NHWC ms | NHWC / NCHW |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut ratios = [Vec::new(), Vec::new()];
    for l in selected {
        for &threads in thread_counts {
            let [a, b, c, d] = bench_layouts(l, threads, rounds, min_sample);
            println!("| {} | {threads} | {a:.3} | {b:.3} | {:.2} | {c:.3} | {d:.3} | {:.2} |", l.name, b / a, d / c);
            ratios[0].push(b / a);
            ratios[1].push(d / c);
        }
    }
    let geomean = |v: &[f64]| (v.iter().map(|r| r.ln()).sum::<f64>() / v.len().max(1) as f64).exp();
    println!(
        "
Geomean NHWC / NCHW time: input {:.2}, weight {:.2}.",
        geomean(&ratios[0]),
        geomean(&ratios[1])
    );
}

/// GFLOP/s of forward, backward_input, backward_weight on `threads` threads.
fn bench_layer(l: &Layer, threads: usize, rounds: usize, min_sample: Duration) -> [f64; 3] {
    let Buffers { x, w, mut y, dy, mut dx, mut dw } = Buffers::new(l);
    pool(threads).install(|| {
        let mut f = || forward(l, &x, &w, &mut y);
        let mut i = || backward_input(l, &dy, &w, &mut dx);
        let mut g = || backward_weight(l, &x, &dy, &mut dw);
        let t = interleaved_medians(&mut [&mut f, &mut i, &mut g], rounds, min_sample);
        [0, 1, 2].map(|k| l.flops() / t[k] / 1e9)
    })
}

/// The layers issue 5's target covers: the 3×3 layers of VGG-16 and ResNet-50.
fn targeted(l: &Layer) -> bool {
    (l.name.starts_with("vgg16") || l.name.starts_with("resnet50")) && l.kh == 3 && l.kw == 3
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let only = args.iter().find_map(|a| a.strip_prefix("only=")).map(str::to_string);
    let selected: Vec<Layer> =
        layers().into_iter().filter(|l| only.as_ref().is_none_or(|o| l.name.contains(o.as_str()))).collect();
    if args.iter().any(|a| a == "mem") {
        return memory(&selected);
    }
    let quick = args.iter().any(|a| a == "quick");
    let (rounds, min_sample) = if quick { (3, Duration::from_millis(5)) } else { (9, Duration::from_millis(25)) };
    let all = std::thread::available_parallelism().map_or(1, |n| n.get());
    let thread_counts = if all > 1 { vec![1, all] } else { vec![1] };
    println!("# conv2d backward, path {} ({})\n", Isa::detect().name(), Isa::detect().kernel_name());
    if args.iter().any(|a| a == "layouts") {
        return layouts(&selected, &thread_counts, rounds, min_sample);
    }
    println!(
        "| layer | threads | forward GFLOP/s | backward_input GFLOP/s | backward_weight GFLOP/s | input / forward | weight / forward |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut misses = Vec::new();
    for l in &selected {
        for &threads in &thread_counts {
            let [f, i, w] = bench_layer(l, threads, rounds, min_sample);
            let mark = if targeted(l) { " *" } else { "" };
            println!(
                "| {}{mark} | {threads} | {f:.1} | {i:.1} | {w:.1} | {:.0}% | {:.0}% |",
                l.name,
                100.0 * i / f,
                100.0 * w / f
            );
            if targeted(l) && (i < 0.7 * f || w < 0.7 * f) {
                misses.push(format!("{} ({threads} threads)", l.name));
            }
        }
    }
    println!("\n`*`: a layer of the target (backward_input and backward_weight each ≥ 70% of forward).");
    if !selected.iter().any(targeted) {
        println!("No targeted layer in this selection.");
    } else if misses.is_empty() {
        println!("Every targeted layer measured meets it.");
    } else {
        println!("Below the target: {}.", misses.join(", "));
    }
}

/// Peak resident memory growth during one call of each kind, per layer: all
/// tensors are allocated, and every call has run once (so the per-thread
/// packing buffers exist), before the measurement; the growth is what the
/// call itself allocates (packed weights, column blocks).
fn memory(selected: &[Layer]) {
    println!("| layer | forward MiB | backward_input MiB | backward_weight MiB |");
    println!("|---|---|---|---|");
    for l in selected {
        let Buffers { x, w, mut y, dy, mut dx, mut dw } = Buffers::new(l);
        forward(l, &x, &w, &mut y);
        backward_input(l, &dy, &w, &mut dx);
        backward_weight(l, &x, &dy, &mut dw);
        let mib = [
            peak_growth_mib(&mut || forward(l, &x, &w, &mut y)),
            peak_growth_mib(&mut || backward_input(l, &dy, &w, &mut dx)),
            peak_growth_mib(&mut || backward_weight(l, &x, &dy, &mut dw)),
        ];
        println!("| {} | {:.1} | {:.1} | {:.1} |", l.name, mib[0], mib[1], mib[2]);
    }
}

/// How much the peak RSS grew during `f`, in MiB.
fn peak_growth_mib(f: &mut dyn FnMut()) -> f64 {
    // Writing 5 to clear_refs resets the peak (VmHWM) to the current RSS.
    std::fs::write("/proc/self/clear_refs", "5").expect("clear_refs");
    let before = status_kib("VmRSS");
    f();
    (status_kib("VmHWM") - before) as f64 / 1024.0
}

fn status_kib(key: &str) -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.trim_start_matches(':').trim().strip_suffix("kB")))
        .and_then(|v| v.trim().parse().ok())
        .expect("status field")
}
