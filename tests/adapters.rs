//! The candle and ndarray adapters (features `candle`, `ndarray`): results
//! against the f64 reference loops, gradients through candle's autograd
//! against the reference gradients, strided views and tensors read and
//! written correctly, and every bad argument an `Err` with the output
//! untouched. Run with `cargo test --release --all-features`.
#![cfg(any(feature = "candle", feature = "ndarray"))]

mod common;

use common::assert_close;
use convgemm::ConvParams;
use convgemm::reference::{
    conv2d_backward_bias_direct, conv2d_backward_input_direct, conv2d_backward_weight_direct, conv2d_direct,
};
use convgemm::testing::values;

/// A grouped, dilated, asymmetrically padded, flipped convolution with bias:
/// every field of `ConvParams` away from its default.
fn awkward() -> (ConvParams, [usize; 4], [usize; 4]) {
    let params = ConvParams {
        stride: [2, 1],
        padding: [1, 0, 2, 1],
        dilation: [1, 2],
        groups: 2,
        flip: true,
        ..ConvParams::default()
    };
    (params, [2, 4, 9, 11], [6, 2, 3, 3])
}

#[cfg(feature = "ndarray")]
mod nd {
    use super::*;
    use convgemm::nd::ndarray::{Array1, Array4, s};
    use convgemm::nd::{conv2d, conv2d_into};
    use convgemm::{ConvError, conv2d_output_shape};

    fn array(shape: [usize; 4], seed: u64) -> Array4<f32> {
        Array4::from_shape_vec(shape, values(shape.iter().product(), seed)).unwrap()
    }

    #[test]
    fn standard_views_match_the_reference_and_the_slice_api() {
        let (params, xs, ws) = awkward();
        let (x, w, b) = (array(xs, 1), array(ws, 2), Array1::from(values(ws[0], 3)));
        let y = conv2d(x.view(), w.view(), Some(b.view()), &params).unwrap();
        let (xv, wv, bv) = (x.as_slice().unwrap(), w.as_slice().unwrap(), b.as_slice().unwrap());
        let want = conv2d_direct(xv, xs, wv, ws, Some(bv), &params).unwrap();
        assert_close("nd::conv2d", &want, y.as_slice().unwrap());
        let mut plain = vec![0.0; y.len()];
        convgemm::conv2d(xv, xs, wv, ws, Some(bv), &params, &mut plain).unwrap();
        assert_eq!(y.as_slice().unwrap(), &plain[..], "the adapter changes no bits");
    }

    /// An NHWC array permuted to NCHW, a weight array with every other
    /// element skipped, a reversed bias; written into a transposed view and
    /// into a stepped slice of a bigger array.
    #[test]
    fn strided_views_in_and_out() {
        let (params, xs, ws) = awkward();
        let (x, w, b) = (array(xs, 4), array(ws, 5), Array1::from(values(ws[0], 6)));
        let y = conv2d(x.view(), w.view(), Some(b.view()), &params).unwrap();

        let nhwc = x.view().permuted_axes([0, 2, 3, 1]).as_standard_layout().into_owned();
        let x_strided = nhwc.view().permuted_axes([0, 3, 1, 2]);
        let mut wide = Array4::zeros([ws[0], ws[1], ws[2], 2 * ws[3]]);
        wide.slice_mut(s![.., .., .., ..;2]).assign(&w);
        let w_strided = wide.slice(s![.., .., .., ..;2]);
        let b_rev = b.slice(s![..;-1]).to_owned();
        let b_strided = b_rev.slice(s![..;-1]);
        assert!(!x_strided.is_standard_layout() && !w_strided.is_standard_layout());

        let shape = conv2d_output_shape(xs, ws, &params).unwrap();
        let mut out_t = Array4::zeros([shape[3], shape[2], shape[1], shape[0]]);
        let view = out_t.view_mut().permuted_axes([3, 2, 1, 0]);
        conv2d_into(x_strided, w_strided, Some(b_strided), &params, view).unwrap();
        assert_eq!(out_t.view().permuted_axes([3, 2, 1, 0]), y.view());

        let mut big = Array4::from_elem([shape[0], shape[1], shape[2] * 2, shape[3]], 9.0f32);
        conv2d_into(x_strided, w_strided, Some(b_strided), &params, big.slice_mut(s![.., .., ..;2, ..])).unwrap();
        assert_eq!(big.slice(s![.., .., ..;2, ..]), y.view());
        assert!(big.slice(s![.., .., 1..;2, ..]).iter().all(|&v| v == 9.0), "wrote between the stepped rows");
    }

