//! convgemm for [candle](https://github.com/huggingface/candle) tensors
//! (cargo feature `candle`): a differentiable [`conv2d`] custom op, and
//! [`Conv2d`], a drop-in for `candle_nn::Conv2d` that packs its weights once.
//!
//! ```
//! use convgemm::candle::{candle_core::{Device, Tensor}, conv2d};
//! use convgemm::ConvParams;
//! # fn main() -> candle_core::Result<()> {
//! let x = Tensor::randn(0f32, 1.0, (1, 3, 32, 32), &Device::Cpu)?;
//! let w = Tensor::randn(0f32, 0.1, (16, 3, 3, 3), &Device::Cpu)?;
//! let params = ConvParams { padding: [1; 4], ..ConvParams::default() };
//! let y = conv2d(&x, &w, None, &params)?;
//! assert_eq!(y.dims(), [1, 16, 32, 32]);
//! # Ok(()) }
//! ```
//!
//! Tensors are f32 on the CPU, NCHW and OIHW as candle's own `conv2d` takes
//! them. A contiguous tensor is read in place; any other layout is copied
//! once. A wrong dtype, device, rank or shape is a candle `Err` naming the
//! problem, never a panic.

use std::sync::Arc;

pub use candle_core;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Module, Result, Shape, Storage, Tensor};

use crate::check::{adapter_layout, zeroed};
use crate::{
    Activation, Conv2dPlan, ConvError, ConvOptions, ConvParams, conv2d_backward_bias, conv2d_backward_input,
    conv2d_backward_weight, conv2d_output_shape,
};

/// A convolution error as a candle error.
fn wrap(e: ConvError) -> candle_core::Error {
    candle_core::Error::Msg(format!("convgemm: {e}"))
}

/// Checks that `t` is an f32 CPU tensor of rank `rank` and returns its dims.
fn check(t: &Tensor, what: &str, rank: usize) -> Result<Vec<usize>> {
    if t.dtype() != DType::F32 {
        candle_core::bail!("convgemm: {what} has dtype {:?}, but convgemm computes in f32", t.dtype())
    }
    if !t.device().is_cpu() {
        candle_core::bail!("convgemm: {what} is on {:?}, but convgemm runs on the CPU", t.device().location())
    }
    if t.rank() != rank {
        candle_core::bail!("convgemm: {what} has shape {:?}, but needs rank {rank}", t.dims())
    }
    Ok(t.dims().to_vec())
}

fn dims4(d: &[usize]) -> [usize; 4] {
    [d[0], d[1], d[2], d[3]]
}

/// The f32 elements of a contiguous CPU storage, in its layout's order.
fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("convgemm: a tensor reached the op without being made contiguous"),
    }
}

/// Runs `f` on the f32 elements of `t` (copied once first if `t` is not contiguous).
fn with_slice<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => f(slice(cpu, layout)?),
        _ => candle_core::bail!("convgemm: a tensor is not on the CPU"),
    }
}

fn tensor(data: Vec<f32>, shape: [usize; 4]) -> Result<Tensor> {
    Tensor::from_vec(data, shape.to_vec(), &candle_core::Device::Cpu)
}

/// The convolution of `x` (`[n, c_in, h, w]`) with `w` (`[c_out,
/// c_in/groups, kh, kw]`) and an optional `b` (`[c_out]`), with every option
/// of [`ConvParams`] (asymmetric padding, dilation, groups, `flip`). Unlike
/// candle's `conv2d` it takes the bias, and it is differentiable: `backward()`
/// through it gives the gradients of `x`, `w` and `b`, computed by
/// [`conv2d_backward_input`], [`conv2d_backward_weight`] and
/// [`conv2d_backward_bias`].
///
/// # Errors
/// A tensor that is not f32, not on the CPU or not of rank 4 (1 for `b`),
/// `params.layout` other than NCHW (a tensor is `[n, c, h, w]` with its own
/// strides: permute an NHWC tensor's axes instead), and every error of
/// [`crate::conv2d`] (shapes that do not agree, bad parameters), as a candle `Err`.
pub fn conv2d(x: &Tensor, w: &Tensor, b: Option<&Tensor>, params: &ConvParams) -> Result<Tensor> {
    let x_shape = dims4(&check(x, "x", 4)?);
    let w_shape = dims4(&check(w, "w", 4)?);
    adapter_layout(params.layout).map_err(wrap)?;
    conv2d_output_shape(x_shape, w_shape, params).map_err(wrap)?;
    let op = ConvOp { params: *params };
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    match b {
        None => x.apply_op2(&w, op),
        Some(b) => {
            let b_len = check(b, "b", 1)?[0];
            if b_len != w_shape[0] {
                return Err(wrap(ConvError::ShapeMismatch {
                    what: "b[0] (c_out)",
                    expected: w_shape[0],
                    found: b_len,
                }));
            }
            x.apply_op3(&w, &b.contiguous()?, op)
        }
    }
}

