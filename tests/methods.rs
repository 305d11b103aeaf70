//! The paper's other methods (DoRA, LoKr/KronA, MoRA, KRAdapter, PiSSA/OLoRA) on ndarray: factor gradients against
//! central finite differences, the cheap apply path against the materialised ΔW, merge/unmerge, ΔW = 0 at init,
//! published parameter counts, and their dense updates against fixtures made by the methods' official code
//! (`tests/fixtures/methods`, written by `make_method_fixtures.py`).

mod common;

use std::collections::HashMap;

use abba::adapter::init::{AbbaInit, KaimingA, LoraInit, SvdMethod};
use abba::adapter::kradapter::kr_sizes;
use abba::adapter::lokr::{KronPart, factorization, nearest_kronecker};
use abba::adapter::mora::{MoraLayout, MoraSpec};
use abba::adapter::scaling::{AbbaScale, LoraScale};
use abba::adapter::{
    AbbaSpec, Adapter, AnyAdapter, Dora, KrAdapter, KrAdapterSpec, Lokr, LoraSpec, MergedWeight,
    Method, Mora, MoraType,
};
use abba::budget::AbbaRankRule;
use abba::budget::{Budget, sized};
use common::method_cases::{cases, dora, lokr, mora, randomised};
use common::{rng, uniform};
use ndarray::{Array1, Array2};

fn loss(adapter: &dyn Adapter<f64>, c: &Array2<f64>) -> f64 {
    let d = adapter.delta();
    (c * &d).sum() + 0.5 * d.iter().map(|x| x * x).sum::<f64>()
}

/// ∂L/∂factor against central differences, L = Σ C⊙ΔW + ½‖ΔW‖².
fn check_fd(adapter: &AnyAdapter<f64>, c: &Array2<f64>) {
    let a = adapter.as_adapter();
    let g = c + &a.delta();
    let analytic = a.grads(g.view()).unwrap();
    let names = a.factor_names();
    let h = 1e-6;
    for (f, grad) in analytic.iter().enumerate() {
        assert_eq!(grad.dim(), a.factors()[f].dim(), "shape of ∂{}", names[f]);
        let mut worst: f64 = 0.0;
        for idx in ndarray::indices(grad.dim()) {
            let mut plus = adapter.clone();
            plus.as_adapter_mut().factors_mut()[f][idx] += h;
            let mut minus = adapter.clone();
            minus.as_adapter_mut().factors_mut()[f][idx] -= h;
            let fd = (loss(plus.as_adapter(), c) - loss(minus.as_adapter(), c)) / (2.0 * h);
            worst = worst.max((fd - grad[idx]).abs() / (1.0 + fd.abs()));
        }
        assert!(
            worst < 1e-6,
            "{:?} {}: worst relative error {worst:e}",
            a.kind(),
            names[f]
        );
    }
}

fn initialised(method: &Method, shape: (usize, usize), seed: u64) -> AnyAdapter<f64> {
    let w0 = uniform(shape.0, shape.1, &mut rng(seed));
    method
        .init::<f64, _>(w0.view(), &mut rng(seed + 1))
        .unwrap()
        .adapter
}

#[test]
fn gradients_of_every_new_method_match_finite_differences() {
    for (i, (method, shape)) in cases().into_iter().enumerate() {
        let a = randomised(initialised(&method, shape, i as u64), 100 + i as u64);
        let c = uniform(shape.0, shape.1, &mut rng(200 + i as u64));
        check_fd(&a, &c);
    }
}

#[test]
fn the_cheap_apply_path_equals_the_materialised_update() {
    for (i, (method, shape)) in cases().into_iter().enumerate() {
        let a = randomised(initialised(&method, shape, i as u64), 300 + i as u64);
        let x = uniform(shape.1, 3, &mut rng(400 + i as u64));
        let want = common::naive_matmul(&a.as_adapter().delta(), &x);
        let got = a.as_adapter().apply(x.view()).unwrap();
        let d = (&got - &want).iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(
            d < 1e-12,
            "{}: apply differs from ΔW·X by {d:e}",
            method.label()
        );
    }
}

