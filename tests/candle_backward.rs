//! The patched gradient accumulation in `vendor/candle-core` (see its PATCHED.md) against closed forms: a first
//! contribution is stored instead of added to zeros, later ones are added, and what is stored is contiguous.

use candle_core::{Device, Tensor, Var};

fn var(values: &[f32], shape: (usize, usize)) -> Var {
    Var::from_tensor(&Tensor::from_slice(values, shape, &Device::Cpu).unwrap()).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Dyadic values, so that every closed form below is exact in f32.
const X: [f32; 6] = [0.5, -1.25, 2.0, 0.0, -3.5, 0.75];

#[test]
fn a_variable_reached_along_several_paths_gets_the_sum_of_their_gradients() {
    let x = var(&X, (2, 3));
    let t = x.as_tensor();
    // L = Σ (x·x·x + x·x + x): ∂L/∂x = 3x² + 2x + 1, through six contributions to x's gradient.
    let loss = ((t * t).unwrap() * t).unwrap();
    let loss = ((loss + (t * t).unwrap()).unwrap() + t).unwrap();
    let grads = loss.sum_all().unwrap().backward().unwrap();
    let got = values(grads.get(t).unwrap());
    let want: Vec<f32> = X.iter().map(|x| 3.0 * x * x + 2.0 * x + 1.0).collect();
    assert_eq!(got, want);
}

#[test]
fn a_gradient_arriving_as_a_transposed_view_is_stored_contiguous() {
    let w = var(&X, (2, 3));
    let c =
        Tensor::from_slice(&[1.0f32, -2.0, 0.5, 4.0, -0.25, 3.0], (3, 2), &Device::Cpu).unwrap();
    // L = Σ (Wᵀ ⊙ C): ∂L/∂W = Cᵀ, which the transpose's backward hands over as a strided view.
    let loss = (w.as_tensor().t().unwrap() * &c)
        .unwrap()
        .sum_all()
        .unwrap();
    let grads = loss.backward().unwrap();
    let g = grads.get(w.as_tensor()).unwrap();
    assert!(g.is_contiguous(), "stored gradient must be contiguous");
    assert_eq!(g.dims(), &[2, 3]);
    assert_eq!(values(g), values(&c.t().unwrap().contiguous().unwrap()));
}

#[test]
fn a_single_contribution_is_the_gradient_itself() {
    let x = var(&X, (3, 2));
    let k =
        Tensor::from_slice(&[2.0f32, -1.0, 0.25, 8.0, -4.0, 1.5], (3, 2), &Device::Cpu).unwrap();
    // L = Σ x ⊙ k: ∂L/∂x = k, one contribution, no addition.
    let grads = (x.as_tensor() * &k)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert_eq!(values(grads.get(x.as_tensor()).unwrap()), values(&k));
}
