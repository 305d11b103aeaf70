//! The methods and layer shapes the per-method properties run on, shared by the ndarray tests (`methods.rs`) and
//! the candle layer tests (`finetune_methods.rs`).

use super::{rng, uniform};
use abba::adapter::mora::MoraSpec;
use abba::adapter::scaling::{AbbaScale, LoraScale};
use abba::adapter::{AnyAdapter, ChainSpec, DoraSpec, KrAdapterSpec, LokrSpec, Method, MoraType};

pub fn dora(r: usize) -> Method {
    Method::Dora(DoraSpec {
        r,
        scale: LoraScale::Standard { alpha: 3.0 },
        ..DoraSpec::default()
    })
}

pub fn lokr(factor: i64, r: usize, both: bool, krona: bool) -> Method {
    Method::Lokr(LokrSpec {
        factor,
        r,
        alpha: 1.5,
        decompose_both: both,
        krona,
    })
}

pub fn mora(r_hat: usize, kind: MoraType) -> Method {
    Method::Mora(MoraSpec { r_hat, kind })
}

/// The methods and shapes every property below runs on: non-square both ways, padding and cropping included.
pub fn cases() -> Vec<(Method, (usize, usize))> {
    vec![
        (dora(2), (7, 5)),
        (dora(3), (4, 9)),
        (lokr(-1, 1, false, false), (12, 16)),
        (lokr(2, 1, true, false), (12, 16)),
        (lokr(-1, 2, false, true), (8, 12)),
        (mora(5, MoraType::Sum), (12, 20)),
        (mora(4, MoraType::Rotated), (12, 10)),
        (mora(6, MoraType::Rotated), (20, 12)),
        (Method::Kradapter(KrAdapterSpec::default()), (5, 11)),
        (Method::Kradapter(KrAdapterSpec::default()), (11, 5)),
        (Method::Kradapter(KrAdapterSpec::default()), (9, 9)),
        (
            Method::AbbaChain(ChainSpec {
                ranks: vec![2, 1, 2],
                scale: AbbaScale::Explicit { scale: 0.7 },
            }),
            (6, 5),
        ),
    ]
}

/// Every factor drawn U(−1, 1), so no zero init hides a wrong gradient.
pub fn randomised(mut a: AnyAdapter<f64>, seed: u64) -> AnyAdapter<f64> {
    let mut r = rng(seed);
    for mut f in a.as_adapter_mut().factors_mut() {
        let (rows, cols) = f.dim();
        f.assign(&uniform(rows, cols, &mut r));
    }
    a
}
