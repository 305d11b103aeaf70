//! Training properties of the candle path on the tiny transformers-made Llama fixture (tests/fixtures/hf):
//! adapter gradients against finite differences, frozen bases, ABBA's ΔW = 0 start, loss going down for every
//! method, merge equivalence, exports that reproduce ΔW, and exact resume.

mod hf_common;

use hf_common::{check_gradients, fixture, max_abs, max_abs_diff, randn};

use std::path::{Path, PathBuf};

use abba::adapter::scaling::{AbbaScale, LoraScale};
use abba::adapter::{AbbaSpec, KeyStyle, LoraSpec, Method};
use abba::finetune::adapters::config::AdapterSection;
use abba::finetune::adapters::export::{LoraRank, to_loha, to_lora};
use abba::finetune::adapters::peft::AdapterSet;
use abba::finetune::adapters::{AdapterConfig, inject};
use abba::finetune::arith::arithmetic_problems;
use abba::finetune::data::{Encoded, PromptStyle, encode_example};
use abba::finetune::layers::{AdapterWeights, ForwardCtx};
use abba::finetune::model::{Checkpoint, Llama};
use abba::finetune::optim::GradAccumulator;
use abba::finetune::tokenizer::{SpecialIds, TextTokenizer};
use abba::finetune::train::shards::loss_and_grads;
use abba::finetune::train::{Shards, TrainConfig, TrainSetup, train};
use abba::rng::seeded;
use candle_core::{DType, Device, Tensor, Var};
use rand::Rng;

/// The fixture model with room for Alpaca prompts (it declares 128 positions; RoPE has no learned positions, so
/// widening the limit changes nothing else).
fn tiny() -> Llama {
    let mut ckpt = Checkpoint::open(&fixture("tiny-llama")).unwrap();
    ckpt.config.max_position_embeddings = 512;
    Llama::load(&ckpt, DType::F32, &Device::Cpu).unwrap()
}

fn section(method: &str) -> AdapterSection {
    let mut s: AdapterSection =
        toml::from_str(&format!("method = \"{method}\"\nr = 4\nalpha = 8.0")).unwrap();
    if method == "abba" {
        s.method.r = None;
        s.method.r1 = Some(2);
        s.method.r2 = Some(2);
        s.method.alpha = Some(2.0);
    }
    s
}

fn adapter(method: &str) -> AdapterConfig {
    section(method).resolve().unwrap()
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

fn logits(m: &Llama) -> Tensor {
    let ids = Tensor::new(&[[1u32, 17, 42, 5, 88, 63, 30]], &Device::Cpu).unwrap();
    m.forward(&ids, &ForwardCtx::eval(), None).unwrap()
}

fn weights(method: Method, vars: Vec<Var>, shape: (usize, usize)) -> AdapterWeights {
    AdapterWeights::new(method, vars, shape).unwrap()
}

fn var(shape: (usize, usize), rng: &mut impl Rng) -> Var {
    Var::from_tensor(&randn(shape, rng)).unwrap()
}

#[test]
fn adapter_layer_gradients_match_finite_differences() {
    let mut rng = seeded(5);
    let (m, n) = (12, 10);
    let w0 = randn((m, n), &mut rng);
    check_gradients(
        weights(
            Method::Lora(LoraSpec {
                r: 3,
                scale: LoraScale::Explicit { scale: 1.7 },
                ..Default::default()
            }),
            vec![var((3, n), &mut rng), var((m, 3), &mut rng)],
            (m, n),
        ),
        w0.clone(),
        4,
        None,
    );
    check_gradients(
        weights(
            Method::hira(3),
            vec![var((3, n), &mut rng), var((m, 3), &mut rng)],
            (m, n),
        ),
        w0.clone(),
        4,
        None,
    );
    // ABBA at two batch sizes so both forward paths (Khatri–Rao for few rows, materialised for many) are checked.
    for rows in [1, 64] {
        check_gradients(
            weights(
                Method::Abba(AbbaSpec {
                    r1: 2,
                    r2: 3,
                    scale: AbbaScale::Explicit { scale: 0.8 },
                    ..Default::default()
                }),
                vec![
                    var((2, n), &mut rng),
                    var((m, 2), &mut rng),
                    var((3, n), &mut rng),
                    var((m, 3), &mut rng),
                ],
                (m, n),
            ),
            w0.clone(),
            rows,
            None,
        );
    }
}

#[test]
fn abba_paper_init_starts_at_the_base_model() {
    let base = logits(&tiny());
    let mut m = tiny();
    inject(&mut m, &adapter("abba"), 0).unwrap();
    assert_eq!(max_abs(&(logits(&m) - &base).unwrap()), 0.0);
    // …while the adapter is really there: B1·A1 is W0's top-2 SVD part.
    let lin = &m.blocks[0].q;
    let a = lin.adapter.as_ref().unwrap();
    assert_eq!(a.method.name(), "abba");
    let (b1, a1) = (a.var("B1").unwrap(), a.var("A1").unwrap());
    assert!(max_abs(&b1.matmul(a1).unwrap()) > 0.1);
}

fn weights_snapshot(m: &Llama) -> Vec<(String, Vec<f32>)> {
    m.named_weights(false)
        .unwrap()
        .into_iter()
        .map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1().unwrap()))
        .collect()
}

