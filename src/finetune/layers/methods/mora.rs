//! MoRA on candle: compress the input (type 1: sum of r̂-chunks; type 6: RoPE-rotated chunks), apply M, and read
//! each output row from its chunk, as `adapter::mora` describes. Differentiable in M.

use candle_core::{D, Tensor};

use crate::adapter::mora::{MoraLayout, MoraType};
use crate::error::Result;
use crate::finetune::layers::products::product_t;

/// x (N×n) ↦ x·ΔWᵀ (N×m).
pub fn forward(x: &Tensor, mat: &Tensor, layout: &MoraLayout) -> Result<Tensor> {
    let rows = x.dim(0)?;
    let r = layout.r_hat;
    let padded = if layout.pad > 0 {
        Tensor::cat(&[x, &x.narrow(1, 0, layout.pad)?], 1)?
    } else {
        x.clone()
    };
    let chunks = padded.reshape((rows, layout.chunks, r))?;
    let device = x.device();
    let (z, period) = match layout.kind {
        MoraType::Sum => (product_t(&chunks.sum(1)?, mat)?, r),
        MoraType::Rotated => {
            let h = r / 2;
            let (cos, sin) = layout.rotation_tables();
            let shape = (1, layout.chunks, h);
            let cos = Tensor::from_vec(cos, shape, device)?.to_dtype(x.dtype())?;
            let sin = Tensor::from_vec(sin, shape, device)?.to_dtype(x.dtype())?;
            let (x1, x2) = (
                chunks.narrow(D::Minus1, 0, h)?,
                chunks.narrow(D::Minus1, h, h)?,
            );
            let rot = Tensor::cat(
                &[
                    (x1.broadcast_mul(&cos)? - x2.broadcast_mul(&sin)?)?,
                    (x2.broadcast_mul(&cos)? + x1.broadcast_mul(&sin)?)?,
                ],
                D::Minus1,
            )?;
            let z = rot.broadcast_matmul(&mat.t()?)?;
            (z.reshape((rows, layout.chunks * r))?, layout.chunks * r)
        }
    };
    let index: Vec<u32> = (0..layout.m).map(|o| (o % period) as u32).collect();
    let index = Tensor::from_vec(index, layout.m, device)?;
    Ok(z.index_select(&index, 1)?)
}

/// ΔW (m×n), as the forward of the identity.
pub fn delta(mat: &Tensor, layout: &MoraLayout) -> Result<Tensor> {
    let eye = Tensor::eye(layout.n, mat.dtype(), mat.device())?;
    Ok(forward(&eye, mat, layout)?.t()?.contiguous()?)
}
