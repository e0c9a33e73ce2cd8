//! Scratch: one layer in one layout, many runs (for perf).
use convgemm::*;
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let layout = if a.get(1).map(|s| s.as_str()) == Some("nhwc") { Layout::Nhwc } else { Layout::Nchw };
    let which = a.get(2).map(|s| s.as_str()).unwrap_or("res2");
    let (c, h, co, k, groups, pad) = match which {
        "dw" => (144, 56, 144, 3, 144, 1),
        "pw" => (64, 56, 256, 1, 1, 0),
        "vgg11" => (3, 224, 64, 3, 1, 1),
        _ => (64, 56, 64, 3, 1, 1),
    };
    let x = vec![0.5f32; c * h * h];
    let w = vec![0.1f32; co * (c / groups) * k * k];
    let params = ConvParams { padding: [pad; 4], groups, layout, ..Default::default() };
    let opts = ConvOptions { threads: Threads::Single, ..Default::default() };
    let plan = Conv2dPlan::new(&w, [co, c / groups, k, k], None, &params, &opts).unwrap();
    let shape = plan.output_shape([1, c, h, h]).unwrap();
    let shift: usize = std::env::var("SHIFT").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut y_buf = vec![0.0f32; shape.iter().product::<usize>() + shift];
    let y = &mut y_buf[shift..];
    let runs: usize = a.get(3).and_then(|s| s.parse().ok()).unwrap_or(200);
    let t = std::time::Instant::now();
    for _ in 0..runs {
        plan.run(&x, [1, c, h, h], y).unwrap();
    }
    println!(
        "{which} {layout:?} {:?} {:.1} us",
        plan.kernel_name([1, c, h, h]),
        t.elapsed().as_secs_f64() / runs as f64 * 1e6
    );
}
