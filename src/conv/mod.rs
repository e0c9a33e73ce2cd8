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
pub(crate) mod implicit;
pub(crate) mod options;
pub(crate) mod plan;
pub(crate) mod pointwise;
pub(crate) mod scratch;
pub(crate) mod select;
pub(crate) mod transpose;
pub(crate) mod winograd;
