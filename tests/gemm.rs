//! sgemm against the naive f64 product for every layout, alpha, beta and
//! path; bit-exactness across paths and thread counts; guard bands around C.

mod common;

use common::{assert_close, bits, cases, for_each_isa, is_exact, values};
use convgemm::reference::{Reference, gemm_naive};
use convgemm::{Isa, sgemm_with_isa};
use proptest::prelude::*;

/// How a matrix lies in memory.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Layout {
    RowMajor,
    ColMajor,
    /// Row-major with 3 unused floats after each row.
    PaddedRows,
    /// Row-major, rows stored last to first (negative row stride).
    NegativeRows,
    /// Column-major, columns stored last to first (negative column stride).
    NegativeCols,
}

/// A matrix inside a buffer with guard floats around it (and in its padding).
#[derive(Clone, Debug)]
struct Stored {
    buf: Vec<f32>,
    /// Index of element (0, 0).
    origin: usize,
    rs: isize,
    cs: isize,
}

const GUARD: usize = 7;

impl Stored {
    /// `rows × cols` with element (i, j) = `value(i, j)`; other floats = `fill`.
    fn new(rows: usize, cols: usize, layout: Layout, fill: f32, value: impl Fn(usize, usize) -> f32) -> Self {
        let (r, c) = (rows as isize, cols as isize);
        let (rs, cs, first) = match layout {
            Layout::RowMajor => (c, 1, 0),
            Layout::ColMajor => (1, r, 0),
            Layout::PaddedRows => (c + 3, 1, 0),
            Layout::NegativeRows => (-c, 1, (r - 1).max(0) * c),
            Layout::NegativeCols => (1, -r, (c - 1).max(0) * r),
        };
        let span = match layout {
            Layout::PaddedRows => rows * (cols + 3),
            _ => rows * cols,
        };
        let mut buf = vec![fill; span + 2 * GUARD];
        let origin = GUARD + first as usize;
        for i in 0..rows {
            for j in 0..cols {
                buf[(origin as isize + i as isize * rs + j as isize * cs) as usize] = value(i, j);
            }
        }
        Stored { buf, origin, rs, cs }
    }

    fn at(&self, i: usize, j: usize) -> f32 {
        self.buf[(self.origin as isize + i as isize * self.rs + j as isize * self.cs) as usize]
    }

    fn index(&self, i: usize, j: usize) -> usize {
        (self.origin as isize + i as isize * self.rs + j as isize * self.cs) as usize
    }
}

#[derive(Clone, Debug)]
struct GemmProblem {
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    beta: f32,
    layouts: [Layout; 3],
    seed: u64,
}

impl GemmProblem {
    fn operands(&self) -> (Stored, Stored, Stored) {
        let (m, k, n) = (self.m, self.k, self.n);
        let av = values(m * k, self.seed);
        let bv = values(k * n, self.seed + 1);
        let cv = values(m * n, self.seed + 2);
        let a = Stored::new(m, k, self.layouts[0], f32::NAN, |i, j| av[i * k + j]);
        let b = Stored::new(k, n, self.layouts[1], f32::NAN, |i, j| bv[i * n + j]);
        // beta == 0 must not read C: plant NaN in it.
        let beta0 = self.beta == 0.0;
        let c = Stored::new(m, n, self.layouts[2], -777.0, |i, j| if beta0 { f32::NAN } else { cv[i * n + j] });
        (a, b, c)
    }

    /// Runs sgemm on `isa`; returns the whole C buffer, guards included.
    fn run(&self, isa: Isa) -> Vec<f32> {
        let (a, b, mut c) = self.operands();
        let c_ptr = c.buf.as_mut_ptr().wrapping_add(c.origin);
        // SAFETY: every (i, j) of each matrix is inside its buffer (Stored::new wrote them all).
        unsafe {
            sgemm_with_isa(
                isa,
                self.m,
                self.k,
                self.n,
                self.alpha,
                a.buf.as_ptr().add(a.origin),
                a.rs,
                a.cs,
                b.buf.as_ptr().add(b.origin),
                b.rs,
                b.cs,
                self.beta,
                c_ptr,
                c.rs,
                c.cs,
            )
            .expect("available path");
        }
        c.buf
    }