#[test]
fn init_gives_zero_update_and_merge_then_unmerge_restores_the_base() {
    for (i, (method, shape)) in cases().into_iter().enumerate() {
        let a = initialised(&method, shape, i as u64);
        assert!(
            a.as_adapter().delta().iter().all(|&x| x.abs() < 1e-12),
            "{}: ΔW ≠ 0 at init",
            method.label()
        );
        let a = randomised(a, 500 + i as u64);
        let w0 = uniform(shape.0, shape.1, &mut rng(600 + i as u64));
        let merged = MergedWeight::new(w0.clone(), a.as_adapter()).unwrap();
        let diff = &merged.merged - &w0 - a.as_adapter().delta();
        assert!(diff.iter().all(|x| x.abs() < 1e-12), "{}", method.label());
        assert_eq!(merged.unmerge(), w0);
        let mut w = w0.clone();
        abba::adapter::merge(&mut w, a.as_adapter()).unwrap();
        abba::adapter::unmerge(&mut w, a.as_adapter()).unwrap();
        assert!((&w - &w0).iter().all(|x| x.abs() < 1e-12));
    }
}

#[test]
fn pissa_and_olora_start_at_the_base_with_a_residual() {
    let w0 = uniform(9, 7, &mut rng(7));
    for init in [
        LoraInit::Pissa {
            svd: SvdMethod::Exact,
        },
        LoraInit::Olora,
    ] {
        let m = Method::Lora(LoraSpec {
            r: 3,
            scale: LoraScale::Standard { alpha: 6.0 },
            init,
        });
        let i = m.init::<f64, _>(w0.view(), &mut rng(8)).unwrap();
        let residual = i.residual_base.expect("PiSSA and OLoRA change the base");
        // Residual + s·B0A0 is W0 again, and for PiSSA s·B0A0 is W0's top-3 SVD part.
        let back = &residual + &i.adapter.as_adapter().delta();
        assert!((&back - &w0).iter().all(|x| x.abs() < 1e-12));
        if matches!(init, LoraInit::Pissa { .. }) {
            let svd = abba::linalg::svd_thin(w0.view()).unwrap();
            let tail: f64 = svd.s.iter().skip(3).map(|s| s * s).sum();
            let got: f64 = residual.iter().map(|x| x * x).sum();
            assert!((got - tail).abs() < 1e-10 * tail, "{got} vs {tail}");
        }
    }
}

#[test]
fn abba_table_3_inits_that_change_the_base_say_so() {
    for init in AbbaInit::ALL {
        let m = Method::Abba(AbbaSpec {
            r1: 2,
            r2: 2,
            scale: AbbaScale::Paper { alpha: 2.0 },
            init,
        });
        let i = m
            .init::<f64, _>(uniform(8, 6, &mut rng(9)).view(), &mut rng(10))
            .unwrap();
        assert_eq!(i.residual_base.is_some(), init.changes_base(), "{init:?}");
    }
}

#[test]
fn parameter_counts_match_the_published_ones() {
    let count = |m: &Method, shape| m.num_params(shape);
    assert_eq!(count(&lokr(4, 32, false, false), (1024, 1024)), 16_400);
    assert_eq!(count(&lokr(8, 63, false, false), (1024, 1024)), 16_192);
    assert_eq!(count(&lokr(16, 126, false, false), (2048, 8192)), 80_896);
    let rhat = |r, shape| MoraSpec::r_hat_for(r, shape, MoraType::Sum);
    assert_eq!(rhat(16, (1024, 1024)), 181);
    assert_eq!(count(&mora(181, MoraType::Sum), (1024, 1024)), 32_761);
    assert_eq!(rhat(8, (2048, 8192)), 286);
    assert_eq!(count(&mora(286, MoraType::Sum), (2048, 8192)), 81_796);
    assert_eq!(kr_sizes((2048, 8192)), (2048, 45, 138));
    let kr = Method::Kradapter(KrAdapterSpec::default());
    assert_eq!(count(&kr, (2048, 8192)), 466_944);
    assert_eq!(count(&kr, (8192, 2048)), 466_944);
    assert_eq!(count(&kr, (1024, 1024)), 65_536);
    for shape in [(7, 5), (2048, 512)] {
        assert_eq!(count(&dora(4), shape), 4 * (shape.0 + shape.1) + shape.0);
    }
    // Llama-3.2-1B, DoRA r = 32 on q, k, v, o, gate, up, down of 16 layers: 22.92 M (paper Table 1).
    let layer = [
        (2048, 2048),
        (512, 2048),
        (512, 2048),
        (2048, 2048),
        (8192, 2048),
        (8192, 2048),
        (2048, 8192),
    ];
    let total: usize = 16 * layer.iter().map(|&s| count(&dora(32), s)).sum::<usize>();
    assert!((total as f64 / 1e6 - 22.92).abs() <= 0.01, "{total}");
    // PEFT's factorization, including its unsorted f > 0 case.
    for (d, f, want) in [
        (64, -1, (8, 8)),
        (1024, 4, (4, 256)),
        (32, 8, (8, 4)),
        (11008, -1, (86, 128)),
        (64, 3, (2, 32)),
    ] {
        assert_eq!(factorization(d, f), want, "factorization({d}, {f})");
    }
}

