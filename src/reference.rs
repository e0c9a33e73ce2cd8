//! Slow, obviously correct oracles, accumulating in f64, written straight from
//! the defining sums. Tests, benches and fuzz targets share them; nothing in
//! the fast paths calls them. They validate shapes like the fast paths do but
//! are not tuned: keep the sizes small.

use crate::check::{check_len, product};
use crate::geometry::ConvGeometry;
use crate::{ConvError, ConvParams, Layout};

/// A reference result: the f64 value of every output element and the
/// magnitude of its defining sum, `Σ |term|` (bias included), which scales
/// the rounding error an f32 computation may make.
#[derive(Clone, Debug)]
pub struct Reference {
    /// The exact-ish (f64) value of each element, in the output's layout.
    pub value: Vec<f64>,
    /// `Σ |term|` over the terms of each element's sum (bias included).
    pub magnitude: Vec<f64>,
}

impl Reference {
    /// The first index where `got` is farther from the reference than
    /// `rel · magnitude` (NaN and infinities must match exactly in kind),
    /// with both values, or `None` when every element is within the bound.
    pub fn first_mismatch(&self, got: &[f32], rel: f64) -> Option<(usize, f64, f32)> {
        assert_eq!(got.len(), self.value.len(), "length of result vs reference");
        (0..got.len()).find_map(|i| {
            let (want, g) = (self.value[i], got[i] as f64);
            let ok = if want.is_nan() || g.is_nan() {
                want.is_nan() && g.is_nan()
            } else if want.is_infinite() || g.is_infinite() {
                want == g
            } else {
                (want - g).abs() <= rel * self.magnitude[i]
            };
            (!ok).then_some((i, want, got[i]))
        })
    }
}

/// `X[n, c, iy, ix]` for the input position that kernel tap `(u, v)` of output
/// `(oy, ox)` reads (the input in `params.layout`), or 0 where that position
/// falls in the zero padding. This
/// is the one place the index formula of cross-correlation is written down:
/// `iy = oy·stride_h + u·dilation_h − pad_top`, `ix = ox·stride_w + v·dilation_w − pad_left`.
/// (Computed in `isize`: meant for test-sized shapes, not for paddings or
/// strides near `isize::MAX`.)
#[allow(clippy::too_many_arguments)]
pub fn input_tap(
    input: &[f32],
    input_shape: [usize; 4],
    params: &ConvParams,
    n: usize,
    c: usize,
    oy: usize,
    ox: usize,
    u: usize,
    v: usize,
) -> f32 {
    let [_, c_in, h, w] = input_shape;
    let iy = (oy * params.stride[0] + u * params.dilation[0]) as isize - params.padding[0] as isize;
    let ix = (ox * params.stride[1] + v * params.dilation[1]) as isize - params.padding[1] as isize;
    if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= w {
        return 0.0;
    }
    input[offset(params.layout, [0, c_in, h, w], n, c, iy as usize, ix as usize)]
}

/// `values` (a batch `[n, c, h, w]` in NCHW order) in the order of `layout`.
pub fn nchw_to(layout: Layout, values: Vec<f64>, [n, c, h, w]: [usize; 4]) -> Vec<f64> {
    match layout {
        Layout::Nchw => values,
        _ => (0..n * c * h * w)
            .map(|i| {
                // Element i of the channels-last order: (b, y, x, ch).
                let (ch, x, y, b) = (i % c, i / c % w, i / (c * w) % h, i / (c * w * h));
                values[((b * c + ch) * h + y) * w + x]
            })
            .collect(),
    }
}

/// Where element `(b, ch, y, x)` of a batch of logical shape `[n, c, h, w]`
/// lies in `layout`: `((b·c + ch)·h + y)·w + x` (NCHW) or
/// `((b·h + y)·w + x)·c + ch` (NHWC), the formulas of the layout's docs.
pub fn offset(layout: Layout, [_, c, h, w]: [usize; 4], b: usize, ch: usize, y: usize, x: usize) -> usize {
    match layout {
        Layout::Nchw => ((b * c + ch) * h + y) * w + x,
        _ => ((b * h + y) * w + x) * c + ch,
    }
}

