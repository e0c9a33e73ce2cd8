//! The three transforms of Winograd's minimal filtering F(m×m, 3×3), for
//! the tile sizes m = 2, 4, 6 (`alpha = m + 2` input pixels a side):
//!
//! - filters: `U = G·g·Gᵀ` (`alpha × alpha` from each 3×3 kernel), in `f64`
//!   and rounded once, when a plan is built;
//! - input tiles: `V = Bᵀ·d·B` (`alpha × alpha` from each tile of input);
//! - output tiles: `Y = Aᵀ·M·A` (`m × m` from the `alpha × alpha` sums).
//!
//! The matrices come from the Cook–Toom construction on the points
//! 0, ±1, ±2, ±½ and ∞ (F(2): 0, ±1; F(4): 0, ±1, ±2), with the
//! Lagrange denominators moved into G so that Bᵀ and Aᵀ hold small dyadic
//! numbers, exact in `f32`. The tests re-derive each identity against a
//! direct correlation in `f64`.
//!
//! The input and output transforms work on [`LANES`] tiles at once, one
//! tile per lane, in plain `f32` multiplies and adds (never fused) in a
//! fixed order: the compiler vectorises them inside each path's target
//! features (one AVX-512 register, two AVX2 or four NEON ones) without
//! changing an operation, so every path gives the same bits.

// The transforms index lanes, rows and columns by number on purpose: the
// lane loops innermost with scalar bodies is the shape the compiler
// vectorises, and the iterator forms clippy suggests hide it.
#![allow(clippy::needless_range_loop)]

/// Tiles transformed at once, one per lane.
pub(crate) const LANES: usize = 16;

/// Values of up to 8×8 positions for [`LANES`] tiles: `[r·8 + c][lane]`.
pub(crate) type Block64 = [[f32; LANES]; 64];

/// Values of up to 6×6 output positions for [`LANES`] tiles: `[r·6 + c][lane]`.
pub(crate) type Block36 = [[f32; LANES]; 36];

/// A tile size of F(m×m, 3×3). The matrices sit in the top-left corner of
/// 8×8 arrays (the largest `alpha`); only `alpha` rows and columns are read.
/// `BT` and `AT` are what the tests check [`Tile::input_1d`] and
/// [`Tile::output_1d`] against: those apply them in straight-line code
/// with shared partial sums, in a fixed order.
pub(crate) trait Tile: Copy + Send + Sync + 'static {
    /// Output pixels a side.
    const M: usize;
    /// Input pixels a side, `M + 2`.
    const ALPHA: usize;
    /// Its name outside the transforms.
    const SIZE: super::TileSize;
    /// `Bᵀ`, `alpha × alpha`.
    #[cfg_attr(not(test), allow(dead_code))]
    const BT: [[f32; 8]; 8];
    /// `Aᵀ`, `M × alpha`.
    #[cfg_attr(not(test), allow(dead_code))]
    const AT: [[f32; 8]; 6];
    /// `G`, `alpha × 3`.
    const G: [[f64; 3]; 8];
    /// `Bᵀ·x` for the first `alpha` entries of `x`.
    fn input_1d(x: [f32; 8]) -> [f32; 8];
    /// `Aᵀ·x` (`M` entries) for the first `alpha` entries of `x`.
    fn output_1d(x: [f32; 8]) -> [f32; 6];
}

/// F(2×2, 3×3): 16 products for 4 outputs (44 % of the direct sum's).
#[derive(Clone, Copy, Debug)]
pub(crate) struct F2;

/// F(4×4, 3×3): 36 products for 16 outputs (25 %).
#[derive(Clone, Copy, Debug)]
pub(crate) struct F4;

/// F(6×6, 3×3): 64 products for 36 outputs (20 %).
#[derive(Clone, Copy, Debug)]
pub(crate) struct F6;

#[cfg_attr(not(test), allow(dead_code))]
const Z8: [f32; 8] = [0.0; 8];

/// Pads a row of `N` coefficients to 8.
#[cfg_attr(not(test), allow(dead_code))]
const fn row<const N: usize>(r: [f32; N]) -> [f32; 8] {
    let mut out = [0.0; 8];
    let mut i = 0;
    while i < N {
        out[i] = r[i];
        i += 1;
    }
    out
}

