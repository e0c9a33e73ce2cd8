//! Fuzz target: the C entry points with hostile pointer-and-length
//! combinations, as a careless or malicious C caller would pass them — NULL,
//! misaligned, overlapping, too short, too long, lengths beyond the address
//! space — plus hostile shapes and enum values, all inside one arena (so
//! every length is true of the memory behind it, and AddressSanitizer sees
//! any access past it).
//!
//! The oracles: a failed call leaves every byte of the arena as it was; a
//! call succeeds exactly when its pointers are clean (restated here) and the
//! Rust function accepts the same arguments, and then it wrote only its
//! output, with the Rust function's bits.
#![no_main]

use std::ffi::c_int;

use convgemm::reference::gemm_naive;
use convgemm::{
    ConvOptions, Layout, PoolParams, conv2d_backward_input_with, conv2d_with, global_avg_pool2d_with_layout, max_pool2d,
};
use convgemm_capi::*;
use convgemm_fuzz::{all_tame, assert_close, bits, hostile_isize, hostile_usize, trace, value};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

/// The arena's size in floats: every buffer a call gets lies inside it.
const ARENA: usize = 1024;

/// One buffer argument: where it starts (in bytes from the arena's start)
/// and the length passed; `None` is NULL.
#[derive(Clone, Copy, Debug)]
struct Buf {
    at: Option<usize>,
    len: usize,
}

impl Buf {
    fn any(u: &mut Unstructured) -> Result<Buf> {
        Ok(match u.int_in_range(0u8..=15)? {
            // NULL, with a length of 0 or not.
            0 => Buf { at: None, len: if u.arbitrary()? { 0 } else { u.int_in_range(1..=64)? } },
            // Misaligned by 1 to 3 bytes, the length true of the arena.
            1 => {
                let at = u.int_in_range(0..=ARENA - 2)? * 4 + u.int_in_range(1..=3)?;
                Buf { at: Some(at), len: u.int_in_range(0..=(ARENA * 4 - at) / 4)? }
            }
            // A length no address space holds (rejected before any use).
            2 => Buf { at: Some(0), len: (isize::MAX as usize / 4 + 1).saturating_add(hostile_usize(u)?) },
            // Aligned anywhere, any true length.
            _ => {
                let start = u.int_in_range(0..=ARENA)?;
                Buf { at: Some(start * 4), len: u.int_in_range(0..=ARENA - start)? }
            }
        })
    }

    /// An exact-length buffer at a random aligned place (so valid calls happen).
    fn exact(u: &mut Unstructured, len: usize) -> Result<Buf> {
        if len > ARENA || Buf::rarely(u)? {
            return Buf::any(u);
        }
        Ok(Buf { at: Some(u.int_in_range(0..=ARENA - len)? * 4), len })
    }

    fn rarely(u: &mut Unstructured) -> Result<bool> {
        Ok(u.int_in_range(0u8..=7)? == 0)
    }

    fn ptr(self, arena: &mut [f32]) -> *mut f32 {
        match self.at {
            None => std::ptr::null_mut(),
            // A pointer inside (or one past) the arena.
            Some(at) => arena.as_mut_ptr().cast::<u8>().wrapping_add(at).cast(),
        }
    }

    /// Whether the wrapper must accept this pointer (given its length).
    fn clean(self) -> bool {
        self.len == 0 || (self.len <= ARENA && matches!(self.at, Some(at) if at % 4 == 0))
    }

    /// The floats it covers, for clean non-empty buffers.
    fn range(self) -> std::ops::Range<usize> {
        match self.at {
            Some(at) if self.len > 0 && self.clean() => at / 4..at / 4 + self.len,
            _ => 0..0,
        }
    }

    /// A copy of its floats (a clean buffer; empty otherwise).
    fn read(self, arena: &[f32]) -> Vec<f32> {
        arena[self.range()].to_vec()
    }
}

/// Where a params struct is passed from: `(pointer, clean)`. Mostly the
/// struct itself; sometimes NULL, or a copy one byte off its alignment in
/// `storage` (which the wrapper must refuse before reading it).
fn place<T: Copy>(u: &mut Unstructured, value: &T, storage: &mut Vec<u64>) -> Result<(*const T, bool)> {
    Ok(match u.int_in_range(0u8..=15)? {
        0 => (std::ptr::null(), false),
        1 => {
            storage.resize(std::mem::size_of::<T>() / 8 + 2, 0);
            let at = storage.as_mut_ptr().cast::<u8>().wrapping_add(1);
            // SAFETY: `storage` holds size_of::<T>() + 8 bytes or more past `at`.
            unsafe { std::ptr::copy_nonoverlapping((value as *const T).cast::<u8>(), at, std::mem::size_of::<T>()) };
            (at.cast::<T>(), false)
        }
        _ => (value as *const T, true),
    })
}

