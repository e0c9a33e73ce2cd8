//! `cg_sgemm`: convgemm's matrix multiply through C, with every addressed
//! element checked against the buffer lengths first.

use crate::buffers::floats;
use crate::status::{Failure, call, cg_status};
use crate::threads;

/// The span of element offsets `i·rs + j·cs` (`i < rows`, `j < cols`) of a
/// strided matrix, `None` when it has no elements.
fn span(rows: usize, cols: usize, rs: isize, cs: isize) -> Option<(i128, i128)> {
    if rows == 0 || cols == 0 {
        return None;
    }
    let ends = |n: usize, s: isize| {
        let last = (n as i128 - 1) * s as i128;
        (last.min(0), last.max(0))
    };
    let (r_lo, r_hi) = ends(rows, rs);
    let (c_lo, c_hi) = ends(cols, cs);
    Some((r_lo + c_lo, r_hi + c_hi))
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
    let Some((lo, hi)) = span(rows, cols, rs, cs) else { return Ok(None) };
    if lo < 0 {
        return Err(Failure::new(
            cg_status::CG_ERROR_BAD_PARAMETER,
            format!("{name}'s strides reach {lo} elements before the pointer: point {name} at its lowest element"),
        ));
    }
    if hi >= len as i128 {
        return Err(Failure::new(
            cg_status::CG_ERROR_BUFFER_LENGTH,
            format!("{name}_len = {len}: its strides address element {hi}"),
        ));
    }
    // SAFETY: only checks (NULL, alignment, size); the slice is not used.
    unsafe { floats(name, ptr, len) }?;
    let start = ptr as usize + lo as usize * 4;
    Ok(Some((start, ptr as usize + hi as usize * 4 + 4)))
}

/// Whether no two elements of a rows × cols matrix share an offset.
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
/// of A is `a[i·rsa + j·csa]` (strides in floats, any sign; every element
/// must lie in `a[0 .. a_len)`), likewise B and C. beta == 0 means C is not
/// read (NaN in it is overwritten). C must overlap neither A nor B and its
/// elements must be distinct. Bit-identical results on every thread count and
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
                format!("c's strides ({rsc}, {csc}) give two elements of the {m}×{n} C one address"),
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