    #[test]
    fn errors_leave_the_output_untouched() {
        let (params, xs, ws) = awkward();
        let (x, w) = (array(xs, 7), array(ws, 8));
        let shape = conv2d_output_shape(xs, ws, &params).unwrap();
        let mut out = Array4::from_elem(shape, 5.0f32);
        let mut wrong = Array4::from_elem([shape[0], shape[1] + 1, shape[2], shape[3]], 5.0f32);
        let e = conv2d_into(x.view(), w.view(), None, &params, wrong.view_mut()).unwrap_err();
        assert!(matches!(e, ConvError::ShapeMismatch { what: "out.shape()[1] (c_out)", .. }), "{e}");
        let bad = ConvParams { groups: 3, ..params };
        let e = conv2d_into(x.view(), w.view(), None, &bad, out.view_mut()).unwrap_err();
        assert!(e.to_string().contains("groups"), "{e}");
        // A view's own strides say where its elements lie: no layout on top.
        let nhwc = ConvParams { layout: convgemm::Layout::Nhwc, ..params };
        let e = conv2d_into(x.view(), w.view(), None, &nhwc, out.view_mut()).unwrap_err();
        assert!(matches!(e, ConvError::BadParameter { name: "layout", .. }), "{e}");
        assert!(conv2d(x.view(), w.view(), None, &nhwc).is_err());
        let short_bias = Array1::from(vec![0.0; ws[0] - 1]);
        let e = conv2d_into(x.view(), w.view(), Some(short_bias.view()), &params, out.view_mut()).unwrap_err();
        assert!(matches!(e, ConvError::BufferLength { buffer: "bias", .. }), "{e}");
        // Through the copying path too (a transposed output).
        let mut out_t = Array4::from_elem([shape[3], shape[2], shape[1], shape[0]], 5.0f32);
        let view = out_t.view_mut().permuted_axes([3, 2, 1, 0]);
        assert!(conv2d_into(x.view(), w.view(), Some(short_bias.view()), &params, view).is_err());
        assert!(out.iter().chain(out_t.iter()).chain(wrong.iter()).all(|&v| v == 5.0));
    }

    /// An output too large to allocate (2^62 elements from a huge padding)
    /// is an `Err`, not a capacity-overflow panic.
    #[test]
    fn an_output_too_large_to_allocate_is_an_error() {
        let one = Array4::<f32>::ones((1, 1, 1, 1));
        let params = ConvParams { padding: [1 << 30; 4], ..ConvParams::default() };
        let e = conv2d(one.view(), one.view(), None, &params).unwrap_err();
        assert!(matches!(e, ConvError::Overflow { .. }), "{e}");
    }
}

#[cfg(feature = "candle")]
mod candle {
    use super::*;
    use convgemm::candle::candle_core::{DType, Device, Module, Tensor, Var};
    use convgemm::candle::{Conv2d, conv2d};

    fn tensor(shape: [usize; 4], seed: u64) -> Tensor {
        Tensor::from_vec(values(shape.iter().product(), seed), shape.to_vec(), &Device::Cpu).unwrap()
    }

