//! The kernel tester: one battery run against every kernel the CPU has,
//! comparing bits with `portable_4x8` (the oracle), which is itself checked
//! against the f64 product. Small enough for Miri.
use super::portable::PORTABLE;
use super::*;
use crate::gemm::dispatch::{WithKernel, dispatch};
use crate::isa::Isa;

/// Deterministic values with mixed signs and magnitudes.
fn values(len: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

/// The largest tile side the battery covers (every kernel's MR and NR,
/// and the widest in-place tile).
/// (Under Miri, which runs only the portable kernels, 32: their tiles
/// and in-place widths are at most 8.)
const D: usize = if cfg!(miri) { 32 } else { 128 };

/// `all`, or under Miri (slow) its first and last entries.
fn few<T: Copy>(all: &[T]) -> Vec<T> {
    if cfg!(miri) { vec![all[0], all[all.len() - 1]] } else { all.to_vec() }
}

/// Runs a kernel on one tile case; returns C (with a guard border) after the call.
struct Case {
    kc: usize,
    rows: usize,
    cols: usize,
    /// C's column stride; 0 means column-major (row stride 1, column
    /// stride `D + 3`).
    col_stride: usize,
    spec_store: Store,
    beta: f32,
    bias: Bias,
    act: Activation,
}

/// Which bias a case adds, if any.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Bias {
    None,
    /// One value per row of C.
    Rows,
    /// One value per column (`StoreSpec::bias_cols`).
    Cols,
}

/// `(rsc, csc)` of C, and its length with a guard border.
fn c_layout(case: &Case) -> (usize, usize, usize) {
    if case.col_stride == 0 {
        (1, D + 3, (D + 3) * (D + 2))
    } else {
        let rsc = D * case.col_stride + 3;
        (rsc, case.col_stride, rsc * (D + 2))
    }
}

/// How a kernel gets its operands in [`compute`].
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// `run` on packed panels.
    Packed,
    /// `run_b_rows`: B's rows in place (row stride `D`), tiles `B_ROWS_NR` wide.
    BRows,
    /// `run_a_taps` with this pixel step: A's column k at `tap(k)` of
    /// a larger buffer, its rows `step` floats apart.
    ATaps(usize),
    /// The same in tiles of `A_TAPS_WIDE` columns, B packed in panels of
    /// `NR` one after another.
    ATapsWide(usize),
    /// `run_b_taps`: B's row k at `tap(k)` of a larger buffer, tiles
    /// `B_ROWS_NR` wide.
    BTaps,
}

/// Column k of A in `Mode::ATaps(step)`: irregular offsets, room for
/// `mr` rows `step` apart between them.
fn tap(k: usize, mr: usize, step: usize) -> usize {
    (mr * step + 3) * k + k % 3
}

