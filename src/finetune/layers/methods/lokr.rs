//! LoKr / KronA on candle: ΔW = s·kron(W1, W2) applied without forming ΔW, y = s·vec(W1·X·W2ᵀ) per row x
//! reshaped to X (f_in × Q).

use candle_core::Tensor;

use crate::error::Result;
use crate::finetune::layers::products::product;

/// A factor's matrix: one tensor, or the product of a low-rank pair.
pub fn part(factors: &[&Tensor]) -> Result<Tensor> {
    Ok(match factors {
        [w] => (*w).clone(),
        [a, b] => product(a, b)?,
        _ => unreachable!("a Kronecker factor is one matrix or a pair"),
    })
}

/// x (N×n) ↦ x·ΔWᵀ (N×m) for W1 (f_out×f_in) and W2 (P×Q).
pub fn forward(x: &Tensor, w1: &Tensor, w2: &Tensor, s: f64) -> Result<Tensor> {
    let (f_out, f_in) = w1.dims2()?;
    let (p, q) = w2.dims2()?;
    let rows = x.dim(0)?;
    // (N, f_in, Q)·W2ᵀ → (N, f_in, P); transpose → (N, P, f_in)·W1ᵀ → (N, P, f_out); transpose → (N, f_out, P).
    let xw2 = x.reshape((rows, f_in, q))?.broadcast_matmul(&w2.t()?)?;
    let y = xw2
        .transpose(1, 2)?
        .contiguous()?
        .broadcast_matmul(&w1.t()?)?
        .transpose(1, 2)?
        .contiguous()?;
    Ok((y.reshape((rows, f_out * p))? * s)?)
}

/// ΔW = s·kron(W1, W2), m×n.
pub fn delta(w1: &Tensor, w2: &Tensor, s: f64) -> Result<Tensor> {
    let (f_out, f_in) = w1.dims2()?;
    let (p, q) = w2.dims2()?;
    let k = w1
        .reshape((f_out, 1, f_in, 1))?
        .broadcast_mul(&w2.reshape((1, p, 1, q))?)?;
    Ok((k.reshape((f_out * p, f_in * q))? * s)?)
}
