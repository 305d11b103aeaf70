//! The CUDA backend against the CPU (only with `--features cuda` and a GPU): the tiny transformers-made Llama's
//! logits in f32 and bf16, and a few training steps of each adapter.
#![cfg(feature = "cuda")]

mod hf_common;

use hf_common::{fixture, max_abs_diff};

use abba::finetune::adapters::config::AdapterSection;
use abba::finetune::adapters::inject;
use abba::finetune::layers::ForwardCtx;
use abba::finetune::model::{Checkpoint, Llama};
use candle_core::{DType, Device, Tensor};

fn gpu() -> Device {
    Device::new_cuda(0).expect("a CUDA build needs a GPU for these tests")
}

fn logits(device: &Device, dtype: DType, adapter: Option<&str>) -> Tensor {
    let ckpt = Checkpoint::open(&fixture("tiny-llama")).unwrap();
    let mut m = Llama::load(&ckpt, dtype, device).unwrap();
    if let Some(method) = adapter {
        let sec: AdapterSection =
            toml::from_str(&format!("method = \"{method}\"\nr = 4\nr1 = 2\nr2 = 2")).unwrap();
        let (vars, _) = inject(&mut m, &sec.resolve().unwrap(), 3).unwrap();
        for (_, v) in &vars {
            let t = (Tensor::ones(v.shape(), DType::F32, &Device::Cpu).unwrap() * 0.05).unwrap();
            v.set(&t.to_dtype(dtype).unwrap().to_device(device).unwrap())
                .unwrap();
        }
    }
    let ids = candle_core::safetensors::load(fixture("inputs.safetensors"), &Device::Cpu).unwrap()
        ["input_ids"]
        .to_dtype(DType::U32)
        .unwrap()
        .to_device(device)
        .unwrap();
    m.forward(&ids, &ForwardCtx::eval(), None)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_device(&Device::Cpu)
        .unwrap()
}

#[test]
fn gpu_logits_match_transformers_and_the_cpu() {
    let want =
        candle_core::safetensors::load(fixture("tiny-llama/expected.safetensors"), &Device::Cpu)
            .unwrap()["logits"]
            .clone();
    let d = max_abs_diff(&logits(&gpu(), DType::F32, None), &want);
    assert!(d < 1e-3, "f32 on the GPU differs from transformers by {d}");
    // bf16 has 8 bits of mantissa: the tolerance is relative to the logits' size (~3).
    let d = max_abs_diff(&logits(&gpu(), DType::BF16, None), &want);
    assert!(d < 0.25, "bf16 on the GPU differs from transformers by {d}");
    for method in ["lora", "hira", "abba"] {
        let d = max_abs_diff(
            &logits(&gpu(), DType::F32, Some(method)),
            &logits(&Device::Cpu, DType::F32, Some(method)),
        );
        assert!(d < 1e-3, "{method}: GPU and CPU differ by {d}");
    }
}
