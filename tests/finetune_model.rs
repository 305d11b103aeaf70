//! Our Llama-family decoder and PEFT adapter loading against Hugging Face transformers 5.24 / PEFT 0.21 on tiny
//! random models. The fixtures were made by `tests/fixtures/make_hf_fixtures.py` (see tests/fixtures/hf/README.md);
//! these tests run without Python.

mod hf_common;

use hf_common::{fixture, max_abs_diff};

use abba::finetune::adapters::peft::AdapterSet;
use abba::finetune::layers::ForwardCtx;
use abba::finetune::model::{Checkpoint, Llama};
use candle_core::{DType, Device, Tensor};

fn load_tensor(rel: &str, key: &str) -> Tensor {
    let map = candle_core::safetensors::load(fixture(rel), &Device::Cpu).unwrap();
    map.get(key)
        .unwrap_or_else(|| panic!("{key} in {rel}"))
        .clone()
}

fn inputs() -> Tensor {
    load_tensor("inputs.safetensors", "input_ids")
        .to_dtype(DType::U32)
        .unwrap()
}

fn model(dir: &str) -> Llama {
    let ckpt = Checkpoint::open(&fixture(dir)).unwrap();
    Llama::load(&ckpt, DType::F32, &Device::Cpu).unwrap()
}

fn assert_logits(dir: &str, expected_file: &str, key: &str, m: &Llama) {
    let got = m.forward(&inputs(), &ForwardCtx::eval(), None).unwrap();
    let want = load_tensor(expected_file, key);
    let d = max_abs_diff(&got, &want);
    let scale: f32 = want
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!(
        scale > 1.0,
        "{dir}: fixture logits are too small to test anything"
    );
    assert!(d < 1e-4, "{dir}: max |ours − transformers| = {d}");
}

#[test]
fn llama_logits_match_transformers() {
    assert_logits(
        "tiny-llama",
        "tiny-llama/expected.safetensors",
        "logits",
        &model("tiny-llama"),
    );
}

#[test]
fn sharded_checkpoint_loads_like_the_single_file() {
    assert!(fixture("tiny-llama-sharded/model.safetensors.index.json").is_file());
    assert_logits(
        "tiny-llama-sharded",
        "tiny-llama-sharded/expected.safetensors",
        "logits",
        &model("tiny-llama-sharded"),
    );
}

#[test]
fn llama3_rope_scaling_and_tied_embeddings_match_transformers() {
    assert_logits(
        "tiny-llama3",
        "tiny-llama3/expected.safetensors",
        "logits",
        &model("tiny-llama3"),
    );
}

#[test]
fn qwen2_with_attention_bias_matches_transformers() {
    let m = model("tiny-qwen2");
    assert!(m.blocks[0].q.bias.is_some() && m.blocks[0].o.bias.is_none());
    assert_logits(
        "tiny-qwen2",
        "tiny-qwen2/expected.safetensors",
        "logits",
        &m,
    );
}

#[test]
fn peft_adapters_load_and_reproduce_peft_outputs() {
    for kind in ["lora", "rslora", "hira", "loha"] {
        let mut m = model("tiny-llama");
        let set = AdapterSet::load(&fixture(&format!("peft/{kind}")), &m).unwrap();
        assert_eq!(set.modules.len(), 14, "{kind}: 7 modules × 2 layers");
        set.attach(&mut m).unwrap();
        assert_logits(
            kind,
            &format!("peft/{kind}/expected.safetensors"),
            "logits",
            &m,
        );
        // ΔW of two modules against PEFT's merged-minus-base.
        for path in [
            "model.layers.0.self_attn.q_proj",
            "model.layers.1.mlp.down_proj",
        ] {
            let lin = m
                .linears()
                .into_iter()
                .find(|(p, _, _)| p == path)
                .unwrap()
                .2
                .clone();
            let ours = lin.adapter.as_ref().unwrap().delta(&lin.weight).unwrap();
            let want = load_tensor(&format!("peft/{kind}/delta.safetensors"), path);
            let d = max_abs_diff(&ours, &want);
            assert!(d < 1e-5, "{kind} {path}: ΔW differs from PEFT's by {d}");
        }
    }
}