/// Computes the `rows × cols` tile of `case` with `K`, in as many
/// kernel calls as `K`'s tile needs, into a C buffer with a guard border
/// (returned whole, so writes outside the tile show up), taking the
/// operands as `mode` says.
fn compute<K: MicroKernel>(kern: K, case: &Case, mode: Mode) -> Vec<f32> {
    let nr = match mode {
        Mode::BRows | Mode::BTaps => K::B_ROWS_NR,
        Mode::ATapsWide(_) => K::A_TAPS_WIDE,
        _ => K::NR,
    };
    // A tile of few columns may be taller than MR: packed, from several A
    // panels; reading A in place, with unit column stride.
    let tall = mode == Mode::Packed || (matches!(mode, Mode::ATaps(_) | Mode::ATapsWide(_)) && case.col_stride == 1);
    let mr = if tall { K::a_taps_rows(case.cols.min(nr)) } else { K::MR };
    let a_full = values(case.kc * D, 1); // element (i, k) at k·D + i
    let b_full = values(case.kc * D, 2); // element (k, j) at k·D + j
    let bias = values(D, 3);
    let (rsc, csc, len) = c_layout(case);
    let mut c = values(len, 4);
    let step = if let Mode::ATaps(step) | Mode::ATapsWide(step) = mode { step } else { 1 };
    let taps: Vec<usize> = (0..case.kc).map(|k| tap(k, mr, step)).collect();
    // B's rows at irregular offsets, D floats of room each.
    let b_taps: Vec<usize> = (0..case.kc).map(|k| tap(k, D, 1)).collect();
    let mut b_far = values(tap(case.kc, D, 1), 6);
    for (k, &at) in b_taps.iter().enumerate() {
        b_far[at..at + D].copy_from_slice(&b_full[k * D..(k + 1) * D]);
    }
    for i0 in (0..case.rows).step_by(mr) {
        for j0 in (0..case.cols).step_by(nr) {
            let (rows, cols) = (mr.min(case.rows - i0), nr.min(case.cols - j0));
            let mut a = vec![0.0f32; case.kc * mr];
            let mut a_far = values(tap(case.kc, mr, step), 5);
            // Panels of NR columns, each kc × NR (two for a wide tile).
            let mut b = vec![0.0f32; case.kc * nr.next_multiple_of(K::NR)];
            for k in 0..case.kc {
                for i in 0..rows {
                    // Panels of MR rows, each kc × MR (one for MR rows).
                    a[(i / K::MR) * case.kc * K::MR + k * K::MR + i % K::MR] = a_full[k * D + i0 + i];
                    a_far[taps[k] + i * step] = a_full[k * D + i0 + i];
                }
                for j in 0..cols {
                    b[(j / K::NR) * case.kc * K::NR + k * K::NR + j % K::NR] = b_full[k * D + j0 + j];
                }
            }
            let out = TileOut {
                // SAFETY: offset D + 4 leaves a guard border; the
                // whole rows × cols tile (≤ D × D) fits inside `c`.
                c: unsafe { c.as_mut_ptr().add(D + 4 + i0 * rsc + j0 * csc) },
                rsc: rsc as isize,
                csc: csc as isize,
                rows,
                cols,
            };
            let spec = StoreSpec {
                alpha: 1.5,
                beta: case.beta,
                store: case.spec_store,
                bias: match case.bias {
                    Bias::None => std::ptr::null(),
                    Bias::Rows => bias[i0..].as_ptr(),
                    Bias::Cols => bias[j0..].as_ptr(),
                },
                bias_cols: case.bias == Bias::Cols,
                act: case.act,
            };
            // SAFETY: panels hold kc·MR and kc·NR floats; kc rows of D
            // floats at b_full, columns j0 .. j0 + cols <= D; MR floats
            // `step` apart at every a_far + taps[k]; the tile lies in `c`.
            unsafe {
                match mode {
                    Mode::Packed => kern.run(case.kc, a.as_ptr(), b.as_ptr(), &out, &spec),
                    Mode::BRows => {
                        let b_rows = b_full.as_ptr().wrapping_add(j0);
                        kern.run_b_rows(case.kc, a.as_ptr(), b_rows, D as isize, &out, &spec)
                    }
                    Mode::ATaps(step) | Mode::ATapsWide(step) => {
                        kern.run_a_taps(case.kc, a_far.as_ptr(), step, taps.as_ptr(), b.as_ptr(), &out, &spec)
                    }
                    Mode::BTaps => {
                        let b_at = b_far.as_ptr().wrapping_add(j0);
                        kern.run_b_taps(case.kc, a.as_ptr(), b_at, b_taps.as_ptr(), &out, &spec)
                    }
                }
            };
        }
    }
    c
}

fn run<K: MicroKernel>(kern: K, case: &Case) -> Vec<f32> {
    compute(kern, case, Mode::Packed)
}

fn cases(mr: usize, nr: usize) -> Vec<Case> {
    let mut out = Vec::new();
    for &kc in &[0, 1, 2, 3, 7, 16, 33] {
        let half = nr / 2;
        for &(rows, cols) in
            &[(mr, nr), (1, 1), (mr - 1, nr), (mr, nr - 1), (2, 3), (mr, half), (mr - 1, half + 1), (mr, half - 1)]
                .into_iter()
                // Taller than one tile: a narrow kernel tile may span panels.
                .chain([(2 * mr, half - 1), (2 * mr - 3, 1), (2 * mr, nr)])
                // Full height, the last vector at most half full (AVX-512's
                // 256-bit FMAs for 17 to 24 columns).
                .chain([(mr, half + 1), (mr, half + half / 2)])
                .collect::<Vec<_>>()
        {
            for (store, beta) in [(Store::Overwrite, 0.0), (Store::Update, 0.75), (Store::Update, 1.0)] {
                for (col_stride, bias, act) in [
                    (1, Bias::None, Activation::None),
                    (2, Bias::Rows, Activation::Relu),
                    (0, Bias::Rows, Activation::Relu),
                    (1, Bias::Rows, Activation::Clamp { min: -0.5, max: 0.25 }),
                    (1, Bias::Cols, Activation::Relu),
                    (2, Bias::Cols, Activation::None),
                    (0, Bias::Cols, Activation::Clamp { min: -0.5, max: 0.25 }),
                ] {
                    out.push(Case { kc, rows, cols, col_stride, spec_store: store, beta, bias, act });
                }
            }
        }
    }
    out
}

struct Battery;
impl WithKernel for Battery {
    type Output = usize;
    fn run<K: MicroKernel>(self, kern: K) -> usize {
        let all = cases(K::MR, K::NR);
        for case in &all {
            assert_eq!(
                bits(&run(kern, case)),
                bits(&run(PORTABLE, case)),
                "{} differs from portable_4x8 at kc={} rows={} cols={} store={:?} act={:?}",
                K::NAME,
                case.kc,
                case.rows,
                case.cols,
                case.spec_store,
                case.act
            );
        }
        all.len()
    }
}

