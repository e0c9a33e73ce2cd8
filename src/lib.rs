//! # convgemm
//!
//! Fast, reproducible 2-D convolution (the CNN kind) on CPUs: each
//! (image, group) becomes one matrix product `C = W · im2col(X)`, run by a
//! cache-blocked GEMM with microkernels for x86-64 AVX-512 and AVX2+FMA and aarch64 NEON
//! (picked at run time) and a portable path.
//!
//! ```
//! use convgemm::{conv2d, conv2d_output_shape, ConvParams};
//! let mut p = ConvParams::default();
//! p.stride = [2, 2];
//! p.padding = [1, 1, 1, 1];
//! let (x_shape, w_shape) = ([1, 3, 8, 8], [4, 3, 3, 3]);
//! let out_shape = conv2d_output_shape(x_shape, w_shape, &p)?; // [1, 4, 4, 4]
//! let x = vec![0.5f32; 3 * 8 * 8];
//! let w = vec![0.1f32; 4 * 3 * 3 * 3];
//! let mut y = vec![0.0f32; out_shape.iter().product()];
//! conv2d(&x, x_shape, &w, w_shape, None, &p, &mut y)?;
//! # Ok::<(), convgemm::ConvError>(())
//! ```
//!
//! ## Layouts
//! Input `[n, c_in, h, w]`, weight `[c_out, c_in / groups, kh, kw]`
//! (OIHW), bias `[c_out]`, output `[n, c_out, h_out, w_out]`; all contiguous
//! `f32` slices. Shapes are logical: the activations (inputs, outputs and
//! their gradients) lie in NCHW order by default, or channels-last where
//! the parameters say `layout: Layout::Nhwc` ([`Layout`]); weights are OIHW
//! in both.
//!
//! ## Errors
//! Every invalid argument returns a [`ConvError`] naming the bad value, before
//! anything is written: on `Err` the output buffer is untouched. Shape
//! arithmetic that would overflow `usize` is an error, never a wrap.
//!
//! ## Reproducibility
//! Every output element is a sum over `K = (c_in/groups)·kh·kw` taken in one
//! fixed order: K is cut into chunks of 256, each chunk summed from `+0.0`
//! with fused multiply-adds in increasing k, the chunks added into the output
//! in increasing order, the bias last, then the activation. Threads split
//! output rows, columns, images and groups, never K. So results are bit for
//! bit the same for any number of threads, any batch size, and on the
//! AVX-512, AVX2+FMA, NEON and portable (`f32::mul_add`) paths. Only
//! [`Isa::PortableUnfused`] — chosen on CPUs without FMA — differs, by rounding.
//! The gradients (`conv2d_backward_*`) and `conv_transpose2d` document their
//! own fixed reduction orders and are reproducible in the same way, as is
//! pooling ([`max_pool2d`] and [`avg_pool2d`] scan each window in row-major
//! order, which is PyTorch's order too).
//!
//! ## Precision
//! [`Precision::Exact`] (the default) keeps the order above. Under
//! [`Precision::Relaxed`], [`Algorithm::Auto`] may run Winograd F(m×m, 3×3)
//! on 3×3 stride-1 layers: fewer multiplications, outputs within
//! `1e-5 · scale` of the exact sums, still bit-identical across threads,
//! batch sizes and paths, but not equal to the exact bits (see
//! [`Precision::Relaxed`] for the bound and [`Algorithm::Winograd`]).
//!
//! ## NaN and infinities
//! They propagate as IEEE arithmetic on each output's defining sum says: a
//! NaN input reaches exactly the outputs whose sum reads it (a NaN weight
//! poisons its whole output channel, padding taps included, since `0·NaN` is
//! NaN), `inf·0` and opposite infinities give NaN, and `sgemm` with
//! `beta == 0` never reads C. Whether an output is NaN is identical on every
//! path; which NaN comes out (sign, payload) is not specified and may differ
//! between paths where two NaNs meet.
//!
//! ## Threads
//! Calls run in the caller's rayon pool (`ThreadPool::install` controls
//! them) and never spawn threads of their own; problems too small to repay a
//! fork stay on the calling thread.
//!
//! ## Choosing a path
//! [`Isa::detect`] picks the fastest instruction set once per process; the
//! environment variable `CONVGEMM_ISA` (`portable`, `portable_unfused`,
//! `avx2_fma`, `avx512`, `neon`) overrides it, and [`conv2d_with`] / [`sgemm_with_isa`]
//! choose per call.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

mod activation;
#[cfg(feature = "candle")]
pub mod candle;
mod check;
mod conv;
mod error;
mod gemm;
mod geometry;
mod im2col;
mod isa;
mod layout;
#[cfg(feature = "ndarray")]
pub mod nd;
mod par;
mod pool;
#[cfg(test)]
mod portable_tests;
#[doc(hidden)]
pub mod reference;
mod simd;
#[doc(hidden)]
pub mod testing;

pub use activation::Activation;
pub use conv::backward::{
    conv2d_backward_bias, conv2d_backward_bias_with_layout, conv2d_backward_input, conv2d_backward_input_with,
    conv2d_backward_weight, conv2d_backward_weight_with,
};
pub use conv::forward::{conv2d, conv2d_with};
pub use conv::options::{Algorithm, ConvOptions, Precision, Threads};
pub use conv::plan::Conv2dPlan;
pub use conv::transpose::{
    ConvTransposeParams, conv_transpose2d, conv_transpose2d_output_shape, conv_transpose2d_with,
};
pub use error::ConvError;
pub use gemm::{sgemm, sgemm_with_isa};
pub use geometry::{ConvParams, conv2d_output_shape};
pub use im2col::{col2im, im2col, im2col_len};
pub use isa::Isa;
pub use layout::Layout;
pub use pool::{
    MAX_POOL_NO_INDEX, PoolParams, avg_pool2d, avg_pool2d_backward, global_avg_pool2d, global_avg_pool2d_with_layout,
    max_pool2d, max_pool2d_backward, max_pool2d_with_indices, max_unpool2d, max_unpool2d_with_layout,
    pool2d_output_shape,
};

/// The README's Rust examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