/// The batch items a loop over a batch visits: `batch`, or none when each
/// item is empty (`dims`, an item's sizes, hold a zero). A batch of
/// `usize::MAX` empty items is a valid call, and would otherwise loop for
/// ever doing nothing (found by the fuzz target `api_hostile`).
fn items(batch: usize, dims: &[usize]) -> usize {
    if dims.contains(&0) { 0 } else { batch }
}

/// `values` (a batch of logical shape `shape` in `layout`) in NCHW order.
fn to_nchw(layout: Layout, values: &[f32], shape: [usize; 4]) -> Vec<f32> {
    let [n, c, h, w] = shape;
    let mut out = Vec::with_capacity(values.len());
    for b in 0..items(n, &[c, h, w]) {
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    out.push(values[offset(layout, shape, b, ch, y, x)]);
                }
            }
        }
    }
    out
}

/// The direct convolution of `conv2d`, in f64:
/// `Z[n,o,i,j] = bias[o] + Σ_c Σ_u Σ_v W[o,c,u',v'] · X[n, g·cg + c, i·sh + u·dh − pt, j·sw + v·dw − pl]`
/// where `g = o / (c_out/groups)`, `cg = c_in/groups`, and `(u', v') = (u, v)`
/// for cross-correlation or `(kh−1−u, kw−1−v)` when `params.flip`; input
/// and result in `params.layout`.
pub fn conv2d_direct(
    input: &[f32],
    input_shape: [usize; 4],
    weight: &[f32],
    weight_shape: [usize; 4],
    bias: Option<&[f32]>,
    params: &ConvParams,
) -> Result<Reference, ConvError> {
    let geo = ConvGeometry::new(input_shape, weight_shape, params)?;
    check_len("input", input.len(), geo.input_len())?;
    check_len("weight", weight.len(), geo.weight_len())?;
    if let Some(b) = bias {
        check_len("bias", b.len(), geo.c_out)?;
    }
    let [batch, c_out, h_out, w_out] = geo.output_shape();
    let (cg_in, cg_out, kh, kw) = (geo.c_in_per_group(), geo.c_out_per_group(), geo.kh, geo.kw);
    let mut value = Vec::with_capacity(geo.output_len());
    let mut magnitude = Vec::with_capacity(geo.output_len());
    for n in 0..items(batch, &[c_out, h_out, w_out]) {
        for o in 0..c_out {
            let g = o / cg_out;
            for i in 0..h_out {
                for j in 0..w_out {
                    let b = bias.map_or(0.0, |b| b[o] as f64);
                    let (mut sum, mut mag) = (b, b.abs());
                    for c in 0..cg_in {
                        for u in 0..kh {
                            for v in 0..kw {
                                let (wu, wv) = if params.flip { (kh - 1 - u, kw - 1 - v) } else { (u, v) };
                                let w = weight[((o * cg_in + c) * kh + wu) * kw + wv] as f64;
                                let x = input_tap(input, input_shape, params, n, g * cg_in + c, i, j, u, v) as f64;
                                sum += w * x;
                                mag += (w * x).abs();
                            }
                        }
                    }
                    value.push(sum);
                    magnitude.push(mag);
                }
            }
        }
    }
    let shape = geo.output_shape();
    Ok(Reference { value: nchw_to(params.layout, value, shape), magnitude: nchw_to(params.layout, magnitude, shape) })
}

