//! The convolution table of BENCHMARKS.md: every layer of the suite, ours
//! next to the peers a Rust user has, timed side by side (interleaved
//! medians) in one run, 1 and 2 threads, as GFLOP/s and % of the FMA peak
//! measured in the same run. Writes `conv_chart.png` (and the `.svg` it is
//! drawn from) into the current directory, the crate root under `cargo bench`.
//!
//! ```text
//! cargo bench --bench conv_table                    # full table
//! cargo bench --bench conv_table -- quick           # fewer rounds
//! cargo bench --bench conv_table -- only=vgg        # layers whose name contains "vgg"
//! cargo bench --bench conv_table -- ort1=ort1.json ort2=ort2.json   # add ONNX Runtime columns
//! cargo bench --bench conv_table -- mem             # peak memory of vgg16_conv1_2 instead
//! ```
//! The ONNX Runtime JSON files come from `benches/peers/ort_conv.py --json`,
//! run in the same sitting.

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use candle_core::{Device, Tensor};
use convgemm::{Conv2dPlan, ConvOptions, Isa, conv2d, im2col, im2col_len};
use support::{Layer, interleaved_medians, layers, pool, print_cross_core, read_ort, threads_and_peaks, values};

/// The explicit im2col + GEMM that a user of a GEMM crate writes: im2col the
/// whole batch into a reused buffer, one GEMM per (image, group), then bias.
fn im2col_then<F: FnMut(usize, usize, usize, *const f32, *const f32, *mut f32)>(
    l: &Layer,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    cols: &mut [f32],
    y: &mut [f32],
    mut gemm_rowmajor: F,
) {
    im2col(x, l.input_shape(), [l.kh, l.kw], &l.params(), cols).expect("valid layer");
    let (m, k, n) = l.gemm_shape();
    for image in 0..l.n {
        for g in 0..l.groups {
            let job = image * l.groups + g;
            let c = y[job * m * n..].as_mut_ptr();
            gemm_rowmajor(m, k, n, w[g * m * k..].as_ptr(), cols[job * k * n..].as_ptr(), c);
            for (o, row) in y[job * m * n..][..m * n].chunks_exact_mut(n).enumerate() {
                let bias = b[g * m + o];
                row.iter_mut().for_each(|v| *v += bias);
            }
        }
    }
}

struct Row {
    name: String,
    threads: usize,
    gflops: Vec<f64>,
}

const NAMES: [&str; 5] = ["ours (plan)", "ours (conv2d)", "im2col+matrixmultiply", "im2col+gemm", "candle"];

