//! Helpers shared by the fine-tuning tests that read the transformers/PEFT fixtures in `tests/fixtures/hf`.
#![allow(dead_code)]

use std::path::PathBuf;

use abba::finetune::layers::{AdaptedLinear, AdapterWeights, ForwardCtx};
use abba::rng::seeded;
use candle_core::{DType, Tensor};

/// A path under `tests/fixtures/hf`.
pub fn fixture(rel: &str) -> PathBuf {
    // A test binary built here and run on another machine (scripts/gpu-check.sh) finds the fixtures under the
    // repository root that machine names.
    let root = std::env::var_os("ABBA_REPO_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    root.join("tests/fixtures/hf").join(rel)
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

/// A tensor of U(−1, 1) entries in f64.
pub fn randn(shape: (usize, usize), rng: &mut impl rand::Rng) -> Tensor {
    let v: Vec<f64> = (0..shape.0 * shape.1)
        .map(|_| rng.random::<f64>() * 2.0 - 1.0)
        .collect();
    Tensor::from_vec(v, shape, &candle_core::Device::Cpu).unwrap()
}

/// The function finite differences are taken of: the adapted layer's output for rows x, from the current values
/// of the adapter's variables.
pub type Reference<'a> = &'a dyn Fn(&Tensor) -> Tensor;

/// ∂L/∂factor from candle's backward against central differences, L = Σ z ⊙ R with z = frozen(adapted(x)), in
/// f64. The second, frozen layer puts the gradient through the x-only backward of frozen projections. The
/// differences are taken of the layer itself, or of `reference` where autograd is meant to differ from the
/// layer's value (DoRA detaches its norm, so its gradient is that of the norm held constant).
pub fn check_gradients(w: AdapterWeights, w0: Tensor, rows: usize, reference: Option<Reference>) {
    let mut rng = seeded(11);
    let (m, n) = w0.dims2().unwrap();
    let x = randn((rows, n), &mut rng);
    let r = randn((rows, 5), &mut rng);
    let next = AdaptedLinear::new(
        randn((5, m), &mut rng),
        Some(randn((1, 5), &mut rng).squeeze(0).unwrap()),
    );
    let lin = AdaptedLinear {
        weight: w0,
        bias: None,
        adapter: Some(w.clone()),
        dropout: 0.0,
    };
    let head = |y: &Tensor| -> Tensor {
        (next.forward(y, &ForwardCtx::eval()).unwrap() * &r)
            .unwrap()
            .sum_all()
            .unwrap()
    };
    let loss = || head(&lin.forward(&x, &ForwardCtx::eval()).unwrap());
    let fd_loss = || match reference {
        Some(f) => head(&f(&x)),
        None => loss(),
    };
    let grads = loss().backward().unwrap();
    for var in w.vars() {
        let g: Vec<f64> = grads
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let base: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let h = 1e-6;
        for i in (0..base.len()).step_by(3) {
            let at = |d: f64| {
                let mut p = base.clone();
                p[i] += d;
                var.set(&Tensor::from_vec(p, var.shape(), &candle_core::Device::Cpu).unwrap())
                    .unwrap();
                let v: f64 = fd_loss().to_scalar().unwrap();
                v
            };
            let fd = (at(h) - at(-h)) / (2.0 * h);
            var.set(
                &Tensor::from_vec(base.clone(), var.shape(), &candle_core::Device::Cpu).unwrap(),
            )
            .unwrap();
            assert!(
                (fd - g[i]).abs() < 1e-5 * (1.0 + fd.abs()),
                "{} element {i}: autograd {} vs FD {fd}",
                w.method.label(),
                g[i]
            );
        }
    }
}