    fn vec(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn forward_matches_the_reference_and_reads_strided_tensors() {
        let (params, xs, ws) = awkward();
        let (x, w) = (tensor(xs, 1), tensor(ws, 2));
        let b = Tensor::from_vec(values(ws[0], 3), ws[0], &Device::Cpu).unwrap();
        let y = conv2d(&x, &w, Some(&b), &params).unwrap();
        let want = conv2d_direct(&vec(&x), xs, &vec(&w), ws, Some(&vec(&b)), &params).unwrap();
        assert_close("candle::conv2d", &want, &vec(&y));
        // The same input stored NHWC and viewed NCHW: not contiguous.
        let x_nhwc = x.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap().permute((0, 3, 1, 2)).unwrap();
        assert!(!x_nhwc.is_contiguous());
        let y2 = conv2d(&x_nhwc, &w, Some(&b), &params).unwrap();
        assert_eq!(vec(&y2), vec(&y));
        // A narrowed (offset) tensor is contiguous but does not start at 0.
        let big = Tensor::cat(&[&tensor(xs, 9), &x], 0).unwrap();
        let y3 = conv2d(&big.narrow(0, xs[0], xs[0]).unwrap(), &w, Some(&b), &params).unwrap();
        assert_eq!(vec(&y3), vec(&y));
    }

    /// Within candle's own tolerance of candle's `conv2d`, where candle can
    /// express the layer (symmetric padding, one stride, no flip).
    #[test]
    fn agrees_with_candles_own_conv2d() {
        let params = ConvParams { stride: [2, 2], padding: [1; 4], groups: 2, ..ConvParams::default() };
        let (x, w) = (tensor([2, 4, 13, 13], 11), tensor([8, 2, 3, 3], 12));
        let ours = vec(&conv2d(&x, &w, None, &params).unwrap());
        let theirs = vec(&x.conv2d(&w, 1, 2, 1, 2).unwrap());
        for (a, b) in ours.iter().zip(&theirs) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs candle {b}");
        }
    }

