//! The linear-algebra door against closed forms: Eckart–Young, randomized SVD accuracy, QR identities, GEMM.

mod common;

use abba::adapter::Adapter;
use abba::adapter::convert::truncated_lora;
use abba::linalg::{gemm, qr_thin, svd_randomized_truncated, svd_thin, svd_truncated};
use common::{frob, naive_matmul, rel_err, rng, uniform, with_spectrum};
use ndarray::Array2;

#[test]
fn gemm_matches_naive_product_including_transposed_views() {
    let mut r = rng(30);
    let a = uniform(37, 23, &mut r);
    let b = uniform(23, 41, &mut r);
    assert!(rel_err(&gemm(a.view(), b.view()), &naive_matmul(&a, &b)) < 1e-13);
    let at = a.t().to_owned();
    assert!(rel_err(&gemm(at.t(), b.view()), &naive_matmul(&a, &b)) < 1e-13);
    let f32_a = a.mapv(|x| x as f32);
    let f32_b = b.mapv(|x| x as f32);
    let got = gemm(f32_a.view(), f32_b.view()).mapv(f64::from);
    assert!(rel_err(&got, &naive_matmul(&a, &b)) < 1e-5);
}

#[test]
fn thin_svd_recovers_a_known_spectrum() {
    let mut r = rng(31);
    let sigma = [5.0, 3.0, 2.5, 1.0, 0.5, 0.1];
    let a = with_spectrum(30, 20, &sigma, &mut r);
    let svd = svd_thin(a.view()).unwrap();
    for (k, &s) in sigma.iter().enumerate() {
        assert!((svd.s[k] - s).abs() < 1e-12, "σ_{k}");
    }
    assert!(svd.s.iter().skip(sigma.len()).all(|&x| x < 1e-12));
    assert!(rel_err(&svd.reconstruct(), &a) < 1e-12);
}

#[test]
fn truncated_svd_lora_reaches_the_eckart_young_error_exactly() {
    let mut r = rng(32);
    let sigma: Vec<f64> = (0..25).map(|i| 10.0 / (1.0 + i as f64)).collect();
    let a = with_spectrum(40, 25, &sigma, &mut r);
    for rank in [1, 3, 10, 24] {
        let lora = truncated_lora(&a, rank).unwrap();
        let err2 = frob(&(&a - &lora.delta())).powi(2);
        let closed_form: f64 = sigma[rank..].iter().map(|s| s * s).sum();
        assert!(
            (err2 - closed_form).abs() < 1e-10 * closed_form.max(1.0),
            "r={rank}: {err2} vs {closed_form}"
        );
    }
}

#[test]
fn randomized_svd_with_four_power_iterations_is_within_1e_3_of_exact() {
    let mut r = rng(33);
    let sigma: Vec<f64> = (0..120).map(|i| (-(i as f64) / 12.0).exp()).collect();
    let a = with_spectrum(200, 120, &sigma, &mut r);
    let exact = svd_truncated(a.view(), 16).unwrap();
    for niter in [4, 10] {
        let approx = svd_randomized_truncated(a.view(), 16, 10, niter, &mut r).unwrap();
        for k in 0..16 {
            assert!(
                (approx.s[k] - exact.s[k]).abs() <= 1e-3 * exact.s[k],
                "niter={niter} σ_{k}"
            );
        }
        let e_exact = frob(&(&a - &exact.reconstruct()));
        let e_approx = frob(&(&a - &approx.reconstruct()));
        assert!(
            e_approx <= e_exact * (1.0 + 1e-3),
            "niter={niter}: {e_approx} vs {e_exact}"
        );
    }
}

#[test]
fn qr_gives_orthonormal_q_and_upper_triangular_r() {
    let mut r = rng(34);
    for (m, n) in [(30, 12), (12, 30), (16, 16)] {
        let a = uniform(m, n, &mut r);
        let (q, rr) = qr_thin(a.view()).unwrap();
        let k = m.min(n);
        assert_eq!(q.dim(), (m, k));
        assert_eq!(rr.dim(), (k, n));
        assert!(rel_err(&naive_matmul(&q, &rr), &a) < 1e-13);
        let qtq = naive_matmul(&q.t().to_owned(), &q);
        assert!(rel_err(&qtq, &Array2::eye(k)) < 1e-13);
        for i in 0..k {
            for j in 0..i.min(n) {
                assert_eq!(rr[(i, j)], 0.0);
            }
        }
    }
}
