//! Helpers shared by the fine-tuning tests that read the transformers/PEFT fixtures in `tests/fixtures/hf`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};

/// A path under `tests/fixtures/hf`.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf")
        .join(rel)
}

/// max |t|, in f64.
pub fn max_abs(t: &Tensor) -> f64 {
    t.abs()
        .and_then(|a| a.flatten_all())
        .and_then(|a| a.max(0))
        .and_then(|a| a.to_dtype(DType::F64))
        .and_then(|a| a.to_scalar())
        .unwrap()
}

/// max |a − b| (same shapes required).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    max_abs(&(a - b).unwrap()) as f32
}
