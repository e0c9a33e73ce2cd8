//! Shared by the tests, the benches and the fuzz targets (not part of the
//! API): deterministic data, bit views of results, the list of algorithms,
//! and [`ConvProblem`], one convolution with its data. The oracles it runs
//! against are in `reference`.

use crate::reference::{Reference, conv2d_direct};
use crate::{Algorithm, ConvError, ConvOptions, ConvParams, conv2d, conv2d_output_shape, conv2d_with};

/// Every algorithm a [`ConvOptions`] can name.
pub const ALGORITHMS: [Algorithm; 6] = [
    Algorithm::Auto,
    Algorithm::Im2col,
    Algorithm::Implicit,
    Algorithm::Pointwise,
    Algorithm::Depthwise,
    Algorithm::Direct,
];

/// Deterministic pseudo-random values in [-1, 1) (xorshift from `seed`).
pub fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Raw `f32` bits: what exactness tests compare.
pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// `f32` bits with every NaN mapped to one pattern: IEEE 754 leaves the sign
/// and payload of a NaN result open, and paths do differ there (which of
/// two NaN operands an FMA returns); whether a result is NaN never differs.
pub fn canonical_bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| if x.is_nan() { 0x7fc0_0000 } else { x.to_bits() }).collect()
}

/// One convolution problem: shapes, parameters and data.
#[derive(Clone, Debug)]
pub struct ConvProblem {
    pub input_shape: [usize; 4],
    pub weight_shape: [usize; 4],
    pub params: ConvParams,
    pub input: Vec<f32>,
    pub weight: Vec<f32>,
    pub bias: Option<Vec<f32>>,
}

impl ConvProblem {
    /// A problem with [`values`] from `seed` (input), `seed + 1` (weight)
    /// and `seed + 2` (bias, when `bias`).
    pub fn seeded(
        input_shape: [usize; 4],
        weight_shape: [usize; 4],
        params: ConvParams,
        bias: bool,
        seed: u64,
    ) -> Self {
        let input = values(input_shape.iter().product(), seed);
        let weight = values(weight_shape.iter().product(), seed + 1);
        let bias = bias.then(|| values(weight_shape[0], seed + 2));
        ConvProblem { input_shape, weight_shape, params, input, weight, bias }
    }

    /// The output shape `conv2d` would write, or why it rejects the shapes.
    pub fn output_shape(&self) -> Result<[usize; 4], ConvError> {
        conv2d_output_shape(self.input_shape, self.weight_shape, &self.params)
    }

    /// The number of floats of the output, or why `conv2d` rejects the shapes.
    pub fn output_len(&self) -> Result<usize, ConvError> {
        self.output_shape().map(|s| s.iter().product())
    }

    /// `conv2d_with(options, ..)` into `out`.
    pub fn run_into(&self, options: &ConvOptions, out: &mut [f32]) -> Result<(), ConvError> {
        conv2d_with(
            options,
            &self.input,
            self.input_shape,
            &self.weight,
            self.weight_shape,
            self.bias.as_deref(),
            &self.params,
            out,
        )
    }

    /// `conv2d(..)` (the default options) into `out`.
    pub fn run_default_into(&self, out: &mut [f32]) -> Result<(), ConvError> {
        conv2d(&self.input, self.input_shape, &self.weight, self.weight_shape, self.bias.as_deref(), &self.params, out)
    }

    /// `conv2d_with(options, ..)` into a new NaN-filled output of the right length.
    pub fn run(&self, options: &ConvOptions) -> Result<Vec<f32>, ConvError> {
        let mut out = vec![f32::NAN; self.output_shape()?.iter().product()];
        self.run_into(options, &mut out)?;
        Ok(out)
    }

    /// The same problem with its activations in `layout`: the input
    /// permuted, `params.layout` set (outputs then come in that layout).
    pub fn in_layout(&self, layout: crate::Layout) -> ConvProblem {
        let input = relayout(&self.input, self.input_shape, self.params.layout, layout);
        ConvProblem { input, params: ConvParams { layout, ..self.params }, ..self.clone() }
    }

