//! Shared by the bench programs: the layer suite, interleaved median timing,
//! and the FMA peak probe. Nothing here is timed code of the crate.
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// One layer of `benches/layers.json` or `benches/networks.json` (copies of
/// the project's `shared/` suites).
#[derive(Clone, Debug)]
pub struct Layer {
    pub name: String,
    /// The network it belongs to (`networks.json` only).
    pub net: Option<String>,
    /// How often the network runs it (1 in `layers.json`).
    pub count: usize,
    pub n: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    pub padding: [usize; 4],
    pub dilation: [usize; 2],
    pub groups: usize,
}

impl Layer {
    pub fn params(&self) -> convgemm::ConvParams {
        convgemm::ConvParams {
            stride: self.stride,
            padding: self.padding,
            dilation: self.dilation,
            groups: self.groups,
            ..convgemm::ConvParams::default()
        }
    }
    pub fn input_shape(&self) -> [usize; 4] {
        [self.n, self.c_in, self.h, self.w]
    }
    pub fn weight_shape(&self) -> [usize; 4] {
        [self.c_out, self.c_in / self.groups, self.kh, self.kw]
    }
    pub fn output_shape(&self) -> [usize; 4] {
        convgemm::conv2d_output_shape(self.input_shape(), self.weight_shape(), &self.params()).expect("valid layer")
    }
    /// The GEMM of one (image, group): (M, K, N) = (c_out/g, c_in/g·kh·kw, h_out·w_out).
    pub fn gemm_shape(&self) -> (usize, usize, usize) {
        let [_, _, ho, wo] = self.output_shape();
        (self.c_out / self.groups, self.c_in / self.groups * self.kh * self.kw, ho * wo)
    }
    /// 2 · multiply-adds of the whole layer, bias excluded.
    pub fn flops(&self) -> f64 {
        let (m, k, n) = self.gemm_shape();
        2.0 * (self.n * self.groups) as f64 * m as f64 * k as f64 * n as f64
    }
}

/// The layer suite, `benches/layers.json`.
pub fn layers() -> Vec<Layer> {
    layers_in(include_str!("../layers.json"))
}

/// Every conv layer of the 12 networks, `benches/networks.json`.
pub fn network_layers() -> Vec<Layer> {
    layers_in(include_str!("../networks.json"))
}

/// The layers of a suite's JSON text.
pub fn layers_in(text: &str) -> Vec<Layer> {
    let json: serde_json::Value = serde_json::from_str(text).expect("the suite parses");
    let u = |l: &serde_json::Value, key: &str| l[key].as_u64().unwrap_or_else(|| panic!("{key}")) as usize;
    json.as_array()
        .expect("array of layers")
        .iter()
        .map(|l| Layer {
            name: l["name"].as_str().expect("name").to_string(),
            net: l["net"].as_str().map(str::to_string),
            count: l["count"].as_u64().map_or(1, |c| c as usize),
            n: u(l, "n"),
            c_in: u(l, "c_in"),
            h: u(l, "h"),
            w: u(l, "w"),
            c_out: u(l, "c_out"),
            kh: u(l, "kh"),
            kw: u(l, "kw"),
            stride: [u(l, "stride_h"), u(l, "stride_w")],
            padding: [u(l, "pad_top"), u(l, "pad_left"), u(l, "pad_bottom"), u(l, "pad_right")],
            dilation: [u(l, "dilation_h"), u(l, "dilation_w")],
            groups: u(l, "groups"),
        })
        .collect()
}

/// ONNX Runtime's medians (ms) per layer name, from `ort_conv.py --json`.
pub fn read_ort(path: &str) -> std::collections::HashMap<String, f64> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let json: serde_json::Value = serde_json::from_str(&text).expect("ort json");
    json["median_ms"].as_object().expect("median_ms").iter().map(|(k, v)| (k.clone(), v.as_f64().unwrap())).collect()
}

/// ONNX Runtime's medians at 1 and 2 threads, from the `ort1=FILE` and
/// `ort2=FILE` arguments of a table bench, each where given.
pub fn ort_args(args: &[String]) -> Vec<Option<std::collections::HashMap<String, f64>>> {
    ["ort1=", "ort2="].iter().map(|key| args.iter().find_map(|a| a.strip_prefix(key)).map(read_ort)).collect()
}

