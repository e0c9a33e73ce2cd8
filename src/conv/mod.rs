//! Convolution: parameters and output-size math (`params`), the forward pass
//! (`forward`), prepared plans (`plan`) and the implicit-im2col B source they
//! feed the GEMM engine.

pub(crate) mod backward;
pub(crate) mod depthwise;
pub(crate) mod direct;
pub(crate) mod forward;
pub(crate) mod implicit;
pub(crate) mod params;
pub(crate) mod plan;
pub(crate) mod transpose;