#[test]
fn twenty_steps_lower_the_loss_and_touch_only_adapters() {
    let (train_set, pad) = data(40);
    for method in ["lora", "rslora", "hira", "abba", "full"] {
        let mut m = tiny();
        let (vars, count) = inject(&mut m, &adapter(method), 1).unwrap();
        assert!(count.trainable > 0 && count.trainable <= count.total);
        let before = weights_snapshot(&m);
        let dir = tempdir(&format!("train-{method}"));
        let cfg = TrainConfig {
            lr: if method == "full" { 3e-3 } else { 1e-2 },
            max_steps: Some(20),
            batch_size: 4,
            warmup_ratio: 0.0,
            ..TrainConfig::default()
        };
        let out = train(TrainSetup {
            model: &m,
            vars: &vars,
            data: &train_set,
            pad,
            cfg: &cfg,
            seed: 2,
            out_dir: &dir,
            resume: false,
            progress: false,
            stop_at: None,
        })
        .unwrap();
        let rows = abba::finetune::train::log::read_rows(&dir.join("train_log.csv")).unwrap();
        assert_eq!(rows.len(), 20);
        let first: f64 = rows[..3].iter().map(|r| r.loss).sum::<f64>() / 3.0;
        let last: f64 = rows[17..].iter().map(|r| r.loss).sum::<f64>() / 3.0;
        assert!(last < first - 0.05, "{method}: loss {first:.3} → {last:.3}");
        assert!(!out.diverged);
        let after = weights_snapshot(&m);
        if method == "full" {
            assert!(before != after, "full fine-tuning must change the base");
        } else {
            assert!(before == after, "{method}: a frozen base weight changed");
        }
    }
}

