//! The crossing between candle tensors and the ndarray matrices the adapter maths ([`crate::adapter`]) works on.

use candle_core::{DType, Device, Tensor};
use ndarray::Array2;

use crate::error::{AbbaError, Result};

/// A 2-D tensor as an f64 matrix (initialisations and conversions run in f64 whatever the model dtype).
pub fn to_array(t: &Tensor) -> Result<Array2<f64>> {
    let (m, n) = t.dims2()?;
    let data: Vec<f64> = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    Array2::from_shape_vec((m, n), data).map_err(|e| AbbaError::InvalidArgument(e.to_string()))
}

pub fn from_array(a: &Array2<f64>, dtype: DType, device: &Device) -> Result<Tensor> {
    let (m, n) = a.dim();
    let data: Vec<f64> = a.iter().copied().collect();
    Ok(Tensor::from_vec(data, (m, n), &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)?)
}