/// The custom op behind [`conv2d`]: (x, w) or (x, w, b).
struct ConvOp {
    params: ConvParams,
}

impl ConvOp {
    fn forward(&self, x: (&[f32], &Layout), w: (&[f32], &Layout), b: Option<&[f32]>) -> Result<(CpuStorage, Shape)> {
        let (x_shape, w_shape) = (dims4(x.1.dims()), dims4(w.1.dims()));
        let y_shape = conv2d_output_shape(x_shape, w_shape, &self.params).map_err(wrap)?;
        let mut y = zeroed(y_shape.iter().product(), "output size in bytes").map_err(wrap)?;
        crate::conv2d(x.0, x_shape, w.0, w_shape, b, &self.params, &mut y).map_err(wrap)?;
        Ok((CpuStorage::F32(y), Shape::from(y_shape.to_vec())))
    }

    /// The gradients of x, w and (when there is one) b.
    fn backward(&self, x: &Tensor, w: &Tensor, grad: &Tensor, bias: bool) -> Result<[Option<Tensor>; 3]> {
        let (x_shape, w_shape, g_shape) = (dims4(x.dims()), dims4(w.dims()), dims4(grad.dims()));
        let p = &self.params;
        with_slice(grad, |g| {
            let gx = with_slice(w, |wv| {
                let mut gx = vec![0.0; x.elem_count()];
                conv2d_backward_input(g, g_shape, wv, w_shape, p, &mut gx, x_shape).map_err(wrap)?;
                tensor(gx, x_shape)
            })?;
            let gw = with_slice(x, |xv| {
                let mut gw = vec![0.0; w.elem_count()];
                conv2d_backward_weight(xv, x_shape, g, g_shape, p, &mut gw, w_shape).map_err(wrap)?;
                tensor(gw, w_shape)
            })?;
            let gb = if bias {
                let mut gb = vec![0.0; w_shape[0]];
                conv2d_backward_bias(g, g_shape, &mut gb).map_err(wrap)?;
                Some(Tensor::from_vec(gb, w_shape[0], &candle_core::Device::Cpu)?)
            } else {
                None
            };
            Ok([Some(gx), Some(gw), gb])
        })
    }
}

impl CustomOp2 for ConvOp {
    fn name(&self) -> &'static str {
        "convgemm-conv2d"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        self.forward((slice(s1, l1)?, l1), (slice(s2, l2)?, l2), None)
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let [gx, gw, _] = self.backward(x, w, grad, false)?;
        Ok((gx, gw))
    }
}

impl CustomOp3 for ConvOp {
    fn name(&self) -> &'static str {
        "convgemm-conv2d-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.forward((slice(s1, l1)?, l1), (slice(s2, l2)?, l2), Some(slice(s3, l3)?))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _: &Tensor,
        _: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let [gx, gw, gb] = self.backward(x, w, grad, true)?;
        Ok((gx, gw, gb))
    }
}

/// A convolution layer with its weights packed once, for inference: a
/// drop-in for `candle_nn::Conv2d` (`Module::forward` on `[n, c_in, h, w]`
/// inputs of any size). The weights are frozen in the plan: `backward()`
/// through `forward` gives the gradient of the input (for saliency, deep
/// dream, adversarial inputs), not of the weights — train with [`conv2d`]
/// on `Var`s instead, and build a `Conv2d` from the trained weights.
///
/// ```
/// use convgemm::candle::{Conv2d, candle_core::{Device, Module, Tensor}};
/// use convgemm::ConvParams;
/// # fn main() -> candle_core::Result<()> {
/// let w = Tensor::randn(0f32, 0.1, (8, 3, 3, 3), &Device::Cpu)?;
/// let b = Tensor::zeros(8, candle_core::DType::F32, &Device::Cpu)?;
/// let layer = Conv2d::new(w, Some(b), ConvParams { stride: [2, 2], padding: [1; 4], ..ConvParams::default() })?;
/// let y = layer.forward(&Tensor::ones((2, 3, 16, 16), candle_core::DType::F32, &Device::Cpu)?)?;
/// assert_eq!(y.dims(), [2, 8, 8, 8]);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Conv2d {
    plan: Arc<Conv2dPlan>,
    weight: Tensor,
    bias: Option<Tensor>,
    params: ConvParams,
    activation: Activation,
}