impl Tile for F2 {
    const M: usize = 2;
    const SIZE: super::TileSize = super::TileSize::F2;
    const ALPHA: usize = 4;
    const BT: [[f32; 8]; 8] = [
        row([1.0, 0.0, -1.0, 0.0]),
        row([0.0, 1.0, 1.0, 0.0]),
        row([0.0, -1.0, 1.0, 0.0]),
        row([0.0, -1.0, 0.0, 1.0]),
        Z8,
        Z8,
        Z8,
        Z8,
    ];
    const AT: [[f32; 8]; 6] = [row([1.0, 1.0, 1.0, 0.0]), row([0.0, 1.0, -1.0, 1.0]), Z8, Z8, Z8, Z8];
    const G: [[f64; 3]; 8] =
        [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0], [0.0; 3], [0.0; 3], [0.0; 3], [0.0; 3]];

    #[inline(always)]
    fn input_1d(d: [f32; 8]) -> [f32; 8] {
        let z = 0.0;
        [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[3] - d[1], z, z, z, z]
    }

    #[inline(always)]
    fn output_1d(m: [f32; 8]) -> [f32; 6] {
        let z = 0.0;
        [m[0] + m[1] + m[2], m[1] - m[2] + m[3], z, z, z, z]
    }
}

impl Tile for F4 {
    const M: usize = 4;
    const SIZE: super::TileSize = super::TileSize::F4;
    const ALPHA: usize = 6;
    const BT: [[f32; 8]; 8] = [
        row([4.0, 0.0, -5.0, 0.0, 1.0, 0.0]),
        row([0.0, -4.0, -4.0, 1.0, 1.0, 0.0]),
        row([0.0, 4.0, -4.0, -1.0, 1.0, 0.0]),
        row([0.0, -2.0, -1.0, 2.0, 1.0, 0.0]),
        row([0.0, 2.0, -1.0, -2.0, 1.0, 0.0]),
        row([0.0, 4.0, 0.0, -5.0, 0.0, 1.0]),
        Z8,
        Z8,
    ];
    const AT: [[f32; 8]; 6] = [
        row([1.0, 1.0, 1.0, 1.0, 1.0, 0.0]),
        row([0.0, 1.0, -1.0, 2.0, -2.0, 0.0]),
        row([0.0, 1.0, 1.0, 4.0, 4.0, 0.0]),
        row([0.0, 1.0, -1.0, 8.0, -8.0, 1.0]),
        Z8,
        Z8,
    ];
    const G: [[f64; 3]; 8] = [
        [1.0 / 4.0, 0.0, 0.0],
        [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
        [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
        [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
        [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
        [0.0, 0.0, 1.0],
        [0.0; 3],
        [0.0; 3],
    ];

    #[inline(always)]
    fn input_1d(d: [f32; 8]) -> [f32; 8] {
        let (t0, t1) = (d[4] - 4.0 * d[2], d[3] - 4.0 * d[1]);
        let (t2, t3) = (d[4] - d[2], 2.0 * (d[3] - d[1]));
        let z = 0.0;
        [4.0 * d[0] - 5.0 * d[2] + d[4], t0 + t1, t0 - t1, t2 + t3, t2 - t3, 4.0 * d[1] - 5.0 * d[3] + d[5], z, z]
    }

    #[inline(always)]
    fn output_1d(m: [f32; 8]) -> [f32; 6] {
        let (s12, d12) = (m[1] + m[2], m[1] - m[2]);
        let (s34, d34) = (m[3] + m[4], m[3] - m[4]);
        let z = 0.0;
        [m[0] + s12 + s34, d12 + 2.0 * d34, s12 + 4.0 * s34, d12 + 8.0 * d34 + m[5], z, z]
    }
}

impl Tile for F6 {
    const M: usize = 6;
    const SIZE: super::TileSize = super::TileSize::F6;
    const ALPHA: usize = 8;
    const BT: [[f32; 8]; 8] = [
        [1.0, 0.0, -5.25, 0.0, 5.25, 0.0, -1.0, 0.0],
        [0.0, 1.0, 1.0, -4.25, -4.25, 1.0, 1.0, 0.0],
        [0.0, -1.0, 1.0, 4.25, -4.25, -1.0, 1.0, 0.0],
        [0.0, 0.5, 0.25, -2.5, -1.25, 2.0, 1.0, 0.0],
        [0.0, -0.5, 0.25, 2.5, -1.25, -2.0, 1.0, 0.0],
        [0.0, 2.0, 4.0, -2.5, -5.0, 0.5, 1.0, 0.0],
        [0.0, -2.0, 4.0, 2.5, -5.0, -0.5, 1.0, 0.0],
        [0.0, -1.0, 0.0, 5.25, 0.0, -5.25, 0.0, 1.0],
    ];
    const AT: [[f32; 8]; 6] = [
        [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
        [0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 0.0],
        [0.0, 1.0, 1.0, 4.0, 4.0, 0.25, 0.25, 0.0],
        [0.0, 1.0, -1.0, 8.0, -8.0, 0.125, -0.125, 0.0],
        [0.0, 1.0, 1.0, 16.0, 16.0, 0.0625, 0.0625, 0.0],
        [0.0, 1.0, -1.0, 32.0, -32.0, 0.03125, -0.03125, 1.0],
    ];
    const G: [[f64; 3]; 8] = [
        [1.0, 0.0, 0.0],
        [-2.0 / 9.0, -2.0 / 9.0, -2.0 / 9.0],
        [-2.0 / 9.0, 2.0 / 9.0, -2.0 / 9.0],
        [1.0 / 90.0, 1.0 / 45.0, 2.0 / 45.0],
        [1.0 / 90.0, -1.0 / 45.0, 2.0 / 45.0],
        [32.0 / 45.0, 16.0 / 45.0, 8.0 / 45.0],
        [32.0 / 45.0, -16.0 / 45.0, 8.0 / 45.0],
        [0.0, 0.0, 1.0],
    ];

    #[inline(always)]
    fn input_1d(d: [f32; 8]) -> [f32; 8] {
        let (e1, o1) = (d[2] + d[6] - 4.25 * d[4], d[1] + d[5] - 4.25 * d[3]);
        let (e3, o3) = (0.25 * d[2] - 1.25 * d[4] + d[6], 0.5 * d[1] - 2.5 * d[3] + 2.0 * d[5]);
        let (e5, o5) = (4.0 * d[2] - 5.0 * d[4] + d[6], 2.0 * d[1] - 2.5 * d[3] + 0.5 * d[5]);
        [
            d[0] - d[6] + 5.25 * (d[4] - d[2]),
            e1 + o1,
            e1 - o1,
            e3 + o3,
            e3 - o3,
            e5 + o5,
            e5 - o5,
            d[7] - d[1] + 5.25 * (d[3] - d[5]),
        ]
    }

    #[inline(always)]
    fn output_1d(m: [f32; 8]) -> [f32; 6] {
        let (a, b) = (m[1] + m[2], m[1] - m[2]);
        let (c, d) = (m[3] + m[4], m[3] - m[4]);
        let (e, f) = (m[5] + m[6], m[5] - m[6]);
        [
            m[0] + a + c + e,
            b + 2.0 * d + 0.5 * f,
            a + 4.0 * c + 0.25 * e,
            b + 8.0 * d + 0.125 * f,
            a + 16.0 * c + 0.0625 * e,
            b + 32.0 * d + 0.03125 * f + m[7],
        ]
    }
}

/// `U = G·g·Gᵀ` for one 3×3 kernel `g` (row-major), in `f64`, each
/// element rounded once to `f32`: `u[i·alpha + j]`.
pub(crate) fn filter<T: Tile>(g: &[f32], u: &mut [f32]) {
    let a = T::ALPHA;
    // t = G·g: alpha × 3.
    let mut t = [[0.0f64; 3]; 8];
    for (i, ti) in t.iter_mut().enumerate().take(a) {
        for (col, tij) in ti.iter_mut().enumerate() {
            *tij = (0..3).map(|r| T::G[i][r] * f64::from(g[r * 3 + col])).sum();
        }
    }
    for i in 0..a {
        for j in 0..a {
            let v: f64 = (0..3).map(|col| t[i][col] * T::G[j][col]).sum();
            u[i * a + j] = v as f32;
        }
    }
}

/// `V = Bᵀ·d·B` for [`LANES`] tiles: `d[r·8 + c]` is input row `r`, column
/// `c` of each tile; element `(i, j)` goes to `v[i·8 + j]`. The loops over
/// the lanes are innermost with scalar bodies, the shape the compiler
/// vectorises (one operation per lane, no shuffles).
#[inline(always)]
pub(crate) fn input<T: Tile>(d: &Block64, v: &mut Block64) {
    let a = T::ALPHA;
    // Along each row: t[r][j] = (d·B)[r][j].
    let mut t = [[0.0f32; LANES]; 64];
    for r in 0..a {
        for l in 0..LANES {
            let y = T::input_1d(std::array::from_fn(|c| d[r * 8 + c][l]));
            for j in 0..a {
                t[r * 8 + j][l] = y[j];
            }
        }
    }
    // Down each column: v[i][j] = (Bᵀ·t)[i][j].
    for j in 0..a {
        for l in 0..LANES {
            let y = T::input_1d(std::array::from_fn(|r| t[r * 8 + j][l]));
            for i in 0..a {
                v[i * 8 + j][l] = y[i];
            }
        }
    }
}

/// `Y = Aᵀ·M·A` for [`LANES`] tiles: `mm[i·8 + j]` is element `(i, j)` of
/// each tile's sums; output row `r`, column `c` goes to `y[r·6 + c]`.
#[inline(always)]
pub(crate) fn output<T: Tile>(mm: &Block64, y: &mut Block36) {
    let (a, m) = (T::ALPHA, T::M);
    // Along each row: s[i][c] = (M·A)[i][c].
    let mut s = [[0.0f32; LANES]; 48];
    for i in 0..a {
        for l in 0..LANES {
            let o = T::output_1d(std::array::from_fn(|j| mm[i * 8 + j][l]));
            for c in 0..m {
                s[i * 6 + c][l] = o[c];
            }
        }
    }
    // Down each column: y[r][c] = (Aᵀ·s)[r][c].
    for c in 0..m {
        for l in 0..LANES {
            let o = T::output_1d(std::array::from_fn(|i| if i < a { s[i * 6 + c][l] } else { 0.0 }));
            for r in 0..m {
                y[r * 6 + c][l] = o[r];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 1-D identity behind each tile size, in `f64` from the `f32`
    /// matrices: `Aᵀ·((G·g) ⊙ (Bᵀ·d)) = correlation of d with g`, for a few
    /// integer vectors (exact in binary floating point up to G's rounding).
    fn identity<T: Tile>() {
        let a = T::ALPHA;
        for seed in 0..20u32 {
            let val = |i: u32| f64::from((seed.wrapping_mul(7919).wrapping_add(i * 104_729)) % 19) - 9.0;
            let g: Vec<f64> = (0..3).map(val).collect();
            let d: Vec<f64> = (0..a).map(|i| val(i as u32 + 3)).collect();
            let u: Vec<f64> = (0..a).map(|j| (0..3).map(|k| T::G[j][k] * g[k]).sum()).collect();
            let v: Vec<f64> = (0..a).map(|j| (0..a).map(|i| f64::from(T::BT[j][i]) * d[i]).sum()).collect();
            for i in 0..T::M {
                let y: f64 = (0..a).map(|j| f64::from(T::AT[i][j]) * u[j] * v[j]).sum();
                let want: f64 = (0..3).map(|k| g[k] * d[i + k]).sum();
                assert!((y - want).abs() <= 1e-9 * (1.0 + want.abs()), "F({}) row {i}: {y} vs {want}", T::M);
            }
        }
    }

    #[test]
    fn one_dimensional_identities() {
        identity::<F2>();
        identity::<F4>();
        identity::<F6>();
    }

    /// The straight-line 1-D transforms are the matrices: each unit vector
    /// maps to its column, exactly (the coefficients are dyadic).
    fn formulas<T: Tile>() {
        for i in 0..T::ALPHA {
            let mut x = [0.0f32; 8];
            x[i] = 1.0;
            let v = T::input_1d(x);
            let y = T::output_1d(x);
            for j in 0..T::ALPHA {
                assert_eq!(v[j], T::BT[j][i], "F({}) Bᵀ[{j}][{i}]", T::M);
            }
            for j in 0..T::M {
                assert_eq!(y[j], T::AT[j][i], "F({}) Aᵀ[{j}][{i}]", T::M);
            }
        }
    }

    #[test]
    fn straight_line_transforms_are_the_matrices() {
        formulas::<F2>();
        formulas::<F4>();
        formulas::<F6>();
    }

    /// The 2-D transforms as the code runs them, on one tile in every lane,
    /// against the direct 3×3 correlation in `f64`.
    fn tile<T: Tile>() {
        let (a, m) = (T::ALPHA, T::M);
        let g: Vec<f32> = (0..9).map(|i| ((i * 5 + 3) % 7) as f32 * 0.25 - 0.75).collect();
        let d: Vec<f32> = (0..a * a).map(|i| ((i * 11 + 2) % 13) as f32 * 0.125 - 0.75).collect();
        let mut u = vec![0.0f32; a * a];
        filter::<T>(&g, &mut u);
        let mut dl = [[0.0f32; LANES]; 64];
        for (i, x) in d.iter().enumerate() {
            dl[i / a * 8 + i % a] = [*x; LANES];
        }
        let mut v = [[0.0f32; LANES]; 64];
        input::<T>(&dl, &mut v);
        let mut mm = [[0.0f32; LANES]; 64];
        for i in 0..a * a {
            mm[i / a * 8 + i % a] = v[i / a * 8 + i % a].map(|x| u[i] * x);
        }
        let mut y = [[0.0f32; LANES]; 36];
        output::<T>(&mm, &mut y);
        for r in 0..m {
            for c in 0..m {
                let want: f64 = (0..9).map(|t| f64::from(g[t]) * f64::from(d[(r + t / 3) * a + c + t % 3])).sum();
                let scale: f64 =
                    (0..9).map(|t| (f64::from(g[t]) * f64::from(d[(r + t / 3) * a + c + t % 3])).abs()).sum();
                for l in 0..LANES {
                    let got = f64::from(y[r * 6 + c][l]);
                    assert!((got - want).abs() <= 1e-5 * scale.max(1e-3), "F({}) ({r}, {c}): {got} vs {want}", T::M);
                }
            }
        }
    }

    #[test]
    fn two_dimensional_tiles() {
        tile::<F2>();
        tile::<F4>();
        tile::<F6>();
    }
}