    /// The f64 direct convolution of the problem.
    pub fn reference(&self) -> Result<Reference, ConvError> {
        conv2d_direct(
            &self.input,
            self.input_shape,
            &self.weight,
            self.weight_shape,
            self.bias.as_deref(),
            &self.params,
        )
    }
}

/// Winograd with a chosen tile size, for the tile-size measurements and the
/// tests of each size (`Conv2dPlan` picks the size itself).
pub struct WinogradTiles {
    weights: crate::conv::winograd::WinogradWeights,
    weight_shape: [usize; 4],
    params: ConvParams,
    bias: Option<Vec<f32>>,
    isa: crate::Isa,
    tile: crate::conv::winograd::TileSize,
}

impl WinogradTiles {
    /// Tiles of `m × m` outputs, `m` one of 2, 4, 6; `None` for another `m`,
    /// where Winograd does not apply, or for weights or a bias of the wrong
    /// length.
    pub fn new(
        m: usize,
        isa: crate::Isa,
        weight: &[f32],
        weight_shape: [usize; 4],
        bias: Option<&[f32]>,
        params: &ConvParams,
    ) -> Option<Self> {
        use crate::conv::winograd::{self, TileSize, WinogradWeights};
        let tile = match m {
            2 => TileSize::F2,
            4 => TileSize::F4,
            6 => TileSize::F6,
            _ => return None,
        };
        let applies = winograd::applies([weight_shape[2], weight_shape[3]], params.stride, params.dilation);
        let lengths = weight.len() == weight_shape.iter().product::<usize>()
            && bias.is_none_or(|b| b.len() == weight_shape[0])
            && params.groups > 0
            && weight_shape[0].is_multiple_of(params.groups);
        (applies && lengths && isa.is_available() && !params.flip).then(|| WinogradTiles {
            weights: WinogradWeights::new(weight.to_vec(), weight_shape, params.groups, isa),
            weight_shape,
            params: *params,
            bias: bias.map(<[f32]>::to_vec),
            isa,
            tile,
        })
    }

    /// The convolution of `input` into `output` on `threads` threads of the
    /// current pool (1: the calling thread).
    pub fn run(
        &self,
        input: &[f32],
        input_shape: [usize; 4],
        threads: usize,
        output: &mut [f32],
    ) -> Result<(), ConvError> {
        let geo = crate::geometry::ConvGeometry::new(input_shape, self.weight_shape, &self.params)?;
        crate::check::check_len("input", input.len(), geo.input_len())?;
        crate::check::check_len("output", output.len(), geo.output_len())?;
        let act = crate::Activation::None;
        crate::conv::winograd::run(
            self.isa,
            &geo,
            &self.weights,
            self.tile,
            input,
            self.bias.as_deref(),
            act,
            threads,
            output,
        );
        Ok(())
    }
}

/// `values`, a batch of logical shape `[n, c, h, w]` in layout `from`, in
/// layout `to` (a copy). Test and bench code only: the library never
/// transposes a tensor to change its layout.
pub fn relayout(values: &[f32], [n, c, h, w]: [usize; 4], from: crate::Layout, to: crate::Layout) -> Vec<f32> {
    use crate::Layout;
    assert_eq!(values.len(), n * c * h * w, "values of the shape");
    let index = |layout: Layout, (b, ch, y, x): (usize, usize, usize, usize)| match layout {
        Layout::Nchw => ((b * c + ch) * h + y) * w + x,
        _ => ((b * h + y) * w + x) * c + ch,
    };
    let mut out = vec![0.0; values.len()];
    for b in 0..n {
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    out[index(to, (b, ch, y, x))] = values[index(from, (b, ch, y, x))];
                }
            }
        }
    }
    out
}
