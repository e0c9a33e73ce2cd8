//! Criterion benches of sgemm: ids `gemm/<m>x<n>x<k>/<path>`, throughput in
//! FLOPs, square sizes and the conv-shaped GEMMs of the layer suite, every
//! ISA path the CPU has (portable only up to 256³: it is the slow oracle),
//! matrixmultiply and the `gemm` crate in the same group. The FMA peak probe
//! is `peak/fma`. The side-by-side table with ratios is `benches/gemm_table.rs`.

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use convgemm::{Isa, sgemm_with_isa};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use support::{fma_peak_gflops_one_thread, layers, values};

fn shapes() -> Vec<(usize, usize, usize)> {
    let mut out: Vec<_> = [64, 256, 512, 1024, 2048].iter().map(|&s| (s, s, s)).collect();
    for l in layers() {
        let (m, k, n) = l.gemm_shape();
        if !out.contains(&(m, k, n)) {
            out.push((m, k, n));
        }
    }
    out
}

fn gemm_benches(c: &mut Criterion) {
    c.bench_function("peak/fma", |b| b.iter(fma_peak_gflops_one_thread));
    for (m, k, n) in shapes() {
        let mut group = c.benchmark_group(format!("gemm/{m}x{n}x{k}"));
        let flops = 2.0 * (m * k * n) as f64;
        group.throughput(Throughput::Elements(flops as u64));
        let a = values(m * k, 1);
        let bm = values(k * n, 2);
        let mut cm = vec![0.0f32; m * n];
        let cp = cm.as_mut_ptr();
        for isa in Isa::available() {
            if matches!(isa, Isa::Portable | Isa::PortableUnfused) && flops > 4e7 {
                continue;
            }
            group.bench_function(isa.name(), |b| {
                b.iter(|| {
                    // SAFETY: row-major m×k, k×n, m×n buffers of exactly those sizes.
                    unsafe {
                        sgemm_with_isa(
                            isa,
                            m,
                            k,
                            n,
                            1.0,
                            a.as_ptr(),
                            k as isize,
                            1,
                            bm.as_ptr(),
                            n as isize,
                            1,
                            0.0,
                            cp,
                            n as isize,
                            1,
                        )
                        .unwrap()
                    }
                })
            });
        }
        group.bench_function("matrixmultiply", |b| {
            // SAFETY: as above.
            b.iter(|| unsafe {
                matrixmultiply::sgemm(
                    m,
                    k,
                    n,
                    1.0,
                    a.as_ptr(),
                    k as isize,
                    1,
                    bm.as_ptr(),
                    n as isize,
                    1,
                    0.0,
                    cp,
                    n as isize,
                    1,
                )
            })
        });
        group.bench_function("gemm", |b| {
            // SAFETY: as above; gemm's dst = alpha·dst + beta·lhs·rhs, dst not read.
            b.iter(|| unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    cp,
                    1,
                    n as isize,
                    false,
                    a.as_ptr(),
                    1,
                    k as isize,
                    bm.as_ptr(),
                    1,
                    n as isize,
                    0.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                )
            })
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    targets = gemm_benches
}
criterion_main!(benches);