#[test]
fn budgets_a_method_cannot_reach_name_the_nearest_ones() {
    let kr = Method::Kradapter(KrAdapterSpec::default());
    let err = sized(&kr, Budget::LoraRank(8), AbbaRankRule::Half, (1024, 1024)).unwrap_err();
    let text = err.to_string();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("65536"), "{text}");
    let ok = sized(&kr, Budget::LoraRank(32), AbbaRankRule::Half, (1024, 1024)).unwrap();
    assert_eq!(ok.num_params((1024, 1024)), 65_536);
    // LoKr reaches LoRA r = 8 on 1024² within the tolerance, and prints what it reached.
    let l = sized(
        &lokr(4, 0, false, false),
        Budget::LoraRank(8),
        AbbaRankRule::Half,
        (1024, 1024),
    )
    .unwrap();
    let p = l.num_params((1024, 1024)) as f64;
    assert!((p / 16_384.0 - 1.0).abs() <= 0.10, "{p}");
}

#[test]
fn the_nearest_kronecker_product_beats_random_pairs_and_equals_alternating_least_squares() {
    let w = uniform(12, 16, &mut rng(11));
    let (a, b, err) = nearest_kronecker(w.view(), (3, 4)).unwrap();
    let kron = |a: &Array2<f64>, b: &Array2<f64>| {
        let (p, q) = b.dim();
        Array2::from_shape_fn((a.nrows() * p, a.ncols() * q), |(i, j)| {
            a[(i / p, j / q)] * b[(i % p, j % q)]
        })
    };
    let frob = |x: &Array2<f64>| x.iter().map(|v| v * v).sum::<f64>().sqrt();
    let best = frob(&(&w - &kron(&a, &b)));
    assert!((best - err).abs() < 1e-10, "{best} vs reported {err}");
    let mut r = rng(12);
    for _ in 0..100 {
        let (ra, rb) = (uniform(3, 4, &mut r), uniform(4, 4, &mut r));
        // Even the best scaling of a random pair is no better.
        let k = kron(&ra, &rb);
        let t = (&w * &k).sum() / (&k * &k).sum();
        assert!(frob(&(&w - &(k * t))) >= best - 1e-12);
    }
    // Brute-force alternating least squares from a random start converges to the same error.
    let (mut x, mut y) = (uniform(3, 4, &mut r), uniform(4, 4, &mut r));
    for _ in 0..500 {
        x = Array2::from_shape_fn((3, 4), |(i, j)| {
            let blk = w.slice(ndarray::s![i * 4..i * 4 + 4, j * 4..j * 4 + 4]);
            (&blk * &y).sum() / (&y * &y).sum()
        });
        y = Array2::from_shape_fn((4, 4), |(p, q)| {
            let mut num = 0.0;
            for i in 0..3 {
                for j in 0..4 {
                    num += w[(i * 4 + p, j * 4 + q)] * x[(i, j)];
                }
            }
            num / (&x * &x).sum()
        });
    }
    assert!((frob(&(&w - &kron(&x, &y))) - best).abs() < 1e-9);
}

