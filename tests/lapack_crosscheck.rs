//! With `--features lapack` (needs libopenblas-dev): the default engine (faer) agrees with LAPACK's gesdd.
#![cfg(feature = "lapack")]

mod common;

use ndarray_linalg::SVDDC;

#[test]
fn faer_singular_values_match_lapack() {
    let mut r = common::rng(60);
    for (m, n) in [(50, 30), (30, 50), (64, 64)] {
        let a = common::uniform(m, n, &mut r);
        let ours = abba::linalg::svd_thin(a.view()).unwrap();
        let (_, theirs, _) = a.svddc(ndarray_linalg::JobSvd::None).unwrap();
        for (x, y) in ours.s.iter().zip(theirs.iter()) {
            assert!((x - y).abs() < 1e-10 * theirs[0], "{x} vs {y}");
        }
    }
}

#[test]
fn faer_qr_matches_lapack_up_to_signs() {
    use ndarray_linalg::QR;
    let mut r = common::rng(61);
    let a = common::uniform(40, 20, &mut r);
    let (_, ours) = abba::linalg::qr_thin(a.view()).unwrap();
    let (_, theirs) = a.qr().unwrap();
    for i in 0..20 {
        assert!((ours[(i, i)].abs() - theirs[(i, i)].abs()).abs() < 1e-10);
    }
}
