//! Greedy decoding, batched: the prompts fill a KV cache, left-padded to a common width, then every row advances
//! one token per step against it. Padding is masked and each row keeps its own positions, so a row's tokens are
//! those it would get alone. Rows that finish (EOS or their token budget) leave the batch, and the cache drops
//! them, so they cost nothing afterwards. On the CPU the prompts are run one at a time (no work on padding; the
//! activations stay in cache) and stacked, and the batch is shared between the threads part by part; elsewhere
//! in one padded batch.

use candle_core::{D, Tensor};
use rayon::prelude::*;

use crate::error::{AbbaError, Result};
use crate::finetune::layers::ForwardCtx;
use crate::finetune::model::{KvCache, Llama};

/// Fills the left of short prompts; any valid id does, since padding is masked.
const PAD: u32 = 0;

/// Appends up to `max_new` argmax tokens to `prompt`, stopping after `eos` if given or when the model's position
/// limit is reached. Returns only the new tokens (the EOS included).
pub fn greedy(model: &Llama, prompt: &[u32], max_new: usize, eos: Option<u32>) -> Result<Vec<u32>> {
    Ok(greedy_batch(model, &[prompt], max_new, eos)?
        .pop()
        .unwrap_or_default())
}

/// [`greedy`] for several prompts at once, as one batch: returns each prompt's new tokens, in order. On the CPU
/// with several threads the batch is cut into one part per thread, each generated on its own core: a decoding
/// step's products are too small to share between cores (waking a second thread costs more than it saves), and
/// rows never depend on each other.
pub fn greedy_batch<P: AsRef<[u32]> + Sync>(
    model: &Llama,
    prompts: &[P],
    max_new: usize,
    eos: Option<u32>,
) -> Result<Vec<Vec<u32>>> {
    if !model.device().is_cpu() {
        return generate(model, prompts, max_new, eos, Prefill::Padded);
    }
    generate_in_parts(model, prompts, max_new, eos, crate::linalg::thread_count())
}

/// The CPU batch cut into `parts` consecutive parts (at most one per prompt), generated in parallel.
fn generate_in_parts<P: AsRef<[u32]> + Sync>(
    model: &Llama,
    prompts: &[P],
    max_new: usize,
    eos: Option<u32>,
    parts: usize,
) -> Result<Vec<Vec<u32>>> {
    let parts = parts.min(prompts.len()).max(1);
    if parts == 1 {
        return generate(model, prompts, max_new, eos, Prefill::Rows);
    }
    let per_part = prompts.len().div_ceil(parts);
    let outs: Vec<Result<Vec<Vec<u32>>>> = prompts
        .par_chunks(per_part)
        .map(|part| generate(model, part, max_new, eos, Prefill::Rows))
        .collect();
    let mut all = Vec::with_capacity(prompts.len());
    for out in outs {
        all.extend(out?);
    }
    Ok(all)
}

/// How the prompts enter the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Prefill {
    /// One prompt at a time ([`prefill_rows`]).
    Rows,
    /// All at once, left-padded ([`prefill_padded`]).
    Padded,
}

fn generate<P: AsRef<[u32]>>(
    model: &Llama,
    prompts: &[P],
    max_new: usize,
    eos: Option<u32>,
    prefill: Prefill,
) -> Result<Vec<Vec<u32>>> {
    let prompts: Vec<&[u32]> = prompts.iter().map(|p| p.as_ref()).collect();
    if prompts.iter().any(|p| p.is_empty()) {
        return Err(AbbaError::InvalidArgument(
            "greedy generation needs a non-empty prompt".into(),
        ));
    }
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); prompts.len()];
    // As many tokens as fit in the model's positions, the last one never fed back.
    let budget: Vec<usize> = prompts
        .iter()
        .map(|p| max_new.min(model.max_positions().saturating_sub(p.len())))
        .collect();
    // Rows still generating, by index into `prompts`; the batch and the cache hold these rows in this order.
    let mut live: Vec<usize> = (0..prompts.len()).filter(|&r| budget[r] > 0).collect();
    if live.is_empty() {
        return Ok(out);
    }
    let width = live.iter().map(|&r| prompts[r].len()).max().unwrap_or(0);
    let steps = live.iter().map(|&r| budget[r]).max().unwrap_or(0);
    let ctx = ForwardCtx::eval();
    let dev = model.device();
    let live_prompts: Vec<&[u32]> = live.iter().map(|&r| prompts[r]).collect();
    let (mut cache, mut logits) = match prefill {
        Prefill::Rows => prefill_rows(model, &ctx, &live_prompts, width + steps)?,
        Prefill::Padded => prefill_padded(model, &ctx, &live_prompts, width + steps)?,
    };
    loop {
        let next: Vec<u32> = logits.argmax(D::Minus1)?.to_vec1()?;
        let mut keep = Vec::with_capacity(live.len());
        for (i, (&r, &tok)) in live.iter().zip(&next).enumerate() {
            out[r].push(tok);
            if Some(tok) != eos && out[r].len() < budget[r] {
                keep.push(i);
            }
        }
        if keep.is_empty() {
            return Ok(out);
        }
        if keep.len() < live.len() {
            cache.keep_rows(&keep)?;
            live = keep.iter().map(|&i| live[i]).collect();
        }
        let last: Vec<u32> = keep.iter().map(|&i| next[i]).collect();
        let input = Tensor::from_vec(last, (live.len(), 1), dev)?;
        logits = model.forward_last(&input, &ctx, &mut cache)?;
    }
}