/// A kernel's in-place reads (`mode`) against its own `run` on packed
/// panels (which the battery above holds to the portable kernel's bits).
struct InPlaceBattery(Mode);
impl WithKernel for InPlaceBattery {
    type Output = usize;
    fn run<K: MicroKernel>(self, kern: K) -> usize {
        let mut n = 0;
        for kc in few(&[0, 1, 3, 7, 33]) {
            let tall = K::a_taps_rows(1);
            for rows in few(&[1, 2, 3, 4, K::MR - 1, K::MR, tall - 3, tall]) {
                for cols in few(&[1, 15, 16, 17, 31, 33, 48, 64, 100, 127, 128]).into_iter().filter(|&c| c <= D) {
                    for (store, beta, col_stride, bias, act) in [
                        (Store::Overwrite, 0.0, 1, Bias::None, Activation::None),
                        (Store::Update, 0.75, 2, Bias::Rows, Activation::Relu),
                        (Store::Update, 0.5, 0, Bias::Rows, Activation::None),
                        (Store::Update, 1.0, 1, Bias::Rows, Activation::Clamp { min: -0.5, max: 0.25 }),
                        (Store::Overwrite, 0.0, 1, Bias::Cols, Activation::Relu),
                        (Store::Update, 1.0, 0, Bias::Cols, Activation::None),
                    ] {
                        let case = Case { kc, rows, cols, col_stride, spec_store: store, beta, bias, act };
                        let (got, want) = (bits(&compute(kern, &case, self.0)), bits(&run(kern, &case)));
                        assert!(
                            got == want,
                            "{} {:?} differs from its run on packed panels at kc={kc} rows={rows} \
                             cols={cols} store={store:?} col_stride={col_stride}, first at index {:?}",
                            K::NAME,
                            self.0,
                            got.iter().zip(&want).position(|(g, w)| g != w),
                        );
                        n += 1;
                    }
                }
            }
        }
        n
    }
}

#[test]
fn every_kernel_reading_in_place_matches_its_packed_bits() {
    // Steps 1, 2 and 4 are read in place by the AVX-512 kernel, 3 is gathered.
    let all = [
        Mode::BRows,
        Mode::BTaps,
        Mode::ATaps(1),
        Mode::ATaps(2),
        Mode::ATaps(3),
        Mode::ATaps(4),
        Mode::ATapsWide(1),
        Mode::ATapsWide(3),
    ];
    // Under Miri (the portable kernels only, ~30 s a mode each) one kernel
    // and one step of A: the other steps and the unfused kernel run the
    // same default methods, whose gather reads at any step.
    let on_miri = [Mode::BRows, Mode::BTaps, Mode::ATaps(3)];
    let (modes, isas) = if cfg!(miri) { (&on_miri[..], &[Isa::Portable][..]) } else { (&all[..], &Isa::ALL[..]) };
    for &mode in modes {
        for &isa in isas {
            match dispatch(isa, InPlaceBattery(mode)) {
                Ok(n) => assert!(n > 0),
                Err(_) => isa.skip_unless_required(),
            }
        }
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn every_available_kernel_matches_portable_bits() {
    for isa in [Isa::Avx2Fma, Isa::Avx512, Isa::Neon] {
        match dispatch(isa, Battery) {
            Ok(n) => assert!(n > 0),
            Err(_) => isa.skip_unless_required(),
        }
    }
}

#[test]
fn portable_kernel_matches_f64_product() {
    let bias = values(D, 3);
    for (bias_of, store) in
        [(Bias::None, Store::Overwrite), (Bias::Rows, Store::Overwrite), (Bias::Cols, Store::Update)]
    {
        let case = Case {
            kc: 33,
            rows: 4,
            cols: 8,
            col_stride: 1,
            spec_store: store,
            beta: 0.75,
            bias: bias_of,
            act: Activation::None,
        };
        let c = run(PORTABLE, &case);
        let (a, b) = (values(33 * D, 1), values(33 * D, 2));
        let rsc = D + 3;
        let c0 = values(rsc * (D + 2), 4);
        assert_eq!(c[..rsc + 1], c0[..rsc + 1], "guard row overwritten");
        for i in 0..4 {
            for j in 0..8 {
                let at = rsc + 1 + i * rsc + j;
                let mut want = (0..33).map(|k| a[k * D + i] as f64 * b[k * D + j] as f64).sum::<f64>() * 1.5;
                if store == Store::Update {
                    want += 0.75 * c0[at] as f64;
                }
                want += match bias_of {
                    Bias::None => 0.0,
                    Bias::Rows => bias[i] as f64,
                    Bias::Cols => bias[j] as f64,
                };
                let got = c[at] as f64;
                assert!((want - got).abs() < 1e-5, "{bias_of:?} ({i},{j}): {got} vs {want}");
            }
        }
    }
}
