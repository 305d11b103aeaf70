//! Every analytic factor gradient equals central finite differences (f64).
//!
//! Loss: L(ΔW) = Σ C⊙ΔW + ½‖ΔW‖², so ∂L/∂ΔW = C + ΔW (a nonlinear loss catches sign and transpose errors).

mod common;

use abba::adapter::scaling::{AbbaScale, LoraScale};
use abba::adapter::{Abba, AbbaChain, Adapter, Full, Hira, Lora};
use common::{rng, uniform};
use ndarray::Array2;

fn loss(adapter: &dyn Adapter<f64>, c: &Array2<f64>) -> f64 {
    let d = adapter.delta();
    (c * &d).sum() + 0.5 * d.iter().map(|x| x * x).sum::<f64>()
}

fn check_fd<A: Adapter<f64> + Clone>(adapter: &A, c: &Array2<f64>) {
    let g = c + &adapter.delta();
    let analytic = adapter.grads(g.view()).unwrap();
    let names = adapter.factor_names();
    assert_eq!(analytic.len(), names.len());
    let h = 1e-6;
    for (f, grad) in analytic.iter().enumerate() {
        assert_eq!(
            grad.dim(),
            adapter.factors()[f].dim(),
            "gradient shape of {}",
            names[f]
        );
        let mut worst: f64 = 0.0;
        for idx in ndarray::indices(grad.dim()) {
            let mut plus = adapter.clone();
            plus.factors_mut()[f][idx] += h;
            let mut minus = adapter.clone();
            minus.factors_mut()[f][idx] -= h;
            let fd = (loss(&plus, c) - loss(&minus, c)) / (2.0 * h);
            let err = (fd - grad[idx]).abs() / (1.0 + fd.abs());
            worst = worst.max(err);
        }
        assert!(
            worst < 1e-6,
            "{:?} {}: worst relative error {worst:e}",
            adapter.kind(),
            names[f]
        );
    }
}

#[test]
fn full_gradient_matches_finite_differences() {
    let mut r = rng(1);
    let full = Full::from_delta(uniform(5, 7, &mut r)).unwrap();
    check_fd(&full, &uniform(5, 7, &mut r));
}

#[test]
fn lora_and_rslora_gradients_match_finite_differences() {
    let mut r = rng(2);
    for (m, n, rank) in [(7, 5, 2), (4, 9, 3), (6, 6, 1)] {
        for scale in [
            LoraScale::Standard { alpha: 16.0 },
            LoraScale::Rslora { alpha: 8.0 },
        ] {
            let lora =
                Lora::new(uniform(m, rank, &mut r), uniform(rank, n, &mut r), scale).unwrap();
            check_fd(&lora, &uniform(m, n, &mut r));
        }
    }
}

#[test]
fn hira_gradient_matches_finite_differences() {
    let mut r = rng(3);
    for (m, n, rank) in [(7, 5, 2), (4, 9, 3)] {
        let hira = Hira::new(
            uniform(m, n, &mut r),
            uniform(m, rank, &mut r),
            uniform(rank, n, &mut r),
        )
        .unwrap();
        check_fd(&hira, &uniform(m, n, &mut r));
    }
}

#[test]
fn abba_gradient_matches_finite_differences_for_uneven_ranks_and_all_scales() {
    let mut r = rng(4);
    let scales = [
        AbbaScale::Paper { alpha: 4.0 },
        AbbaScale::OfficialCode {
            alpha1: 2.0,
            alpha2: 3.0,
        },
        AbbaScale::Explicit { scale: 0.7 },
    ];
    for ((m, n, r1, r2), scale) in [(7, 5, 2, 3), (4, 9, 3, 1), (8, 6, 1, 4)]
        .into_iter()
        .zip(scales)
    {
        let abba = Abba::new(
            uniform(m, r1, &mut r),
            uniform(r1, n, &mut r),
            uniform(m, r2, &mut r),
            uniform(r2, n, &mut r),
            scale,
        )
        .unwrap();
        check_fd(&abba, &uniform(m, n, &mut r));
    }
}

#[test]
fn abba_chain_gradient_matches_finite_differences() {
    let mut r = rng(5);
    let (m, n) = (6, 5);
    let pairs = [2, 1, 3]
        .iter()
        .map(|&k| (uniform(m, k, &mut r), uniform(k, n, &mut r)))
        .collect();
    let chain = AbbaChain::new(pairs, AbbaScale::Paper { alpha: 2.0 }).unwrap();
    check_fd(&chain, &uniform(m, n, &mut r));
}

#[test]
fn two_pair_chain_equals_abba() {
    let mut r = rng(6);
    let (b1, a1, b2, a2) = (
        uniform(6, 2, &mut r),
        uniform(2, 5, &mut r),
        uniform(6, 3, &mut r),
        uniform(3, 5, &mut r),
    );
    let scale = AbbaScale::Paper { alpha: 3.0 };
    let abba = Abba::new(b1.clone(), a1.clone(), b2.clone(), a2.clone(), scale).unwrap();
    let chain = AbbaChain::new(vec![(b1, a1), (b2, a2)], scale).unwrap();
    assert!(common::rel_err(&chain.delta(), &abba.delta()) < 1e-14);
}
