//! The new methods' candle layers (DoRA, LoKr/KronA, MoRA, KRAdapter, ABBA chains, PiSSA/OLoRA) against the
//! ndarray maths of `adapter/`, which `tests/methods.rs` checks against finite differences and the methods'
//! official code: ΔW and forward values, autograd against central differences (DoRA's with its norm held
//! constant, as PEFT detaches it), twenty training steps that lower the loss, LoRA-Pro as an optimizer, and
//! base-changing ABBA inits saved for the original base.

mod common;
mod hf_common;

use std::path::PathBuf;

use abba::adapter::init::AbbaInit;
use abba::adapter::{AnyAdapter, KeyStyle, Method};
use abba::finetune::adapters::config::AdapterSection;
use abba::finetune::adapters::inject;
use abba::finetune::adapters::peft::AdapterSet;
use abba::finetune::arith::arithmetic_problems;
use abba::finetune::bridge::{from_array, to_array};
use abba::finetune::data::{Encoded, PromptStyle, encode_example};
use abba::finetune::layers::{AdaptedLinear, AdapterWeights, ForwardCtx};
use abba::finetune::model::{Checkpoint, Llama};
use abba::finetune::tokenizer::{SpecialIds, TextTokenizer};
use abba::finetune::train::{OptimizerKind, TrainConfig, TrainOutcome, TrainSetup, train};
use candle_core::{DType, Device, Tensor, Var};
use common::method_cases::{cases, randomised};
use common::{rng, uniform};
use hf_common::{check_gradients, fixture, max_abs, max_abs_diff};
use ndarray::Array2;

/// A case's ndarray adapter with every factor random, its W0, and the same adapter as candle variables.
fn both(
    method: &Method,
    shape: (usize, usize),
    seed: u64,
) -> (AnyAdapter<f64>, Array2<f64>, AdapterWeights) {
    let w0 = uniform(shape.0, shape.1, &mut rng(seed));
    let init = method
        .init::<f64, _>(w0.view(), &mut rng(seed + 1))
        .unwrap();
    let a = randomised(init.adapter, seed + 2);
    let factors = a.as_adapter().factors();
    let vars = method
        .factors(shape)
        .iter()
        .map(|f| {
            let t = from_array(&factors[f.position].to_owned(), DType::F64, &Device::Cpu).unwrap();
            Var::from_tensor(&t).unwrap()
        })
        .collect();
    let w = AdapterWeights::new(method.clone(), vars, shape).unwrap();
    (a, w0, w)
}

fn tensor(a: &Array2<f64>) -> Tensor {
    from_array(a, DType::F64, &Device::Cpu).unwrap()
}

#[test]
fn candle_layers_compute_the_ndarray_update_and_output() {
    for (i, (method, shape)) in cases().into_iter().enumerate() {
        let (a, w0, w) = both(&method, shape, 10 + i as u64);
        let want = a.as_adapter().delta();
        let got = to_array(&w.delta(&tensor(&w0)).unwrap()).unwrap();
        let d = (&got - &want).iter().fold(0f64, |m, x| m.max(x.abs()));
        assert!(d < 1e-10, "{}: ΔW differs by {d:e}", method.label());
        // The layer's output for one row and for many (the paths some methods choose by batch size).
        for rows in [1, 40] {
            let x = uniform(rows, shape.1, &mut rng(50 + i as u64));
            let lin = AdaptedLinear {
                weight: tensor(&w0),
                bias: None,
                adapter: Some(w.clone()),
                dropout: 0.0,
            };
            let y = lin.forward(&tensor(&x), &ForwardCtx::eval()).unwrap();
            let want = x.dot(&(&w0 + &want).t());
            let d = max_abs_diff(&y, &tensor(&want));
            assert!(
                d < 1e-9,
                "{} ({rows} rows): output differs by {d:e}",
                method.label()
            );
        }
    }
}

/// DoRA's output with the row norms ‖W0 + s·B·A‖ fixed at `norms`: what its detached-norm gradient differentiates.
fn dora_with_fixed_norms(
    w: &AdapterWeights,
    w0: &Tensor,
    norms: &Tensor,
    s: f64,
    x: &Tensor,
) -> Tensor {
    let (a, b, mag) = (
        w.var("A").unwrap(),
        w.var("B").unwrap(),
        w.var("magnitude").unwrap(),
    );
    let v = (w0 + (b.matmul(a).unwrap() * s).unwrap()).unwrap();
    let scaled = v.broadcast_mul(&mag.broadcast_div(norms).unwrap()).unwrap();
    x.matmul(&scaled.t().unwrap()).unwrap()
}

