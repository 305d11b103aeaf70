//! KRAdapter on candle: ΔW materialised from its Kronecker rows, as the published layer does (its update is
//! full rank, so a factored product saves no arithmetic).

use candle_core::Tensor;

use crate::error::Result;

/// ΔW (m×n) from U (k×r) and V (k×(r+d)): line i = s·kron(V_i, U_i) cropped to the long side; rows if m ≤ n,
/// columns otherwise.
pub fn delta(u: &Tensor, v: &Tensor, (m, n): (usize, usize), s: f64) -> Result<Tensor> {
    let (k, r) = u.dims2()?;
    let rd = v.dim(1)?;
    let lines = v
        .unsqueeze(2)?
        .broadcast_mul(&u.unsqueeze(1)?)?
        .reshape((k, rd * r))?
        .narrow(1, 0, m.max(n))?;
    let lines = (lines * s)?;
    Ok(if m <= n {
        lines
    } else {
        lines.t()?.contiguous()?
    })
}
