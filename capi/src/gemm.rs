//! `cg_sgemm`: convgemm's matrix multiply through C, with every addressed
//! element checked against the buffer lengths first.

use crate::buffers::floats;
use crate::status::{Failure, call, cg_status};
use crate::threads;

/// The largest element offset `i·rs + j·cs` (`i < rows`, `j < cols`) of a
/// strided matrix, `None` when it has no elements. C callers give strides
/// of at least 0 (a negative one only on a dimension of size 1, where it is
/// never multiplied): element (0, 0) is the pointer, every other element
/// lies after it.
fn last_offset(name: &str, rows: usize, cols: usize, rs: isize, cs: isize) -> Result<Option<u128>, Failure> {
    if rows == 0 || cols == 0 {
        return Ok(None);
    }
    let mut last = 0u128;
    for (n, s, what) in [(rows, rs, "row"), (cols, cs, "column")] {
        if n > 1 && s < 0 {
            return Err(Failure::new(
                cg_status::CG_ERROR_BAD_PARAMETER,
                format!(
                    "bad parameter {name}'s {what} stride = {s}: must be at least 0 from C (the pointer is element \
                     (0, 0) and the buffer lies after it)"
                ),
            ));
        }
        // Below 2^64 · 2^63 each, so the sum of two fits u128.
        let reach = (n as u128 - 1) * s.max(0) as u128;
        last = last.checked_add(reach).ok_or_else(|| Failure::new(cg_status::CG_ERROR_OVERFLOW, "stride overflow"))?;
    }
    Ok(Some(last))
}

/// Checks that matrix `name` (rows × cols at strides rs, cs) lies inside the
/// `len` floats at `ptr`; returns the byte range it covers.
fn check_matrix(
    name: &str,
    ptr: *const f32,
    len: usize,
    rows: usize,
    cols: usize,
    rs: isize,
    cs: isize,
) -> Result<Option<(usize, usize)>, Failure> {
    let Some(last) = last_offset(name, rows, cols, rs, cs)? else { return Ok(None) };
    if last >= len as u128 {
        return Err(Failure::new(
            cg_status::CG_ERROR_BUFFER_LENGTH,
            format!("{name}_len = {len}: its strides address element {last}"),
        ));
    }
    // SAFETY: only checks (NULL, alignment, a byte size that fits isize and
    // the address space); the slice is not used.
    unsafe { floats(name, ptr, len) }?;
    // `last < len` and `len` floats fit the address space (checked): no overflow.
    Ok(Some((ptr as usize, ptr as usize + (last as usize + 1) * 4)))
}

/// Whether the strides keep the elements of a rows × cols matrix apart, by
/// the usual sufficient rule (the smaller stride times its dimension at
/// most the larger stride): some exotic interleavings with distinct
/// elements are refused too.
fn distinct(rows: usize, cols: usize, rs: isize, cs: isize) -> bool {
    if rows == 0 || cols == 0 {
        return true;
    }
    let mut dims = [(rows, rs.unsigned_abs()), (cols, cs.unsigned_abs())];
    dims.sort_by_key(|&(_, s)| s);
    match dims {
        [(n0, s0), (n1, s1)] if n0 > 1 && n1 > 1 => s0 > 0 && (n0 as u128) * (s0 as u128) <= s1 as u128,
        [(n0, s0), _] if n0 > 1 => s0 > 0,
        [_, (n1, s1)] if n1 > 1 => s1 > 0,
        _ => true,
    }
}

/// C ← alpha·A·B + beta·C, with A m × k, B k × n and C m × n; element (i, j)
/// of A is `a[i·rsa + j·csa]` (strides in floats, at least 0 — a negative
/// one only on a dimension of size 1 — and every element inside
/// `a[0 .. a_len)`), likewise B and C. beta == 0 means C is not read (NaN
/// in it is overwritten). C must overlap neither A nor B, and its strides
/// must keep its elements apart (the smaller stride times its dimension at
/// most the larger). Bit-identical results on every thread count and
/// CPU path (AVX-512, AVX2, NEON, portable).
///
/// # Safety
/// Each pointer is NULL or addresses the number of floats its length says;
/// `c` is writable and no other thread uses it.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn cg_sgemm(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: *const f32,
    a_len: usize,
    rsa: isize,
    csa: isize,
    b: *const f32,
    b_len: usize,
    rsb: isize,
    csb: isize,
    beta: f32,
    c: *mut f32,
    c_len: usize,
    rsc: isize,
    csc: isize,
) -> cg_status {
    call(|| {
        let ra = check_matrix("a", a, a_len, m, k, rsa, csa)?;
        let rb = check_matrix("b", b, b_len, k, n, rsb, csb)?;
        let rc = check_matrix("c", c, c_len, m, n, rsc, csc)?;
        if !distinct(m, n, rsc, csc) {
            return Err(Failure::new(
                cg_status::CG_ERROR_ALIASING,
                format!(
                    "c's strides ({rsc}, {csc}) may give two elements of the {m}×{n} C one address: the smaller \
                     stride times its dimension must not exceed the larger one"
                ),
            ));
        }
        if let Some((c0, c1)) = rc {
            for (name, r) in [("a", ra), ("b", rb)] {
                if let Some((x0, x1)) = r
                    && x0 < c1
                    && c0 < x1
                {
                    return Err(Failure::new(cg_status::CG_ERROR_ALIASING, format!("c overlaps {name}")));
                }
            }
        }
        let (a, b, c) = (a as usize, b as usize, c as usize);
        threads::run(move || {
            // SAFETY: every element the strides address lies inside its
            // buffer (checked above, with the caller's promise that the
            // buffers are that long), C's elements are distinct and overlap
            // neither A nor B, and no other thread uses C.
            unsafe {
                convgemm::sgemm(
                    m,
                    k,
                    n,
                    alpha,
                    a as *const f32,
                    rsa,
                    csa,
                    b as *const f32,
                    rsb,
                    csb,
                    beta,
                    c as *mut f32,
                    rsc,
                    csc,
                )
            }
        });
        Ok(())
    })
}