/// The naive matrix product in f64: `Σ_l a(i, l) · b(l, j)` for an m×k `a`
/// and a k×n `b` given as element functions; row-major m×n result.
pub fn gemm_naive(
    m: usize,
    k: usize,
    n: usize,
    a: impl Fn(usize, usize) -> f32,
    b: impl Fn(usize, usize) -> f32,
) -> Reference {
    let mut value = Vec::with_capacity(m * n);
    let mut magnitude = Vec::with_capacity(m * n);
    for i in 0..m {
        for j in 0..n {
            let (mut sum, mut mag) = (0.0f64, 0.0f64);
            for l in 0..k {
                let t = a(i, l) as f64 * b(l, j) as f64;
                sum += t;
                mag += t.abs();
            }
            value.push(sum);
            magnitude.push(mag);
        }
    }
    Reference { value, magnitude }
}

/// The tap the forward multiplies by weight element `(u, v)` of a kernel:
/// `(u, v)`, or `(kh−1−u, kw−1−v)` when `params.flip` (rotation is its own inverse).
fn flipped_tap(weight_shape: [usize; 4], params: &ConvParams, u: usize, v: usize) -> (usize, usize) {
    let [_, _, kh, kw] = weight_shape;
    if params.flip { (kh - 1 - u, kw - 1 - v) } else { (u, v) }
}

/// `Err` unless `found` is the forward output shape `expected`.
fn check_shape(what: &'static str, expected: [usize; 4], found: [usize; 4]) -> Result<(), ConvError> {
    for (e, f) in expected.into_iter().zip(found) {
        if e != f {
            return Err(ConvError::ShapeMismatch { what, expected: e, found: f });
        }
    }
    Ok(())
}

/// The input gradient of `conv2d`, in f64, from the definition: since
/// `Z[n,o,i,j] = Σ_c Σ_u Σ_v W'[o,c,u,v] · X[n, g·cg + c, i·sh + u·dh − pt, j·sw + v·dw − pl]`,
/// `dX[n, g·cg + c, y, x] = Σ_o Σ_u Σ_v Σ_{i,j} W'[o,c,u,v] · dY[n,o,i,j]` over the `o` of
/// group `g` and the `(i, j)` with `i·sh + u·dh − pt = y` and `j·sw + v·dw − pl = x`
/// (`W'` the kernel as the forward applies it, rotated when `params.flip`);
/// `grad_output` and the result in `params.layout`.
pub fn conv2d_backward_input_direct(
    grad_output: &[f32],
    grad_output_shape: [usize; 4],
    weight: &[f32],
    weight_shape: [usize; 4],
    params: &ConvParams,
    input_shape: [usize; 4],
) -> Result<Reference, ConvError> {
    let geo = ConvGeometry::new(input_shape, weight_shape, params)?;
    check_shape("grad_output_shape", geo.output_shape(), grad_output_shape)?;
    check_len("grad_output", grad_output.len(), geo.output_len())?;
    check_len("weight", weight.len(), geo.weight_len())?;
    let [batch, c_in, h, w] = input_shape;
    let [_, _, h_out, w_out] = geo.output_shape();
    let (cg_in, cg_out, kh, kw) = (geo.c_in_per_group(), geo.c_out_per_group(), geo.kh, geo.kw);
    let (sh, sw, dh, dw) = (params.stride[0], params.stride[1], params.dilation[0], params.dilation[1]);
    let (pt, pl) = (params.padding[0], params.padding[1]);
    let mut value = Vec::with_capacity(geo.input_len());
    let mut magnitude = Vec::with_capacity(geo.input_len());
    for n in 0..items(batch, &[c_in, h, w]) {
        for ci in 0..c_in {
            let (g, c) = (ci / cg_in, ci % cg_in);
            for y in 0..h {
                for x in 0..w {
                    let (mut sum, mut mag) = (0.0f64, 0.0f64);
                    for o in g * cg_out..(g + 1) * cg_out {
                        for u in 0..kh {
                            for v in 0..kw {
                                // i·sh = y + pt − u·dh and j·sw = x + pl − v·dw, when whole.
                                let (ni, nj) =
                                    ((y + pt) as isize - (u * dh) as isize, (x + pl) as isize - (v * dw) as isize);
                                if ni < 0
                                    || nj < 0
                                    || !(ni as usize).is_multiple_of(sh)
                                    || !(nj as usize).is_multiple_of(sw)
                                {
                                    continue;
                                }
                                let (i, j) = (ni as usize / sh, nj as usize / sw);
                                if i >= h_out || j >= w_out {
                                    continue;
                                }
                                let (wu, wv) = flipped_tap(weight_shape, params, u, v);
                                let wt = weight[((o * cg_in + c) * kh + wu) * kw + wv] as f64;
                                let dy = grad_output[offset(params.layout, grad_output_shape, n, o, i, j)] as f64;
                                sum += wt * dy;
                                mag += (wt * dy).abs();
                            }
                        }
                    }
                    value.push(sum);
                    magnitude.push(mag);
                }
            }
        }
    }
    let layout = params.layout;
    Ok(Reference { value: nchw_to(layout, value, input_shape), magnitude: nchw_to(layout, magnitude, input_shape) })
}

