//! Fuzz target: `sgemm` / `sgemm_with_isa` on every available path with
//! arbitrary sizes (zero included), strides (negative, zero for A and B,
//! padded, extreme where a dimension is 1), alpha and beta, against the f64
//! naive product. Nothing outside C changes; the FMA paths agree bit for bit.
#![no_main]

use convgemm::reference::{Reference, gemm_naive};
use convgemm::{Isa, sgemm, sgemm_with_isa};
use convgemm_fuzz::{Strided, all_tame, assert_close, canonical_bits, hostile_isize, rarely, trace, value, values};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

/// The largest buffer span a matrix may need (keeps one run fast).
const MAX_SPAN: usize = 1 << 20;

/// m or n: crowding around the tile edges (MR 4/6/8, NR 8/12/16), sometimes
/// big enough (with a long k) that the product forks onto threads
/// (2·m·n·k >= 1.5 MFLOP).
fn mn_size(u: &mut Unstructured) -> Result<usize> {
    Ok(match u.int_in_range(0u8..=7)? {
        0..=2 => u.int_in_range(0..=9)?,
        3 | 4 => *u.choose(&[1, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 15, 16, 17, 23, 24, 25, 31, 32, 33, 47, 48, 49])?,
        5 | 6 => u.int_in_range(0..=70)?,
        _ => u.int_in_range(40..=72)?,
    })
}

/// k: crowding around the K chunk (256).
fn k_size(u: &mut Unstructured) -> Result<usize> {
    Ok(match u.int_in_range(0u8..=7)? {
        0..=2 => u.int_in_range(0..=9)?,
        3 | 4 => *u.choose(&[0, 1, 2, 3, 4, 7, 8, 15, 16, 17, 255, 256, 257, 511, 512, 513])?,
        5 | 6 => u.int_in_range(0..=64)?,
        _ => u.int_in_range(200..=520)?,
    })
}

/// Strides of a `rows × cols` matrix: row- or column-major with padding and
/// gaps, either sign per axis; `zero_ok` allows a zero stride (A and B may
/// repeat elements; C may not); the stride of a dimension of size <= 1 may
/// be anything.
fn strides(u: &mut Unstructured, rows: usize, cols: usize, zero_ok: bool) -> Result<(isize, isize)> {
    let (r, c) = (rows as isize, cols as isize);
    let pad = u.int_in_range(0isize..=3)?;
    let gap = u.int_in_range(1isize..=3)?;
    let (mut rs, mut cs) = if u.arbitrary()? { (c * gap + pad, gap) } else { (gap, r * gap + pad) };
    if u.arbitrary()? {
        rs = -rs;
    }
    if u.arbitrary()? {
        cs = -cs;
    }
    if zero_ok && rarely(u, 8)? {
        rs = 0;
    }
    if zero_ok && rarely(u, 8)? {
        cs = 0;
    }
    if rows <= 1 && rarely(u, 4)? {
        rs = hostile_isize(u)?;
    }
    if cols <= 1 && rarely(u, 4)? {
        cs = hostile_isize(u)?;
    }
    Ok((rs, cs))
}

/// Bits a float outside the matrix holds: NaN in A and B (so a stray read
/// poisons the result), a payload NaN in C (so a stray write shows).
const STRAY_READ: f32 = f32::NAN;
const STRAY_WRITE: u32 = 0x7fc0_5a5a;

struct Problem {
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    beta: f32,
    a: Strided,
    b: Strided,
    c: Strided,
}

impl Problem {
    fn arbitrary(u: &mut Unstructured) -> Result<Option<Self>> {
        let (m, k, n) = (mn_size(u)?, k_size(u)?, mn_size(u)?);
        let alpha = if u.ratio(1, 2)? { 1.0 } else { value(u)? };
        let beta = match u.int_in_range(0u8..=3)? {
            0 => 0.0,
            1 => 1.0,
            _ => value(u)?,
        };
        let (rsa, csa) = strides(u, m, k, true)?;
        let (rsb, csb) = strides(u, k, n, true)?;
        let (rsc, csc) = strides(u, m, n, false)?;
        let guard = if u.arbitrary()? { 0 } else { u.int_in_range(1..=8)? };
        let av = values(u, m * k)?;
        let bv = values(u, k * n)?;
        let cv = values(u, m * n)?;
        let poison_c = beta == 0.0 && u.arbitrary()?;
        let stray = f32::from_bits(STRAY_WRITE);
        let (Some(a), Some(b), Some(c)) = (
            Strided::new(m, k, rsa, csa, guard, STRAY_READ, MAX_SPAN, |i, l| av[i * k + l]),
            Strided::new(k, n, rsb, csb, guard, STRAY_READ, MAX_SPAN, |l, j| bv[l * n + j]),
            Strided::new(
                m,
                n,
                rsc,
                csc,
                guard,
                stray,
                MAX_SPAN,
                |i, j| {
                    if poison_c { f32::NAN } else { cv[i * n + j] }
                },
            ),
        ) else {
            return Ok(None);
        };
        Ok(Some(Problem { m, k, n, alpha, beta, a, b, c }))
    }

