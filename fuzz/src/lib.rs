//! Shared by the fuzz targets: values that include NaN, infinities and
//! overflow-prone magnitudes, sizes that reach `usize::MAX`, strided matrices
//! in exactly-sized buffers (so AddressSanitizer sees any access past them),
//! and the comparisons every target makes. The oracles are `convgemm::reference`.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub use convgemm::testing::{ALGORITHMS, bits, canonical_bits};

use convgemm::reference::Reference;
use convgemm::{Activation, Algorithm, ConvOptions, ConvParams, Isa, Layout, Precision, Threads};
use libfuzzer_sys::arbitrary::{Result, Unstructured};

/// Both thread settings.
pub const THREADS: [Threads; 2] = [Threads::Pool, Threads::Single];

/// Finite values up to this magnitude are "tame": a sum of a few hundred
/// products of them, times alpha, cannot overflow f32, so an f32 result must
/// be close to the f64 reference. Larger finite values may overflow to an
/// infinity the f64 sum does not have; then only path-against-path checks apply.
pub const TAME: f32 = 1_048_576.0; // 2^20

/// One input value: mostly short dyadic fractions (so no sum of products
/// underflows into subnormals), sometimes powers of two from 2^-20 to 2^20,
/// `±0`, NaN (two payloads), `±inf`, or a huge finite value. All-zero bytes
/// decode to `0.0`.
pub fn value(u: &mut Unstructured) -> Result<f32> {
    let tag: u8 = u.arbitrary()?;
    let raw: i16 = u.arbitrary()?;
    Ok(match tag {
        0..=199 => raw as f32 / 4096.0,
        200..=239 => {
            let e = (raw.rem_euclid(41) - 20) as i32;
            let s = if raw < 0 { -1.0 } else { 1.0 };
            s * 2f32.powi(e)
        }
        240 => -0.0,
        241 | 242 => f32::NAN,
        243 => f32::from_bits(0xffc0_0123), // a negative NaN with a payload
        244 | 245 => f32::INFINITY,
        246 | 247 => f32::NEG_INFINITY,
        248 => f32::MAX,
        249 => -f32::MAX,
        250 => 3.0e37,
        251 => -1.0e30,
        _ => 1.0,
    })
}

/// `len` values: decoded from `u` while it has bytes, then a deterministic
/// pattern in [-1, 1) (so long buffers are not all zeros).
pub fn values(u: &mut Unstructured, len: usize) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(len);
    let mut s: u32 = 0x9e37_79b9;
    for _ in 0..len {
        if u.is_empty() {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            out.push((s >> 12) as f32 / 524_288.0 - 1.0);
        } else {
            out.push(value(u)?);
        }
    }
    Ok(out)
}

/// Whether every value is NaN, infinite, or finite and at most [`TAME`] in magnitude.
pub fn all_tame(v: &[f32]) -> bool {
    v.iter().all(|x| !x.is_finite() || x.abs() <= TAME)
}

/// An activation: none, ReLU, or a clamp with arbitrary bounds (NaN bounds
/// and `min > max` included).
pub fn activation(u: &mut Unstructured) -> Result<Activation> {
    Ok(match u.int_in_range(0u8..=2)? {
        0 => Activation::None,
        1 => Activation::Relu,
        _ => Activation::Clamp { min: value(u)?, max: value(u)? },
    })
}

/// Either activation layout, NCHW or channels-last.
pub fn layout(u: &mut Unstructured) -> Result<Layout> {
    Ok(if u.arbitrary()? { Layout::Nhwc } else { Layout::Nchw })
}

/// Options for hostile calls: any ISA (available or not), any algorithm
/// (Winograd included, on any kernel), any activation, thread setting and
/// precision.
pub fn any_options(u: &mut Unstructured) -> Result<ConvOptions> {
    let algorithm = if u.ratio(1, 6)? { Algorithm::Winograd } else { *u.choose(&ALGORITHMS)? };
    Ok(ConvOptions {
        isa: any_isa(u)?,
        algorithm,
        activation: activation(u)?,
        threads: *u.choose(&THREADS)?,
        precision: if u.arbitrary()? { Precision::Relaxed } else { Precision::Exact },
    })
}

/// Whether Winograd computes a convolution with these weights and
/// parameters (3×3 kernels, stride 1, dilation 1): where it does not, a
/// forced `Algorithm::Winograd` is an error.
pub fn winograd_applies(weight_shape: [usize; 4], params: &ConvParams) -> bool {
    weight_shape[2] == 3 && weight_shape[3] == 3 && params.stride == [1, 1] && params.dilation == [1, 1]
}

/// Whether `options` may round differently from the exact paths (Winograd
/// forced, or left to `Auto` under `Precision::Relaxed`).
pub fn may_relax(options: &ConvOptions) -> bool {
    options.algorithm == Algorithm::Winograd || options.precision == Precision::Relaxed
}

/// One of every [`Isa`], available here or not.
pub fn any_isa(u: &mut Unstructured) -> Result<Isa> {
    u.choose(&Isa::ALL).copied()
}

/// A size for hostile calls: mostly small, sometimes near a power of two,
/// `isize::MAX` or `usize::MAX`, sometimes anything.
pub fn hostile_usize(u: &mut Unstructured) -> Result<usize> {
    let tag: u8 = u.arbitrary()?;
    let small = (tag >> 3) as usize % 9;
    Ok(match tag & 7 {
        0..=3 => small,
        4 => usize::MAX - small,
        5 => (isize::MAX as usize).wrapping_add(small).wrapping_sub(4),
        6 => (1usize << u.int_in_range(0u32..=63)?).wrapping_add(small).wrapping_sub(4),
        _ => u.arbitrary::<u64>()? as usize,
    })
}