/// The weight gradient of `conv2d`, in f64, from the definition:
/// `dW[o, c, a, b] = Σ_n Σ_i Σ_j dY[n,o,i,j] · X[n, g·cg + c, i·sh + u·dh − pt, j·sw + v·dw − pl]`
/// where `(u, v)` is the tap the forward multiplies by `W[o,c,a,b]`: `(a, b)`,
/// or `(kh−1−a, kw−1−b)` when `params.flip`; `input` and `grad_output` in
/// `params.layout`.
pub fn conv2d_backward_weight_direct(
    input: &[f32],
    input_shape: [usize; 4],
    grad_output: &[f32],
    grad_output_shape: [usize; 4],
    params: &ConvParams,
    weight_shape: [usize; 4],
) -> Result<Reference, ConvError> {
    let geo = ConvGeometry::new(input_shape, weight_shape, params)?;
    check_shape("grad_output_shape", geo.output_shape(), grad_output_shape)?;
    check_len("input", input.len(), geo.input_len())?;
    check_len("grad_output", grad_output.len(), geo.output_len())?;
    let [batch, c_out, h_out, w_out] = geo.output_shape();
    let (cg_in, cg_out, kh, kw) = (geo.c_in_per_group(), geo.c_out_per_group(), geo.kh, geo.kw);
    let mut value = Vec::with_capacity(geo.weight_len());
    let mut magnitude = Vec::with_capacity(geo.weight_len());
    for o in 0..c_out {
        let g = o / cg_out;
        for c in 0..cg_in {
            for a in 0..kh {
                for b in 0..kw {
                    let (u, v) = flipped_tap(weight_shape, params, a, b);
                    let (mut sum, mut mag) = (0.0f64, 0.0f64);
                    for n in 0..items(batch, &[h_out, w_out]) {
                        for i in 0..h_out {
                            for j in 0..w_out {
                                let dy = grad_output[offset(params.layout, grad_output_shape, n, o, i, j)] as f64;
                                let x = input_tap(input, input_shape, params, n, g * cg_in + c, i, j, u, v) as f64;
                                sum += dy * x;
                                mag += (dy * x).abs();
                            }
                        }
                    }
                    value.push(sum);
                    magnitude.push(mag);
                }
            }
        }
    }
    Ok(Reference { value, magnitude })
}

/// The bias gradient of `conv2d`, in f64: `db[o] = Σ_n Σ_i Σ_j dY[n,o,i,j]`,
/// `grad_output` in NCHW.
pub fn conv2d_backward_bias_direct(grad_output: &[f32], grad_output_shape: [usize; 4]) -> Result<Reference, ConvError> {
    conv2d_backward_bias_direct_with_layout(grad_output, grad_output_shape, Layout::Nchw)
}

