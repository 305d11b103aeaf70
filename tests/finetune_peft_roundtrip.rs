//! Adapters written by us load in PEFT and give the outputs we compute. `tests/fixtures/hf/ours/<kind>/` holds
//! files this code wrote (set `ABBA_WRITE_FIXTURES=1` to rewrite them) and `peft_logits.safetensors`, which
//! `tests/fixtures/check_our_adapters.py` computed by loading those files with PEFT 0.21. The test checks both
//! that the current writer still produces those files and that our logits equal PEFT's.

mod hf_common;

use hf_common::{fixture, max_abs_diff};

use std::collections::HashMap;

use abba::adapter::KeyStyle;
use abba::finetune::adapters::config::AdapterSection;
use abba::finetune::adapters::export::{LoraRank, to_loha, to_lora};
use abba::finetune::adapters::inject;
use abba::finetune::adapters::peft::{AdapterSet, adapter_tensors};
use abba::finetune::layers::ForwardCtx;
use abba::finetune::model::{Checkpoint, Llama};
use abba::rng::seeded;
use candle_core::{DType, Device, Tensor};
use rand::Rng;

fn tiny() -> Llama {
    Llama::load(
        &Checkpoint::open(&fixture("tiny-llama")).unwrap(),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap()
}

/// A model carrying seeded non-trivial adapters of `method`.
fn adapted(method: &str) -> Llama {
    let text = match method {
        "abba" => "method = \"abba\"\nr1 = 2\nr2 = 3\nalpha = 2.0".to_string(),
        m => format!("method = \"{m}\"\nr = 3\nalpha = 6.0"),
    };
    let sec: AdapterSection = toml::from_str(&text).unwrap();
    let cfg = sec.resolve().unwrap();
    let mut m = tiny();
    let (vars, _) = inject(&mut m, &cfg, 21).unwrap();
    let mut rng = seeded(22);
    for (_, v) in &vars {
        let data: Vec<f32> = (0..v.elem_count())
            .map(|_| rng.random::<f32>() - 0.5)
            .collect();
        v.set(&Tensor::from_vec(data, v.shape(), &Device::Cpu).unwrap())
            .unwrap();
    }
    m
}

fn sets() -> Vec<(&'static str, Llama, AdapterSet)> {
    let mut out = Vec::new();
    for method in ["lora", "rslora", "hira"] {
        let m = adapted(method);
        let set = AdapterSet::from_model(&m, KeyStyle::Native, 0.0, "tests/fixtures/hf/tiny-llama")
            .unwrap();
        out.push((method, m, set));
    }
    let m = adapted("abba");
    let abba =
        AdapterSet::from_model(&m, KeyStyle::Native, 0.0, "tests/fixtures/hf/tiny-llama").unwrap();
    out.push(("abba-as-loha", m.clone(), to_loha(&abba).unwrap()));
    out.push((
        "abba-as-lora",
        m,
        to_lora(&abba, LoraRank::Exact, None).unwrap(),
    ));
    out
}

#[test]
fn adapters_we_write_load_in_peft_with_the_same_outputs() {
    let write = std::env::var("ABBA_WRITE_FIXTURES").is_ok();
    let inputs = candle_core::safetensors::load(fixture("inputs.safetensors"), &Device::Cpu)
        .unwrap()["input_ids"]
        .to_dtype(DType::U32)
        .unwrap();
    for (name, model, set) in sets() {
        let dir = fixture(&format!("ours/{name}"));
        if write {
            set.save(&dir).unwrap();
            continue;
        }
        // The committed file is what the current writer produces…
        let committed =
            candle_core::safetensors::load(dir.join("adapter_model.safetensors"), &Device::Cpu)
                .unwrap();
        let ours: HashMap<String, Tensor> = adapter_tensors(&set).unwrap();
        assert_eq!(committed.len(), ours.len(), "{name}: tensor count");
        for (k, t) in &ours {
            let c = committed
                .get(k)
                .unwrap_or_else(|| panic!("{name}: {k} not in the committed file"));
            assert_eq!(
                max_abs_diff(c, t),
                0.0,
                "{name}: {k} differs from the committed file"
            );
        }
        // …and PEFT, loading it, computes what our adapted model computes (ABBA exports: what the ABBA computes).
        let peft =
            candle_core::safetensors::load(dir.join("peft_logits.safetensors"), &Device::Cpu)
                .unwrap();
        let got = model.forward(&inputs, &ForwardCtx::eval(), None).unwrap();
        let d = max_abs_diff(&got, &peft["logits"]);
        assert!(d < 1e-4, "{name}: our logits differ from PEFT's by {d}");
        let base = tiny().forward(&inputs, &ForwardCtx::eval(), None).unwrap();
        assert!(
            max_abs_diff(&base, &peft["logits"]) > 0.05,
            "{name}: the adapter must change the outputs"
        );
    }
}