/// A stride for hostile calls: small of either sign, or extreme.
pub fn hostile_isize(u: &mut Unstructured) -> Result<isize> {
    Ok(match u.int_in_range(0u8..=4)? {
        0..=2 => u.int_in_range(-9isize..=9)?,
        3 => isize::MAX - u.int_in_range(0isize..=2)?,
        _ => isize::MIN + u.int_in_range(0isize..=2)?,
    })
}

/// The relative bound for a sum of `k` products (plus alpha, beta, bias and
/// chunk additions) against its f64 value: the suite's `1e-5 · Σ|term|`,
/// widened for long sums to the worst case of `2k + 8` roundings of 2⁻²⁴
/// each, so a fuzzer that finds an adversarial rounding sequence does not
/// report a false failure.
pub fn rel_bound(k: usize) -> f64 {
    1e-5f64.max((2.0 * k as f64 + 8.0) * f64::from(f32::EPSILON) / 2.0)
}

/// Panics, naming the element, unless `got` is within `rel_bound(k)` of the
/// reference (with NaN and infinities matching in kind).
pub fn assert_close(what: &str, reference: &Reference, got: &[f32], k: usize) {
    if let Some((i, want, g)) = reference.first_mismatch(got, rel_bound(k)) {
        panic!("{what}: element {i} is {g}, reference {want} (magnitude {:e})", reference.magnitude[i]);
    }
}

/// A sentinel fill: quiet NaNs whose payload is the index, so a stray write
/// of any value (a NaN included) changes the bits.
pub fn sentinel(len: usize) -> Vec<f32> {
    (0..len).map(|i| f32::from_bits(0x7fc0_0000 | ((0x2a_0000 + i as u32) & 0x3f_ffff))).collect()
}

/// A `rows × cols` matrix at `buf[origin + i·rs + j·cs]`. `buf` holds exactly
/// the span the matrix touches plus `guard` floats on each side, so with no
/// guard any access outside the span is outside the allocation.
#[derive(Clone, Debug)]
pub struct Strided {
    pub buf: Vec<f32>,
    pub origin: usize,
    pub rows: usize,
    pub cols: usize,
    pub rs: isize,
    pub cs: isize,
}

impl Strided {
    /// Lays out `rows × cols` with strides `rs`, `cs` (a stride of a dimension
    /// of size at most 1 is never multiplied by anything but 0, so it may be
    /// anything); floats not in the matrix are `fill`. `None` when the
    /// span does not fit in memory sensibly (more than `max_span` floats).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        rows: usize,
        cols: usize,
        rs: isize,
        cs: isize,
        guard: usize,
        fill: f32,
        max_span: usize,
        value: impl Fn(usize, usize) -> f32,
    ) -> Option<Self> {
        if rows == 0 || cols == 0 {
            return Some(Strided { buf: Vec::new(), origin: 0, rows, cols, rs, cs });
        }
        let offset = |i: usize, j: usize| -> Option<i128> {
            let r = if i == 0 { 0 } else { i as i128 * rs as i128 };
            let c = if j == 0 { 0 } else { j as i128 * cs as i128 };
            Some(r + c)
        };
        let corners = [offset(0, 0)?, offset(rows - 1, 0)?, offset(0, cols - 1)?, offset(rows - 1, cols - 1)?];
        let (lo, hi) = (*corners.iter().min()?, *corners.iter().max()?);
        let span = usize::try_from(hi - lo + 1).ok()?;
        if span > max_span {
            return None;
        }
        let origin = guard + usize::try_from(-lo).ok()?;
        let mut buf = vec![fill; span + 2 * guard];
        for i in 0..rows {
            for j in 0..cols {
                let idx = (origin as i128 + offset(i, j)?) as usize;
                buf[idx] = value(i, j);
            }
        }
        Some(Strided { buf, origin, rows, cols, rs, cs })
    }

    /// Index into `buf` of element `(i, j)`.
    pub fn index(&self, i: usize, j: usize) -> usize {
        let r = if i == 0 { 0 } else { i as isize * self.rs };
        let c = if j == 0 { 0 } else { j as isize * self.cs };
        (self.origin as isize + r + c) as usize
    }

    /// Element `(i, j)`.
    pub fn at(&self, i: usize, j: usize) -> f32 {
        self.buf[self.index(i, j)]
    }

    /// Pointer to element `(0, 0)`: a dangling, never-dereferenced pointer
    /// when the matrix is empty.
    pub fn ptr(&self) -> *const f32 {
        self.buf.as_ptr().wrapping_add(self.origin)
    }

    /// Mutable pointer to element `(0, 0)` (dangling when empty).
    pub fn mut_ptr(&mut self) -> *mut f32 {
        self.buf.as_mut_ptr().wrapping_add(self.origin)
    }
}

/// Prints `what` to stderr when `CONVGEMM_FUZZ_TRACE` is set: run a crash
/// artifact with it to see the call to turn into a regression test.
pub fn trace(what: &dyn std::fmt::Debug) {
    if std::env::var_os("CONVGEMM_FUZZ_TRACE").is_some() {
        eprintln!("convgemm-fuzz: {what:?}");
    }
}

/// True about once in `one_in` draws, and false once the input is used up
/// (unlike `Unstructured::ratio`, which then says true): for the rare
/// variations of an otherwise valid call.
pub fn rarely(u: &mut Unstructured, one_in: u8) -> Result<bool> {
    Ok(one_in > 1 && u.int_in_range(1..=one_in)? == one_in)
}