impl Conv2d {
    /// Packs `weight` (`[c_out, c_in/groups, kh, kw]`) and `bias` (`[c_out]`)
    /// for the convolution `params` describes.
    ///
    /// # Errors
    /// Tensors that are not f32 CPU tensors of rank 4 (1 for the bias), and
    /// the errors of [`Conv2dPlan::new`].
    pub fn new(weight: Tensor, bias: Option<Tensor>, params: ConvParams) -> Result<Self> {
        Self::with_options(weight, bias, params, &ConvOptions::default())
    }

    /// [`Conv2d::new`] with [`ConvOptions`]: a fused activation (a ReLU or a
    /// clamp such as ReLU6 applied to the output in the same pass), a forced
    /// algorithm or instruction set. With an activation, the input gradient
    /// is masked where the activation was flat (from the output: `y > 0`
    /// for a ReLU, `min < y < max` for a clamp).
    ///
    /// # Errors
    /// Those of [`Conv2d::new`].
    pub fn with_options(
        weight: Tensor,
        bias: Option<Tensor>,
        params: ConvParams,
        options: &ConvOptions,
    ) -> Result<Self> {
        let w_shape = dims4(&check(&weight, "weight", 4)?);
        adapter_layout(params.layout).map_err(wrap)?;
        if let Some(b) = &bias {
            check(b, "bias", 1)?;
        }
        let plan = with_slice(&weight, |w| match &bias {
            None => Conv2dPlan::new(w, w_shape, None, &params, options).map_err(wrap),
            Some(b) => with_slice(b, |b| Conv2dPlan::new(w, w_shape, Some(b), &params, options).map_err(wrap)),
        })?;
        // A copy of its own: the input gradient must use the weights the plan
        // packed, even if the caller's tensor (a `Var`) is updated in place later.
        let weight = weight.detach().copy()?;
        Ok(Conv2d { plan: Arc::new(plan), weight, bias, params, activation: options.activation })
    }

    /// The weights the plan packed (a copy taken by `new`, detached from
    /// any `Var` it came from).
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias, as given to `new`.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The convolution's parameters.
    pub fn params(&self) -> &ConvParams {
        &self.params
    }
}

impl Module for Conv2d {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        check(xs, "input", 4)?;
        let op = PlanOp {
            plan: self.plan.clone(),
            weight: self.weight.clone(),
            params: self.params,
            activation: self.activation,
        };
        xs.contiguous()?.apply_op1(op)
    }
}

/// The custom op behind [`Conv2d::forward`]: the plan's convolution, with
/// the gradient of its input.
struct PlanOp {
    plan: Arc<Conv2dPlan>,
    weight: Tensor,
    params: ConvParams,
    activation: Activation,
}

impl CustomOp1 for PlanOp {
    fn name(&self) -> &'static str {
        "convgemm-conv2d-plan"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x_shape = dims4(l.dims());
        let y_shape = conv2d_output_shape(x_shape, dims4(self.weight.dims()), &self.params).map_err(wrap)?;
        let mut y = zeroed(y_shape.iter().product(), "output size in bytes").map_err(wrap)?;
        self.plan.run(slice(s, l)?, x_shape, &mut y).map_err(wrap)?;
        Ok((CpuStorage::F32(y), Shape::from(y_shape.to_vec())))
    }

    fn bwd(&self, x: &Tensor, y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (x_shape, w_shape, g_shape) = (dims4(x.dims()), dims4(self.weight.dims()), dims4(grad.dims()));
        // Through the fused activation first: zero where it was flat.
        let grad = match self.activation {
            Activation::None => grad.clone(),
            Activation::Relu => grad.mul(&y.gt(0f32)?.to_dtype(DType::F32)?)?,
            Activation::Clamp { min, max } => {
                let inside = (y.gt(min)?.to_dtype(DType::F32)? * y.lt(max)?.to_dtype(DType::F32)?)?;
                grad.mul(&inside)?
            }
        };
        let gx = with_slice(&grad, |g| {
            with_slice(&self.weight, |w| {
                let mut gx = vec![0.0; x.elem_count()];
                conv2d_backward_input(g, g_shape, w, w_shape, &self.params, &mut gx, x_shape).map_err(wrap)?;
                Ok(gx)
            })
        })?;
        Ok(Some(tensor(gx, x_shape)?))
    }
}
