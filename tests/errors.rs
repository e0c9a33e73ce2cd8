//! Every invalid argument is an `Err` naming the problem, and the output
//! buffer is exactly as it was (compared byte for byte).

mod common;

use common::{ConvProblem, bits};
use convgemm::{ConvError, ConvOptions, ConvParams, Isa, col2im, conv2d, conv2d_output_shape, conv2d_with, im2col};

/// A valid call: 2 images of 4×6×6, 6 kernels of 2×3×3 in 2 groups, padding 1.
struct Call {
    conv: ConvProblem,
    output_len: usize,
}

impl std::ops::Deref for Call {
    type Target = ConvProblem;
    fn deref(&self) -> &ConvProblem {
        &self.conv
    }
}

impl std::ops::DerefMut for Call {
    fn deref_mut(&mut self) -> &mut ConvProblem {
        &mut self.conv
    }
}

impl Call {
    fn valid() -> Self {
        let params = ConvParams { padding: [1, 1, 1, 1], groups: 2, ..ConvParams::default() };
        let conv = ConvProblem {
            input: vec![1.0; 2 * 4 * 6 * 6],
            input_shape: [2, 4, 6, 6],
            weight: vec![1.0; 6 * 2 * 3 * 3],
            weight_shape: [6, 2, 3, 3],
            bias: Some(vec![0.5; 6]),
            params,
        };
        Call { conv, output_len: 2 * 6 * 6 * 6 }
    }

    /// Runs conv2d on an output full of a sentinel; checks the sentinel
    /// survived and returns the error.
    fn expect_err(&self) -> ConvError {
        let sentinel: Vec<f32> = (0..self.output_len).map(|i| f32::from_bits(0x7fc0_1234 + i as u32)).collect();
        let mut out = sentinel.clone();
        let err = self.run_default_into(&mut out).expect_err("call must be rejected");
        assert_eq!(bits(&out), bits(&sentinel), "output changed on Err({err})");
        assert!(!err.to_string().is_empty());
        err
    }
}

#[test]
fn valid_call_succeeds() {
    let c = Call::valid();
    let mut out = vec![0.0; c.output_len];
    c.run_default_into(&mut out).unwrap();
    assert_eq!(out[7], 18.5); // interior: 2 channels × 9 taps + 0.5
}

#[test]
fn zero_stride_dilation_groups() {
    for (name, set) in [
        ("stride[0]", (|p: &mut ConvParams| p.stride[0] = 0) as fn(&mut ConvParams)),
        ("stride[1]", |p| p.stride[1] = 0),
        ("dilation[0]", |p| p.dilation[0] = 0),
        ("dilation[1]", |p| p.dilation[1] = 0),
        ("groups", |p| p.groups = 0),
    ] {
        let mut c = Call::valid();
        set(&mut c.params);
        let err = c.expect_err();
        assert!(matches!(err, ConvError::BadParameter { name: n, value: 0, .. } if n == name), "{name}: {err:?}");
        assert!(err.to_string().contains(name), "{err}");
    }
}

#[test]
fn zero_kernel_size() {
    let mut c = Call::valid();
    c.weight_shape = [6, 2, 0, 3];
    assert!(matches!(c.expect_err(), ConvError::BadParameter { .. }));
}

#[test]
fn groups_not_dividing_channels() {
    let mut c = Call::valid();
    c.params.groups = 3; // c_in = 4
    assert!(matches!(c.expect_err(), ConvError::BadParameter { name: "groups", value: 3, .. }));
    let mut c = Call::valid();
    c.params.groups = 4; // divides c_in = 4 but not c_out = 6
    c.weight_shape = [6, 1, 3, 3];
    c.weight.truncate(6 * 9);
    let err = c.expect_err();
    assert!(err.to_string().contains("output channels"), "{err}");
}

#[test]
fn weight_channels_not_c_in_over_groups() {
    let mut c = Call::valid();
    c.weight_shape = [6, 4, 3, 3];
    c.weight = vec![1.0; 6 * 4 * 9];
    assert_eq!(
        c.expect_err(),
        ConvError::ShapeMismatch { what: "weight_shape[1] (input channels / groups)", expected: 2, found: 4 }
    );
}

#[test]
fn kernel_larger_than_padded_input() {
    let mut c = Call::valid();
    c.params.dilation = [4, 1]; // extent 9 > 6 + 2
    let err = c.expect_err();
    assert_eq!(err, ConvError::NoOutput { axis: "height", padded_input: 8, kernel_extent: 9 });
    assert_eq!(conv2d_output_shape(c.input_shape, c.weight_shape, &c.params), Err(err));
}

