//! Bad arguments give typed errors with clear messages, never a panic.

mod common;

use abba::AbbaError;
use abba::adapter::Method;
use abba::adapter::MethodKind;
use abba::adapter::init::{
    AbbaInit, InitOptions, LoraInit, SvdMethod, init_abba, init_hira, init_lora,
};
use abba::adapter::scaling::{AbbaScale, LoraScale};
use abba::adapter::{Abba, Adapter, Hira, Lora};
use abba::budget::{AbbaRankRule, Budget, matched};
use common::{rng, uniform};
use ndarray::Array2;
use proptest::prelude::*;

#[test]
fn rank_zero_and_rank_above_min_dim_are_invalid_rank_errors() {
    let mut r = rng(50);
    let w0 = uniform(10, 6, &mut r);
    let err = init_lora(
        w0.view(),
        0,
        LoraScale::Standard { alpha: 1.0 },
        LoraInit::Gaussian,
        &mut r,
    )
    .unwrap_err();
    assert_eq!(
        err,
        AbbaError::InvalidRank {
            rank: 0,
            rows: 10,
            cols: 6
        }
    );
    assert!(
        err.to_string().contains("use a rank between 1 and 6"),
        "{err}"
    );
    let err = init_abba(
        w0.view(),
        7,
        2,
        AbbaScale::default(),
        AbbaInit::Paper,
        InitOptions::default(),
        &mut r,
    )
    .unwrap_err();
    assert!(matches!(err, AbbaError::InvalidRank { rank: 7, .. }));
    assert!(init_hira(w0.view(), 9, Default::default(), &mut r).is_err());
    assert!(Method::abba(3, 0).validate((10, 6)).is_err());
}

#[test]
fn mismatched_shapes_are_shape_errors() {
    let mut r = rng(51);
    let err = Lora::new(
        uniform(8, 3, &mut r),
        uniform(4, 5, &mut r),
        LoraScale::Standard { alpha: 1.0 },
    )
    .unwrap_err();
    assert!(matches!(err, AbbaError::ShapeMismatch { .. }), "{err}");
    let err = Abba::new(
        uniform(8, 2, &mut r),
        uniform(2, 5, &mut r),
        uniform(7, 2, &mut r),
        uniform(2, 5, &mut r),
        AbbaScale::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("expected shape (8, 5), got (7, 5)"),
        "{err}"
    );
    assert!(
        Hira::new(
            uniform(8, 6, &mut r),
            uniform(8, 2, &mut r),
            uniform(2, 5, &mut r)
        )
        .is_err()
    );
    let lora = Lora::new(
        uniform(8, 2, &mut r),
        uniform(2, 5, &mut r),
        LoraScale::Standard { alpha: 1.0 },
    )
    .unwrap();
    assert!(lora.grads(Array2::zeros((5, 8)).view()).is_err());
    assert!(lora.apply(Array2::zeros((8, 3)).view()).is_err());
    let mut w = Array2::zeros((5, 5));
    assert!(abba::adapter::merge(&mut w, &lora).is_err());
}

#[test]
fn non_finite_values_are_rejected() {
    let mut r = rng(52);
    let mut w0 = uniform(10, 8, &mut r);
    w0[(3, 4)] = f64::NAN;
    let err = init_abba(
        w0.view(),
        2,
        2,
        AbbaScale::default(),
        AbbaInit::Paper,
        InitOptions::default(),
        &mut r,
    )
    .unwrap_err();
    assert!(matches!(err, AbbaError::NonFinite { .. }), "{err}");
    let err = init_lora(
        w0.view(),
        2,
        LoraScale::Standard { alpha: 1.0 },
        LoraInit::Pissa {
            svd: SvdMethod::Exact,
        },
        &mut r,
    )
    .unwrap_err();
    assert!(matches!(err, AbbaError::NonFinite { .. }), "{err}");
    let mut b = uniform(10, 2, &mut r);
    b[(0, 0)] = f64::INFINITY;
    assert!(Lora::new(b, uniform(2, 8, &mut r), LoraScale::Standard { alpha: 1.0 }).is_err());
    assert!(
        Abba::new(
            uniform(10, 2, &mut r),
            uniform(2, 8, &mut r),
            uniform(10, 2, &mut r),
            uniform(2, 8, &mut r),
            AbbaScale::Paper { alpha: f64::NAN }
        )
        .is_err()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    /// Any dimensions and ranks a command line can produce: an Ok or an Err, never a panic.
    #[test]
    fn constructors_never_panic(m in 0usize..12, n in 0usize..12, r1 in 0usize..14, r2 in 0usize..14,
                                budget in 0usize..400, seed in 0u64..1000) {
        let mut r = rng(seed);
        let w0 = uniform(m, n, &mut r);
        let _ = init_abba(w0.view(), r1, r2, AbbaScale::default(), AbbaInit::Paper, InitOptions::default(), &mut r);
        let _ = init_lora(w0.view(), r1, LoraScale::Rslora { alpha: 2.0 }, LoraInit::Pissa { svd: SvdMethod::Randomized { niter: 2 } }, &mut r);
        let _ = init_hira(w0.view(), r2, Default::default(), &mut r);
        for kind in MethodKind::ALL {
            for rule in [AbbaRankRule::Half, AbbaRankRule::Full, AbbaRankRule::Split { r1 }] {
                let _ = matched(kind, Budget::Params(budget), rule, (m, n));
                let _ = matched(kind, Budget::LoraRank(r2), rule, (m, n));
            }
        }
        let _ = Abba::new(uniform(m, r1, &mut r), uniform(r1, n, &mut r), uniform(m, r2, &mut r),
            uniform(r2, n, &mut r), AbbaScale::default());
    }
}