#[test]
fn candle_gradients_match_finite_differences() {
    for (i, (method, shape)) in cases().into_iter().enumerate() {
        let (_, w0, w) = both(&method, shape, 70 + i as u64);
        let w0 = tensor(&w0);
        for rows in [1, 24] {
            match &method {
                Method::Dora(spec) => {
                    let s = spec.scale.value(spec.r);
                    let (a, b) = (w.var("A").unwrap(), w.var("B").unwrap());
                    let v = (&w0 + (b.matmul(a).unwrap() * s).unwrap()).unwrap();
                    let norms = v.sqr().unwrap().sum_keepdim(1).unwrap().sqrt().unwrap();
                    let reference = |x: &Tensor| dora_with_fixed_norms(&w, &w0, &norms, s, x);
                    check_gradients(w.clone(), w0.clone(), rows, Some(&reference));
                }
                _ => check_gradients(w.clone(), w0.clone(), rows, None),
            }
        }
    }
}

fn tiny() -> Llama {
    let mut ckpt = Checkpoint::open(&fixture("tiny-llama")).unwrap();
    ckpt.config.max_position_embeddings = 512;
    Llama::load(&ckpt, DType::F32, &Device::Cpu).unwrap()
}

fn data(n: usize) -> (Vec<Encoded>, u32) {
    let tok = TextTokenizer::from_file(&fixture("tiny-llama/tokenizer.json")).unwrap();
    let special = SpecialIds::resolve(&tok, Some(1), Some(2)).unwrap();
    let enc = arithmetic_problems(n, 3)
        .iter()
        .map(|e| encode_example(&tok, e, &special, PromptStyle::Alpaca, 200).unwrap())
        .collect();
    (enc, special.pad)
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("abba-ftm-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn section(toml_text: &str) -> AdapterSection {
    toml::from_str(toml_text).unwrap()
}

/// Trains `steps` steps of 4 examples from `m` with the adapter already injected.
fn run(
    m: &Llama,
    vars: &[(String, Var)],
    cfg: &TrainConfig,
    dir: &std::path::Path,
    stop_at: Option<usize>,
    resume: bool,
) -> abba::error::Result<TrainOutcome> {
    let (train_set, pad) = data(40);
    train(TrainSetup {
        model: m,
        vars,
        data: &train_set,
        pad,
        cfg,
        seed: 2,
        out_dir: dir,
        resume,
        progress: false,
        stop_at,
    })
}

fn mean_loss(dir: &std::path::Path, range: std::ops::Range<usize>) -> f64 {
    let rows = abba::finetune::train::log::read_rows(&dir.join("train_log.csv")).unwrap();
    let n = range.len() as f64;
    rows[range].iter().map(|r| r.loss).sum::<f64>() / n
}

const NEW_METHODS: [(&str, &str); 9] = [
    ("dora", "method = \"dora\"\nr = 4\nalpha = 8.0"),
    ("pissa", "method = \"pissa\"\nr = 4\nalpha = 4.0"),
    ("olora", "method = \"olora\"\nr = 4\nalpha = 4.0"),
    ("lokr", "method = \"lokr\"\nr = 2\nalpha = 4.0\nfactor = 4"),
    ("krona", "method = \"krona\"\nalpha = 1.0\nfactor = 4"),
    ("mora-1", "method = \"mora\"\nr = 4\nmora_type = 1"),
    ("mora-6", "method = \"mora\"\nr = 4\nmora_type = 6"),
    ("kradapter", "method = \"kradapter\""),
    (
        "chain",
        "method = \"abba-chain\"\nranks = [2, 2, 2]\nalpha = 2.0",
    ),
];

#[test]
fn twenty_steps_of_every_new_method_lower_the_loss_and_keep_the_base() {
    for (name, text) in NEW_METHODS {
        let mut m = tiny();
        let (vars, count) = inject(&mut m, &section(text).resolve().unwrap(), 1).unwrap();
        assert!(count.trainable > 0, "{name}: nothing to train");
        let base: Vec<Vec<f32>> = m
            .linears()
            .iter()
            .map(|(_, _, l)| l.weight.flatten_all().unwrap().to_vec1().unwrap())
            .collect();
        let dir = tempdir(&format!("train-{name}"));
        let cfg = TrainConfig {
            lr: 1e-2,
            max_steps: Some(20),
            batch_size: 4,
            warmup_ratio: 0.0,
            ..TrainConfig::default()
        };
        let out = run(&m, &vars, &cfg, &dir, None, false).unwrap();
        assert!(!out.diverged, "{name} diverged");
        let (first, last) = (mean_loss(&dir, 0..3), mean_loss(&dir, 17..20));
        assert!(last < first - 0.05, "{name}: loss {first:.3} → {last:.3}");
        let after: Vec<Vec<f32>> = m
            .linears()
            .iter()
            .map(|(_, _, l)| l.weight.flatten_all().unwrap().to_vec1().unwrap())
            .collect();
        assert!(base == after, "{name}: a frozen base weight changed");
    }
}

fn lora_pro(max_steps: usize) -> TrainConfig {
    TrainConfig {
        lr: 2e-3,
        max_steps: Some(max_steps),
        batch_size: 4,
        warmup_ratio: 0.0,
        checkpoint_every: 2,
        optimizer: OptimizerKind::LoraPro,
        ..TrainConfig::default()
    }
}

#[test]
fn lora_pro_trains_lora_reports_its_moments_and_resumes_exactly() {
    let adapter = section("method = \"lora\"\nr = 4\nalpha = 8.0")
        .resolve()
        .unwrap();
    let mut m = tiny();
    let (vars, _) = inject(&mut m, &adapter, 3).unwrap();
    let dir = tempdir("lorapro");
    let out = run(&m, &vars, &lora_pro(20), &dir, None, false).unwrap();
    let (first, last) = (mean_loss(&dir, 0..3), mean_loss(&dir, 17..20));
    assert!(last < first - 0.05, "LoRA-Pro: loss {first:.3} → {last:.3}");
    // Two f32 m×n moments per adapted layer.
    let bytes: usize = m
        .linears()
        .iter()
        .filter(|(_, _, l)| l.adapter.is_some())
        .map(|(_, _, l)| 8 * l.weight.elem_count())
        .sum();
    let want = bytes as f64 / (1024.0 * 1024.0);
    assert!(
        (out.optimizer_state_mib - want).abs() < 1e-9,
        "{} vs {want}",
        out.optimizer_state_mib
    );

    // Stopped after 4 steps and resumed: the same factors as 8 steps straight.
    let values = |vars: &[(String, Var)]| -> Vec<Vec<f32>> {
        vars.iter()
            .map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap())
            .collect()
    };
    let straight = {
        let mut m = tiny();
        let (vars, _) = inject(&mut m, &adapter, 3).unwrap();
        run(
            &m,
            &vars,
            &lora_pro(8),
            &tempdir("lorapro-straight"),
            None,
            false,
        )
        .unwrap();
        values(&vars)
    };
    let split_dir = tempdir("lorapro-split");
    {
        let mut m = tiny();
        let (vars, _) = inject(&mut m, &adapter, 3).unwrap();
        run(&m, &vars, &lora_pro(8), &split_dir, Some(4), false).unwrap();
    }
    let mut m = tiny();
    let (vars, _) = inject(&mut m, &adapter, 3).unwrap();
    let out = run(&m, &vars, &lora_pro(8), &split_dir, None, true).unwrap();
    assert_eq!(out.resumed_from, Some(4));
    assert!(
        values(&vars) == straight,
        "LoRA-Pro resumed to different factors"
    );
}