/// [`conv2d_backward_bias_direct`] with `grad_output` in `layout`.
pub fn conv2d_backward_bias_direct_with_layout(
    grad_output: &[f32],
    grad_output_shape: [usize; 4],
    layout: Layout,
) -> Result<Reference, ConvError> {
    let [batch, c_out, h_out, w_out] = grad_output_shape;
    check_len("grad_output", grad_output.len(), product(&grad_output_shape, "grad_output")?)?;
    let (mut value, mut magnitude) = (vec![0.0f64; c_out], vec![0.0f64; c_out]);
    for n in 0..items(batch, &[c_out, h_out, w_out]) {
        for o in 0..c_out {
            for y in 0..h_out {
                for x in 0..w_out {
                    let d = grad_output[offset(layout, grad_output_shape, n, o, y, x)] as f64;
                    value[o] += d;
                    magnitude[o] += d.abs();
                }
            }
        }
    }
    Ok(Reference { value, magnitude })
}

/// The transposed convolution of `conv_transpose2d`, in f64, from PyTorch's
/// definition: every input pixel scatters its kernel-weighted copy,
/// `Z[n, g·cg + o, iy·sh + u·dh − pt, ix·sw + v·dw − pl] += X[n, i, iy, ix] · W[i, o, u, v]`
/// for the input channels `i` of group `g` (`cg = c_out / groups`), positions
/// outside the output dropped, `bias[g·cg + o]` added to every output;
/// input and result in `params.layout`.
pub fn conv_transpose2d_direct(
    input: &[f32],
    input_shape: [usize; 4],
    weight: &[f32],
    weight_shape: [usize; 4],
    bias: Option<&[f32]>,
    params: &crate::ConvTransposeParams,
) -> Result<Reference, ConvError> {
    let out_shape = crate::conv_transpose2d_output_shape(input_shape, weight_shape, params)?;
    let [batch, c_in, h, w] = input_shape;
    let [_, c_out, h_out, w_out] = out_shape;
    let [_, cg_out, kh, kw] = weight_shape;
    check_len("input", input.len(), input_shape.iter().product())?;
    check_len("weight", weight.len(), weight_shape.iter().product())?;
    if let Some(b) = bias {
        check_len("bias", b.len(), c_out)?;
    }
    let cg_in = c_in / params.groups;
    let len = out_shape.iter().product();
    let (mut value, mut magnitude) = (vec![0.0f64; len], vec![0.0f64; len]);
    for n in 0..items(batch, &[c_in, h, w]) {
        for i in 0..c_in {
            let g = i / cg_in;
            for iy in 0..h {
                for ix in 0..w {
                    let x = input[offset(params.layout, input_shape, n, i, iy, ix)] as f64;
                    for o in 0..cg_out {
                        for u in 0..kh {
                            for v in 0..kw {
                                let oy = (iy * params.stride[0] + u * params.dilation[0]) as isize
                                    - params.padding[0] as isize;
                                let ox = (ix * params.stride[1] + v * params.dilation[1]) as isize
                                    - params.padding[1] as isize;
                                if oy < 0 || ox < 0 || oy as usize >= h_out || ox as usize >= w_out {
                                    continue;
                                }
                                let t = x * weight[((i * cg_out + o) * kh + u) * kw + v] as f64;
                                let at = ((n * c_out + g * cg_out + o) * h_out + oy as usize) * w_out + ox as usize;
                                // (`at` in NCHW order; permuted to `params.layout` at the end.)
                                value[at] += t;
                                magnitude[at] += t.abs();
                            }
                        }
                    }
                }
            }
        }
    }
    if let Some(b) = bias {
        for (at, (z, m)) in value.iter_mut().zip(&mut magnitude).enumerate() {
            let bias = b[at / (h_out * w_out).max(1) % c_out.max(1)] as f64;
            *z += bias;
            *m += bias.abs();
        }
    }
    let layout = params.layout;
    Ok(Reference { value: nchw_to(layout, value, out_shape), magnitude: nchw_to(layout, magnitude, out_shape) })
}

