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

/// Tiles transformed at once, one per lane.
pub(crate) const LANES: usize = 16;

/// One value for each of [`LANES`] tiles.
pub(crate) type Lanes16 = [f32; LANES];

/// A tile size of F(m×m, 3×3). The matrices sit in the top-left corner of
/// 8×8 arrays (the largest `alpha`); only `alpha` rows and columns are read.
pub(crate) trait Tile: Copy + Send + Sync + 'static {
    /// Output pixels a side.
    const M: usize;
    /// Input pixels a side, `M + 2`.
    const ALPHA: usize;
    /// `Bᵀ`, `alpha × alpha`.
    const BT: [[f32; 8]; 8];
    /// `Aᵀ`, `M × alpha`.
    const AT: [[f32; 8]; 6];
    /// `G`, `alpha × 3`.
    const G: [[f64; 3]; 8];
    /// How kernel names spell it, e.g. `"f4x4"`.
    const NAME: &'static str;
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

const Z8: [f32; 8] = [0.0; 8];

/// Pads a row of `N` coefficients to 8.
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
    const NAME: &'static str = "f2x2";
}

impl Tile for F4 {
    const M: usize = 4;
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
    const NAME: &'static str = "f4x4";
}

impl Tile for F6 {
    const M: usize = 6;
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
    const NAME: &'static str = "f6x6";
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

/// `Σ_i coef[i]·x(i)` over the `n` coefficients that are not zero, in
/// increasing `i`, on every lane: a product by ±1 is the exact ±x, every
/// other product is rounded before it is added. Coefficients are
/// constants, so after inlining the tests on them vanish; where they do
/// not, they still decide the same way on every path.
#[inline(always)]
fn combine(coef: &[f32; 8], n: usize, x: impl Fn(usize) -> Lanes16) -> Lanes16 {
    let mut acc = [0.0f32; LANES];
    let mut first = true;
    for (i, &c) in coef.iter().enumerate().take(n) {
        if c == 0.0 {
            continue;
        }
        let xi = x(i);
        for l in 0..LANES {
            let term = if c == 1.0 {
                xi[l]
            } else if c == -1.0 {
                -xi[l]
            } else {
                c * xi[l]
            };
            acc[l] = if first { term } else { acc[l] + term };
        }
        first = false;
    }
    acc
}

/// `V = Bᵀ·d·B` for [`LANES`] tiles: `d[r·alpha + c]` is input row `r`,
/// column `c` of each tile, `v[i·alpha + j]` receives element `(i, j)`.
#[inline(always)]
pub(crate) fn input<T: Tile>(d: &[Lanes16; 64], v: &mut [Lanes16; 64]) {
    let a = T::ALPHA;
    // Along each row: t[r][j] = Σ_c Bᵀ[j][c]·d[r][c].
    let mut t = [[0.0f32; LANES]; 64];
    for r in 0..a {
        for j in 0..a {
            t[r * a + j] = combine(&T::BT[j], a, |c| d[r * a + c]);
        }
    }
    // Down each column: v[i][j] = Σ_r Bᵀ[i][r]·t[r][j].
    for i in 0..a {
        for j in 0..a {
            v[i * a + j] = combine(&T::BT[i], a, |r| t[r * a + j]);
        }
    }
}

/// `Y = Aᵀ·M·A` for [`LANES`] tiles: `mm[i·alpha + j]` is element `(i, j)`
/// of each tile's sums, `y[r·m + c]` receives output row `r`, column `c`.
#[inline(always)]
pub(crate) fn output<T: Tile>(mm: &[Lanes16; 64], y: &mut [Lanes16; 36]) {
    let (a, m) = (T::ALPHA, T::M);
    // Along each row: s[i][c] = Σ_j Aᵀ[c][j]·mm[i][j].
    let mut s = [[0.0f32; LANES]; 48];
    for i in 0..a {
        for c in 0..m {
            s[i * m + c] = combine(&T::AT[c], a, |j| mm[i * a + j]);
        }
    }
    // Down each column: y[r][c] = Σ_i Aᵀ[r][i]·s[i][c].
    for r in 0..m {
        for c in 0..m {
            y[r * m + c] = combine(&T::AT[r], a, |i| s[i * m + c]);
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
            let g: Vec<f64> = (0..3).map(|i| val(i)).collect();
            let d: Vec<f64> = (0..a).map(|i| val(i as u32 + 3)).collect();
            let u: Vec<f64> = (0..a).map(|j| (0..3).map(|k| T::G[j][k] * g[k]).sum()).collect();
            let v: Vec<f64> = (0..a).map(|j| (0..a).map(|i| f64::from(T::BT[j][i]) * d[i]).sum()).collect();
            for i in 0..T::M {
                let y: f64 = (0..a).map(|j| f64::from(T::AT[i][j]) * u[j] * v[j]).sum();
                let want: f64 = (0..3).map(|k| g[k] * d[i + k]).sum();
                assert!((y - want).abs() <= 1e-9 * (1.0 + want.abs()), "{} row {i}: {y} vs {want}", T::NAME);
            }
        }
    }

    #[test]
    fn one_dimensional_identities() {
        identity::<F2>();
        identity::<F4>();
        identity::<F6>();
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
            dl[i] = [*x; LANES];
        }
        let mut v = [[0.0f32; LANES]; 64];
        input::<T>(&dl, &mut v);
        let mut mm = [[0.0f32; LANES]; 64];
        for i in 0..a * a {
            for l in 0..LANES {
                mm[i][l] = u[i] * v[i][l];
            }
        }
        let mut y = [[0.0f32; LANES]; 36];
        output::<T>(&mm, &mut y);
        for r in 0..m {
            for c in 0..m {
                let want: f64 = (0..9).map(|t| f64::from(g[t]) * f64::from(d[(r + t / 3) * a + c + t % 3])).sum();
                let scale: f64 =
                    (0..9).map(|t| (f64::from(g[t]) * f64::from(d[(r + t / 3) * a + c + t % 3])).abs()).sum();
                for l in 0..LANES {
                    let got = f64::from(y[r * m + c][l]);
                    assert!((got - want).abs() <= 1e-5 * scale.max(1e-3), "{} ({r}, {c}): {got} vs {want}", T::NAME);
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
