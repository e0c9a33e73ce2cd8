//! Argument checks shared by every entry point (convolution, pooling,
//! im2col): counts that must fit `usize`, parameters that must be at least
//! one, buffers that must match their shapes. Knows no operation.

use crate::error::ConvError;

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