/// The output length along one pooling axis, counted window by window:
/// window `o` starts at `o·stride − pad_a`; without `ceil_mode` it must end
/// inside the padded input, with it it may overrun the padded end by less
/// than a stride but must start before the trailing padding.
fn pool_axis_len(size: usize, kernel: usize, stride: usize, dilation: usize, pad: [usize; 2], ceil: bool) -> usize {
    let extent = dilation * (kernel - 1) + 1;
    let padded = size + pad[0] + pad[1];
    (0..)
        .take_while(|&o| {
            let start = o * stride;
            if ceil { start < size + pad[0] && start + extent < padded + stride } else { start + extent <= padded }
        })
        .count()
}

/// `max_pool2d` or `avg_pool2d` by direct loops over every window position,
/// in f64, with its own output-size count (tests compare it with
/// `pool2d_output_shape`). Max: the largest input element of the window,
/// padding ignored (a window with none is −∞); NaN wins. Average: the sum of
/// the window's input elements over the divisor, which with
/// `count_include_pad` counts window positions inside the padded input, else
/// the input elements. Returns the values (magnitude: `Σ|x| / divisor`, 0 for
/// max, which is exact) and the output shape; input and values in
/// `params.layout`. Parameter errors come from `pool2d_output_shape`.
pub fn pool2d_direct(
    input: &[f32],
    input_shape: [usize; 4],
    params: &crate::PoolParams,
    max: bool,
) -> Result<(Reference, [usize; 4]), ConvError> {
    crate::pool2d_output_shape(input_shape, params)?;
    let [n, c, h, w] = input_shape;
    check_len("input", input.len(), n * c * h * w)?;
    if params.layout != Layout::Nchw {
        // The NCHW loops on the input read into NCHW order, the result put back.
        let nchw = crate::PoolParams { layout: Layout::Nchw, ..*params };
        let (r, shape) = pool2d_direct(&to_nchw(params.layout, input, input_shape), input_shape, &nchw, max)?;
        let (value, magnitude) = (nchw_to(params.layout, r.value, shape), nchw_to(params.layout, r.magnitude, shape));
        return Ok((Reference { value, magnitude }, shape));
    }
    let p = params;
    let oh = pool_axis_len(h, p.kernel[0], p.stride[0], p.dilation[0], [p.padding[0], p.padding[2]], p.ceil_mode);
    let ow = pool_axis_len(w, p.kernel[1], p.stride[1], p.dilation[1], [p.padding[1], p.padding[3]], p.ceil_mode);
    let (mut value, mut magnitude) = (Vec::new(), Vec::new());
    for plane in input.chunks_exact(h * w).take(n * c) {
        for oy in 0..oh {
            for ox in 0..ow {
                let (mut best, mut sum, mut abs, mut inside, mut padded) = (f64::NEG_INFINITY, 0.0, 0.0, 0, 0);
                for u in 0..p.kernel[0] {
                    for v in 0..p.kernel[1] {
                        let iy = (oy * p.stride[0] + u * p.dilation[0]) as isize - p.padding[0] as isize;
                        let ix = (ox * p.stride[1] + v * p.dilation[1]) as isize - p.padding[1] as isize;
                        let in_padded = iy < (h + p.padding[2]) as isize && ix < (w + p.padding[3]) as isize;
                        padded += in_padded as usize;
                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                            continue;
                        }
                        let x = plane[iy as usize * w + ix as usize] as f64;
                        if x.is_nan() || x > best {
                            best = x;
                        }
                        sum += x;
                        abs += x.abs();
                        inside += 1;
                    }
                }
                let divisor = if p.count_include_pad { padded } else { inside } as f64;
                value.push(if max { best } else { sum / divisor });
                magnitude.push(if max { 0.0 } else { abs / divisor });
            }
        }
    }
    Ok((Reference { value, magnitude }, [n, c, oh, ow]))
}

