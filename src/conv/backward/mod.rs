//! The backward pass of `conv2d`: the gradients with respect to the input
//! (`input.rs`), the weights (`weight.rs`) and the bias (`bias.rs`), each a
//! fixed-order reduction run through the crate's GEMM engine, and what they
//! share. Knows the convolution geometry and the engine's `PanelSource`
//! contract, not the kernels or the ISAs.

mod bias;
mod input;
mod weight;

pub use bias::{conv2d_backward_bias, conv2d_backward_bias_with_layout};
pub(crate) use input::backward_input_validated;
pub use input::{conv2d_backward_input, conv2d_backward_input_with};
pub use weight::{conv2d_backward_weight, conv2d_backward_weight_with};

use super::options::{ConvOptions, Threads};
use crate::activation::Activation;
use crate::error::ConvError;
use crate::gemm::{self, CMatrix, Epilogue, PARALLEL_MIN_FLOPS, PanelSource, Parallelism};
use crate::geometry::ConvGeometry;
use crate::isa::Isa;

/// `Err(ShapeMismatch)` naming the first dimension of `grad_output_shape`
/// that differs from the forward output shape.
pub(crate) fn check_grad_output_shape(geo: &ConvGeometry, found: [usize; 4]) -> Result<(), ConvError> {
    const NAMES: [&str; 4] = [
        "grad_output_shape[0] (batch)",
        "grad_output_shape[1] (output channels)",
        "grad_output_shape[2] (output height)",
        "grad_output_shape[3] (output width)",
    ];
    let expected = [geo.batch, geo.c_out, geo.h_out, geo.w_out];
    for ((what, e), f) in NAMES.into_iter().zip(expected).zip(found) {
        if e != f {
            return Err(ConvError::ShapeMismatch { what, expected: e, found: f });
        }
    }
    Ok(())
}

/// How many threads a call of `flops` may use.
fn thread_count(options: &ConvOptions, flops: f64) -> usize {
    match options.threads {
        Threads::Pool if flops >= PARALLEL_MIN_FLOPS => rayon::current_num_threads(),
        _ => 1,
    }
}

/// `c = a_t(k × m)ᵀ · b(k × n)`, overwriting `c`: element `(i, j)` at
/// `c + i·rs + j·cs`.
///
/// # Safety
/// `a_t` and `b` cover their extents; `c` addresses the `m × n` elements
/// `c + i·rs + j·cs`, all distinct, which are written.
#[allow(clippy::too_many_arguments)]
unsafe fn overwrite_gemm<A: PanelSource, B: PanelSource>(
    isa: Isa,
    par: Parallelism,
    (m, n, k): (usize, usize, usize),
    a_t: &A,
    b: &B,
    c: *mut f32,
    (rs, cs): (usize, usize),
) {
    let epi = Epilogue { alpha: 1.0, beta: 0.0, bias: std::ptr::null(), act: Activation::None };
    let c = CMatrix { ptr: c, rs: rs as isize, cs: cs as isize };
    // SAFETY: the caller's guarantees.
    let done = unsafe { gemm::gemm(isa, m, n, k, a_t, b, c, &epi, par) };
    debug_assert!(done.is_ok(), "the ISA was checked by the caller");
}