#[test]
fn lora_pro_refuses_other_methods_in_one_line() {
    let adapter = section("method = \"abba\"\nr1 = 2\nr2 = 2")
        .resolve()
        .unwrap();
    let mut m = tiny();
    let (vars, _) = inject(&mut m, &adapter, 3).unwrap();
    let Err(err) = run(
        &m,
        &vars,
        &lora_pro(2),
        &tempdir("lorapro-abba"),
        None,
        false,
    ) else {
        panic!("LoRA-Pro on ABBA must be refused");
    };
    let err = err.to_string();
    assert!(
        err.contains("LoRA-Pro") && err.contains("abba") && !err.contains('\n'),
        "{err}"
    );
}

#[test]
fn abba_inits_that_change_the_base_reload_on_the_original_base() {
    for init in AbbaInit::ALL.into_iter().filter(|i| i.changes_base()) {
        let text = format!(
            "method = \"abba\"\nr1 = 2\nr2 = 2\ninit = \"{}\"",
            init.name()
        );
        let m = trained(&text, 5);
        let want = logits(&m);
        let dir = tempdir(&format!("init-{}", init.name()));
        AdapterSet::from_model(&m, KeyStyle::Native, 0.0, "")
            .unwrap()
            .save(&dir)
            .unwrap();
        let mut fresh = tiny();
        AdapterSet::load(&dir, &fresh)
            .unwrap()
            .attach(&mut fresh)
            .unwrap();
        let d = max_abs_diff(&logits(&fresh), &want) as f64;
        let scale = max_abs(&want);
        assert!(
            d < 1e-5 * (1.0 + scale),
            "{}: reloaded on the original base, logits differ by {d} (max |logit| {scale})",
            init.name()
        );
        assert!(
            max_abs(&(&want - &logits(&tiny())).unwrap()) > 1e-3,
            "{}: the adapter must matter",
            init.name()
        );
    }
}

