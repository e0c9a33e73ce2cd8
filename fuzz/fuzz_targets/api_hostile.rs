//! Fuzz target: the whole public API (convolution, gradients, transposed
//! convolution, pooling, im2col, GEMM) with hostile arguments (sizes up to
//! `usize::MAX`, wrong lengths, unavailable ISAs, empty GEMMs on dangling
//! pointers). Valid calls, and only they, are accepted and compute what the
//! portable path and the reference do; a rejected call leaves its output as it was.
#![no_main]

use convgemm::reference::{pool2d_backward_direct, pool2d_direct};
use convgemm::testing::ConvProblem;
use convgemm::{
    Activation, Algorithm, Conv2dPlan, ConvError, ConvOptions, ConvParams, ConvTransposeParams, Isa, Layout,
    MAX_POOL_NO_INDEX, PoolParams, Threads, avg_pool2d, avg_pool2d_backward, col2im, conv_transpose2d_output_shape,
    conv_transpose2d_with, conv2d_backward_bias_with_layout, conv2d_backward_input_with, conv2d_backward_weight_with,
    conv2d_output_shape, global_avg_pool2d_with_layout, im2col, im2col_len, max_pool2d, max_pool2d_backward,
    max_pool2d_with_indices, max_unpool2d_with_layout, pool2d_output_shape, sgemm, sgemm_with_isa,
};
use convgemm_fuzz::{
    activation, all_tame, any_isa, any_options, assert_close, bits, canonical_bits, hostile_isize, hostile_usize,
    layout, may_relax, sentinel, trace, value, values, winograd_applies,
};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

/// The longest buffer a call gets: valid calls stay cheap however large their
/// shapes claim to be.
const MAX_BUF: usize = 1024;

/// What a valid convolution's geometry must satisfy, derived here from
/// API.md in 128-bit arithmetic (independently of the crate's checks):
/// the output shape, or `None` for a call that must be rejected.
fn expected_output_shape(input_shape: [usize; 4], weight_shape: [usize; 4], p: &ConvParams) -> Option<[usize; 4]> {
    let [n, c_in, h, w] = input_shape.map(|d| d as u128);
    let [c_out, cg, kh, kw] = weight_shape.map(|d| d as u128);
    let [sh, sw] = p.stride.map(|d| d as u128);
    let [dh, dw] = p.dilation.map(|d| d as u128);
    let [pt, pl, pb, pr] = p.padding.map(|d| d as u128);
    let g = p.groups as u128;
    let max = usize::MAX as u128;
    if sh == 0 || sw == 0 || dh == 0 || dw == 0 || g == 0 || kh == 0 || kw == 0 {
        return None;
    }
    if c_in % g != 0 || c_out % g != 0 || cg != c_in / g {
        return None;
    }
    let axis = |size: u128, a: u128, b: u128, k: u128, d: u128, s: u128| -> Option<u128> {
        let padded = size + a + b;
        let extent = d.checked_mul(k - 1)? + 1;
        (padded <= max && extent <= max && padded >= extent).then(|| (padded - extent) / s + 1)
    };
    let h_out = axis(h, pt, pb, kh, dh, sh)?;
    let w_out = axis(w, pl, pr, kw, dw, sw)?;
    // Every size derived from the shapes must fit, each on its own: a zero
    // elsewhere (an empty batch, no channels) does not excuse an overflow.
    let fits = |dims: &[u128]| dims.iter().try_fold(1u128, |acc, &d| acc.checked_mul(d).filter(|&x| x <= max));
    fits(&[n, c_in, h, w])?;
    fits(&[c_in, h, w])?;
    fits(&[c_out, cg, kh, kw])?;
    fits(&[cg, kh, kw])?;
    fits(&[kh, kw])?;
    fits(&[n, c_out, h_out, w_out])?;
    fits(&[c_out, h_out, w_out])?;
    fits(&[h_out, w_out])?;
    fits(&[cg, kh, kw, h_out, w_out])?;
    fits(&[c_in, kh, kw, h_out, w_out])?;
    Some([n, c_out, h_out, w_out].map(|d| d as usize))
}

/// Whether `Conv2dPlan::new` must accept these weights: the checks that need
/// no input shape.
fn plan_params_valid(weight_shape: [usize; 4], p: &ConvParams) -> bool {
    p.stride.iter().chain(&p.dilation).all(|&s| s > 0)
        && p.groups > 0
        && weight_shape[2] > 0
        && weight_shape[3] > 0
        && weight_shape[0].is_multiple_of(p.groups)
        && product(&weight_shape).is_some()
        && product(&weight_shape[1..]).is_some()
        && product(&weight_shape[2..]).is_some()
}

