//! `ConvError`: every way a call can be rejected. Nothing here computes;
//! validation code builds these values before any output is written.

use std::fmt;

/// Why a call was rejected. Returned before anything is written: when a
/// function returns `Err`, its output buffer is exactly as it was.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConvError {
    /// A parameter is out of its range (zero stride, zero dilation, zero
    /// groups, ...). `name` is the parameter, `value` what was passed.
    BadParameter {
        /// The parameter, e.g. `"stride[0]"`.
        name: &'static str,
        /// The value that was passed.
        value: usize,
        /// What the parameter must satisfy.
        requirement: &'static str,
    },
    /// Two shapes do not agree (channels not divisible by groups, weight's
    /// second dimension not `c_in / groups`, a kernel larger than the padded
    /// input, a gradient shape that does not match the forward shapes, ...).
    ShapeMismatch {
        /// Which dimension, e.g. `"weight[1] (c_in / groups)"`.
        what: &'static str,
        /// The value the other arguments imply.
        expected: usize,
        /// The value that was passed.
        found: usize,
    },
    /// A spatial axis has no output: the dilated kernel is larger than the
    /// padded input.
    NoOutput {
        /// `"height"` or `"width"`.
        axis: &'static str,
        /// Input size plus both paddings along that axis.
        padded_input: usize,
        /// `dilation * (kernel - 1) + 1` along that axis.
        kernel_extent: usize,
    },
    /// A slice's length is not the product of its shape.
    BufferLength {
        /// Which buffer, e.g. `"input"` or `"output"`.
        buffer: &'static str,
        /// The product of the shape.
        expected: usize,
        /// The slice's length.
        found: usize,
    },
    /// Shape arithmetic would overflow `usize`.
    Overflow {
        /// What was being computed, e.g. `"input element count"`.
        what: &'static str,
    },
    /// An instruction set was requested that this CPU (or this build) cannot run.
    IsaUnavailable {
        /// The name of the instruction-set path, e.g. `"avx2_fma"`.
        isa: &'static str,
    },
    /// An algorithm was forced on a problem it cannot compute (e.g.
    /// [`Algorithm::Winograd`](crate::Algorithm::Winograd) on a 5×5 kernel).
    AlgorithmNotApplicable {
        /// The algorithm, e.g. `"Winograd"`.
        algorithm: &'static str,
        /// What the problem must satisfy for it.
        requirement: &'static str,
    },
}

impl fmt::Display for ConvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConvError::BadParameter { name, value, requirement } => {
                write!(f, "bad parameter {name} = {value}: must be {requirement}")
            }
            ConvError::ShapeMismatch { what, expected, found } => {
                write!(f, "shape mismatch in {what}: expected {expected}, found {found}")
            }
            ConvError::NoOutput { axis, padded_input, kernel_extent } => write!(
                f,
                "no output along {axis}: dilated kernel extent {kernel_extent} exceeds padded input {padded_input}"
            ),
            ConvError::BufferLength { buffer, expected, found } => {
                write!(f, "{buffer} buffer has length {found}, but its shape needs {expected} elements")
            }
            ConvError::Overflow { what } => write!(f, "overflow computing {what}: exceeds usize"),
            ConvError::IsaUnavailable { isa } => {
                write!(f, "instruction set {isa} is not available on this CPU")
            }
            ConvError::AlgorithmNotApplicable { algorithm, requirement } => {
                write!(f, "algorithm {algorithm} does not apply: it needs {requirement}")
            }
        }
    }
}

impl std::error::Error for ConvError {}
