//! The C interface of [convgemm](https://docs.rs/convgemm): convolution,
//! plans, gradients, transposed convolution, pooling (with indices and
//! unpooling), im2col / col2im and `sgemm`, as
//! `extern "C"` functions behind the checked-in header
//! `capi/include/convgemm.h`.
//!
//! `cargo build --release -p convgemm-capi` writes
//! `target/release/libconvgemm_capi.so` and `libconvgemm_capi.a`. The Rust
//! items here exist for that header (cbindgen reads them) and for the tests;
//! Rust code calls `convgemm` itself.
//!
//! Every entry point:
//! - copies and checks its arguments first: NULL pointers, alignment, byte
//!   sizes, outputs overlapping inputs, enum values, then (in convgemm)
//!   shapes, lengths and parameters;
//! - on failure returns a status other than `CG_OK`, records a sentence for
//!   `cg_last_error` (per thread), and leaves every output untouched;
//! - catches any Rust panic (`CG_ERROR_INTERNAL`): nothing unwinds into C
//!   and nothing aborts the host.
//!
//! What C cannot tell us (that a pointer really addresses the number of
//! floats its length says) is the caller's promise, as in any C library.
#![allow(non_camel_case_types)]

mod buffers;
mod conv;
mod gemm;
mod im2col;
mod params;
mod pool;
mod status;
mod threads;

pub use conv::{
    cg_conv_transpose2d, cg_conv_transpose2d_output_shape, cg_conv2d, cg_conv2d_backward_bias,
    cg_conv2d_backward_input, cg_conv2d_backward_weight, cg_conv2d_output_shape, cg_conv2d_plan, cg_conv2d_plan_create,
    cg_conv2d_plan_destroy, cg_conv2d_plan_run,
};
pub use gemm::cg_sgemm;
pub use im2col::{cg_col2im, cg_im2col, cg_im2col_len};
pub use params::{
    ActivationArg, LayoutArg, PrecisionArg, cg_activation, cg_conv_transpose2d_params,
    cg_conv_transpose2d_params_default, cg_conv2d_params, cg_conv2d_params_default, cg_layout, cg_pool2d_params,
    cg_pool2d_params_default, cg_precision,
};
pub use pool::{
    CG_MAX_POOL_NO_INDEX, cg_avg_pool2d, cg_avg_pool2d_backward, cg_global_avg_pool2d, cg_global_avg_pool2d_backward,
    cg_max_pool2d, cg_max_pool2d_backward, cg_max_pool2d_with_indices, cg_max_unpool2d, cg_pool2d_output_shape,
};
pub use status::{cg_last_error, cg_status};
pub use threads::{CG_MAX_THREADS, cg_get_num_threads, cg_set_num_threads};