#[test]
fn buffer_lengths() {
    let mut c = Call::valid();
    c.input.pop();
    assert!(matches!(c.expect_err(), ConvError::BufferLength { buffer: "input", found, .. } if found == 287));
    let mut c = Call::valid();
    c.weight.push(0.0);
    assert!(matches!(c.expect_err(), ConvError::BufferLength { buffer: "weight", .. }));
    let mut c = Call::valid();
    c.bias = Some(vec![0.0; 5]);
    assert!(matches!(c.expect_err(), ConvError::BufferLength { buffer: "bias", expected: 6, found: 5 }));
    let mut c = Call::valid();
    c.output_len += 1;
    assert!(matches!(c.expect_err(), ConvError::BufferLength { buffer: "output", .. }));
    let mut c = Call::valid();
    c.output_len -= 1;
    assert!(matches!(c.expect_err(), ConvError::BufferLength { buffer: "output", .. }));
}

#[test]
fn overflow_near_usize_max() {
    let big = usize::MAX / 2 + 1;
    let p = ConvParams::default();
    // Element count of the input overflows.
    let err = conv2d_output_shape([big, 4, 1, 1], [1, 4, 1, 1], &p).unwrap_err();
    assert!(matches!(err, ConvError::Overflow { .. }), "{err:?}");
    // Padded size overflows.
    let mut padded = p;
    padded.padding = [usize::MAX, 0, 1, 0];
    let err = conv2d_output_shape([1, 1, 1, 1], [1, 1, 1, 1], &padded).unwrap_err();
    assert_eq!(err, ConvError::Overflow { what: "padded input size" });
    // Dilated kernel extent overflows.
    let mut dilated = p;
    dilated.dilation = [usize::MAX, 1];
    let err = conv2d_output_shape([1, 1, 5, 5], [1, 1, 3, 1], &dilated).unwrap_err();
    assert!(matches!(err, ConvError::Overflow { .. }), "{err:?}");
    // Output element count overflows (1×1 kernel on a huge plane).
    let err = conv2d_output_shape([1, 1, big, 2], [3, 1, 1, 1], &p).unwrap_err();
    assert!(matches!(err, ConvError::Overflow { .. }), "{err:?}");
    // And the same through conv2d, with the output untouched.
    let mut out = [7.0f32; 4];
    let err = conv2d(&[0.0; 4], [big, 4, 1, 1], &[0.0; 4], [1, 4, 1, 1], None, &p, &mut out).unwrap_err();
    assert!(matches!(err, ConvError::Overflow { .. }));
    assert_eq!(out, [7.0; 4]);
}

#[test]
fn unavailable_isa_is_an_error() {
    let c = Call::valid();
    for isa in Isa::ALL.into_iter().filter(|i| !i.is_available()) {
        let mut out = vec![3.0f32; c.output_len];
        let opts = ConvOptions { isa, ..ConvOptions::default() };
        let err = conv2d_with(&opts, &c.input, c.input_shape, &c.weight, c.weight_shape, None, &c.params, &mut out)
            .unwrap_err();
        assert_eq!(err, ConvError::IsaUnavailable { isa: isa.name() });
        assert!(out.iter().all(|&x| x == 3.0));
    }
}

#[test]
fn im2col_and_col2im_reject_bad_lengths() {
    let p = ConvParams::default();
    let x = vec![1.0f32; 9];
    let mut cols = vec![5.0f32; 15]; // needs 16
    assert!(matches!(
        im2col(&x, [1, 1, 3, 3], [2, 2], &p, &mut cols),
        Err(ConvError::BufferLength { buffer: "cols", expected: 16, found: 15 })
    ));
    assert!(cols.iter().all(|&v| v == 5.0));
    let mut img = vec![5.0f32; 8]; // needs 9
    assert!(matches!(
        col2im(&[0.0; 16], [1, 1, 3, 3], [2, 2], &p, &mut img),
        Err(ConvError::BufferLength { buffer: "output", .. })
    ));
    assert!(img.iter().all(|&v| v == 5.0));
    let mut zero_stride = p;
    zero_stride.stride = [0, 1];
    assert!(im2col(&x, [1, 1, 3, 3], [2, 2], &zero_stride, &mut [0.0; 16]).is_err());
}
