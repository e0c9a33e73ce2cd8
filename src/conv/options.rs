//! The options of a convolution call beyond its parameters: the instruction
//! set, the algorithm, the fused activation, and whether it may use threads.

use crate::activation::Activation;
use crate::isa::Isa;

/// How the image reaches the GEMM as its B operand.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// The fastest applicable: [`Algorithm::Depthwise`] for groups with one
    /// input channel, [`Algorithm::Direct`] where it applies and each output
    /// sums at least 128 products, [`Algorithm::Pointwise`] for 1×1 stride-1
    /// unpadded kernels, else [`Algorithm::Implicit`]; under
    /// [`Precision::Relaxed`], [`Algorithm::Winograd`] first where it pays.
    #[default]
    Auto,
    /// Build the explicit `K × N` im2col matrix of each (image, group), then
    /// multiply: the simple path the others are tested against.
    Im2col,
    /// Pack B from the image (implicit im2col), through a zero-padded copy
    /// of the input rows one block of output reads, for the K chunk's
    /// channels: no `K × N` buffer.
    Implicit,
    /// 1×1 kernel, stride 1, no padding: the image itself is B. Falls back to
    /// `Implicit` for other shapes.
    Pointwise,
    /// The image read where it lies, from a zero-padded copy of the rows a
    /// block of output reads: the kernel broadcasts image values and takes
    /// output channels as its vector lanes, so no im2col element is copied.
    /// For groups with several input channels and at least 16 output
    /// channels, on a path whose kernel has it (AVX-512); falls back to
    /// `Implicit` elsewhere.
    Direct,
    /// Direct convolution, vectorised over output columns, for groups with
    /// one input channel (depthwise, channel multipliers, single-channel
    /// images), where a GEMM tile would be mostly empty. Falls back to
    /// `Implicit` for other shapes.
    Depthwise,
    /// Winograd's minimal filtering F(m×m, 3×3): each output tile of `m × m`
    /// pixels from `(m+2)²` products per channel pair instead of `9·m²`,
    /// the products summed over channels by the GEMM. Rounds differently
    /// from the other algorithms (within `1e-5 · scale`, see
    /// [`Precision::Relaxed`]) but is reproducible on its own: the same bits
    /// for any thread count, batch size and FMA path. Forced, it runs on any
    /// problem with 3×3 kernels, stride 1 and dilation 1 whatever
    /// [`ConvOptions::precision`] says, and is an
    /// [`AlgorithmNotApplicable`](crate::ConvError::AlgorithmNotApplicable)
    /// error on any other; under [`Precision::Relaxed`], [`Algorithm::Auto`]
    /// takes it where it is faster.
    Winograd,
}

/// How close to the exact sum a convolution must round.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Precision {
    /// Every algorithm but a forced [`Algorithm::Winograd`] gives the same
    /// bits: each output is the sum of its products in the fixed order of
    /// the reproducibility rule (the crate docs). [`Algorithm::Auto`] never
    /// picks Winograd.
    #[default]
    Exact,
    /// [`Algorithm::Auto`] may also pick algorithms that do fewer
    /// multiplications: [`Algorithm::Winograd`] on 3×3 stride-1 undilated
    /// layers with `1/c_in + 1/c_out ≤ 0.04` per group (64→64, 128→32):
    /// with at least 48 channels each way where the tile's GEMMs run at
    /// least 2.4 times fewer multiplications than the direct sum (1.2
    /// times with 128 channels each way: e.g. 6×6, 7×7 and 10×10 outputs), or on
    /// 24×24 outputs and more (below 48 channels one way, smaller planes
    /// also need `c_in · c_out ≤ 7281` and the same saving); and in
    /// [`conv2d_backward_input_with`](crate::conv2d_backward_input_with)
    /// (and `conv_transpose2d_with`) of such layers padded by at most 2 a
    /// side. Results are still bit-identical
    /// across thread counts, batch sizes and the AVX-512, AVX2, NEON and
    /// portable paths, but round differently from `Exact`.
    ///
    /// The bound: every output is within `1e-5 · scale` of the exact sum,
    /// `scale = Σ|w·x| + |bias|` over an output's terms, taken as the
    /// largest among the outputs of its Winograd tile (the `m × m` outputs
    /// of one channel, m ≤ 6, computed together from one window of input).
    /// With many channels the outputs of a tile have similar scales, so in
    /// practice this is each output's own; an output whose own terms are
    /// tiny beside its neighbours' (one input channel, an edge of the
    /// padding) may carry their rounding. Outputs whose window lies wholly
    /// in the padding are exact (their bias) when their channel's weights
    /// are finite. A NaN or infinite input can
    /// reach every output of the tiles whose window holds it. The bound is
    /// what the property tests check, not a proven worst case: F(6×6)'s
    /// transforms hold coefficients up to 32.
    Relaxed,
}

/// Options of a convolution call beyond [`ConvParams`](crate::ConvParams): which instruction set
/// and which algorithm run, and the activation fused into the output.
/// Under [`Precision::Exact`] every combination gives bit-identical results
/// (except [`Isa::PortableUnfused`], which rounds differently, and a forced
/// [`Algorithm::Winograd`]); Winograd's results are bit-identical among
/// themselves across ISAs and threads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConvOptions {
    /// The instruction-set path; [`Isa::detect`] by default.
    pub isa: Isa,
    /// How B is fed to the engine.
    pub algorithm: Algorithm,
    /// Applied to each output after the bias.
    pub activation: Activation,
    /// Whether the call may use the threads of the current rayon pool.
    pub threads: Threads,
    /// Whether [`Algorithm::Auto`] may trade the exact rounding for speed.
    pub precision: Precision,
}

/// Whether a call may fork onto the caller's rayon pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Threads {
    /// Use the current rayon pool (`ThreadPool::install` chooses it) when the
    /// work is large enough to repay a fork.
    #[default]
    Pool,
    /// Stay on the calling thread.
    Single,
}

impl Default for ConvOptions {
    fn default() -> Self {
        ConvOptions {
            isa: Isa::detect(),
            algorithm: Algorithm::Auto,
            activation: Activation::None,
            threads: Threads::Pool,
            precision: Precision::Exact,
        }
    }
}