/// The `only=A,B` argument of a table bench: the name fragments a layer
/// must contain one of (empty: every layer).
pub fn only_arg(args: &[String]) -> Vec<String> {
    args.iter()
        .find_map(|a| a.strip_prefix("only="))
        .map_or(Vec::new(), |list| list.split(',').map(str::to_string).collect())
}

/// Rounds and the shortest sample of a table bench: fewer and shorter with `quick`.
pub fn rounds_arg(args: &[String]) -> (usize, Duration) {
    if args.iter().any(|a| a == "quick") { (5, Duration::from_millis(5)) } else { (9, Duration::from_millis(20)) }
}

/// The thread counts a table runs (1, and 2 where the machine has two
/// cores): the largest, and the FMA peak probed for each. Prints a warning
/// where two threads' peak is under 1.5× one thread's: the second core
/// was not the table's (another process, or a host that lent it out,
/// as a VM here did for minutes at a time), so its 2-thread times say
/// little.
pub fn threads_and_peaks() -> (usize, Vec<f64>) {
    let threads_max = std::thread::available_parallelism().map_or(1, |n| n.get()).min(2);
    let peaks: Vec<f64> = (1..=threads_max).map(fma_peak_gflops).collect();
    if let [one, two, ..] = peaks[..]
        && two < 1.5 * one
    {
        println!(
            "warning: the 2-thread FMA peak ({two:.1} GFLOP/s) is under 1.5× the 1-thread one ({one:.1}): \
             the second core is busy elsewhere; rerun for 2-thread numbers"
        );
    }
    (threads_max, peaks)
}

/// The networks the layers of `networks.json` belong to, in order of first appearance.
pub fn networks_of(layers: &[Layer]) -> Vec<String> {
    let mut nets: Vec<String> = Vec::new();
    for l in layers {
        let net = l.net.clone().expect("networks.json names each layer's network");
        if !nets.contains(&net) {
            nets.push(net);
        }
    }
    nets
}

/// The geometric mean (1 for no values).
pub fn geomean(v: &[f64]) -> f64 {
    (v.iter().map(|x| x.ln()).sum::<f64>() / v.len().max(1) as f64).exp()
}

/// Deterministic values in [-1, 1).
pub use convgemm::testing::values;

/// Times several contenders side by side: `rounds` rounds, each taking one
/// sample of every contender in turn (so drift of the shared machine hits all
/// alike); a sample runs the closure enough times to last `min_sample`.
/// Returns each contender's median seconds per call.
pub fn interleaved_medians(contenders: &mut [&mut dyn FnMut()], rounds: usize, min_sample: Duration) -> Vec<f64> {
    // Warm up and find the repetition count of each contender.
    let reps: Vec<usize> = contenders
        .iter_mut()
        .map(|f| {
            f();
            let t = Instant::now();
            f();
            let once = t.elapsed().as_secs_f64().max(1e-7);
            ((min_sample.as_secs_f64() / once).ceil() as usize).max(1)
        })
        .collect();
    let mut samples = vec![Vec::with_capacity(rounds); contenders.len()];
    for _ in 0..rounds {
        for (i, f) in contenders.iter_mut().enumerate() {
            let t = Instant::now();
            for _ in 0..reps[i] {
                f();
            }
            samples[i].push(t.elapsed().as_secs_f64() / reps[i] as f64);
        }
    }
    samples
        .into_iter()
        .map(|mut s| {
            s.sort_by(f64::total_cmp);
            s[s.len() / 2]
        })
        .collect()
}

