//! Convolution: one module per algorithm (`explicit`, `implicit`,
//! `pointwise`, `direct`, `depthwise`, `winograd`), the one choice among them
//! (`select`), the call options (`options`), the forward entry points
//! (`forward`, `plan`), the gradients (`backward`) and the transposed
//! convolution (`transpose`).

pub(crate) mod backward;
pub(crate) mod banded;
pub(crate) mod depthwise;
pub(crate) mod direct;
pub(crate) mod explicit;
pub(crate) mod forward;
pub(crate) mod grouped;
pub(crate) mod implicit;
pub(crate) mod options;
pub(crate) mod plan;
pub(crate) mod pointwise;
pub(crate) mod scratch;
pub(crate) mod select;
pub(crate) mod transpose;
pub(crate) mod winograd;

use crate::activation::Activation;
use crate::gemm::{CMatrix, Parallelism, PrepackedSource};
use crate::geometry::ConvGeometry;

/// One (image, group) of a convolution as the paths that run the kernel on
/// the image where it lies take it (`direct`, `banded`): the geometry, the
/// group's input channels (`ConvGeometry::group_input`), the plan's weights
/// packed as the path reads them, the group's bias, the activation, its
/// `m × h_out·w_out` output (channel `co`, pixel `p` at `co·out.rs + p·out.cs`,
/// NCHW or channels-last), the output rows to compute and whether it may fork.
#[derive(Clone)]
pub(crate) struct GroupConv<'a> {
    pub(crate) g: &'a ConvGeometry,
    pub(crate) channels: &'a [f32],
    pub(crate) weights: &'a PrepackedSource,
    pub(crate) bias: Option<&'a [f32]>,
    pub(crate) act: Activation,
    pub(crate) out: CMatrix,
    /// The output rows computed (`0..h_out`: all); the others are not written.
    pub(crate) rows: std::ops::Range<usize>,
    pub(crate) par: Parallelism,
}