#[test]
fn merged_model_equals_adapter_model() {
    let mut rng = seeded(9);
    for method in ["lora", "hira", "abba"] {
        let mut m = tiny();
        let (vars, _) = inject(&mut m, &adapter(method), 4).unwrap();
        for (_, v) in &vars {
            let size = if method == "abba" { 1.0 } else { 0.2 };
            v.set(
                &(randn(v.dims2().unwrap(), &mut rng)
                    .to_dtype(DType::F32)
                    .unwrap()
                    * size)
                    .unwrap(),
            )
            .unwrap();
        }
        let with_adapter = logits(&m);
        let dir = tempdir(&format!("merged-{method}"));
        abba::finetune::job::model_io::save_hf_model(&m, &dir.join("merged"), None).unwrap();
        let merged = Llama::load(
            &Checkpoint::open(&dir.join("merged")).unwrap(),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        let base_diff = max_abs(&(logits(&tiny()) - &with_adapter).unwrap());
        let d = max_abs(&(logits(&merged) - &with_adapter).unwrap());
        assert!(
            base_diff > 0.1,
            "{method}: the adapter must matter for this test"
        );
        assert!(
            d < 1e-4,
            "{method}: merged differs from adapter model by {d}"
        );
    }
}

#[test]
fn loha_and_lora_exports_reproduce_abba_delta() {
    let mut rng = seeded(3);
    let mut m = tiny();
    let mut sec = section("abba");
    sec.method.r1 = Some(2);
    sec.method.r2 = Some(3);
    let (vars, _) = inject(&mut m, &sec.resolve().unwrap(), 4).unwrap();
    for (_, v) in &vars {
        v.set(
            &randn(v.dims2().unwrap(), &mut rng)
                .to_dtype(DType::F32)
                .unwrap(),
        )
        .unwrap();
    }
    let set = AdapterSet::from_model(&m, KeyStyle::Native, 0.0, "").unwrap();
    let loha = to_loha(&set).unwrap();
    let exact = to_lora(&set, LoraRank::Exact, None).unwrap();
    assert_eq!(loha.style, KeyStyle::Loha);
    assert_eq!(loha.method().ranks(), vec![3, 3]);
    assert_eq!(loha.peft_type(), "LOHA");
    assert_eq!(exact.method().ranks(), vec![6]);
    assert_eq!(exact.peft_type(), "LORA");
    for (i, (path, w)) in set.modules.iter().enumerate() {
        let lin = m
            .linears()
            .into_iter()
            .find(|(p, _, _)| p == path)
            .unwrap()
            .2
            .clone();
        let want = w.delta(&lin.weight).unwrap();
        for other in [&loha.modules[i].1, &exact.modules[i].1] {
            let d = max_abs(&(other.delta(&lin.weight).unwrap() - &want).unwrap());
            assert!(
                d < 1e-4 * (1.0 + max_abs(&want)),
                "{path}: export changes ΔW by {d}"
            );
        }
    }
    // Truncated to rank 1: the error is the Eckart–Young tail of ΔW's spectrum.
    let trunc = to_lora(&set, LoraRank::Truncated(1), None).unwrap();
    let (path, w) = &set.modules[0];
    let lin = m
        .linears()
        .into_iter()
        .find(|(p, _, _)| p == path)
        .unwrap()
        .2
        .clone();
    let delta = abba::finetune::bridge::to_array(&w.delta(&lin.weight).unwrap()).unwrap();
    let sv = abba::linalg::singular_values(delta.view()).unwrap();
    let tail: f64 = sv.iter().skip(1).map(|s| s * s).sum();
    let got =
        abba::finetune::bridge::to_array(&trunc.modules[0].1.delta(&lin.weight).unwrap()).unwrap();
    let err: f64 = (&got - &delta).iter().map(|x| x * x).sum();
    assert!(
        (err - tail).abs() < 1e-3 * tail.max(1e-9),
        "truncation error {err} vs tail {tail}"
    );
}

#[test]
fn interrupted_training_resumes_to_the_same_weights() {
    let (train_set, pad) = data(24);
    let cfg = TrainConfig {
        lr: 5e-3,
        max_steps: Some(8),
        batch_size: 3,
        checkpoint_every: 2,
        ..TrainConfig::default()
    };
    let mut section = section("abba");
    section.dropout = 0.1;
    let run = |dir: &Path,
               stop_at: Option<usize>,
               resume: bool,
               m: &mut Llama,
               vars: &[(String, Var)]| {
        train(TrainSetup {
            model: m,
            vars,
            data: &train_set,
            pad,
            cfg: &cfg,
            seed: 7,
            out_dir: dir,
            resume,
            progress: false,
            stop_at,
        })
        .unwrap()
    };
    let values = |vars: &[(String, Var)]| -> Vec<Vec<f32>> {
        vars.iter()
            .map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap())
            .collect()
    };
    let straight = {
        let mut m = tiny();
        let (vars, _) = inject(&mut m, &section.resolve().unwrap(), 0).unwrap();
        run(&tempdir("resume-straight"), None, false, &mut m, &vars);
        values(&vars)
    };
    let dir = tempdir("resume-split");
    {
        let mut m = tiny();
        let (vars, _) = inject(&mut m, &section.resolve().unwrap(), 0).unwrap();
        run(&dir, Some(5), false, &mut m, &vars);
    }
    let mut m = tiny();
    let (vars, _) = inject(&mut m, &section.resolve().unwrap(), 0).unwrap();
    let out = run(&dir, None, true, &mut m, &vars);
    assert_eq!(out.resumed_from, Some(5));
    assert_eq!(
        values(&vars),
        straight,
        "resumed weights differ from an uninterrupted run"
    );
    let steps: Vec<usize> = abba::finetune::train::log::read_rows(&dir.join("train_log.csv"))
        .unwrap()
        .iter()
        .map(|r| r.step)
        .collect();
    assert_eq!(
        steps,
        (1..=8).collect::<Vec<_>>(),
        "the log holds each step once"
    );
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("abba-ft-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A sharded step is the one-pass step cut into parts: with each shard's mean loss weighted by its share of the
/// batch's loss tokens (rows of different lengths and prompt masks here), the parts add up to the one-pass loss
/// and gradients, for every adapter kind and for full fine-tuning.
#[test]
fn sharded_loss_and_gradients_add_up_to_the_one_pass_ones() {
    let (enc, pad) = data(5);
    let rows: Vec<&Encoded> = enc.iter().collect();
    let lengths: std::collections::HashSet<usize> = enc.iter().map(|e| e.ids.len()).collect();
    assert!(
        lengths.len() > 1,
        "rows of one length would not test the weighting"
    );
    for method in ["lora", "abba", "hira", "dora", "full"] {
        let mut m = tiny();
        let (vars, _) = inject(&mut m, &adapter(method), 7).unwrap();
        let vars: Vec<Var> = vars.into_iter().map(|(_, v)| v).collect();
        let summed = |parts| {
            let mut acc = GradAccumulator::new(&vars);
            acc.add_parts(parts).unwrap();
            acc.take().unwrap()
        };
        let acc = GradAccumulator::new(&vars);
        let (one_loss, one) = loss_and_grads(&m, &acc, &rows, pad, Shards::Count(1), 3, 2).unwrap();
        assert_eq!(one.len(), 1);
        let one = summed(one);
        for shards in [
            Shards::Count(2),
            Shards::Count(5),
            Shards::Count(9),
            Shards::Auto,
        ] {
            let (loss, parts) = loss_and_grads(&m, &acc, &rows, pad, shards, 3, 2).unwrap();
            let expected_parts = shards.count(&Device::Cpu).min(rows.len());
            assert_eq!(
                parts.len(),
                rows.len().div_ceil(rows.len().div_ceil(expected_parts))
            );
            assert!(
                (loss - one_loss).abs() <= 1e-5 * one_loss.abs(),
                "{method} {shards}: loss {loss} vs {one_loss}"
            );
            assert!(
                one.iter().any(|g| max_abs(g) > 0.0),
                "{method}: no gradient at all"
            );
            for (g, g1) in summed(parts).iter().zip(&one) {
                // LoRA's A starts with zero gradient (B = 0): then both must be exactly zero.
                let scale = max_abs(g1);
                let diff = max_abs_diff(g, g1) as f64;
                assert!(
                    diff <= 1e-4 * scale,
                    "{method} {shards}: gradient off by {diff} (scale {scale})"
                );
            }
        }
    }
}

#[test]
fn shards_read_as_auto_or_a_positive_count() {
    let cfg: TrainConfig = toml::from_str("shards = 3").unwrap();
    assert_eq!(cfg.shards, Shards::Count(3));
    let cfg: TrainConfig = toml::from_str("shards = \"auto\"").unwrap();
    assert_eq!(cfg.shards, Shards::Auto);
    assert_eq!(TrainConfig::default().shards, Shards::Auto);
    for bad in ["shards = 0", "shards = -2", "shards = \"many\""] {
        let err = toml::from_str::<TrainConfig>(bad).unwrap_err().to_string();
        assert!(err.contains("`auto` or a whole number"), "{bad}: {err}");
    }
    // One pass is left out of serialised settings (ids hashed before shards existed meant one pass); others not.
    let one = TrainConfig {
        shards: Shards::Count(1),
        ..Default::default()
    };
    assert!(!serde_json::to_string(&one).unwrap().contains("shards"));
    assert!(
        serde_json::to_string(&TrainConfig::default())
            .unwrap()
            .contains("\"shards\":\"auto\"")
    );
}

/// A micro-batch without a loss token has loss 0 and no gradient, sharded or not (no share to divide).
#[test]
fn a_batch_without_loss_tokens_shards_to_a_zero_loss() {
    let mut m = tiny();
    let (vars, _) = inject(&mut m, &adapter("hira"), 7).unwrap();
    let vars: Vec<Var> = vars.into_iter().map(|(_, v)| v).collect();
    let (mut enc, pad) = data(3);
    for e in &mut enc {
        e.loss_mask.iter_mut().for_each(|w| *w = 0.0);
    }
    let rows: Vec<&Encoded> = enc.iter().collect();
    let acc = GradAccumulator::new(&vars);
    for shards in [Shards::Count(1), Shards::Count(3)] {
        let (loss, parts) = loss_and_grads(&m, &acc, &rows, pad, shards, 3, 1).unwrap();
        assert_eq!(loss, 0.0, "{shards}");
        let mut sum = GradAccumulator::new(&vars);
        sum.add_parts(parts).unwrap();
        for g in sum.take().unwrap() {
            assert_eq!(max_abs(&g), 0.0, "{shards}");
        }
    }
}
