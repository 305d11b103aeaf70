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

#[test]
fn accumulated_and_subtracted_contributions_mix_in_either_order() {
    let x = var(&X, (2, 3));
    let t = x.as_tensor();
    let c = Tensor::from_slice(&[1.0f32; 6], (2, 3), &Device::Cpu).unwrap();
    // L = Σ ((c − x) + x·x − (x·x − x)): ∂L/∂x = −1 + 2x − 2x + 1 = 0 up to the order of the terms; the
    // subtractions go through the unpatched `or_insert` + `sub` arms, the rest through `accumulate`.
    let first = ((&c - t).unwrap() + (t * t).unwrap()).unwrap();
    let loss = (first - ((t * t).unwrap() - t).unwrap()).unwrap();
    let grads = loss.sum_all().unwrap().backward().unwrap();
    assert_eq!(values(grads.get(t).unwrap()), vec![0.0f32; 6]);
}

#[test]
fn broadcast_and_max_reductions_send_back_gradients_of_the_arguments_shape() {
    let row = var(&[0.5, -2.0, 3.0], (1, 3));
    let m = Tensor::from_slice(&X, (2, 3), &Device::Cpu).unwrap();
    // L = Σ (row + M) over two rows, plus Σ max over each row of M ⊙ row: ∂L/∂row = 2 + (one-hot of each row's
    // arg max, times M there).
    let sum = row
        .as_tensor()
        .broadcast_add(&m)
        .unwrap()
        .sum_all()
        .unwrap();
    let prod = m.broadcast_mul(row.as_tensor()).unwrap();
    let max = prod.max_keepdim(1).unwrap().sum_all().unwrap();
    let grads = (sum + max).unwrap().backward().unwrap();
    let g = grads.get(row.as_tensor()).unwrap();
    assert_eq!(g.dims(), &[1, 3]);
    // Row 0 of M ⊙ row: [0.25, 2.5, 6.0] → max at 2, M = 2.0; row 1: [0.0, 7.0, 2.25] → max at 1, M = −3.5.
    assert_eq!(values(g), vec![2.0, 2.0 - 3.5, 2.0 + 2.0]);
}
