//! The Khatri–Rao identity (paper Thm 1) and the rank claims it implies.

mod common;

use abba::adapter::khatri_rao::{col_kron, row_kron};
use abba::adapter::scaling::AbbaScale;
use abba::adapter::{Abba, Adapter, ForwardPath, Hira};
use common::{naive_matmul, numerical_rank, rel_err, rng, uniform};

fn random_abba(m: usize, n: usize, r1: usize, r2: usize, seed: u64) -> Abba<f64> {
    let mut r = rng(seed);
    Abba::new(
        uniform(m, r1, &mut r),
        uniform(r1, n, &mut r),
        uniform(m, r2, &mut r),
        uniform(r2, n, &mut r),
        AbbaScale::Paper { alpha: 2.0 },
    )
    .unwrap()
}

#[test]
fn hadamard_of_products_equals_khatri_rao_product() {
    let mut r = rng(10);
    let (b1, a1, b2, a2) = (
        uniform(9, 3, &mut r),
        uniform(3, 7, &mut r),
        uniform(9, 2, &mut r),
        uniform(2, 7, &mut r),
    );
    let lhs = naive_matmul(&b1, &a1) * naive_matmul(&b2, &a2);
    let rhs = naive_matmul(
        &row_kron(b1.view(), b2.view()),
        &col_kron(a1.view(), a2.view()),
    );
    assert!(rel_err(&rhs, &lhs) < 1e-14);
}

#[test]
fn khatri_rao_forward_equals_materialised_forward() {
    for (m, n, r1, r2, batch) in [(40, 30, 3, 5, 7), (16, 64, 4, 4, 1), (50, 20, 6, 2, 33)] {
        let abba = random_abba(m, n, r1, r2, m as u64);
        let x = uniform(n, batch, &mut rng(99));
        let reference = naive_matmul(&abba.delta(), &x);
        let kr = abba.apply_with(x.view(), ForwardPath::KhatriRao).unwrap();
        let mat = abba
            .apply_with(x.view(), ForwardPath::Materialised)
            .unwrap();
        let auto = abba.apply(x.view()).unwrap();
        assert!(rel_err(&kr, &reference) < 1e-12, "Khatri–Rao path");
        assert!(rel_err(&mat, &reference) < 1e-12, "materialised path");
        assert!(rel_err(&auto, &reference) < 1e-12, "automatic path");
    }
}

#[test]
fn cost_model_prefers_khatri_rao_exactly_when_it_is_cheaper() {
    // Square d: per token r1r2(m+n) against m·n, so Khatri–Rao wins for large batches iff r1r2 < d/2.
    let d = 4096;
    assert_eq!(
        ForwardPath::cheapest((d, d), 16, 16, 512),
        ForwardPath::KhatriRao
    );
    assert_eq!(
        ForwardPath::cheapest((d, d), 64, 64, 512),
        ForwardPath::Materialised
    );
    for (r1, r2, batch) in [(3, 5, 1), (40, 40, 2), (8, 8, 100)] {
        let kr = ForwardPath::KhatriRao.cost((64, 96), r1, r2, batch);
        let mat = ForwardPath::Materialised.cost((64, 96), r1, r2, batch);
        let pick = ForwardPath::cheapest((64, 96), r1, r2, batch);
        assert_eq!(pick == ForwardPath::KhatriRao, kr.flops <= mat.flops);
    }
}

#[test]
fn abba_rank_is_exactly_min_of_r1r2_and_shape() {
    for (m, n, r1, r2) in [
        (40, 30, 2, 3),
        (40, 30, 4, 5),
        (25, 60, 6, 7),
        (12, 12, 2, 2),
    ] {
        let abba = random_abba(m, n, r1, r2, (m * n + r1) as u64);
        let expected = (r1 * r2).min(m).min(n);
        assert_eq!(
            numerical_rank(&abba.delta()),
            expected,
            "m={m} n={n} r1={r1} r2={r2}"
        );
    }
}

#[test]
fn hira_rank_is_bounded_by_rank_w0_times_r() {
    let mut r = rng(11);
    let (m, n) = (40, 36);
    for (rank_w0, rank) in [(2, 3), (3, 4), (1, 5)] {
        let w0 = naive_matmul(&uniform(m, rank_w0, &mut r), &uniform(rank_w0, n, &mut r));
        let hira = Hira::new(w0, uniform(m, rank, &mut r), uniform(rank, n, &mut r)).unwrap();
        let got = numerical_rank(&hira.delta());
        assert!(got <= rank_w0 * rank, "rank {got} > {rank_w0}·{rank}");
        assert!(got >= 1);
    }
}