fn overlaps(a: std::ops::Range<usize>, b: std::ops::Range<usize>) -> bool {
    !a.is_empty() && !b.is_empty() && a.start < b.end && b.start < a.end
}

fn shape(u: &mut Unstructured) -> Result<[usize; 4]> {
    let mut s = [0usize; 4];
    for d in &mut s {
        *d = if u.int_in_range(0u8..=9)? == 0 { hostile_usize(u)? } else { u.int_in_range(0..=6)? };
    }
    Ok(s)
}

fn enum_value(u: &mut Unstructured, values: c_int) -> Result<c_int> {
    Ok(if u.int_in_range(0u8..=15)? == 0 { u.arbitrary()? } else { u.int_in_range(0..=values - 1)? })
}

fn small_or_hostile(u: &mut Unstructured, lo: usize, hi: usize) -> Result<usize> {
    if u.int_in_range(0u8..=15)? == 0 { hostile_usize(u) } else { u.int_in_range(lo..=hi) }
}

fn conv_params(u: &mut Unstructured) -> Result<cg_conv2d_params> {
    Ok(cg_conv2d_params {
        stride: [small_or_hostile(u, 1, 2)?, small_or_hostile(u, 1, 2)?],
        padding: [
            small_or_hostile(u, 0, 2)?,
            small_or_hostile(u, 0, 2)?,
            small_or_hostile(u, 0, 2)?,
            small_or_hostile(u, 0, 2)?,
        ],
        dilation: [small_or_hostile(u, 1, 2)?, small_or_hostile(u, 1, 2)?],
        groups: small_or_hostile(u, 1, 2)?,
        flip: enum_value(u, 2)?,
        layout: LayoutArg(enum_value(u, 2)?),
        activation: ActivationArg(enum_value(u, 3)?),
        precision: PrecisionArg(enum_value(u, 2)?),
    })
}

/// The Rust parameters the C struct stands for, if its enum values are valid.
fn rust_params(p: &cg_conv2d_params) -> Option<(convgemm::ConvParams, ConvOptions)> {
    let layout = match p.layout.0 {
        0 => Layout::Nchw,
        1 => Layout::Nhwc,
        _ => return None,
    };
    let activation = match p.activation.0 {
        0 => convgemm::Activation::None,
        1 => convgemm::Activation::Relu,
        2 => convgemm::Activation::Clamp { min: 0.0, max: 6.0 },
        _ => return None,
    };
    let precision = match p.precision.0 {
        0 => convgemm::Precision::Exact,
        1 => convgemm::Precision::Relaxed,
        _ => return None,
    };
    if p.flip != 0 && p.flip != 1 {
        return None;
    }
    let params = convgemm::ConvParams {
        stride: p.stride,
        padding: p.padding,
        dilation: p.dilation,
        groups: p.groups,
        flip: p.flip == 1,
        layout,
    };
    Some((params, ConvOptions { activation, precision, ..ConvOptions::default() }))
}

/// Checks one call's outcome against the oracles. `rust` runs the Rust
/// function on copies of the inputs into a copy of the output, or is `None`
/// when the pointers are not clean (the call must then fail).
fn last_error() -> String {
    // SAFETY: cg_last_error returns a NUL-terminated string that lives until
    // this thread's next failing call.
    unsafe { std::ffi::CStr::from_ptr(cg_last_error()) }.to_string_lossy().into_owned()
}

fn judge(what: &str, status: cg_status, before: &[f32], after: &[f32], output: Buf, rust: Option<(bool, Vec<f32>)>) {
    if status != cg_status::CG_OK {
        assert!(!last_error().is_empty(), "{what}: failed ({status:?}) without a message");
        assert_eq!(bits(before), bits(after), "{what}: failed ({status:?}) and wrote");
        if let Some((true, _)) = rust {
            panic!("{what}: the Rust function accepts these arguments, the C call said {status:?}");
        }
        return;
    }
    let Some((accepted, want)) = rust else { panic!("{what}: succeeded on unclean pointers") };
    assert!(accepted, "{what}: succeeded where the Rust function fails");
    let range = output.range();
    for i in (0..before.len()).filter(|i| !range.contains(i)) {
        assert_eq!(before[i].to_bits(), after[i].to_bits(), "{what}: wrote outside its output at {i}");
    }
    assert_eq!(bits(&after[range]), bits(&want), "{what}: not the Rust function's bits");
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let _ = run(&mut u);
});