/// The prompts one at a time, each into its own cache, then stacked left-padded into one cache of `columns`:
/// no work on padding, and small activations that stay in the CPU's caches. Returns the cache and the last
/// position's logits (batch, vocab).
fn prefill_rows(
    model: &Llama,
    ctx: &ForwardCtx,
    prompts: &[&[u32]],
    columns: usize,
) -> Result<(KvCache, Tensor)> {
    let mut caches = Vec::with_capacity(prompts.len());
    let mut logits = Vec::with_capacity(prompts.len());
    for p in prompts {
        let rows = if prompts.len() == 1 { columns } else { p.len() };
        let mut cache = KvCache::with_capacity(model.blocks.len(), rows);
        let ids = Tensor::from_slice(p, (1, p.len()), model.device())?;
        logits.push(model.forward_last(&ids, ctx, &mut cache)?);
        caches.push(cache);
    }
    if caches.len() == 1 {
        return Ok((caches.remove(0), logits.remove(0)));
    }
    Ok((
        KvCache::stack_left_padded(&caches, columns)?,
        Tensor::cat(&logits, 0)?,
    ))
}

/// All prompts in one left-padded forward (one large product per layer, which suits a GPU).
fn prefill_padded(
    model: &Llama,
    ctx: &ForwardCtx,
    prompts: &[&[u32]],
    columns: usize,
) -> Result<(KvCache, Tensor)> {
    let width = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
    let pad: Vec<usize> = prompts.iter().map(|p| width - p.len()).collect();
    let mut ids = Vec::with_capacity(prompts.len() * width);
    for (p, &n) in prompts.iter().zip(&pad) {
        ids.extend(std::iter::repeat_n(PAD, n));
        ids.extend_from_slice(p);
    }
    let mut cache = if pad.iter().any(|&n| n > 0) {
        KvCache::left_padded(model.blocks.len(), columns, pad)
    } else {
        KvCache::with_capacity(model.blocks.len(), columns)
    };
    let ids = Tensor::from_vec(ids, (prompts.len(), width), model.device())?;
    let logits = model.forward_last(&ids, ctx, &mut cache)?;
    Ok((cache, logits))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use candle_core::{DType, Device};

    use super::*;
    use crate::finetune::model::Checkpoint;

    fn tiny_llama() -> Llama {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf/tiny-llama");
        Llama::load(&Checkpoint::open(&dir).unwrap(), DType::F32, &Device::Cpu).unwrap()
    }

    #[test]
    fn padded_and_row_by_row_prefill_generate_the_same_tokens() {
        let model = tiny_llama();
        let prompts: [&[u32]; 4] = [
            &[1, 17, 42, 5, 88, 63, 30],
            &[1, 77],
            &[9, 54, 21, 95, 40, 3, 8, 60],
            &[4],
        ];
        let eos = generate(&model, &prompts[1..2], 3, None, Prefill::Rows).unwrap()[0][2];
        let rows = generate(&model, &prompts, 10, Some(eos), Prefill::Rows).unwrap();
        let padded = generate(&model, &prompts, 10, Some(eos), Prefill::Padded).unwrap();
        assert_eq!(rows, padded);
        assert_eq!(rows[1].len(), 3);
        assert!(rows.iter().any(|r| r.len() == 10));
    }

    /// However the batch is cut between threads, every prompt gets the tokens it gets alone.
    #[test]
    fn a_batch_cut_into_parts_generates_each_prompt_as_alone() {
        let model = tiny_llama();
        let prompts: Vec<Vec<u32>> = (0..5u32)
            .map(|i| (0..2 + 3 * i).map(|j| 1 + (i * 31 + j * 7) % 90).collect())
            .collect();
        let alone: Vec<Vec<u32>> = prompts
            .iter()
            .map(|p| {
                generate(&model, &[p], 8, None, Prefill::Rows)
                    .unwrap()
                    .remove(0)
            })
            .collect();
        for parts in [1, 2, 3, 5, 9] {
            assert_eq!(
                generate_in_parts(&model, &prompts, 8, None, parts).unwrap(),
                alone,
                "{parts} parts"
            );
        }
    }
}
