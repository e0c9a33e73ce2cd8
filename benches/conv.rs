//! Criterion benches of conv2d on the layer suite: ids
//! `conv/<layer>/<path>/<kernel>` (the kernel as `Conv2dPlan::kernel_name`
//! names it: `avx512_8x32`, `dwconv_3x3_rolling_avx512`, …),
//! throughput in FLOPs (reports read as FLOP/s), every ISA path the CPU has
//! (the portable path only on layers under 100 MFLOP: it is the slow oracle),
//! candle-core in the same group. The side-by-side table with ratios is
//! `benches/conv_table.rs`.

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use candle_core::{Device, Tensor};
use convgemm::{Conv2dPlan, ConvOptions, Isa};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use support::{layers, values};

fn conv(c: &mut Criterion) {
    for l in layers() {
        let mut group = c.benchmark_group(format!("conv/{}", l.name));
        group.throughput(Throughput::Elements(l.flops() as u64));
        let x = values(l.input_shape().iter().product(), 1);
        let w = values(l.weight_shape().iter().product(), 2);
        let b = values(l.c_out, 3);
        let mut y = vec![0.0f32; l.output_shape().iter().product()];
        for isa in Isa::available() {
            if matches!(isa, Isa::Portable | Isa::PortableUnfused) && l.flops() > 1e8 {
                continue;
            }
            let options = ConvOptions { isa, ..ConvOptions::default() };
            let plan = Conv2dPlan::new(&w, l.weight_shape(), Some(&b), &l.params(), &options).expect("valid layer");
            let id = format!("{}/{}", isa.name(), plan.kernel_name(l.input_shape()).expect("valid layer"));
            group.bench_function(id, |bench| bench.iter(|| plan.run(&x, l.input_shape(), &mut y).unwrap()));
        }
        let p = l.params();
        if p.padding.iter().all(|&v| v == p.padding[0]) && p.stride[0] == p.stride[1] && p.dilation[0] == p.dilation[1]
        {
            let xt = Tensor::from_slice(&x, l.input_shape().to_vec(), &Device::Cpu).expect("tensor");
            let wt = Tensor::from_slice(&w, l.weight_shape().to_vec(), &Device::Cpu).expect("tensor");
            group.bench_function("candle", |bench| {
                bench.iter(|| xt.conv2d(&wt, p.padding[0], p.stride[0], p.dilation[0], p.groups).unwrap())
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    targets = conv
}
criterion_main!(benches);