fn run(u: &mut Unstructured) -> Result<()> {
    let mut arena = vec![0f32; ARENA];
    for v in arena.iter_mut() {
        if u.is_empty() {
            break;
        }
        *v = value(u)?;
    }
    let op = u.int_in_range(0u8..=4)?;
    let x_shape = shape(u)?;
    let w_shape = shape(u)?;
    let p = conv_params(u)?;
    let null_shape = u.int_in_range(0u8..=31)? == 0;
    let mut storage = Vec::new();
    let (p_ptr, p_clean) = place(u, &p, &mut storage)?;
    let shape_ptr = |s: &[usize; 4]| if null_shape { std::ptr::null() } else { s.as_ptr() };
    let count = |s: &[usize; 4]| s.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).unwrap_or(usize::MAX);
    let rust = rust_params(&p);
    let y_shape = rust.and_then(|(params, _)| convgemm::conv2d_output_shape(x_shape, w_shape, &params).ok());
    trace(&(op, x_shape, w_shape, p));
    let before = arena.clone();
    match op {
        // cg_conv2d, and a plan made and run on the same arguments (a plan
        // copies its weights and bias: only the input must not overlap the output).
        0 | 1 => {
            let x = Buf::exact(u, count(&x_shape))?;
            let w = Buf::exact(u, count(&w_shape))?;
            let b = if u.arbitrary()? { Buf { at: None, len: 0 } } else { Buf::exact(u, w_shape[0])? };
            let y = Buf::exact(u, y_shape.map_or(8, |s| count(&s)))?;
            trace(&(x, w, b, y));
            let clean = p_clean
                && !null_shape
                && [x, w, y].iter().all(|b| b.clean() && (b.len == 0 || b.at.is_some()))
                && (b.at.is_none() || b.clean())
                && ![x, w, b].iter().take(if op == 0 { 3 } else { 1 }).any(|i| overlaps(i.range(), y.range()));
            let expected = (clean).then(|| {
                let (xv, wv, bv, mut yv) = (x.read(&arena), w.read(&arena), b.read(&arena), y.read(&arena));
                let bias = b.at.map(|_| bv.as_slice());
                let accepted = rust.is_some_and(|(params, options)| {
                    conv2d_with(&options, &xv, x_shape, &wv, w_shape, bias, &params, &mut yv).is_ok()
                });
                (accepted, yv)
            });
            let (xp, wp, bp, yp) = (x.ptr(&mut arena), w.ptr(&mut arena), b.ptr(&mut arena), y.ptr(&mut arena));
            let status = if op == 0 {
                // SAFETY: every non-NULL pointer is in the arena with a true length (or one rejected as too large).
                unsafe {
                    cg_conv2d(
                        xp,
                        x.len,
                        shape_ptr(&x_shape),
                        wp,
                        w.len,
                        shape_ptr(&w_shape),
                        bp,
                        b.len,
                        p_ptr,
                        yp,
                        y.len,
                    )
                }
            } else {
                let mut plan = std::ptr::null_mut();
                // SAFETY: as above; the plan is destroyed once, after its run.
                unsafe {
                    match cg_conv2d_plan_create(wp, w.len, shape_ptr(&w_shape), bp, b.len, p_ptr, &mut plan) {
                        cg_status::CG_OK => {
                            let status = cg_conv2d_plan_run(plan, xp, x.len, shape_ptr(&x_shape), yp, y.len);
                            cg_conv2d_plan_destroy(plan);
                            status
                        }
                        failed => {
                            assert!(plan.is_null(), "a failed plan_create wrote *plan");
                            failed
                        }
                    }
                }
            };
            judge("conv2d", status, &before, &arena, y, expected);
        }
        // The input gradient.
        2 => {
            let dy = Buf::exact(u, y_shape.map_or(8, |s| count(&s)))?;
            let w = Buf::exact(u, count(&w_shape))?;
            let dx = Buf::exact(u, count(&x_shape))?;
            let dy_shape = y_shape.unwrap_or(x_shape);
            let clean = p_clean
                && !null_shape
                && [dy, w, dx].iter().all(|b| b.clean() && (b.len == 0 || b.at.is_some()))
                && ![dy, w].iter().any(|i| overlaps(i.range(), dx.range()));
            let expected = clean.then(|| {
                let (dyv, wv, mut dxv) = (dy.read(&arena), w.read(&arena), dx.read(&arena));
                let accepted = rust.is_some_and(|(params, options)| {
                    options.activation == convgemm::Activation::None
                        && conv2d_backward_input_with(
                            &options, &dyv, dy_shape, &wv, w_shape, &params, &mut dxv, x_shape,
                        )
                        .is_ok()
                });
                (accepted, dxv)
            });
            let (dyp, wp, dxp) = (dy.ptr(&mut arena), w.ptr(&mut arena), dx.ptr(&mut arena));
            // SAFETY: as above.
            let status = unsafe {
                cg_conv2d_backward_input(
                    dyp,
                    dy.len,
                    shape_ptr(&dy_shape),
                    wp,
                    w.len,
                    shape_ptr(&w_shape),
                    p_ptr,
                    dxp,
                    dx.len,
                    shape_ptr(&x_shape),
                )
            };
            judge("backward_input", status, &before, &arena, dx, expected);
        }
        // Max pooling and global average pooling.
        3 => {
            let mut pp = cg_pool2d_params {
                kernel: [small_or_hostile(u, 1, 3)?, small_or_hostile(u, 1, 3)?],
                stride: [small_or_hostile(u, 1, 2)?, small_or_hostile(u, 1, 2)?],
                padding: [
                    small_or_hostile(u, 0, 1)?,
                    small_or_hostile(u, 0, 1)?,
                    small_or_hostile(u, 0, 1)?,
                    small_or_hostile(u, 0, 1)?,
                ],
                dilation: [1, 1],
                ceil_mode: enum_value(u, 2)?,
                count_include_pad: enum_value(u, 2)?,
                layout: p.layout,
            };
            pp.dilation[0] = small_or_hostile(u, 1, 2)?;
            let layout = match p.layout.0 {
                0 => Some(Layout::Nchw),
                1 => Some(Layout::Nhwc),
                _ => None,
            };
            let flags_valid = (0..=1).contains(&pp.ceil_mode) && (0..=1).contains(&pp.count_include_pad);
            let rust_pool = layout.filter(|_| flags_valid).map(|layout| PoolParams {
                kernel: pp.kernel,
                stride: pp.stride,
                padding: pp.padding,
                dilation: pp.dilation,
                ceil_mode: pp.ceil_mode == 1,
                count_include_pad: pp.count_include_pad == 1,
                layout,
            });
            let out_len =
                rust_pool.and_then(|q| convgemm::pool2d_output_shape(x_shape, &q).ok()).map_or(8, |s| count(&s));
            let global = u.arbitrary()?;
            let x = Buf::exact(u, count(&x_shape))?;
            let y = Buf::exact(u, if global { x_shape[0].saturating_mul(x_shape[1]) } else { out_len })?;
            let mut pp_storage = Vec::new();
            let (pp_ptr, pp_clean) = place(u, &pp, &mut pp_storage)?;
            let clean = (global || pp_clean)
                && !null_shape
                && [x, y].iter().all(|b| b.clean() && (b.len == 0 || b.at.is_some()))
                && !overlaps(x.range(), y.range());
            let expected = clean.then(|| {
                let (xv, mut yv) = (x.read(&arena), y.read(&arena));
                let accepted = match (global, layout, rust_pool) {
                    (true, Some(layout), _) => global_avg_pool2d_with_layout(&xv, x_shape, layout, &mut yv).is_ok(),
                    (false, _, Some(q)) => max_pool2d(&xv, x_shape, &q, &mut yv).is_ok(),
                    _ => false,
                };
                (accepted, yv)
            });
            let (xp, yp) = (x.ptr(&mut arena), y.ptr(&mut arena));
            // SAFETY: as above.
            let status = unsafe {
                if global {
                    cg_global_avg_pool2d(xp, x.len, shape_ptr(&x_shape), p.layout, yp, y.len)
                } else {
                    cg_max_pool2d(xp, x.len, shape_ptr(&x_shape), pp_ptr, yp, y.len)
                }
            };
            judge("pool", status, &before, &arena, y, expected);
        }
        // sgemm with hostile sizes, strides and buffers, against the header's
        // rules restated here: each matrix's elements inside its buffer from
        // the pointer on (strides ≥ 0 where a dimension exceeds 1), C apart
        // from A and B, C's strides keeping its elements apart.
        _ => {
            let dim = |u: &mut Unstructured| -> Result<usize> {
                if u.int_in_range(0u8..=15)? == 0 { hostile_usize(u) } else { u.int_in_range(0..=9) }
            };
            // k stays small: a clean call with a huge k (stride 0) would be
            // a real, endless computation. A huge m or n is clean only when
            // the other is 0 (C's elements must fit the arena apart).
            let (m, k, n) = (dim(u)?, u.int_in_range(0..=9)?, dim(u)?);
            let (a, b, c) = (Buf::any(u)?, Buf::any(u)?, Buf::any(u)?);
            let s: [isize; 6] = std::array::from_fn(|_| hostile_isize(u).unwrap_or(1));
            trace(&(m, k, n, a, b, c, s));
            // The floats a matrix covers, Err(()) if the header forbids it.
            let cover = |buf: Buf,
                         rows: usize,
                         cols: usize,
                         rs: isize,
                         cs: isize|
             -> std::result::Result<std::ops::Range<usize>, ()> {
                if rows == 0 || cols == 0 {
                    return Ok(0..0);
                }
                if (rows > 1 && rs < 0) || (cols > 1 && cs < 0) {
                    return Err(());
                }
                let last = (rows as u128 - 1) * rs.max(0) as u128 + (cols as u128 - 1) * cs.max(0) as u128;
                if last >= buf.len as u128 || !buf.clean() || buf.at.is_none() {
                    return Err(());
                }
                let start = buf.at.unwrap() / 4;
                Ok(start..start + last as usize + 1)
            };
            let apart = |rows: usize, cols: usize, rs: isize, cs: isize| {
                let mut d = [(rows, rs.unsigned_abs() as u128), (cols, cs.unsigned_abs() as u128)];
                d.sort_by_key(|&(_, s)| s);
                rows == 0
                    || cols == 0
                    || match d {
                        [(n0, s0), (n1, s1)] if n0 > 1 && n1 > 1 => s0 > 0 && n0 as u128 * s0 <= s1,
                        [(n0, s0), _] if n0 > 1 => s0 > 0,
                        [_, (n1, s1)] if n1 > 1 => s1 > 0,
                        _ => true,
                    }
            };
            let ranges = (cover(a, m, k, s[0], s[1]), cover(b, k, n, s[2], s[3]), cover(c, m, n, s[4], s[5]));
            let clean = match &ranges {
                (Ok(ra), Ok(rb), Ok(rc)) => {
                    apart(m, n, s[4], s[5]) && !overlaps(ra.clone(), rc.clone()) && !overlaps(rb.clone(), rc.clone())
                }
                _ => false,
            };
            let (ap, bp, cp) = (a.ptr(&mut arena), b.ptr(&mut arena), c.ptr(&mut arena));
            // SAFETY: as above.
            let status = unsafe {
                cg_sgemm(m, k, n, 1.5, ap, a.len, s[0], s[1], bp, b.len, s[2], s[3], 0.0, cp, c.len, s[4], s[5])
            };
            assert_eq!(status == cg_status::CG_OK, clean, "cg_sgemm said {status:?}: {}", last_error());
            if !clean {
                assert_eq!(bits(&before), bits(&arena), "sgemm failed ({status:?}) and wrote");
                return Ok(());
            }
            if m.checked_mul(n) == Some(0) {
                assert_eq!(bits(&before), bits(&arena), "an empty C, written");
                return Ok(());
            }
            // Only C's elements changed, each to 1.5 · (A B)(i, j).
            let at = |base: usize, i: usize, j: usize, rs: isize, cs: isize| {
                base + i * rs.max(0) as usize + j * cs.max(0) as usize
            };
            let (a0, b0, c0) = (a.at.unwrap_or(0) / 4, b.at.unwrap_or(0) / 4, c.at.unwrap_or(0) / 4);
            let mut expected = before.clone();
            let mut written = vec![];
            for i in 0..m {
                for j in 0..n {
                    let idx = at(c0, i, j, s[4], s[5]);
                    written.push(idx);
                    expected[idx] = arena[idx];
                }
            }
            assert_eq!(bits(&expected), bits(&arena), "cg_sgemm wrote outside C");
            let a_vals: Vec<f32> = (0..m * k).map(|e| before[at(a0, e / k.max(1), e % k.max(1), s[0], s[1])]).collect();
            let b_vals: Vec<f32> = (0..k * n).map(|e| before[at(b0, e / n.max(1), e % n.max(1), s[2], s[3])]).collect();
            if all_tame(&a_vals) && all_tame(&b_vals) {
                let mut reference = gemm_naive(m, k, n, |i, l| a_vals[i * k + l], |l, j| b_vals[l * n + j]);
                reference.value.iter_mut().for_each(|v| *v *= 1.5);
                reference.magnitude.iter_mut().for_each(|v| *v *= 1.5);
                let got: Vec<f32> = written.iter().map(|&i| arena[i]).collect();
                assert_close("cg_sgemm", &reference, &got, k);
            }
        }
    }
    Ok(())
}
