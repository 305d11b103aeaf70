//! Merge/unmerge round trips and the exact conversions (LoHa view, exact LoRA through Khatri–Rao).

mod common;

use abba::adapter::convert::truncated_lora;
use abba::adapter::scaling::{AbbaScale, LoraScale};
use abba::adapter::{Abba, Adapter, Full, Hira, Lora, MergedWeight, merge, unmerge};
use common::{naive_matmul, rel_err, rng, uniform};
use ndarray::Array2;

fn adapters(m: usize, n: usize) -> Vec<Box<dyn Adapter<f32>>> {
    let mut r = rng(40);
    let f = |rows, cols, r: &mut _| uniform(rows, cols, r).mapv(|x| x as f32);
    vec![
        Box::new(Full::from_delta(f(m, n, &mut r)).unwrap()),
        Box::new(
            Lora::new(
                f(m, 4, &mut r),
                f(4, n, &mut r),
                LoraScale::Standard { alpha: 8.0 },
            )
            .unwrap(),
        ),
        Box::new(Hira::new(f(m, n, &mut r), f(m, 4, &mut r), f(4, n, &mut r)).unwrap()),
        Box::new(
            Abba::new(
                f(m, 3, &mut r),
                f(3, n, &mut r),
                f(m, 5, &mut r),
                f(5, n, &mut r),
                AbbaScale::Paper { alpha: 4.0 },
            )
            .unwrap(),
        ),
    ]
}

#[test]
fn merged_forward_equals_adapter_forward_and_unmerge_restores_w0() {
    let (m, n) = (48, 40);
    let mut r = rng(41);
    let w0 = uniform(m, n, &mut r).mapv(|x| x as f32);
    let x = uniform(n, 9, &mut r).mapv(|x| x as f32);
    for adapter in adapters(m, n) {
        let adapter_out =
            abba::linalg::gemm(w0.view(), x.view()) + adapter.apply(x.view()).unwrap();
        let mut w = w0.clone();
        merge(&mut w, adapter.as_ref()).unwrap();
        let merged_out = abba::linalg::gemm(w.view(), x.view());
        let to64 = |a: &Array2<f32>| a.mapv(f64::from);
        assert!(
            rel_err(&to64(&merged_out), &to64(&adapter_out)) < 1e-5,
            "{:?}",
            adapter.kind()
        );
        unmerge(&mut w, adapter.as_ref()).unwrap();
        assert!(
            rel_err(&to64(&w), &to64(&w0)) < 1e-6,
            "{:?} unmerge",
            adapter.kind()
        );
        // The remembering variant is exact.
        let kept = MergedWeight::new(w0.clone(), adapter.as_ref()).unwrap();
        assert_eq!(kept.unmerge(), w0);
    }
}

fn random_abba(r1: usize, r2: usize) -> Abba<f64> {
    let mut r = rng(42 + (r1 * 10 + r2) as u64);
    let (m, n) = (36, 28);
    Abba::new(
        uniform(m, r1, &mut r),
        uniform(r1, n, &mut r),
        uniform(m, r2, &mut r),
        uniform(r2, n, &mut r),
        AbbaScale::Paper { alpha: 16.0 },
    )
    .unwrap()
}

#[test]
fn loha_view_reproduces_delta_with_loha_formula() {
    for (r1, r2) in [(3, 5), (4, 4), (6, 2)] {
        let abba = random_abba(r1, r2);
        let loha = abba.to_loha();
        assert_eq!(loha.r, r1.max(r2));
        // PEFT LoHa: ΔW = (α/r)·(w1a·w1b)⊙(w2a·w2b)
        let loha_delta = (naive_matmul(&loha.w1a, &loha.w1b) * naive_matmul(&loha.w2a, &loha.w2b))
            * (loha.alpha / loha.r as f64);
        assert!(
            rel_err(&loha_delta, &abba.delta()) < 1e-5,
            "r1={r1} r2={r2}"
        );
    }
}

#[test]
fn exact_lora_conversion_reproduces_delta_at_rank_r1r2() {
    let abba = random_abba(3, 4);
    let lora = abba.to_lora_exact().unwrap();
    assert_eq!(lora.rank(), 12);
    assert!(rel_err(&lora.delta(), &abba.delta()) < 1e-5);
    // A truncated LoRA of rank r1·r2 is also exact (the update has that rank).
    let truncated = truncated_lora(&abba.delta(), 12).unwrap();
    assert!(rel_err(&truncated.delta(), &abba.delta()) < 1e-5);
}