#[test]
fn mora_least_squares_equals_a_dense_solve() {
    for (kind, r_hat, shape) in [(MoraType::Sum, 3, (7, 8)), (MoraType::Rotated, 4, (9, 6))] {
        let t = uniform(shape.0, shape.1, &mut rng(13));
        let spec = MoraSpec { r_hat, kind };
        let fit = abba::fit::oracle::mora(t.view(), &spec).unwrap();
        // Dense: vec(ΔW) = Φ·vec(M), Φ's columns the ΔW of each unit M; solve the normal equations by Gauss.
        let layout = MoraLayout::new(shape, r_hat, kind).unwrap();
        let k = r_hat * r_hat;
        let phi: Vec<Array1<f64>> = (0..k)
            .map(|e| {
                let mut m = Array2::zeros((r_hat, r_hat));
                m[(e / r_hat, e % r_hat)] = 1.0;
                Mora::new(layout.clone(), m)
                    .unwrap()
                    .delta()
                    .iter()
                    .copied()
                    .collect()
            })
            .collect();
        let tv: Array1<f64> = t.iter().copied().collect();
        let mut g = Array2::<f64>::zeros((k, k + 1));
        for i in 0..k {
            for j in 0..k {
                g[(i, j)] = phi[i].dot(&phi[j]);
            }
            g[(i, k)] = phi[i].dot(&tv);
        }
        let x = common::gauss_solve(g);
        let dense_fit: Array1<f64> =
            (0..k).fold(Array1::zeros(tv.len()), |acc, e| acc + &phi[e] * x[e]);
        let ours: Array1<f64> = fit.as_adapter().delta().iter().copied().collect();
        let d = (&ours - &dense_fit)
            .iter()
            .fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(d < 1e-9, "{kind:?}: {d:e}");
    }
}

/// The fixtures the official code's formulas produced (float64).
fn fixtures() -> HashMap<String, Array2<f64>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/methods/methods.safetensors"
    );
    let bytes =
        std::fs::read(path).expect("tests/fixtures/methods/methods.safetensors is committed");
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.iter()
        .filter(|(_, t)| t.dtype() == safetensors::Dtype::F64)
        .map(|(name, t)| {
            let v: Vec<f64> = t
                .data()
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect();
            let shape = match t.shape() {
                [r, c] => (*r, *c),
                [n] => (1, *n),
                _ => (1, v.len()),
            };
            (name.to_string(), Array2::from_shape_vec(shape, v).unwrap())
        })
        .collect()
}

fn close(what: &str, got: &Array2<f64>, want: &Array2<f64>, tol: f64) {
    assert_eq!(got.dim(), want.dim(), "{what}: shape");
    let d = (got - want).iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let s = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(d <= tol * (1.0 + s), "{what}: max diff {d:e}");
}

#[test]
fn kradapter_mora_and_lokr_match_their_official_code() {
    let f = fixtures();
    let get = |k: &str| f.get(k).unwrap_or_else(|| panic!("fixture {k}")).clone();
    for (m, n) in [(12, 20), (20, 12), (16, 16)] {
        let p = format!("kradapter.m{m}_n{n}");
        let kr =
            KrAdapter::new((m, n), get(&format!("{p}.u")), get(&format!("{p}.v")), 2.0).unwrap();
        close(&p, &kr.delta(), &get(&format!("{p}.delta_w")), 1e-12);
        let y = kr.apply(get(&format!("{p}.x")).t()).unwrap();
        close(
            &format!("{p} y"),
            &y.t().to_owned(),
            &get(&format!("{p}.y")),
            1e-12,
        );
    }
    let mut mora_cases = 0;
    for name in f
        .keys()
        .filter(|k| k.starts_with("mora") && k.ends_with(".m"))
    {
        let p = name.trim_end_matches(".m");
        let kind = if p.starts_with("mora1") {
            MoraType::Sum
        } else {
            MoraType::Rotated
        };
        let parts: Vec<&str> = p.split('.').collect();
        let dims: Vec<usize> = parts[1]
            .trim_start_matches('m')
            .split("_n")
            .map(|x| x.parse().unwrap())
            .collect();
        let r_hat: usize = parts[2].trim_start_matches("rh").parse().unwrap();
        let layout = MoraLayout::new((dims[0], dims[1]), r_hat, kind).unwrap();
        let mora = Mora::new(layout, get(name)).unwrap();
        close(p, &mora.delta(), &get(&format!("{p}.delta_w")), 1e-12);
        let y = mora.apply(get(&format!("{p}.x")).t()).unwrap();
        close(
            &format!("{p} y"),
            &y.t().to_owned(),
            &get(&format!("{p}.y")),
            1e-12,
        );
        mora_cases += 1;
    }
    assert!(mora_cases >= 12, "only {mora_cases} MoRA fixtures found");
    for case in ["f2_r2", "fauto_r1"] {
        let p = format!("lokr.m12_n16.{case}");
        let scale = get(&format!("{p}.scale"))[(0, 0)];
        let l = Lokr::new(
            KronPart::Full(get(&format!("{p}.w1"))),
            KronPart::LowRank(get(&format!("{p}.w2_a")), get(&format!("{p}.w2_b"))),
            scale,
        )
        .unwrap();
        close(&p, &l.delta(), &get(&format!("{p}.delta_w")), 1e-12);
    }
    for case in ["f2x2", "f3x4"] {
        let p = format!("nkp.m12_n16.{case}");
        let a = get(&format!("{p}.a"));
        let (_, _, err) = nearest_kronecker(get(&format!("{p}.w")).view(), a.dim()).unwrap();
        assert!(
            (err - get(&format!("{p}.err"))[(0, 0)]).abs() < 1e-10,
            "{p}"
        );
    }
}