    /// The full check of one path: C within the bound of the f64 reference,
    /// every float outside C unchanged; the exact paths equal portable in bits.
    fn check(&self) {
        let (a, b, c0) = self.operands();
        let product = gemm_naive(self.m, self.k, self.n, |i, l| a.at(i, l), |l, j| b.at(l, j));
        let (alpha, beta) = (self.alpha as f64, self.beta as f64);
        let mut reference = Reference { value: Vec::new(), magnitude: Vec::new() };
        for i in 0..self.m {
            for j in 0..self.n {
                let idx = i * self.n + j;
                let cterm = if self.beta == 0.0 { 0.0 } else { beta * c0.at(i, j) as f64 };
                reference.value.push(alpha * product.value[idx] + cterm);
                reference.magnitude.push(alpha.abs() * product.magnitude[idx] + cterm.abs());
            }
        }
        let portable = self.run(Isa::Portable);
        for_each_isa(|isa| {
            let got = if isa == Isa::Portable { portable.clone() } else { self.run(isa) };
            let what = format!("{} {self:?}", isa.name());
            let mut in_c = vec![false; got.len()];
            let mut c = Vec::with_capacity(self.m * self.n);
            for i in 0..self.m {
                for j in 0..self.n {
                    in_c[c0.index(i, j)] = true;
                    c.push(got[c0.index(i, j)]);
                }
            }
            assert_close(&what, &reference, &c);
            for (idx, (&g, &orig)) in got.iter().zip(&c0.buf).enumerate() {
                assert!(in_c[idx] || g.to_bits() == orig.to_bits(), "{what}: wrote outside C at {idx}");
            }
            if is_exact(isa) {
                assert_eq!(bits(&got), bits(&portable), "{what}: differs from portable");
            }
        });
    }
}

/// Sizes in 0..=300 crowding around tile and block edges (MR 4/6/8, NR 8/12/16, KC 256).
fn size() -> impl Strategy<Value = usize> {
    let edges: Vec<usize> = [1usize, 4, 6, 8, 12, 16, 24, 32, 48, 96, 256]
        .iter()
        .flat_map(|&e| [e - 1, e, e + 1])
        .chain([0, 255, 257, 300, 512 - 1])
        .filter(|&s| s <= 300)
        .collect();
    prop_oneof![0usize..=300, prop::sample::select(edges)]
}

fn scalar() -> impl Strategy<Value = f32> {
    prop_oneof![Just(0.0f32), Just(1.0f32), -2.0f32..2.0]
}

fn layout() -> impl Strategy<Value = Layout> {
    prop::sample::select(vec![
        Layout::RowMajor,
        Layout::ColMajor,
        Layout::PaddedRows,
        Layout::NegativeRows,
        Layout::NegativeCols,
    ])
}

fn gemm_problem() -> impl Strategy<Value = GemmProblem> {
    (size(), size(), size(), scalar(), scalar(), [layout(), layout(), layout()], any::<u64>())
        .prop_map(|(m, k, n, alpha, beta, layouts, seed)| GemmProblem { m, k, n, alpha, beta, layouts, seed })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    #[test]
    fn sgemm_matches_reference_on_every_path(p in gemm_problem()) {
        p.check();
    }
}

fn problem(m: usize, k: usize, n: usize, alpha: f32, beta: f32, layouts: [Layout; 3]) -> GemmProblem {
    GemmProblem { m, k, n, alpha, beta, layouts, seed: (m * 1_000_003 + k * 1009 + n) as u64 }
}

const ROW: [Layout; 3] = [Layout::RowMajor; 3];

