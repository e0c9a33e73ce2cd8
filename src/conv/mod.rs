//! Convolution: parameters and output-size math (`params`), the forward pass
//! (`forward`) and the implicit-im2col B source it feeds the GEMM engine.

pub(crate) mod forward;
pub(crate) mod implicit;
pub(crate) mod params;
