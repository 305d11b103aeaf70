//! An ABBA chain: ΔW = s·⊙_i (B_i·A_i), materialised (k pairs; the paper's Table 7 ablation).

use candle_core::Tensor;

use crate::error::Result;
use crate::finetune::layers::products::product;

/// `factors` are A1, B1, A2, B2, … (the table's order).
pub fn delta(factors: &[&Tensor], scale: f64) -> Result<Tensor> {
    let mut out: Option<Tensor> = None;
    for pair in factors.chunks(2) {
        let p = product(pair[1], pair[0])?;
        out = Some(match out {
            Some(acc) => (acc * p)?,
            None => p,
        });
    }
    Ok((out.expect("a chain has at least one pair") * scale)?)
}