/// The FMA peak of one core in GFLOP/s: 12 independent chains of FMAs of
/// the widest vector the CPU has (AVX-512 where present, else AVX2), enough
/// to cover the FMA latency × 2 pipes of Zen 3/4/5 and Skylake-class cores.
#[cfg(target_arch = "x86_64")]
pub fn fma_peak_gflops_one_thread() -> f64 {
    use std::arch::x86_64::*;
    #[target_feature(enable = "avx2,fma")]
    fn chains8(iters: usize) -> f32 {
        let mut acc = [_mm256_set1_ps(0.0); 12];
        let (a, b) = (_mm256_set1_ps(std::hint::black_box(0.999_999)), _mm256_set1_ps(std::hint::black_box(1e-7)));
        for _ in 0..std::hint::black_box(iters) {
            for x in acc.iter_mut() {
                *x = _mm256_fmadd_ps(*x, a, b);
            }
        }
        let mut out = [0.0f32; 8];
        let sum = acc.iter().fold(_mm256_set1_ps(0.0), |s, &x| _mm256_add_ps(s, x));
        // SAFETY: `out` holds 8 floats.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), sum) };
        out.iter().sum()
    }
    #[target_feature(enable = "avx512f")]
    fn chains16(iters: usize) -> f32 {
        let mut acc = [_mm512_set1_ps(0.0); 12];
        let (a, b) = (_mm512_set1_ps(std::hint::black_box(0.999_999)), _mm512_set1_ps(std::hint::black_box(1e-7)));
        for _ in 0..std::hint::black_box(iters) {
            for x in acc.iter_mut() {
                *x = _mm512_fmadd_ps(*x, a, b);
            }
        }
        _mm512_reduce_add_ps(acc.iter().fold(_mm512_set1_ps(0.0), |s, &x| _mm512_add_ps(s, x)))
    }
    let wide = is_x86_feature_detected!("avx512f");
    let narrow = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
    if !(wide || narrow) {
        return f64::NAN;
    }
    let iters = 2_000_000;
    let mut best = f64::INFINITY;
    for _ in 0..7 {
        let t = Instant::now();
        // SAFETY: the features were detected above.
        let s = unsafe { if wide { chains16(iters) } else { chains8(iters) } };
        std::hint::black_box(s);
        best = best.min(t.elapsed().as_secs_f64());
    }
    let lanes = if wide { 16 } else { 8 };
    (iters * 12 * lanes * 2) as f64 / best / 1e9
}

#[cfg(not(target_arch = "x86_64"))]
pub fn fma_peak_gflops_one_thread() -> f64 {
    f64::NAN
}

/// The median time, in nanoseconds, for a cache line to go from one thread
/// to another and back (two threads taking turns on one atomic, 20 000
/// round trips a sample, 7 samples). Two-thread timings of small layers
/// depend on it: on a VM whose two vCPUs the host places on nearby cores it
/// read 70–140 ns, on far ones 360–410 ns, and then every step that hands
/// data to the other thread costs more. The tables print it before and
/// after their two-thread runs.
pub fn cross_core_round_trip_ns() -> f64 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const TRIPS: u32 = 20_000;
    let turn = AtomicU32::new(0);
    let mut samples: Vec<f64> = std::thread::scope(|s| {
        // The other thread answers each odd value with the next even one.
        s.spawn(|| {
            for i in 0..7 * TRIPS {
                while turn.load(Ordering::Acquire) != 2 * i + 1 {
                    std::hint::spin_loop();
                }
                turn.store(2 * i + 2, Ordering::Release);
            }
        });
        (0..7)
            .map(|sample| {
                let t = Instant::now();
                for i in sample * TRIPS..(sample + 1) * TRIPS {
                    turn.store(2 * i + 1, Ordering::Release);
                    while turn.load(Ordering::Acquire) != 2 * i + 2 {
                        std::hint::spin_loop();
                    }
                }
                t.elapsed().as_secs_f64() * 1e9 / f64::from(TRIPS)
            })
            .collect()
    });
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// [`cross_core_round_trip_ns`] as a table line.
pub fn print_cross_core(when: &str) {
    println!("cross-core round trip {when}: {:.0} ns", cross_core_round_trip_ns());
}

/// The FMA peak with `threads` threads each running the probe at once.
pub fn fma_peak_gflops(threads: usize) -> f64 {
    if threads <= 1 {
        return fma_peak_gflops_one_thread();
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads).map(|_| s.spawn(fma_peak_gflops_one_thread)).collect();
        handles.into_iter().map(|h| h.join().expect("probe thread")).sum()
    })
}

/// A rayon pool of `threads` threads.
pub fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("rayon pool")
}