fn product(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// A buffer length for a shape whose element count is `want`: mostly the
/// right one when it is small enough to allocate, else something close or
/// small.
fn buffer_len(u: &mut Unstructured, want: Option<usize>) -> Result<usize> {
    let small_want = want.filter(|&w| w <= MAX_BUF);
    Ok(match (u.int_in_range(0u8..=7)?, small_want) {
        (0..=5, Some(w)) => w,
        (6, Some(w)) => (w + 1).saturating_sub(2 * usize::from(u.arbitrary::<bool>()?)),
        _ => u.int_in_range(0..=64)?,
    })
}

fn hostile_params(u: &mut Unstructured) -> Result<ConvParams> {
    let mut p = ConvParams::default();
    for s in p.stride.iter_mut().chain(&mut p.dilation).chain(&mut p.padding) {
        *s = if u.ratio(1, 2)? { hostile_usize(u)? } else { u.int_in_range(0..=3)? };
    }
    p.groups = if u.ratio(1, 2)? { hostile_usize(u)? } else { u.int_in_range(0..=3)? };
    p.flip = u.arbitrary()?;
    p.layout = layout(u)?;
    Ok(p)
}

fn hostile_shape(u: &mut Unstructured) -> Result<[usize; 4]> {
    let mut s = [0; 4];
    for d in &mut s {
        *d = if u.ratio(1, 3)? { hostile_usize(u)? } else { u.int_in_range(0..=6)? };
    }
    Ok(s)
}

/// A convolution call with hostile shapes, parameters, lengths and options.
#[derive(Debug)]
struct ConvCall {
    conv: ConvProblem,
    options: ConvOptions,
    output_len: usize,
}

impl std::ops::Deref for ConvCall {
    type Target = ConvProblem;
    fn deref(&self) -> &ConvProblem {
        &self.conv
    }
}

impl ConvCall {
    fn arbitrary(u: &mut Unstructured) -> Result<Self> {
        let params = hostile_params(u)?;
        let input_shape = hostile_shape(u)?;
        let mut weight_shape = hostile_shape(u)?;
        if u.ratio(1, 2)? && params.groups != 0 {
            // Often make the channel counts agree, so deeper checks are reached.
            weight_shape[1] = input_shape[1] / params.groups;
        }
        let options = any_options(u)?;
        let out_want = conv2d_output_shape(input_shape, weight_shape, &params).ok().and_then(|s| product(&s));
        let output_len = buffer_len(u, out_want)?;
        let input_len = buffer_len(u, product(&input_shape))?;
        let weight_len = buffer_len(u, product(&weight_shape))?;
        let bias = match u.int_in_range(0u8..=3)? {
            0 => None,
            1 => Some(buffer_len(u, None)?),
            _ => Some(buffer_len(u, Some(weight_shape[0]))?),
        };
        let weight = values(u, weight_len)?;
        let bias = match bias {
            Some(len) => Some(values(u, len)?),
            None => None,
        };
        let input = values(u, input_len)?;
        let conv = ConvProblem { input_shape, weight_shape, params, input, weight, bias };
        Ok(ConvCall { conv, options, output_len })
    }

    fn check(&self) {
        trace(self);
        let expected = expected_output_shape(self.input_shape, self.weight_shape, &self.params);
        let shape = conv2d_output_shape(self.input_shape, self.weight_shape, &self.params);
        assert_eq!(shape.as_ref().ok(), expected.as_ref(), "conv2d_output_shape: {shape:?} for {self:?}");
        if let Err(e) = &shape {
            assert!(!e.to_string().is_empty());
        }
        let lengths_ok = expected.is_some()
            && self.input.len() == product(&self.input_shape).unwrap_or(usize::MAX)
            && self.weight.len() == product(&self.weight_shape).unwrap_or(usize::MAX)
            && self.bias.as_ref().is_none_or(|b| b.len() == self.weight_shape[0])
            && Some(self.output_len) == expected.and_then(|s| product(&s));
        let winograd_ok =
            self.options.algorithm != Algorithm::Winograd || winograd_applies(self.weight_shape, &self.params);
        let valid = lengths_ok && self.options.isa.is_available() && winograd_ok;

        let before = sentinel(self.output_len);
        let mut out = before.clone();
        let result = self.run_into(&self.options, &mut out);
        match &result {
            Ok(()) => assert!(valid, "accepted an invalid call: {self:?}"),
            Err(e) => {
                assert!(!valid, "rejected a valid call with {e}: {self:?}");
                assert!(!e.to_string().is_empty());
                assert_eq!(bits(&out), bits(&before), "output changed on Err({e}): {self:?}");
            }
        }
        // conv2d is conv2d_with on the default options.
        let mut plain = before.clone();
        let plain_result = self.run_default_into(&mut plain);
        assert_eq!(plain_result.is_ok(), lengths_ok, "conv2d: {plain_result:?} for {self:?}");
        if plain_result.is_err() {
            assert_eq!(bits(&plain), bits(&before), "conv2d changed the output on Err: {self:?}");
        }
        self.check_plan(&before);
        // The gradients take no bias: valid exactly when the shapes and the
        // other lengths are.
        let grads_ok = expected.is_some()
            && self.input.len() == product(&self.input_shape).unwrap_or(usize::MAX)
            && self.weight.len() == product(&self.weight_shape).unwrap_or(usize::MAX)
            && Some(self.output_len) == expected.and_then(|s| product(&s));
        self.check_backward(grads_ok);
        if result.is_ok() {
            self.check_values(&out);
        }
    }

    /// The gradients and the transposed convolution on the same shapes:
    /// never a panic; on `Err` the output untouched; `Ok` only for calls
    /// whose shapes and lengths are those of a valid forward call.
    fn check_backward(&self, grads_ok: bool) {
        let shape = expected_output_shape(self.input_shape, self.weight_shape, &self.params);
        let grad_output_shape = shape.unwrap_or(self.input_shape);
        let grad_output: Vec<f32> = (0..self.output_len).map(|i| ((i % 7) as f32) - 3.0).collect();
        let expect = |what: &str, r: std::result::Result<(), ConvError>, out: &[f32], before: &[f32]| match r {
            Ok(()) => assert!(grads_ok, "{what} accepted an invalid call: {self:?}"),
            Err(e) => {
                assert!(!e.to_string().is_empty());
                assert_eq!(bits(out), bits(before), "{what} changed its output on Err({e}): {self:?}");
            }
        };
        let before = sentinel(self.input.len());
        let mut dx = before.clone();
        let r = conv2d_backward_input_with(
            &self.options,
            &grad_output,
            grad_output_shape,
            &self.weight,
            self.weight_shape,
            &self.params,
            &mut dx,
            self.input_shape,
        );
        expect("conv2d_backward_input", r, &dx, &before);
        let before = sentinel(self.weight.len());
        let mut dw = before.clone();
        let r = conv2d_backward_weight_with(
            &self.options,
            &self.input,
            self.input_shape,
            &grad_output,
            grad_output_shape,
            &self.params,
            &mut dw,
            self.weight_shape,
        );
        expect("conv2d_backward_weight", r, &dw, &before);
        let before = sentinel(self.bias.as_ref().map_or(0, Vec::len));
        let mut db = before.clone();
        let r = conv2d_backward_bias_with_layout(&grad_output, grad_output_shape, self.params.layout, &mut db);
        if let Err(e) = r {
            assert!(!e.to_string().is_empty());
            assert_eq!(bits(&db), bits(&before), "conv2d_backward_bias changed its output on Err({e})");
        }
        // The transposed convolution that maps this call's input back to its
        // shape, with output_padding from the padding (often invalid).
        let t = ConvTransposeParams {
            stride: self.params.stride,
            padding: self.params.padding,
            output_padding: [self.params.padding[0] % 3, self.params.padding[1] % 3],
            dilation: self.params.dilation,
            groups: self.params.groups,
            layout: self.params.layout,
        };
        let t_shape = [self.input_shape[0], self.weight_shape[0], self.input_shape[2], self.input_shape[3]];
        let t_want = conv_transpose2d_output_shape(t_shape, self.weight_shape, &t).ok().and_then(|s| product(&s));
        let t_len = t_want.filter(|&n| n <= MAX_BUF).unwrap_or(self.output_len);
        let before = sentinel(t_len);
        let mut y = before.clone();
        let x: Vec<f32> = (0..product(&t_shape).filter(|&n| n <= MAX_BUF).unwrap_or(0)).map(|i| i as f32).collect();
        let r = conv_transpose2d_with(&self.options, &x, t_shape, &self.weight, self.weight_shape, None, &t, &mut y);
        if let Err(e) = r {
            assert!(!e.to_string().is_empty());
            assert_eq!(bits(&y), bits(&before), "conv_transpose2d changed its output on Err({e})");
        }
    }

    /// The same call through a plan: `new` accepts exactly the valid weights;
    /// `run` behaves as `conv2d_with`.
    fn check_plan(&self, before: &[f32]) {
        let plan_valid = plan_params_valid(self.weight_shape, &self.params)
            && Some(self.weight.len()) == product(&self.weight_shape)
            && self.bias.as_ref().is_none_or(|b| b.len() == self.weight_shape[0])
            && self.options.isa.is_available()
            && (self.options.algorithm != Algorithm::Winograd || winograd_applies(self.weight_shape, &self.params));
        let plan = Conv2dPlan::new(&self.weight, self.weight_shape, self.bias.as_deref(), &self.params, &self.options);
        let plan = match plan {
            Ok(plan) => {
                assert!(plan_valid, "Conv2dPlan::new accepted invalid weights: {self:?}");
                plan
            }
            Err(e) => {
                assert!(!plan_valid, "Conv2dPlan::new rejected valid weights with {e}: {self:?}");
                return;
            }
        };
        assert_eq!(
            plan.output_shape(self.input_shape),
            conv2d_output_shape(self.input_shape, self.weight_shape, &self.params),
            "plan.output_shape: {self:?}"
        );
        let mut out = before.to_vec();
        let result = plan.run(&self.input, self.input_shape, &mut out);
        let mut direct = before.to_vec();
        let direct_result = self.run_into(&self.options, &mut direct);
        assert_eq!(result, direct_result, "plan.run vs conv2d_with: {self:?}");
        assert_eq!(bits(&out), bits(&direct), "plan.run vs conv2d_with: {self:?}");
    }

    /// An accepted call: equal to the portable im2col path (the activation
    /// applied after), and close to the f64 reference when that is cheap.
    /// A call that may run Winograd is compared with the portable path of
    /// the same algorithm and precision instead (Winograd's bits are its
    /// own, the same on every path).
    fn check_values(&self, out: &[f32]) {
        let relaxed = may_relax(&self.options);
        let portable = ConvOptions {
            isa: Isa::Portable,
            algorithm: if relaxed { self.options.algorithm } else { Algorithm::Im2col },
            activation: Activation::None,
            threads: Threads::Single,
            precision: self.options.precision,
        };
        let mut want = sentinel(out.len());
        self.run_into(&portable, &mut want).expect("valid call");
        let act = self.options.activation;
        if self.options.isa != Isa::PortableUnfused {
            let applied: Vec<f32> = want.iter().map(|&x| act.apply(x)).collect();
            assert_eq!(canonical_bits(out), canonical_bits(&applied), "differs from portable im2col: {self:?}");
        }
        let k = self.weight_shape[1] * self.weight_shape[2] * self.weight_shape[3];
        // The reference indexes with isize: keep padded sizes well inside it.
        let p = &self.params;
        let small = |size: usize, a: usize, b: usize| (size as u128 + a as u128 + b as u128) < (1u128 << 60);
        let reference_ok = out.len().saturating_mul(k.max(1)) <= 100_000
            && small(self.input_shape[2], p.padding[0], p.padding[2])
            && small(self.input_shape[3], p.padding[1], p.padding[3])
            && all_tame(&self.input)
            && all_tame(&self.weight)
            && self.bias.as_deref().is_none_or(all_tame)
            && !relaxed;
        if reference_ok {
            let reference = self.reference().expect("the reference accepts a valid call");
            assert_close(&format!("portable im2col {self:?}"), &reference, &want, k);
        }
    }
}

/// im2col_len, im2col and col2im with hostile shapes and lengths.
fn check_im2col(u: &mut Unstructured) -> Result<()> {
    let params = hostile_params(u)?;
    let input_shape = hostile_shape(u)?;
    let kernel = [hostile_usize(u)?, hostile_usize(u)?];
    let kernel = if u.ratio(1, 2)? { kernel.map(|k| k % 4) } else { kernel };
    let groups = params.groups.max(1);
    let weight_shape = [groups, input_shape[1] / groups, kernel[0], kernel[1]];
    let geometry_ok = expected_output_shape(input_shape, weight_shape, &params);
    let want_len = geometry_ok.and_then(|[n, _, h_out, w_out]| {
        product(&[n, input_shape[1], kernel[0], kernel[1]]).and_then(|x| product(&[x, h_out, w_out]))
    });
    trace(&(input_shape, kernel, &params));
    let len = im2col_len(input_shape, kernel, &params);
    if geometry_ok.is_some() {
        // Valid geometry: the length, or an overflow of the column count.
        match &len {
            Ok(l) => assert_eq!(Some(*l), want_len, "im2col_len {input_shape:?} {kernel:?} {params:?}"),
            Err(e) => assert!(
                want_len.is_none() && matches!(e, ConvError::Overflow { .. }),
                "im2col_len rejected a valid geometry with {e}: {input_shape:?} {kernel:?} {params:?}"
            ),
        }
    } else {
        assert!(len.is_err(), "im2col_len accepted an invalid geometry: {input_shape:?} {kernel:?} {params:?}");
    }
    let cols_len = buffer_len(u, len.as_ref().ok().copied())?;
    let image_len = buffer_len(u, product(&input_shape))?;
    let valid = len.as_ref().is_ok_and(|&l| l == cols_len) && Some(image_len) == product(&input_shape);
    let image = values(u, image_len)?;
    let cols_before = sentinel(cols_len);
    let mut cols = cols_before.clone();
    let result = im2col(&image, input_shape, kernel, &params, &mut cols);
    assert_eq!(result.is_ok(), valid, "im2col: {result:?} for {input_shape:?} {kernel:?} {params:?}");
    if result.is_err() {
        assert_eq!(bits(&cols), bits(&cols_before), "im2col changed cols on Err");
    }
    let cols = if result.is_ok() { cols } else { values(u, cols_len)? };
    let image_before = sentinel(image_len);
    let mut back = image_before.clone();
    let result = col2im(&cols, input_shape, kernel, &params, &mut back);
    assert_eq!(result.is_ok(), valid, "col2im: {result:?} for {input_shape:?} {kernel:?} {params:?}");
    if result.is_err() {
        assert_eq!(bits(&back), bits(&image_before), "col2im changed the image on Err");
    }
    Ok(())
}

/// The pooling output shape a call must get, from the README's PyTorch
/// rules in 128-bit arithmetic (independently of the crate): `None` for a
/// call that must be rejected.
fn expected_pool_shape(shape: [usize; 4], p: &PoolParams, avg: bool) -> Option<[usize; 4]> {
    let max = usize::MAX as u128;
    let axis = |size: usize, i: usize| -> Option<u128> {
        let [size, k, s, d] = [size, p.kernel[i], p.stride[i], p.dilation[i]].map(|v| v as u128);
        let (a, b) = (p.padding[i] as u128, p.padding[i + 2] as u128);
        if size == 0 || k == 0 || s == 0 || d == 0 || (avg && d != 1) {
            return None;
        }
        let extent = d * (k - 1) + 1;
        let padded = size + a + b;
        if extent > max || a > extent / 2 || b > extent / 2 || padded + s + extent > isize::MAX as u128 {
            return None;
        }
        let span = padded.checked_sub(extent)?;
        let mut out = if p.ceil_mode { span.div_ceil(s) + 1 } else { span / s + 1 };
        if p.ceil_mode && (out - 1) * s >= size + a {
            out -= 1;
        }
        Some(out)
    };
    let (oh, ow) = (axis(shape[2], 0)?, axis(shape[3], 1)?);
    let fits = |dims: &[u128]| dims.iter().try_fold(1u128, |acc, &d| acc.checked_mul(d).filter(|&x| x <= max));
    let [n, c] = [shape[0] as u128, shape[1] as u128];
    fits(&[n, c])?;
    fits(&[shape[2] as u128, shape[3] as u128])?;
    fits(&[n, c, shape[2] as u128, shape[3] as u128])?;
    fits(&[oh, ow])?;
    fits(&[n, c, oh, ow])?;
    Some([n, c, oh, ow].map(|d| d as usize))
}

/// max/avg pooling, forward and backward, and global average pooling, with
/// hostile parameters, shapes and lengths: valid calls, and only they, are
/// accepted and match the reference; a rejected call leaves its output as it was.
fn check_pool(u: &mut Unstructured) -> Result<()> {
    let mut p = PoolParams::new([0, 0]);
    for v in p.kernel.iter_mut().chain(&mut p.stride).chain(&mut p.dilation).chain(&mut p.padding) {
        *v = if u.ratio(1, 4)? { hostile_usize(u)? } else { u.int_in_range(0..=3)? };
    }
    (p.ceil_mode, p.count_include_pad) = (u.arbitrary()?, u.arbitrary()?);
    p.layout = layout(u)?;
    let shape = hostile_shape(u)?;
    let avg = u.arbitrary::<bool>()?;
    let want = expected_pool_shape(shape, &p, avg);
    trace(&(shape, &p, avg));
    match pool2d_output_shape(shape, &p) {
        // The shape function does not know the kind: it accepts dilation for both.
        Ok(s) => assert_eq!(Some(s), expected_pool_shape(shape, &p, false), "pool2d_output_shape {shape:?} {p:?}"),
        Err(e) => assert!(expected_pool_shape(shape, &p, false).is_none(), "rejected a valid pooling: {e}"),
    }
    let (in_want, out_want) = (product(&shape), want.and_then(|s| product(&s)));
    let (in_len, out_len) = (buffer_len(u, in_want)?, buffer_len(u, out_want)?);
    let valid = want.is_some() && Some(in_len) == in_want && Some(out_len) == out_want;
    // The reference walks every window position: only for test-sized shapes
    // (an empty batch may come with an astronomically wide plane).
    let small = shape.iter().chain(want.iter().flatten()).all(|&d| d <= MAX_BUF);
    let x = values(u, in_len)?;
    // Values near f32::MAX may overflow an f32 sum the f64 reference keeps
    // finite: compare values only for tame inputs.
    let small = small && all_tame(&x);
    let before = sentinel(out_len);
    let mut y = before.clone();
    let result = if avg { avg_pool2d(&x, shape, &p, &mut y) } else { max_pool2d(&x, shape, &p, &mut y) };
    assert_eq!(result.is_ok(), valid, "pool (avg {avg}): {result:?} for {shape:?} {p:?}");
    if result.is_err() {
        assert_eq!(bits(&y), bits(&before), "pooling changed its output on Err");
    } else if small {
        let (reference, ref_shape) = pool2d_direct(&x, shape, &p, !avg).unwrap();
        assert_eq!(Some(ref_shape), want);
        assert_close(&format!("pool {shape:?} {p:?}"), &reference, &y, p.kernel[0] * p.kernel[1]);
    }
    // Backward, with its own lengths.
    let gy_len = buffer_len(u, out_want)?;
    let gy = values(u, gy_len)?;
    let small = small && all_tame(&gy);
    let gx_len = buffer_len(u, in_want)?;
    let before = sentinel(gx_len);
    let mut gx = before.clone();
    let result = if avg {
        avg_pool2d_backward(shape, &gy, &p, &mut gx)
    } else {
        max_pool2d_backward(&x, shape, &gy, &p, &mut gx)
    };
    let valid_back =
        want.is_some() && (avg || Some(x.len()) == in_want) && Some(gy.len()) == out_want && Some(gx_len) == in_want;
    assert_eq!(result.is_ok(), valid_back, "pool backward (avg {avg}): {result:?} for {shape:?} {p:?}");
    if result.is_err() {
        assert_eq!(bits(&gx), bits(&before), "pool backward changed grad_input on Err");
    } else if small {
        // Average pooling's gradient reads no input: the reference gets zeros.
        let x = if avg { vec![0.0; gx_len] } else { x.clone() };
        let reference = pool2d_backward_direct(&x, shape, &gy, &p, !avg).unwrap();
        assert_close(&format!("pool backward {shape:?} {p:?}"), &reference, &gx, p.kernel[0] * p.kernel[1]);
    }
    if !avg {
        check_pool_indices(u, &x, shape, &p, want, &y)?;
    }
    // Global average pooling: an `[n, c]` output of plane means.
    let planes = product(&shape[..2]);
    let g_len = buffer_len(u, planes)?;
    let before = sentinel(g_len);
    let mut g = before.clone();
    let result = global_avg_pool2d_with_layout(&x, shape, layout(u)?, &mut g);
    // Valid exactly when one window covering the whole plane is a valid pooling.
    let whole_plane = PoolParams::new([shape[2], shape[3]]);
    let global_ok =
        expected_pool_shape(shape, &whole_plane, true).is_some() && Some(x.len()) == in_want && Some(g_len) == planes;
    assert_eq!(result.is_ok(), global_ok, "global_avg_pool2d: {result:?} for {shape:?}");
    if result.is_err() {
        assert_eq!(bits(&g), bits(&before), "global_avg_pool2d changed its output on Err");
    }
    Ok(())
}

/// The switches of a max pool (`max_pool2d_with_indices`, its own buffer
/// lengths) and the unpooling with hostile indices and shapes: accepted
/// exactly when valid, untouched on `Err`; accepted switches name an element
/// holding the maximum `max_pool2d` wrote (`y`, when that call succeeded too).
fn check_pool_indices(
    u: &mut Unstructured,
    x: &[f32],
    shape: [usize; 4],
    p: &PoolParams,
    want: Option<[usize; 4]>,
    y: &[f32],
) -> Result<()> {
    let (in_want, out_want) = (product(&shape), want.and_then(|s| product(&s)));
    let (v_len, i_len) = (buffer_len(u, out_want)?, buffer_len(u, out_want)?);
    let (before, mut v) = (sentinel(v_len), sentinel(v_len));
    let mut at = vec![7usize; i_len];
    let result = max_pool2d_with_indices(x, shape, p, &mut v, &mut at);
    let valid = want.is_some() && Some(x.len()) == in_want && Some(v_len) == out_want && Some(i_len) == out_want;
    assert_eq!(result.is_ok(), valid, "max_pool2d_with_indices: {result:?} for {shape:?} {p:?}");
    if result.is_err() {
        assert_eq!(bits(&v), bits(&before), "max_pool2d_with_indices changed its output on Err");
        assert!(at.iter().all(|&i| i == 7), "max_pool2d_with_indices changed its indices on Err");
        return Ok(());
    }
    // Valid, so neither product overflows.
    let plane_in = product(&shape[2..]).unwrap();
    let plane_out = out_want.unwrap() / product(&shape[..2]).unwrap().max(1);
    for (k, (&m, &i)) in v.iter().zip(&at).enumerate() {
        if i == MAX_POOL_NO_INDEX {
            assert_eq!(m, f32::NEG_INFINITY, "a window without input");
        } else {
            assert!(i < plane_in, "index {i} outside a plane of {plane_in}");
            let got = match p.layout {
                Layout::Nchw => x[k / plane_out * plane_in + i],
                _ => {
                    // k = (image·plane_out + pixel)·c + channel.
                    let c = shape[1];
                    x[(k / c / plane_out * plane_in + i) * c + k % c]
                }
            };
            assert!(got.to_bits() == m.to_bits() || got.is_nan() && m.is_nan(), "switch {k}: {got} vs {m}");
        }
    }
    if y.len() == v.len() {
        assert_eq!(bits(y), bits(&v), "max_pool2d_with_indices vs max_pool2d");
    }
    // Unpool, with some indices made hostile and an output of its own length.
    for _ in 0..u.int_in_range(0..=2)? {
        if !at.is_empty() {
            let k = u.int_in_range(0..=at.len() - 1)?;
            at[k] = if u.arbitrary()? { hostile_usize(u)? } else { plane_in };
        }
    }
    let u_len = buffer_len(u, in_want)?;
    let (before, mut back) = (sentinel(u_len), sentinel(u_len));
    let out_shape = want.unwrap();
    let result = max_unpool2d_with_layout(&v, out_shape, &at, &mut back, shape, p.layout);
    let indices_ok = at.iter().all(|&i| i < plane_in || i == MAX_POOL_NO_INDEX);
    assert_eq!(result.is_ok(), indices_ok && Some(u_len) == in_want, "max_unpool2d: {result:?} for {shape:?} {p:?}");
    if result.is_err() {
        assert_eq!(bits(&back), bits(&before), "max_unpool2d changed its output on Err");
    }
    Ok(())
}

/// GEMMs the contract lets touch nothing (m or n zero: any pointers, any
/// strides) or only C (k zero: A and B unread), on any path.
fn check_empty_gemm(u: &mut Unstructured) -> Result<()> {
    let isa = any_isa(u)?;
    let (alpha, beta) = (value(u)?, if u.arbitrary()? { 0.0 } else { value(u)? });
    let (rsa, csa, rsb, csb) = (hostile_isize(u)?, hostile_isize(u)?, hostile_isize(u)?, hostile_isize(u)?);
    let dangling = std::ptr::NonNull::<f32>::dangling().as_ptr();
    if u.arbitrary()? {
        // m or n is zero: no element of any operand exists.
        let (mut m, mut n, k) = (hostile_usize(u)?, hostile_usize(u)?, hostile_usize(u)?);
        if u.arbitrary()? {
            m = 0;
        } else {
            n = 0;
        }
        let (rsc, csc) = (hostile_isize(u)?, hostile_isize(u)?);
        // SAFETY: with m == 0 or n == 0 there is no element (i, l, j) whose
        // address the contract asks to be valid.
        let result = unsafe {
            sgemm_with_isa(isa, m, k, n, alpha, dangling, rsa, csa, dangling, rsb, csb, beta, dangling, rsc, csc)
        };
        assert_eq!(result.is_ok(), isa.is_available(), "{}: {result:?}", isa.name());
        // SAFETY: as above.
        unsafe { sgemm(m, k, n, alpha, dangling, rsa, csa, dangling, rsb, csb, beta, dangling, rsc, csc) };
        return Ok(());
    }
    // k == 0: C = alpha·0 + beta·C, A and B never read. C is a small
    // row-major block inside guards.
    let (m, n) = (u.int_in_range(1..=20)?, u.int_in_range(1..=20)?);
    let c0 = values(u, m * n + 2)?;
    let mut c = c0.clone();
    // SAFETY: A and B have no elements (k == 0); C is m × n row-major at
    // c[1..], inside the buffer.
    let result = unsafe {
        sgemm_with_isa(
            isa,
            m,
            0,
            n,
            alpha,
            dangling,
            rsa,
            csa,
            dangling,
            rsb,
            csb,
            beta,
            c.as_mut_ptr().add(1),
            n as isize,
            1,
        )
    };
    assert_eq!(result.is_ok(), isa.is_available(), "{}: {result:?}", isa.name());
    if result.is_err() {
        assert_eq!(bits(&c), bits(&c0), "{}: C changed on Err", isa.name());
        return Ok(());
    }
    assert_eq!((c[0].to_bits(), c[m * n + 1].to_bits()), (c0[0].to_bits(), c0[m * n + 1].to_bits()), "guards");
    for (i, (&got, &old)) in c[1..=m * n].iter().zip(&c0[1..=m * n]).enumerate() {
        // The reproducibility rule: acc = +0; c = alpha·acc, or mul_add(beta, c, alpha·acc).
        let v = alpha * 0.0;
        let want = if beta == 0.0 { v } else { beta.mul_add(old, v) };
        // Which NaN comes out where two meet (a NaN beta, alpha or C value)
        // is not specified (lib.rs, "NaN and infinities"): NaN-ness only.
        let two_nans = [alpha, beta, old].iter().filter(|x| x.is_nan()).count() >= 2;
        if isa != Isa::PortableUnfused && !two_nans {
            assert_eq!(got.to_bits(), want.to_bits(), "{} k=0 element {i}: alpha={alpha} beta={beta}", isa.name());
        } else {
            assert_eq!(got.is_nan(), want.is_nan(), "{} k=0 element {i}", isa.name());
        }
    }
    Ok(())
}

/// The small surface: Isa names and detection, Activation::apply, Display.
fn check_misc(u: &mut Unstructured) -> Result<()> {
    let name: &str = u.arbitrary()?;
    if let Some(isa) = Isa::from_name(name) {
        assert_eq!(isa.name(), name);
    }
    for isa in Isa::ALL {
        assert_eq!(Isa::from_name(isa.name()), Some(isa));
        assert_eq!(isa.is_available(), Isa::available().contains(&isa));
        assert!(!isa.kernel_name().is_empty());
    }
    assert!(Isa::detect().is_available() && Isa::best().is_available());
    let act = activation(u)?;
    let x = value(u)?;
    let y = act.apply(x);
    match act {
        Activation::None => assert_eq!(y.to_bits(), x.to_bits()),
        Activation::Relu => assert_eq!(y.to_bits(), if x < 0.0 { 0.0f32 } else { x }.to_bits()),
        Activation::Clamp { min, max } => {
            let lo = if x < min { min } else { x };
            assert_eq!(y.to_bits(), if lo > max { max } else { lo }.to_bits());
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    for _ in 0..4 {
        let step = match u.int_in_range(0u8..=10) {
            Ok(0..=5) => ConvCall::arbitrary(&mut u).map(|call| call.check()),
            Ok(6 | 7) => check_im2col(&mut u),
            Ok(8) => check_empty_gemm(&mut u),
            Ok(9) => check_pool(&mut u),
            Ok(_) => check_misc(&mut u),
            Err(_) => return,
        };
        if step.is_err() || u.is_empty() {
            return;
        }
    }
});
