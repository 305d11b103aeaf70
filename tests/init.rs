//! Initialisation properties: ΔW = 0 where the scheme promises it, learning starts, zero-B stalls (paper App. C),
//! PiSSA and the residual base, Kaiming bounds.

mod common;

use abba::adapter::init::{
    AbbaInit, InitOptions, KaimingA, LoraInit, SvdMethod, init_abba, init_hira, init_lora,
    kaiming_uniform,
};
use abba::adapter::scaling::{AbbaScale, LoraScale};
use abba::adapter::{Abba, Adapter};
use abba::linalg::svd_truncated;
use common::{rel_err, rng, uniform};
use ndarray::Array2;

#[test]
fn paper_init_has_zero_delta_and_a_nonzero_b2_gradient() {
    let mut r = rng(20);
    let w0 = uniform(48, 32, &mut r);
    for (r1, r2) in [(4, 4), (3, 6)] {
        let init = init_abba(
            w0.view(),
            r1,
            r2,
            AbbaScale::Paper { alpha: 16.0 },
            AbbaInit::Paper,
            InitOptions::default(),
            &mut r,
        )
        .unwrap();
        assert!(init.residual_base.is_none());
        assert!(init.adapter.delta().iter().all(|&x| x == 0.0));
        let g = uniform(48, 32, &mut r);
        let grads = init.adapter.grads(g.view()).unwrap();
        let norm = |a: &Array2<f64>| a.iter().map(|x| x * x).sum::<f64>();
        assert!(norm(&grads[2]) > 1e-6, "∂B2 must be non-zero");
        // With B2 = 0, only B2 receives gradient at step 0.
        assert_eq!(norm(&grads[0]), 0.0);
        assert_eq!(norm(&grads[1]), 0.0);
        assert_eq!(norm(&grads[3]), 0.0);
        // B1·A1 is the top-r1 truncated SVD of W0.
        let reference = svd_truncated(w0.view(), r1).unwrap().reconstruct();
        let p = common::naive_matmul(&init.adapter.b1, &init.adapter.a1);
        assert!(rel_err(&p, &reference) < 1e-10);
    }
}

#[test]
fn both_b_zero_gives_exactly_zero_gradients_for_all_four_factors() {
    let mut r = rng(21);
    let abba = Abba::new(
        Array2::zeros((10, 3)),
        uniform(3, 8, &mut r),
        Array2::zeros((10, 2)),
        uniform(2, 8, &mut r),
        AbbaScale::Paper { alpha: 16.0 },
    )
    .unwrap();
    let grads = abba.grads(uniform(10, 8, &mut r).view()).unwrap();
    for g in grads {
        assert!(g.iter().all(|&x| x == 0.0));
    }
}

#[test]
fn every_table3_variant_reproduces_w0_with_its_residual_base() {
    let mut r = rng(22);
    let w0 = uniform(30, 24, &mut r);
    for init in AbbaInit::ALL {
        let out = init_abba(
            w0.view(),
            3,
            4,
            AbbaScale::Paper { alpha: 8.0 },
            init,
            InitOptions::default(),
            &mut r,
        )
        .unwrap();
        let base = out.residual_base.clone().unwrap_or_else(|| w0.clone());
        // The adapted layer starts out computing exactly what W0 did.
        assert!(
            rel_err(&(&base + &out.adapter.delta()), &w0) < 1e-12,
            "{init:?}"
        );
        let has_nonzero_delta = out.adapter.delta().iter().any(|&x| x != 0.0);
        assert_eq!(out.residual_base.is_some(), has_nonzero_delta, "{init:?}");
    }
}