#[test]
fn gemm_k_one_past_kc() {
    problem(13, 257, 35, 1.0, 0.0, ROW).check();
}
#[test]
fn gemm_k_zero_scales_c() {
    problem(5, 0, 7, 2.0, 0.5, ROW).check();
    problem(5, 0, 7, 2.0, 0.0, ROW).check();
}
#[test]
fn gemm_m_below_mr_n_below_nr() {
    problem(1, 9, 1, 1.0, 1.0, ROW).check();
    problem(3, 5, 7, -1.5, 0.0, [Layout::ColMajor, Layout::NegativeRows, Layout::PaddedRows]).check();
}
#[test]
fn gemm_zero_dims_touch_nothing() {
    problem(0, 5, 7, 1.0, 0.0, ROW).check();
    problem(5, 5, 0, 1.0, 0.0, ROW).check();
}
#[test]
fn gemm_lenet_shape() {
    problem(6, 25, 784, 1.0, 0.0, ROW).check();
}
#[test]
fn gemm_column_major_c_with_bias_like_beta() {
    problem(37, 300, 29, 0.5, -1.0, [Layout::NegativeCols, Layout::ColMajor, Layout::ColMajor]).check();
}

#[test]
fn gemm_bits_independent_of_thread_count() {
    // Shapes large enough to fork (>= 4 MFLOP), split along N and along M.
    for &(m, k, n) in &[(64, 576, 300), (300, 300, 40), (97, 513, 131)] {
        let p = problem(m, k, n, 1.0, 0.0, ROW);
        for_each_isa(|isa| {
            let runs: Vec<Vec<u32>> = [1, 2, 4]
                .iter()
                .map(|&t| {
                    let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap();
                    bits(&pool.install(|| p.run(isa)))
                })
                .collect();
            assert_eq!(runs[0], runs[1], "{} {m}x{k}x{n}: 1 vs 2 threads", isa.name());
            assert_eq!(runs[0], runs[2], "{} {m}x{k}x{n}: 1 vs 4 threads", isa.name());
        });
    }
}

#[test]
fn gemm_nan_and_infinity_propagate() {
    // A row with NaN poisons its row of C; inf · 0 is NaN; beta == 0 ignores NaN in C.
    let a = [f32::NAN, 1.0, 1.0, 1.0, f32::INFINITY, 0.0];
    let b = [1.0f32, 2.0, 3.0, 0.0, 1.0, 1.0];
    for_each_isa(|isa| {
        let mut c = [f32::NAN; 6];
        // SAFETY: 3×2 A, 2×2 B... row-major with the strides below, all in bounds.
        unsafe {
            sgemm_with_isa(isa, 3, 2, 2, 1.0, a.as_ptr(), 2, 1, b.as_ptr(), 3, 1, 0.0, c.as_mut_ptr(), 2, 1).unwrap();
        }
        // Row 0: NaN·x → NaN. Row 1: [1+0, 2+1] = [1, 3]... with b = [[1,2],[0,1]] (row stride 3).
        assert!(c[0].is_nan() && c[1].is_nan(), "{}: {c:?}", isa.name());
        assert_eq!((c[2], c[3]), (1.0 + 0.0, 2.0 + 1.0), "{}", isa.name());
        // Row 2: inf·1 + 0·0 = inf, inf·2 + 0·1 = inf.
        assert_eq!((c[4], c[5]), (f32::INFINITY, f32::INFINITY), "{}", isa.name());
        let zero_b = [0.0f32; 6];
        let mut c = [1.0f32; 6];
        // SAFETY: as above.
        unsafe {
            sgemm_with_isa(isa, 3, 2, 2, 1.0, a.as_ptr(), 2, 1, zero_b.as_ptr(), 3, 1, 0.0, c.as_mut_ptr(), 2, 1)
                .unwrap();
        }
        assert!(c[0].is_nan() && c[4].is_nan(), "{}: NaN·0 and inf·0 are NaN: {c:?}", isa.name());
        assert_eq!(c[2], 0.0);
    });
}
