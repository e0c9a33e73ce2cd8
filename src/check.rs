//! Argument checks shared by every entry point (convolution, pooling,
//! im2col): counts that must fit `usize`, parameters that must be at least
//! one, buffers that must match their shapes. Knows no operation.

use crate::error::ConvError;

/// `Err(BadParameter)` for a layout other than NCHW given to an adapter
/// (candle, ndarray): a tensor or view there is `[n, c, h, w]` and its own
/// strides say where its elements lie, so `params.layout` could only
/// misread it. Permute an NHWC tensor's axes to `[n, c, h, w]` instead.
#[cfg(any(feature = "candle", feature = "ndarray"))]
pub(crate) fn adapter_layout(layout: crate::layout::Layout) -> Result<(), ConvError> {
    match layout {
        crate::layout::Layout::Nchw => Ok(()),
        _ => Err(ConvError::BadParameter {
            name: "layout",
            value: layout as usize,
            requirement: "Layout::Nchw in the candle and ndarray adapters (their tensors are [n, c, h, w] \
                          with their own strides: permute an NHWC tensor's axes instead)",
        }),
    }
}

/// `a · b`, or `Err(Overflow)` naming `what`.
pub(crate) fn mul(a: usize, b: usize, what: &'static str) -> Result<usize, ConvError> {
    a.checked_mul(b).ok_or(ConvError::Overflow { what })
}

/// The product of `dims`, or `Err(Overflow)` naming `what`.
pub(crate) fn product(dims: &[usize], what: &'static str) -> Result<usize, ConvError> {
    dims.iter().try_fold(1usize, |acc, &d| mul(acc, d, what))
}

/// `Err(BadParameter)` naming `name` if `value` is zero.
pub(crate) fn at_least_one(name: &'static str, value: usize) -> Result<(), ConvError> {
    if value == 0 {
        return Err(ConvError::BadParameter { name, value, requirement: "at least 1" });
    }
    Ok(())
}

/// `Err` unless `len == expected`.
pub(crate) fn check_len(buffer: &'static str, len: usize, expected: usize) -> Result<(), ConvError> {
    if len != expected {
        return Err(ConvError::BufferLength { buffer, expected, found: len });
    }
    Ok(())
}

/// A zeroed buffer of `len` floats for an output the crate allocates (the
/// adapters): `Err(Overflow)` naming `what`, not a panic or an abort, when
/// its size does not fit `isize` or the allocator refuses it.
#[cfg(any(feature = "candle", feature = "ndarray"))]
pub(crate) fn zeroed(len: usize, what: &'static str) -> Result<Vec<f32>, ConvError> {
    let overflow = ConvError::Overflow { what };
    if len.checked_mul(size_of::<f32>()).is_none_or(|bytes| bytes > isize::MAX as usize) {
        return Err(overflow);
    }
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| overflow)?;
    v.resize(len, 0.0);
    Ok(v)
}