#[test]
fn dora_renormalises_rows_to_the_magnitude() {
    let w0 = uniform(6, 4, &mut rng(14));
    let (b, a) = (uniform(6, 2, &mut rng(15)), uniform(2, 4, &mut rng(16)));
    let mag = Array2::from_elem((6, 1), 2.5);
    let d = Dora::new(w0.clone(), b, a, mag, LoraScale::Explicit { scale: 1.0 }).unwrap();
    let w = &w0 + &d.delta();
    for row in w.rows() {
        let norm = row.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 2.5).abs() < 1e-12, "{norm}");
    }
    let _ = KaimingA::Sqrt5;
}

#[test]
fn lora_pro_adjusts_gradients_as_its_official_code() {
    let f = fixtures();
    let get = |k: &str| f.get(k).unwrap_or_else(|| panic!("fixture {k}")).clone();
    for case in ["rand", "b0"] {
        let p = format!("lorapro.m10_n8_r3.{case}");
        let (b, a) = (get(&format!("{p}.b")), get(&format!("{p}.a")));
        let s = get(&format!("{p}.s"))[(0, 0)];
        let (ga, gb) = (get(&format!("{p}.g_a")), get(&format!("{p}.g_b")));
        let (ga_star, gb_star, x) = abba::fit::lora_pro::adjust(&b, &a, s, &ga, &gb).unwrap();
        if case == "rand" {
            // At B = 0 the adjustment of a non-zero g_A is never asked for (g_A = s·Bᵀ·G = 0 there).
            close(&format!("{p} X"), &x, &get(&format!("{p}.adjust.x")), 1e-9);
            close(
                &format!("{p} gA*"),
                &ga_star,
                &get(&format!("{p}.adjust.g_a_star")),
                1e-9,
            );
            close(
                &format!("{p} gB*"),
                &gb_star,
                &get(&format!("{p}.adjust.g_b_star")),
                1e-9,
            );
        }
        // The first official step: the equivalent gradient, Adam's direction (bias offset 1), the adjustment.
        let gt = abba::fit::lora_pro::equivalent_gradient(&b, &a, s, &ga, &gb).unwrap();
        close(
            &format!("{p} G̃"),
            &gt,
            &get(&format!("{p}.step1.equiv_grad")),
            1e-9,
        );
        let (c1, c2) = (1.0 - 0.9f64.powi(2), 1.0 - 0.999f64.powi(2));
        let dir = gt.mapv(|g| (0.1 * g / c1) / ((0.001 * g * g).sqrt() / c2.sqrt() + 1e-8));
        close(
            &format!("{p} dir"),
            &dir,
            &get(&format!("{p}.step1.adam_dir")),
            1e-9,
        );
        let ga_p = b.t().dot(&dir) * s;
        let gb_p = dir.dot(&a.t()) * s;
        let (ga_star, gb_star, _) = abba::fit::lora_pro::adjust(&b, &a, s, &ga_p, &gb_p).unwrap();
        close(
            &format!("{p} step gA*"),
            &ga_star,
            &get(&format!("{p}.step1.g_a_star")),
            1e-8,
        );
        close(
            &format!("{p} step gB*"),
            &gb_star,
            &get(&format!("{p}.step1.g_b_star")),
            1e-8,
        );
    }
}