    /// `backward()` through the op: the gradients of x, w and b equal the
    /// reference gradients for the upstream gradient `r` of `sum(y · r)`.
    #[test]
    fn gradients_through_candles_autograd() {
        let (params, xs, ws) = awkward();
        let (x, w) = (Var::from_tensor(&tensor(xs, 21)).unwrap(), Var::from_tensor(&tensor(ws, 22)).unwrap());
        let b = Var::from_tensor(&Tensor::from_vec(values(ws[0], 23), ws[0], &Device::Cpu).unwrap()).unwrap();
        let y = conv2d(x.as_tensor(), w.as_tensor(), Some(b.as_tensor()), &params).unwrap();
        let ys: [usize; 4] = y.dims().try_into().unwrap();
        let r = tensor(ys, 24);
        let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let (xv, wv, rv) = (vec(x.as_tensor()), vec(w.as_tensor()), vec(&r));
        let gx = conv2d_backward_input_direct(&rv, ys, &wv, ws, &params, xs).unwrap();
        assert_close("grad x", &gx, &vec(grads.get(x.as_tensor()).unwrap()));
        let gw = conv2d_backward_weight_direct(&xv, xs, &rv, ys, &params, ws).unwrap();
        assert_close("grad w", &gw, &vec(grads.get(w.as_tensor()).unwrap()));
        let gb = conv2d_backward_bias_direct(&rv, ys).unwrap();
        let got = grads.get(b.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        assert_close("grad b", &gb, &got);
        // Without a bias: the two-argument op.
        let y = conv2d(x.as_tensor(), w.as_tensor(), None, &params).unwrap();
        let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        assert_close("grad w (no bias)", &gw, &vec(grads.get(w.as_tensor()).unwrap()));
    }

    /// The prepacked module gives the op's bits, and the gradient of its input.
    #[test]
    fn module_matches_the_op_and_passes_the_input_gradient() {
        let (params, xs, ws) = awkward();
        let (x, w) = (Var::from_tensor(&tensor(xs, 31)).unwrap(), tensor(ws, 32));
        let b = Tensor::from_vec(values(ws[0], 33), ws[0], &Device::Cpu).unwrap();
        let layer = Conv2d::new(w.clone(), Some(b.clone()), params).unwrap();
        let y = layer.forward(x.as_tensor()).unwrap();
        assert_eq!(vec(&y), vec(&conv2d(x.as_tensor(), &w, Some(&b), &params).unwrap()));
        let ys: [usize; 4] = y.dims().try_into().unwrap();
        let r = tensor(ys, 34);
        let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let gx = conv2d_backward_input_direct(&vec(&r), ys, &vec(&w), ws, &params, xs).unwrap();
        assert_close("module grad x", &gx, &vec(grads.get(x.as_tensor()).unwrap()));
    }

    /// A fused ReLU6 (a clamp): the output is the clamped convolution, and
    /// the input gradient is masked where the clamp was flat.
    #[test]
    fn module_with_a_fused_activation() {
        let (params, xs, ws) = awkward();
        let (x, w) = (Var::from_tensor(&tensor(xs, 51)).unwrap(), tensor(ws, 52));
        let clamp = convgemm::Activation::Clamp { min: 0.0, max: 0.5 };
        let options = convgemm::ConvOptions { activation: clamp, ..convgemm::ConvOptions::default() };
        let layer = Conv2d::with_options(w.clone(), None, params, &options).unwrap();
        let y = layer.forward(x.as_tensor()).unwrap();
        let pre = vec(&conv2d(x.as_tensor(), &w, None, &params).unwrap());
        assert_eq!(vec(&y), pre.iter().map(|v| v.clamp(0.0, 0.5)).collect::<Vec<_>>());
        let flat = pre.iter().filter(|&&v| v <= 0.0 || v >= 0.5).count();
        assert!(flat > 0 && flat < pre.len(), "the clamp should bite on some outputs only");
        let ys: [usize; 4] = y.dims().try_into().unwrap();
        let r = vec(&tensor(ys, 53));
        let masked: Vec<f32> = r.iter().zip(&pre).map(|(&g, &v)| if v > 0.0 && v < 0.5 { g } else { 0.0 }).collect();
        let r = Tensor::from_vec(r, ys.to_vec(), &Device::Cpu).unwrap();
        let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let gx = conv2d_backward_input_direct(&masked, ys, &vec(&w), ws, &params, xs).unwrap();
        assert_close("masked grad x", &gx, &vec(grads.get(x.as_tensor()).unwrap()));
    }

    #[test]
    fn bad_tensors_are_errors() {
        let (params, xs, ws) = awkward();
        let (x, w) = (tensor(xs, 41), tensor(ws, 42));
        let cases: Vec<(Result<Tensor, _>, &str)> = vec![
            (conv2d(&x.to_dtype(DType::F64).unwrap(), &w, None, &params), "dtype"),
            (conv2d(&x, &w.to_dtype(DType::F16).unwrap(), None, &params), "dtype"),
            (conv2d(&x.flatten_from(2).unwrap(), &w, None, &params), "rank 4"),
            (conv2d(&x, &w, None, &ConvParams { groups: 3, ..params }), "groups"),
            (conv2d(&x, &w, None, &ConvParams { layout: convgemm::Layout::Nhwc, ..params }), "layout"),
            (conv2d(&x.narrow(1, 0, 2).unwrap(), &w, None, &params), "input channels"),
            (conv2d(&x, &w, Some(&Tensor::zeros(5, DType::F32, &Device::Cpu).unwrap()), &params), "b[0] (c_out)"),
            (conv2d(&x, &w, Some(&Tensor::zeros((6, 1), DType::F32, &Device::Cpu).unwrap()), &params), "rank 1"),
        ];
        for (result, what) in cases {
            let e = result.unwrap_err().to_string();
            assert!(e.contains(what), "{e} should mention {what}");
        }
        assert!(Conv2d::new(w.to_dtype(DType::F64).unwrap(), None, params).is_err());
        let nhwc = ConvParams { layout: convgemm::Layout::Nhwc, ..params };
        assert!(Conv2d::new(w.clone(), None, nhwc).unwrap_err().to_string().contains("layout"));
        // An output of 2^62 elements: an error, not a capacity-overflow panic.
        let one = Tensor::ones((1, 1, 1, 1), DType::F32, &Device::Cpu).unwrap();
        let huge = ConvParams { padding: [1 << 30; 4], ..ConvParams::default() };
        let e = conv2d(&one, &one, None, &huge).unwrap_err().to_string();
        assert!(e.contains("overflow"), "{e}");
        let e = Conv2d::new(one.clone(), None, huge).unwrap().forward(&one).unwrap_err().to_string();
        assert!(e.contains("overflow"), "{e}");
        let layer = Conv2d::new(w, None, params).unwrap();
        let e = layer.forward(&tensor([2, 3, 9, 11], 43)).unwrap_err().to_string();
        assert!(e.contains("input channels"), "{e}");
    }
}
