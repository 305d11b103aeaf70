//! Greedy generation with the KV cache: against transformers' `generate` (tests/fixtures/hf/tiny-llama/
//! generated.json), against a cache-free argmax loop over the full sequence, and batched (left-padded, rows
//! leaving at EOS) against one prompt at a time.

mod hf_common;

use hf_common::{fixture, max_abs_diff};

use abba::finetune::eval::{greedy, greedy_batch};
use abba::finetune::layers::ForwardCtx;
use abba::finetune::model::{Checkpoint, KvCache, Llama};
use candle_core::{D, DType, Device, Tensor};

fn model(dir: &str) -> Llama {
    let ckpt = Checkpoint::open(&fixture(dir)).unwrap();
    Llama::load(&ckpt, DType::F32, &Device::Cpu).unwrap()
}

/// Prompts of different lengths (1 to 12 tokens) over the tiny vocabulary of 96.
fn prompts() -> Vec<Vec<u32>> {
    vec![
        vec![1, 17, 42, 5, 88, 63, 30],
        vec![1, 77],
        vec![1, 77, 9, 54, 21, 95, 40, 3, 8, 60, 61, 12],
        vec![5],
        vec![1, 33, 33, 33, 70],
    ]
}

/// Greedy decoding without a cache: the whole sequence through `forward` at every step.
fn argmax_loop(m: &Llama, prompt: &[u32], max_new: usize) -> Vec<u32> {
    let mut ids = prompt.to_vec();
    for _ in 0..max_new {
        let x = Tensor::from_slice(&ids, (1, ids.len()), &Device::Cpu).unwrap();
        let logits = m.forward(&x, &ForwardCtx::eval(), None).unwrap();
        let last = logits.squeeze(0).unwrap().get(ids.len() - 1).unwrap();
        ids.push(last.argmax(D::Minus1).unwrap().to_scalar().unwrap());
    }
    ids[prompt.len()..].to_vec()
}

#[test]
fn greedy_matches_transformers_generate() {
    let text = std::fs::read_to_string(fixture("tiny-llama/generated.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ids = |key: &str| -> Vec<u32> {
        v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let (prompt, all) = (ids("prompt"), ids("ids"));
    let max_new = v["max_new_tokens"].as_u64().unwrap() as usize;
    let want = &all[prompt.len()..];
    assert_eq!(want.len(), max_new);
    let m = model("tiny-llama");
    assert_eq!(greedy(&m, &prompt, max_new, None).unwrap(), want);
    // The same row inside a padded batch, beside longer and shorter prompts.
    let batch = [
        vec![1, 77, 9, 54, 21, 95, 40, 3, 8, 60],
        prompt.clone(),
        vec![1],
    ];
    assert_eq!(greedy_batch(&m, &batch, max_new, None).unwrap()[1], want);
}

#[test]
fn padded_cached_logits_match_unpadded_forward() {
    for dir in ["tiny-llama", "tiny-llama3", "tiny-qwen2"] {
        let m = model(dir);
        let ps = prompts();
        let width = ps.iter().map(Vec::len).max().unwrap();
        let pad: Vec<usize> = ps.iter().map(|p| width - p.len()).collect();
        let mut ids = Vec::new();
        for p in &ps {
            ids.extend(std::iter::repeat_n(0u32, width - p.len()));
            ids.extend(p);
        }
        let ids = Tensor::from_vec(ids, (ps.len(), width), &Device::Cpu).unwrap();
        let mut cache = KvCache::left_padded(m.blocks.len(), width + 2, pad);
        let ctx = ForwardCtx::eval();
        let prefill = m.forward_last(&ids, &ctx, &mut cache).unwrap();
        // One more token per row continues from the cache.
        let next = Tensor::from_vec(vec![7u32, 8, 9, 10, 11], (5, 1), &Device::Cpu).unwrap();
        let step = m.forward_last(&next, &ctx, &mut cache).unwrap();
        for (r, p) in ps.iter().enumerate() {
            let mut full = p.clone();
            let alone = |ids: &[u32]| {
                let x = Tensor::from_slice(ids, (1, ids.len()), &Device::Cpu).unwrap();
                let l = m.forward(&x, &ctx, None).unwrap().squeeze(0).unwrap();
                l.get(ids.len() - 1).unwrap()
            };
            let d = max_abs_diff(&prefill.get(r).unwrap(), &alone(&full));
            assert!(d < 1e-5, "{dir} row {r} prefill: max diff {d}");
            full.push(7 + r as u32);
            let d = max_abs_diff(&step.get(r).unwrap(), &alone(&full));
            assert!(d < 1e-5, "{dir} row {r} step: max diff {d}");
        }
    }
}

#[test]
fn cached_generation_matches_the_cache_free_loop() {
    let mut m = model("tiny-llama");
    for window in [None, Some(4)] {
        m.cfg.sliding_window = window;
        let ps = prompts();
        let got = greedy_batch(&m, &ps, 9, None).unwrap();
        for (p, g) in ps.iter().zip(&got) {
            assert_eq!(g, &argmax_loop(&m, p, 9), "window {window:?}, prompt {p:?}");
        }
    }
}

#[test]
fn batched_generation_equals_one_prompt_at_a_time() {
    let m = model("tiny-llama");
    let ps = prompts();
    let max_new = 12;
    let free: Vec<Vec<u32>> = ps
        .iter()
        .map(|p| greedy(&m, p, max_new, None).unwrap())
        .collect();
    // An EOS that one row emits early and at least one other row never emits, so rows finish at different steps.
    let (eos, early_row) = (0..ps.len())
        .flat_map(|r| free[r][..3].iter().map(move |&t| (t, r)))
        .find(|&(t, _)| free.iter().any(|f| !f.contains(&t)))
        .expect("some early token is not generated by every row");
    let alone: Vec<Vec<u32>> = ps
        .iter()
        .map(|p| greedy(&m, p, max_new, Some(eos)).unwrap())
        .collect();
    assert!(alone[early_row].len() <= 3 && alone[early_row].last() == Some(&eos));
    assert!(alone.iter().any(|a| a.len() == max_new));
    assert_eq!(greedy_batch(&m, &ps, max_new, Some(eos)).unwrap(), alone);
    // Other groupings, and a repeated prompt.
    for size in [2, 3] {
        let mut got = Vec::new();
        for chunk in ps.chunks(size) {
            got.extend(greedy_batch(&m, chunk, max_new, Some(eos)).unwrap());
        }
        assert_eq!(got, alone, "batches of {size}");
    }
    let twice = [ps[2].clone(), ps[0].clone(), ps[2].clone()];
    let got = greedy_batch(&m, &twice, max_new, Some(eos)).unwrap();
    assert_eq!(got, [alone[2].clone(), alone[0].clone(), alone[2].clone()]);
}

#[test]
fn generation_stops_at_the_position_limit() {
    let m = model("tiny-llama");
    let limit = m.max_positions();
    let long = vec![5u32; limit - 3];
    let got = greedy_batch(&m, &[long.clone(), vec![1, 2, 3]], 10, None).unwrap();
    assert_eq!(got[0].len(), 3);
    assert_eq!(got[1].len(), 10);
    assert_eq!(got[0], greedy(&m, &long, 10, None).unwrap());
    assert!(greedy_batch(&m, &[vec![5u32; limit]], 4, None).unwrap()[0].is_empty());
    assert!(greedy(&m, &[], 4, None).is_err());
}