/// The gradients of `max_pool2d` (to each window's first maximum in
/// row-major window order; with NaNs, to the last NaN) or of `avg_pool2d`
/// (the gradient over the divisor to every input element of the window),
/// in f64, by direct loops. Magnitude: `Σ |term|` per input element.
pub fn pool2d_backward_direct(
    input: &[f32],
    input_shape: [usize; 4],
    grad_output: &[f32],
    params: &crate::PoolParams,
    max: bool,
) -> Result<Reference, ConvError> {
    let (_, [n, c, oh, ow]) = pool2d_direct(input, input_shape, params, max)?;
    let [_, _, h, w] = input_shape;
    check_len("grad_output", grad_output.len(), n * c * oh * ow)?;
    if params.layout != Layout::Nchw {
        let nchw = crate::PoolParams { layout: Layout::Nchw, ..*params };
        let (x, dy) = (to_nchw(params.layout, input, input_shape), to_nchw(params.layout, grad_output, [n, c, oh, ow]));
        let r = pool2d_backward_direct(&x, input_shape, &dy, &nchw, max)?;
        let (value, magnitude) =
            (nchw_to(params.layout, r.value, input_shape), nchw_to(params.layout, r.magnitude, input_shape));
        return Ok(Reference { value, magnitude });
    }
    let p = params;
    let mut value = vec![0.0; n * c * h * w];
    let mut magnitude = vec![0.0; n * c * h * w];
    for plane in 0..n * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut taps = Vec::new();
                let mut padded = 0;
                for u in 0..p.kernel[0] {
                    for v in 0..p.kernel[1] {
                        let iy = (oy * p.stride[0] + u * p.dilation[0]) as isize - p.padding[0] as isize;
                        let ix = (ox * p.stride[1] + v * p.dilation[1]) as isize - p.padding[1] as isize;
                        padded += (iy < (h + p.padding[2]) as isize && ix < (w + p.padding[3]) as isize) as usize;
                        if iy >= 0 && ix >= 0 && iy < h as isize && ix < w as isize {
                            taps.push(plane * h * w + iy as usize * w + ix as usize);
                        }
                    }
                }
                let g = grad_output[(plane * oh + oy) * ow + ox] as f64;
                let targets: Vec<(usize, f64)> = if max {
                    let mut best: Option<usize> = None;
                    for &t in &taps {
                        let x = input[t];
                        if best.is_none_or(|b| x.is_nan() || x > input[b]) {
                            best = Some(t);
                        }
                    }
                    best.map(|b| (b, g)).into_iter().collect()
                } else {
                    let divisor = if p.count_include_pad { padded } else { taps.len() } as f64;
                    taps.iter().map(|&t| (t, g / divisor)).collect()
                };
                for (t, d) in targets {
                    value[t] += d;
                    magnitude[t] += d.abs();
                }
            }
        }
    }
    Ok(Reference { value, magnitude })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch of `usize::MAX − 5` items without channels is a valid call
    /// with an empty result, and the reference returns it at once (found by
    /// the fuzz target `api_hostile` at opt-level 1; at opt-level 3 the
    /// empty loops are optimised away, so this test bites in debug builds
    /// and under Miri, which `.ci/run` runs on the lib's tests).
    #[test]
    fn empty_items_of_a_huge_batch_are_not_visited() {
        let n = usize::MAX - 5;
        for layout in [Layout::Nchw, Layout::Nhwc] {
            let params = ConvParams { layout, ..ConvParams::default() };
            let forward = conv2d_direct(&[], [n, 0, 3, 3], &[], [0, 0, 2, 2], None, &params).unwrap();
            assert!(forward.value.is_empty() && forward.magnitude.is_empty());
            let input =
                conv2d_backward_input_direct(&[], [n, 0, 2, 2], &[], [0, 0, 2, 2], &params, [n, 0, 3, 3]).unwrap();
            assert!(input.value.is_empty());
            let bias = conv2d_backward_bias_direct_with_layout(&[], [n, 0, 2, 2], layout).unwrap();
            assert!(bias.value.is_empty());
        }
    }
}