/// The tiny model with `text`'s adapter moved off its start, so every module's update is non-zero.
fn trained(text: &str, seed: u64) -> Llama {
    let mut m = tiny();
    let (vars, _) = inject(&mut m, &section(text).resolve().unwrap(), seed).unwrap();
    let mut r = rng(seed + 1);
    for (_, v) in &vars {
        let (rows, cols) = v.dims2().unwrap();
        let noise = from_array(
            &(uniform(rows, cols, &mut r) * 0.05),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        v.set(&(v.as_tensor() + noise).unwrap()).unwrap();
    }
    m
}

fn logits(m: &Llama) -> Tensor {
    let ids = Tensor::new(&[[1u32, 17, 42, 5, 88, 63, 30]], &Device::Cpu).unwrap();
    m.forward(&ids, &ForwardCtx::eval(), None).unwrap()
}

#[test]
fn every_method_exports_as_an_exact_lora_and_merges_into_its_base() {
    use abba::finetune::adapters::export::{LoraRank, to_lora};
    for (name, text) in NEW_METHODS {
        let m = trained(text, 21);
        let want = logits(&m);
        let set = AdapterSet::from_model(&m, KeyStyle::Native, 0.0, "").unwrap();
        let dir = tempdir(&format!("export-{name}"));
        set.save(&dir.join("adapter")).unwrap();
        // Read back from disk, as `abba export` does, with the base for the methods whose ΔW reads W0.
        let base = tiny();
        let saved = AdapterSet::load(&dir.join("adapter"), &base).unwrap();
        let lora = to_lora(&saved, LoraRank::Exact, Some(&base)).unwrap();
        assert_eq!(lora.peft_type(), "LORA", "{name}");
        lora.save(&dir.join("lora")).unwrap();
        let mut fresh = tiny();
        AdapterSet::load(&dir.join("lora"), &fresh)
            .unwrap()
            .attach(&mut fresh)
            .unwrap();
        let d = max_abs_diff(&logits(&fresh), &want);
        assert!(
            d < 1e-4,
            "{name}: the exported LoRA changes the logits by {d}"
        );
        // Merged into the base: the same model as base + adapter.
        abba::finetune::job::model_io::save_hf_model(&fresh, &dir.join("merged"), None).unwrap();
        let merged = Llama::load(
            &Checkpoint::open(&dir.join("merged")).unwrap(),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        let d = max_abs_diff(&logits(&merged), &want);
        assert!(
            d < 1e-4,
            "{name}: the merged checkpoint changes the logits by {d}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn a_truncated_export_keeps_the_eckart_young_part_and_dora_asks_for_its_base() {
    use abba::finetune::adapters::export::{LoraRank, to_lora};
    let m = trained("method = \"kradapter\"", 23);
    let set = AdapterSet::from_model(&m, KeyStyle::Native, 0.0, "").unwrap();
    let trunc = to_lora(&set, LoraRank::Truncated(3), None).unwrap();
    let (path, w) = &set.modules[0];
    let (_, _, lin) = m.linears().into_iter().find(|(p, _, _)| p == path).unwrap();
    let delta = to_array(&w.delta(&lin.weight).unwrap()).unwrap();
    let sv = abba::linalg::singular_values(delta.view()).unwrap();
    let tail: f64 = sv.iter().skip(3).map(|s| s * s).sum();
    let got = to_array(&trunc.modules[0].1.delta(&lin.weight).unwrap()).unwrap();
    let err: f64 = (&got - &delta).iter().map(|x| x * x).sum();
    assert!(
        (err - tail).abs() < 1e-3 * tail,
        "truncation error {err} vs Eckart–Young tail {tail}"
    );

    let dora = trained("method = \"dora\"\nr = 2\nalpha = 4.0", 24);
    let set = AdapterSet::from_model(&dora, KeyStyle::Native, 0.0, "").unwrap();
    let err = to_lora(&set, LoraRank::Exact, None)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("--base") && !err.contains('\n'), "{err}");
}