#[test]
fn sqrt_both_pairs_multiply_back_to_w0_at_full_rank() {
    // sign(W0)√|W0| ⊙ √|W0| = W0, so with full-rank pairs and s = 1, ΔW₀ = W0 and the residual vanishes.
    let mut r = rng(23);
    let w0 = uniform(6, 5, &mut r);
    let out = init_abba(
        w0.view(),
        5,
        5,
        AbbaScale::Explicit { scale: 1.0 },
        AbbaInit::SqrtBoth,
        InitOptions::default(),
        &mut r,
    )
    .unwrap();
    assert!(rel_err(&out.adapter.delta(), &w0) < 1e-10);
}

#[test]
fn pissa_puts_the_top_r_svd_part_in_the_adapter() {
    let mut r = rng(24);
    let w0 = uniform(40, 30, &mut r);
    let scale = LoraScale::Standard { alpha: 16.0 };
    let out = init_lora(
        w0.view(),
        5,
        scale,
        LoraInit::Pissa {
            svd: SvdMethod::Exact,
        },
        &mut r,
    )
    .unwrap();
    let top = svd_truncated(w0.view(), 5).unwrap().reconstruct();
    assert!(rel_err(&out.adapter.delta(), &top) < 1e-10);
    assert!(rel_err(&out.residual_base.unwrap(), &(&w0 - &top)) < 1e-10);
}

#[test]
fn standard_lora_and_hira_start_at_zero() {
    let mut r = rng(25);
    let w0 = uniform(20, 16, &mut r);
    for init in [
        LoraInit::Standard {
            kaiming: KaimingA::Sqrt5,
        },
        LoraInit::Gaussian,
    ] {
        let out = init_lora(w0.view(), 4, LoraScale::Rslora { alpha: 8.0 }, init, &mut r).unwrap();
        assert!(out.adapter.delta().iter().all(|&x| x == 0.0));
    }
    let hira = init_hira(w0.view(), 4, KaimingA::Zero, &mut r).unwrap();
    assert!(hira.delta().iter().all(|&x| x == 0.0));
}

#[test]
fn kaiming_uniform_matches_pytorch_bounds_and_variance() {
    // torch.nn.init.kaiming_uniform_(w, a): bound = √(2/(1+a²))·√(3/fan_in); variance of U(−b,b) is b²/3.
    let mut r = rng(26);
    let fan_in = 256;
    for (a, a_value) in [(KaimingA::Sqrt5, 5f64.sqrt()), (KaimingA::Zero, 0.0)] {
        let bound = (2.0 / (1.0 + a_value * a_value)).sqrt() * (3.0 / fan_in as f64).sqrt();
        let w: Array2<f64> = kaiming_uniform(200, fan_in, a, &mut r);
        assert!(w.iter().all(|x| x.abs() <= bound));
        let var = w.iter().map(|x| x * x).sum::<f64>() / w.len() as f64;
        // 51,200 samples: the standard error of the variance estimate is ≈ 0.4 % of b²/3.
        assert!(
            (var / (bound * bound / 3.0) - 1.0).abs() < 0.03,
            "{a:?}: variance {var}"
        );
    }
}

#[test]
fn randomized_svd_init_matches_exact_on_a_decaying_spectrum() {
    let mut r = rng(27);
    let sigma: Vec<f64> = (0..40).map(|i| 0.3f64.powi(i)).collect();
    let w0 = common::with_spectrum(60, 40, &sigma, &mut r);
    let opts = |svd| InitOptions {
        kaiming: KaimingA::Zero,
        svd,
    };
    let exact = init_abba(
        w0.view(),
        4,
        4,
        AbbaScale::default(),
        AbbaInit::Paper,
        opts(SvdMethod::Exact),
        &mut r,
    )
    .unwrap();
    let rand = init_abba(
        w0.view(),
        4,
        4,
        AbbaScale::default(),
        AbbaInit::Paper,
        opts(SvdMethod::Randomized { niter: 10 }),
        &mut r,
    )
    .unwrap();
    let p = |a: &Abba<f64>| common::naive_matmul(&a.b1, &a.a1);
    assert!(rel_err(&p(&rand.adapter), &p(&exact.adapter)) < 1e-6);
}