    /// Runs sgemm on `isa` (`None`: the public `sgemm`, detected path) and
    /// returns the whole C buffer.
    fn run(&self, isa: Option<Isa>) -> Vec<f32> {
        let mut c = self.c.clone();
        let c_ptr = c.mut_ptr();
        let (a, b) = (&self.a, &self.b);
        // SAFETY: every element (i, l) of A, (l, j) of B and (i, j) of C lies
        // inside its buffer (Strided::new laid them out there); C's elements
        // are distinct (strides() never gives C a zero or overlapping stride)
        // and C's buffer is separate from A's and B's.
        unsafe {
            match isa {
                Some(isa) => sgemm_with_isa(
                    isa,
                    self.m,
                    self.k,
                    self.n,
                    self.alpha,
                    a.ptr(),
                    a.rs,
                    a.cs,
                    b.ptr(),
                    b.rs,
                    b.cs,
                    self.beta,
                    c_ptr,
                    c.rs,
                    c.cs,
                )
                .expect("available path"),
                None => sgemm(
                    self.m,
                    self.k,
                    self.n,
                    self.alpha,
                    a.ptr(),
                    a.rs,
                    a.cs,
                    b.ptr(),
                    b.rs,
                    b.cs,
                    self.beta,
                    c_ptr,
                    c.rs,
                    c.cs,
                ),
            }
        }
        c.buf
    }

    /// `alpha·A·B + beta·C` in f64, `beta·C` left out when `beta == 0`.
    fn reference(&self) -> Reference {
        let product = gemm_naive(self.m, self.k, self.n, |i, l| self.a.at(i, l), |l, j| self.b.at(l, j));
        let (alpha, beta) = (f64::from(self.alpha), f64::from(self.beta));
        let mut reference = Reference { value: Vec::new(), magnitude: Vec::new() };
        for i in 0..self.m {
            for j in 0..self.n {
                let idx = i * self.n + j;
                let cterm = if self.beta == 0.0 { 0.0 } else { beta * f64::from(self.c.at(i, j)) };
                reference.value.push(alpha * product.value[idx] + cterm);
                reference.magnitude.push(alpha.abs() * product.magnitude[idx] + cterm.abs());
            }
        }
        reference
    }

    /// C's elements of a result buffer, row-major, and a map of which
    /// buffer positions are C.
    fn split(&self, buf: &[f32]) -> (Vec<f32>, Vec<bool>) {
        let mut in_c = vec![false; buf.len()];
        let mut c = Vec::with_capacity(self.m * self.n);
        for i in 0..self.m {
            for j in 0..self.n {
                let idx = self.c.index(i, j);
                in_c[idx] = true;
                c.push(buf[idx]);
            }
        }
        (c, in_c)
    }

    fn check(&self) {
        trace(&(self.m, self.k, self.n, self.alpha, self.beta, &self.a, &self.b, &self.c));
        let inputs_tame = all_tame(&self.a.buf)
            && all_tame(&self.b.buf)
            && (self.beta == 0.0 || all_tame(&self.c.buf))
            && all_tame(&[self.alpha, self.beta])
            // alpha multiplies a rounded sum: an infinite alpha turns an f32
            // sum that cancelled to 0 into NaN where the f64 sum gives inf.
            && !self.alpha.is_infinite();
        let reference = inputs_tame.then(|| self.reference());
        let portable = self.run(Some(Isa::Portable));
        let mut runs: Vec<(String, Vec<f32>, bool)> = Isa::available()
            .into_iter()
            .map(|isa| (isa.name().to_string(), self.run(Some(isa)), isa != Isa::PortableUnfused))
            .collect();
        runs.push(("sgemm (detected)".to_string(), self.run(None), Isa::detect() != Isa::PortableUnfused));
        for (name, got, exact) in &runs {
            let what = format!("{name} m={} k={} n={} alpha={} beta={}", self.m, self.k, self.n, self.alpha, self.beta);
            let (c, in_c) = self.split(got);
            for (idx, (g, orig)) in got.iter().zip(&self.c.buf).enumerate() {
                assert!(in_c[idx] || g.to_bits() == orig.to_bits(), "{what}: wrote outside C at buffer index {idx}");
            }
            if let Some(reference) = &reference {
                assert_close(&what, reference, &c, self.k);
            }
            if *exact {
                assert_eq!(canonical_bits(got), canonical_bits(&portable), "{what}: differs from portable");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    if let Ok(Some(problem)) = Problem::arbitrary(&mut u) {
        problem.check();
    }
});