fn bench_layer(l: &Layer, threads: usize, rounds: usize, min_sample: Duration) -> Vec<f64> {
    let x = values(l.input_shape().iter().product(), 1);
    let w = values(l.weight_shape().iter().product(), 2);
    let b = values(l.c_out, 3);
    let out_len: usize = l.output_shape().iter().product();
    let cols_len = im2col_len(l.input_shape(), [l.kh, l.kw], &l.params()).expect("valid");
    let (mut y, mut y2, mut y3, mut y4) =
        (vec![0.0f32; out_len], vec![0.0; out_len], vec![0.0; out_len], vec![0.0; out_len]);
    let (mut cols, mut cols2) = (vec![0.0f32; cols_len], vec![0.0f32; cols_len]);
    let p = l.params();
    let plan = Conv2dPlan::new(&w, l.weight_shape(), Some(&b), &p, &ConvOptions::default()).expect("valid");

    let device = Device::Cpu;
    let xt = Tensor::from_slice(&x, l.input_shape().to_vec(), &device).expect("tensor");
    let wt = Tensor::from_slice(&w, l.weight_shape().to_vec(), &device).expect("tensor");
    let bt = Tensor::from_slice(&b, (1, l.c_out, 1, 1), &device).expect("tensor");
    let symmetric = p.padding[0] == p.padding[2]
        && p.padding[1] == p.padding[3]
        && p.padding[0] == p.padding[1]
        && p.stride[0] == p.stride[1]
        && p.dilation[0] == p.dilation[1];

    let rayon_pool = pool(threads);
    let gemm_par = if threads == 1 { gemm::Parallelism::None } else { gemm::Parallelism::Rayon(threads) };
    rayon_pool.install(|| {
        let mut ours_plan = || plan.run(&x, l.input_shape(), &mut y).expect("valid");
        let mut ours_conv = || conv2d(&x, l.input_shape(), &w, l.weight_shape(), Some(&b), &p, &mut y2).expect("ok");
        let mut mm = || {
            im2col_then(l, &x, &w, &b, &mut cols, &mut y3, |m, k, n, a, bm, c| {
                // SAFETY: row-major m×k, k×n and m×n blocks inside their buffers.
                unsafe {
                    matrixmultiply::sgemm(m, k, n, 1.0, a, k as isize, 1, bm, n as isize, 1, 0.0, c, n as isize, 1)
                }
            })
        };
        let mut gemm_crate = || {
            im2col_then(l, &x, &w, &b, &mut cols2, &mut y4, |m, k, n, a, bm, c| {
                // SAFETY: as above; gemm's dst = alpha·dst + beta·lhs·rhs, dst not read.
                unsafe {
                    gemm::gemm(
                        m, n, k, c, 1, n as isize, false, a, 1, k as isize, bm, 1, n as isize, 0.0f32, 1.0f32, false,
                        false, false, gemm_par,
                    )
                }
            })
        };
        let mut candle = || {
            let out = xt
                .conv2d(&wt, p.padding[0], p.stride[0], p.dilation[0], p.groups)
                .and_then(|o| o.broadcast_add(&bt))
                .expect("candle conv2d");
            std::hint::black_box(out);
        };
        let mut contenders: Vec<&mut dyn FnMut()> = vec![&mut ours_plan, &mut ours_conv, &mut mm, &mut gemm_crate];
        if symmetric {
            contenders.push(&mut candle);
        }
        let mut t = interleaved_medians(&mut contenders, rounds, min_sample);
        t.resize(NAMES.len(), f64::NAN);
        t.iter().map(|s| l.flops() / s / 1e9).collect()
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "mem") {
        return memory();
    }
    let quick = args.iter().any(|a| a == "quick");
    let only = args.iter().find_map(|a| a.strip_prefix("only=")).map(str::to_string);
    let ort: Vec<_> =
        ["ort1=", "ort2="].iter().map(|key| args.iter().find_map(|a| a.strip_prefix(key)).map(read_ort)).collect();
    let (rounds, min_sample) = if quick { (5, Duration::from_millis(10)) } else { (9, Duration::from_millis(25)) };
    let (threads_max, peaks) = threads_and_peaks();
    println!("# conv2d, path {} ({})", Isa::detect().name(), Isa::detect().kernel_name());
    for (t, p) in peaks.iter().enumerate() {
        println!("FMA peak, {} thread(s): {p:.1} GFLOP/s", t + 1);
    }
    println!();
    if threads_max > 1 {
        print_cross_core("before the runs");
    }
    println!(
        "| layer | threads | µs (plan) | {} | % peak | ONNX Runtime | plan / best Rust peer | plan / ORT |",
        NAMES.join(" | ")
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut rows = Vec::new();
    for l in layers() {
        if only.as_ref().is_some_and(|o| !l.name.contains(o.as_str())) {
            continue;
        }
        for threads in 1..=threads_max {
            let g = bench_layer(&l, threads, rounds, min_sample);
            let ort_g = ort
                .get(threads - 1)
                .and_then(|o| o.as_ref())
                .and_then(|o| o.get(&l.name))
                .map(|ms| l.flops() / (ms * 1e-3) / 1e9);
            let best_peer = g[2..].iter().copied().filter(|v| !v.is_nan()).fold(0.0, f64::max);
            let fmt = |v: f64| if v.is_nan() { "—".to_string() } else { format!("{v:.1}") };
            println!(
                "| {} | {threads} | {:.1} | {} | {:.0}% | {} | {:.2}× | {} |",
                l.name,
                l.flops() / g[0] / 1e3,
                g.iter().map(|&v| fmt(v)).collect::<Vec<_>>().join(" | "),
                100.0 * g[0] / peaks[threads - 1],
                ort_g.map_or("—".into(), fmt),
                g[0] / best_peer,
                ort_g.map_or("—".into(), |o| format!("{:.2}×", g[0] / o)),
            );
            let mut gflops = g.clone();
            gflops.push(ort_g.unwrap_or(f64::NAN));
            rows.push(Row { name: l.name.clone(), threads, gflops });
        }
    }
    if threads_max > 1 {
        print_cross_core("after them");
    }
    summary(&rows);
    let svg = chart(&rows, &peaks);
    std::fs::write("conv_chart.svg", &svg).expect("write conv_chart.svg");
    write_png(&svg, "conv_chart.png");
    println!("\nwrote conv_chart.svg and conv_chart.png");
}

fn geomean(v: impl Iterator<Item = f64>) -> (f64, usize) {
    let (sum, n) = v.filter(|x| x.is_finite() && *x > 0.0).fold((0.0, 0), |(s, n), x| (s + x.ln(), n + 1));
    ((sum / n.max(1) as f64).exp(), n)
}

fn summary(rows: &[Row]) {
    for threads in [1, 2] {
        let sel: Vec<&Row> = rows.iter().filter(|r| r.threads == threads).collect();
        if sel.is_empty() {
            continue;
        }
        let ratio = |i: usize| geomean(sel.iter().map(|r| r.gflops[0] / r.gflops[i]));
        let (candle, nc) = ratio(4);
        let (mm, _) = ratio(2);
        let (gm, _) = ratio(3);
        let (ort, no) = ratio(5);
        println!(
            "\n{threads} thread(s), geometric mean of plan / peer: matrixmultiply {mm:.2}×, gemm {gm:.2}×, candle {candle:.2}× ({nc} layers), ONNX Runtime {ort:.2}× ({no} layers)"
        );
    }
}

/// A grouped bar chart: GFLOP/s per layer, one bar per contender, 1 thread,
/// with the FMA peak as a line.
fn chart(rows: &[Row], peaks: &[f64]) -> String {
    let sel: Vec<&Row> = rows.iter().filter(|r| r.threads == 1).collect();
    let series = ["ours (plan)", "im2col+matrixmultiply", "im2col+gemm", "candle", "ONNX Runtime"];
    let index = [0usize, 2, 3, 4, 5];
    let colors = ["#d62728", "#9aa0a6", "#5f6368", "#1f77b4", "#ff7f0e"];
    let (w, h, left, bottom, top) = (1200.0, 540.0, 60.0, 150.0, 70.0);
    let ymax = peaks[0].max(1.0) * 1.1;
    let plot_h = h - bottom - top;
    let group_w = (w - left - 20.0) / sel.len().max(1) as f64;
    let bar_w = group_w * 0.8 / series.len() as f64;
    let y = |v: f64| top + plot_h * (1.0 - v / ymax);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{left}\" y=\"20\" font-size=\"14\">conv2d GFLOP/s per layer, 1 thread (higher is better)</text>\n"
    );
    for tick in (0..=(ymax as usize)).step_by(20) {
        let ty = y(tick as f64);
        s += &format!(
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{ty}\" y2=\"{ty}\" stroke=\"#eee\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{tick}</text>\n",
            w - 20.0,
            left - 5.0,
            ty + 4.0
        );
    }
    for (g, row) in sel.iter().enumerate() {
        let x0 = left + g as f64 * group_w + group_w * 0.1;
        for (si, &i) in index.iter().enumerate() {
            let v = row.gflops[i];
            if v.is_finite() {
                s += &format!(
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"/>\n",
                    x0 + si as f64 * bar_w,
                    y(v),
                    bar_w,
                    y(0.0) - y(v),
                    colors[si]
                );
            }
        }
        let lx = x0 + group_w * 0.4;
        s += &format!(
            "<text transform=\"translate({lx:.1},{:.1}) rotate(-45)\" text-anchor=\"end\">{}</text>\n",
            y(0.0) + 12.0,
            row.name
        );
    }
    let py = y(peaks[0]);
    s += &format!(
        "<line x1=\"{left}\" x2=\"{}\" y1=\"{py}\" y2=\"{py}\" stroke=\"black\" stroke-dasharray=\"6,4\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\">FMA peak {:.0}</text>\n",
        w - 20.0,
        w - 22.0,
        py - 4.0,
        peaks[0]
    );
    for (si, name) in series.iter().enumerate() {
        let lx = left + si as f64 * 190.0;
        s += &format!(
            "<rect x=\"{lx}\" y=\"32\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"42\">{name}</text>\n",
            colors[si],
            lx + 16.0
        );
    }
    s + "</svg>\n"
}

/// Rasterises the chart with resvg (text in the system's fonts).
fn write_png(svg: &str, path: &str) {
    let mut opt = resvg::usvg::Options::default();
    opt.fontdb_mut().load_system_fonts();
    // "sans-serif" resolves through fontdb's generic family, DejaVu Sans on Debian.
    opt.fontdb_mut().set_sans_serif_family("DejaVu Sans");
    let tree = resvg::usvg::Tree::from_str(svg, &opt).expect("chart svg parses");
    let size = tree.size().to_int_size();
    let mut pixmap = resvg::tiny_skia::Pixmap::new(size.width(), size.height()).expect("pixmap");
    resvg::render(&tree, resvg::tiny_skia::Transform::default(), &mut pixmap.as_mut());
    pixmap.save_png(path).expect("write png");
}

/// Peak resident memory growth during one call on VGG-16 conv1_2, batch 1:
/// input, output and weights are allocated before the measurement.
fn memory() {
    let l = layers().into_iter().find(|l| l.name == "vgg16_conv1_2").expect("layer");
    let x = values(l.input_shape().iter().product(), 1);
    let w = values(l.weight_shape().iter().product(), 2);
    let b = values(l.c_out, 3);
    let mut y = vec![0.0f32; l.output_shape().iter().product()];
    let p = l.params();
    let device = Device::Cpu;
    let xt = Tensor::from_slice(&x, l.input_shape().to_vec(), &device).expect("tensor");
    let wt = Tensor::from_slice(&w, l.weight_shape().to_vec(), &device).expect("tensor");
    let measure = |name: &str, f: &mut dyn FnMut()| {
        // Writing 5 to clear_refs resets the peak (VmHWM) to the current RSS.
        std::fs::write("/proc/self/clear_refs", "5").expect("clear_refs");
        let before = status_kib("VmRSS");
        f();
        let peak = status_kib("VmHWM");
        println!("{name}: peak RSS grew by {:.1} MiB during the call", (peak - before) as f64 / 1024.0);
    };
    // Touch the output first: its pages faulting in are not the call's overhead.
    y.fill(1.0);
    let out_mib = (y.len() * 4) as f64 / (1 << 20) as f64;
    // Start the rayon pool and the per-thread buffers of a first call, as a
    // program that convolves more than once has them.
    conv2d(&x, l.input_shape(), &w, l.weight_shape(), Some(&b), &p, &mut y).unwrap();
    measure("ours conv2d (output preallocated)", &mut || {
        conv2d(&x, l.input_shape(), &w, l.weight_shape(), Some(&b), &p, &mut y).unwrap()
    });
    println!("candle returns a new {out_mib:.1} MiB output tensor; its growth includes it");
    measure("candle conv2d", &mut || {
        std::hint::black_box(xt.conv2d(&wt, 1, 1, 1, 1).unwrap());
    });
}

fn status_kib(key: &str) -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.trim_start_matches(':').trim().strip_suffix("kB")))
        .and_then(|v| v.trim().parse().ok())
        .expect("status field")
}
