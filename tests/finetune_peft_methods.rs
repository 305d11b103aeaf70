//! DoRA, LoKr, converted PiSSA/OLoRA and LoRA configs as people write them (layers_to_transform, rank/alpha
//! patterns, regex target_modules, exclude_modules), written by PEFT 0.21 (`tests/fixtures/peft_methods`, made by
//! `make_peft_methods_fixtures.py`): ours loads each and reproduces PEFT's logits, merged logits and ΔW. Adapters we
//! write load in PEFT with our logits (`peft_methods/ours`, checked by `check_our_adapters.py`). A PiSSA model saved
//! and reloaded on the original base gives the trained logits.

mod hf_common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use abba::adapter::KeyStyle;
use abba::finetune::adapters::config::AdapterSection;
use abba::finetune::adapters::inject;
use abba::finetune::adapters::peft::AdapterSet;
use abba::finetune::layers::ForwardCtx;
use abba::finetune::model::{Checkpoint, Llama};
use abba::rng::seeded;
use candle_core::{DType, Device, Tensor};
use hf_common::{fixture, max_abs_diff};
use rand::Rng;

fn methods_fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/peft_methods")
        .join(rel)
}

fn tiny() -> Llama {
    Llama::load(
        &Checkpoint::open(&fixture("tiny-llama")).unwrap(),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap()
}

fn inputs() -> Tensor {
    candle_core::safetensors::load(fixture("inputs.safetensors"), &Device::Cpu).unwrap()["input_ids"]
        .to_dtype(DType::U32)
        .unwrap()
}

fn logits(m: &Llama) -> Tensor {
    m.forward(&inputs(), &ForwardCtx::eval(), None).unwrap()
}

fn load(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

/// A copy of `m` whose projections hold W0 + ΔW and no adapter.
fn merged(m: &Llama) -> Llama {
    let mut out = m.clone();
    for (_, _, lin) in out.linears_mut() {
        lin.weight = lin.merged_weight().unwrap();
        lin.adapter = None;
    }
    out
}

const CASES: [&str; 19] = [
    "dora",
    "dora_rslora",
    "lokr",
    "lokr_r2",
    "lokr_f4_both",
    "lokr_f8_both",
    "lokr_full",
    "pissa",
    "olora",
    "pissa_rslora",
    "lora_layers",
    "lora_layers_int",
    "lora_patterns",
    "lora_patterns_regex",
    "lora_regex",
    "lora_regex_fullmatch",
    "lora_exclude",
    "lora_exclude_regex",
    "lora_all_linear",
];

#[test]
fn adapters_peft_wrote_reproduce_peft_outputs() {
    let base = tiny();
    for case in CASES {
        let dir = methods_fixture(case);
        let expected = load(&dir.join("expected.safetensors"));
        let mut m = tiny();
        let set = AdapterSet::load(&dir, &m).unwrap_or_else(|e| panic!("{case}: {e}"));
        set.attach(&mut m).unwrap();
        let d = max_abs_diff(&logits(&m), &expected["logits"]);
        assert!(d < 1e-4, "{case}: logits differ from PEFT's by {d}");
        let mm = merged(&m);
        let d = max_abs_diff(&logits(&mm), &expected["merged_logits"]);
        assert!(d < 1e-4, "{case}: merged logits differ from PEFT's by {d}");
        // ΔW relative to the original base, for the modules PEFT recorded.
        for (key, want) in expected.iter().filter(|(k, _)| k.starts_with("delta.")) {
            let path = key.trim_start_matches("delta.");
            let find = |model: &Llama| {
                model
                    .linears()
                    .into_iter()
                    .find(|(p, _, _)| p == path)
                    .unwrap()
                    .2
                    .clone()
            };
            let ours = (find(&mm).weight - find(&base).weight).unwrap();
            let d = max_abs_diff(&ours, want);
            assert!(d < 1e-5, "{case} {path}: ΔW differs by {d}");
        }
        // The modules adapted are exactly PEFT's (its deltas exist only for adapted modules).
        for path in [
            "model.layers.0.self_attn.q_proj",
            "model.layers.1.mlp.down_proj",
        ] {
            let adapted = set.modules.iter().any(|(p, _)| p == path);
            assert_eq!(
                adapted,
                expected.contains_key(&format!("delta.{path}")),
                "{case}: is {path} adapted?"
            );
        }
    }
}

/// A model with seeded non-trivial adapters of `method` (written as in a fine-tuning `[adapter]`).
fn trained(adapter_toml: &str, seed: u64) -> Llama {
    let sec: AdapterSection = toml::from_str(adapter_toml).unwrap();
    let mut m = tiny();
    let (vars, _) = inject(&mut m, &sec.resolve().unwrap(), seed).unwrap();
    let mut rng = seeded(seed + 1);
    for (_, v) in &vars {
        let noise: Vec<f32> = (0..v.elem_count())
            .map(|_| 0.2 * (rng.random::<f32>() - 0.5))
            .collect();
        let t =
            (v.as_tensor() + Tensor::from_vec(noise, v.shape(), &Device::Cpu).unwrap()).unwrap();
        v.set(&t).unwrap();
    }
    m
}

/// What we write for PEFT to read (`ABBA_WRITE_FIXTURES=1` rewrites them; then run check_our_adapters.py).
fn ours() -> Vec<(&'static str, Llama)> {
    let mut out = vec![
        ("dora", trained("method = \"dora\"\nr = 3\nalpha = 6.0", 31)),
        (
            "dora_rslora",
            trained("method = \"dora\"\nr = 2\nalpha = 4.0\nrslora = true", 32),
        ),
        (
            "lokr_r2",
            trained("method = \"lokr\"\nr = 2\nalpha = 4.0", 33),
        ),
        (
            "lokr_f8_both",
            trained(
                "method = \"lokr\"\nr = 2\nalpha = 4.0\nfactor = 8\ndecompose_both = true",
                34,
            ),
        ),
        (
            "krona",
            trained("method = \"krona\"\nalpha = 0.5\nfactor = 4", 35),
        ),
        (
            "pissa",
            trained("method = \"pissa\"\nr = 3\nalpha = 6.0", 36),
        ),
        (
            "olora",
            trained("method = \"olora\"\nr = 3\nalpha = 6.0", 37),
        ),
        (
            "pissa_rslora",
            trained("method = \"pissa\"\nr = 2\nalpha = 4.0\nrslora = true", 38),
        ),
    ];
    // Per-module ranks and alphas, and a subset of layers, as PEFT wrote them: loaded, then written by us.
    for case in ["lora_patterns", "lora_layers"] {
        let mut m = tiny();
        AdapterSet::load(&methods_fixture(case), &m)
            .unwrap()
            .attach(&mut m)
            .unwrap();
        out.push((case, m));
    }
    out
}

#[test]
fn adapters_we_write_load_in_peft_with_our_outputs() {
    let write = std::env::var("ABBA_WRITE_FIXTURES").is_ok();
    for (name, model) in ours() {
        let dir = methods_fixture(&format!("ours/{name}"));
        let set = AdapterSet::from_model(
            &model,
            KeyStyle::Native,
            0.0,
            "tests/fixtures/hf/tiny-llama",
        )
        .unwrap();
        if write {
            set.save(&dir).unwrap();
            continue;
        }
        let peft = load(&dir.join("peft_logits.safetensors"));
        let d = max_abs_diff(&logits(&model), &peft["logits"]);
        assert!(
            d < 1e-4,
            "{name}: PEFT's logits of our file differ from ours by {d}"
        );
        assert!(
            max_abs_diff(&logits(&tiny()), &peft["logits"]) > 0.05,
            "{name}: the adapter must change the outputs"
        );
        // Our reader reads our file back to the same model.
        let mut again = tiny();
        AdapterSet::load(&dir, &again)
            .unwrap()
            .attach(&mut again)
            .unwrap();
        let d = max_abs_diff(&logits(&again), &logits(&model));
        assert!(
            d < 1e-4,
            "{name}: reloading our own file changes the logits by {d}"
        );
    }
}

#[test]
fn a_pissa_model_saved_and_reloaded_on_the_original_base_gives_the_trained_logits() {
    for method in ["pissa", "olora"] {
        let model = trained(&format!("method = \"{method}\"\nr = 4\nalpha = 8.0"), 41);
        let want = logits(&model);
        // The trained model's base is the residual, not W0.
        let base = tiny();
        let (_, _, lin) = model.linears().into_iter().next().unwrap();
        let (_, _, orig) = base.linears().into_iter().next().unwrap();
        assert!(
            max_abs_diff(&lin.weight, &orig.weight) > 1e-3,
            "{method}: the base must be the residual"
        );
        let dir = std::env::temp_dir().join(format!("abba-pissa-{method}-{}", std::process::id()));
        AdapterSet::from_model(&model, KeyStyle::Native, 0.0, "")
            .unwrap()
            .save(&dir)
            .unwrap();
        let cfg: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            cfg["r"], 8,
            "{method}: saved in PEFT's converted form, rank 2r"
        );
        assert_eq!(cfg["init_lora_weights"], true);
        let mut fresh = tiny();
        AdapterSet::load(&dir, &fresh)
            .unwrap()
            .attach(&mut fresh)
            .unwrap();
        let d = max_abs_diff(&logits(&fresh), &want);
        assert!(
            d < 1e-4,
            "{method}: reloaded on the original base, logits differ by {d}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
