#!/usr/bin/env python3
"""transformers reference for `abba bench --suite generate`: greedy `generate` with a KV cache, one configuration per
process.

A randomly initialised float32 `LlamaForCausalLM` (default: byte-level vocabulary 259, hidden 256, intermediate 688,
4 layers, 8 heads, 4 kv heads, untied head; transformers' default attention implementation) generates exactly
--new-tokens tokens (`do_sample=False`, `min_new_tokens = max_new_tokens`, so EOS never stops a row early) for
--prompts prompts, --batch at a time, left-padded. The prompts are the same as the Rust side's
(`abba::finetune::eval::bench_generate::bench_prompts`): prompt i has
`prompt_min + (i * 37) % (prompt_max - prompt_min + 1)` tokens, token j of it is `3 + (i * 131 + j * 29) % (vocab - 3)`.

One untimed pass over the first batch, then --repeats timed passes over all prompts; tokens/s is the number of new
tokens (prompts × new tokens) over the wall time of a pass, prompt processing included. Prints ONE JSON line with the
median and best pass, the median pass's CPU time over all threads (`cpu_s`, less sensitive to other load), `baseline_rss_mib` (VmRSS after the imports) and `peak_rss_mib` (ru_maxrss).

Usage:
  python benches/torch_generate.py [--batch 16 --prompts 16 --new-tokens 64 --prompt-min 64 --prompt-max 128
      --vocab 259 --hidden 256 --intermediate 688 --layers 4 --heads 8 --kv-heads 4 --max-pos 256 --repeats 3
      --threads N --seed 0]
"""
import argparse
import json
import resource
import sys
import time

import torch


def rss_mib(field="VmRSS"):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def prompts(n, lo, hi, vocab):
    span = hi - lo + 1
    return [[3 + (i * 131 + j * 29) % (vocab - 3) for j in range(lo + (i * 37) % span)] for i in range(n)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--prompt-min", type=int, default=64)
    p.add_argument("--prompt-max", type=int, default=128)
    p.add_argument("--vocab", type=int, default=259)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--intermediate", type=int, default=688)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--max-pos", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.batch < 1 or args.prompts < 1 or args.new_tokens < 1 or args.repeats < 1:
        p.error("need batch, prompts, new-tokens and repeats >= 1")
    if not 1 <= args.prompt_min <= args.prompt_max or args.prompt_max + args.new_tokens > args.max_pos:
        p.error("need 1 <= prompt-min <= prompt-max and prompt-max + new-tokens <= max-pos")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    import transformers
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    baseline = rss_mib()
    torch.manual_seed(args.seed)
    cfg = LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
        max_position_embeddings=args.max_pos, rms_norm_eps=1e-5, hidden_act="silu", tie_word_embeddings=False,
        attention_bias=False, mlp_bias=False, attention_dropout=0.0, initializer_range=0.02,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    model = LlamaForCausalLM(cfg).float().eval()
    gcfg = GenerationConfig(
        do_sample=False, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, use_cache=True,
        eos_token_id=2, pad_token_id=0, bos_token_id=1,
    )
    rows = prompts(args.prompts, args.prompt_min, args.prompt_max, args.vocab)
    batches = []
    for s in range(0, len(rows), args.batch):
        chunk = rows[s:s + args.batch]
        width = max(len(r) for r in chunk)
        ids = torch.tensor([[0] * (width - len(r)) + r for r in chunk], dtype=torch.long)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in chunk], dtype=torch.long)
        batches.append((ids, mask))

    def run(bs):
        new = 0
        for ids, mask in bs:
            out = model.generate(input_ids=ids, attention_mask=mask, generation_config=gcfg)
            new += (out.shape[1] - ids.shape[1]) * out.shape[0]
        return new

    with torch.inference_mode():
        run(batches[:1])
        secs, cpu = [], []
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            new = run(batches)
            secs.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    assert new == args.prompts * args.new_tokens, new
    med = sorted(secs)[len(secs) // 2]  # the upper median, as the Rust side
    print(json.dumps({
        "impl": "transformers",
        "torch": torch.__version__, "transformers": transformers.__version__,
        "attn_implementation": model.config._attn_implementation,
        "threads": torch.get_num_threads(),
        "batch": args.batch, "prompts": args.prompts, "new_tokens": args.new_tokens,
        "prompt_min": args.prompt_min, "prompt_max": args.prompt_max, "repeats": args.repeats,
        "median_s": med, "best_s": min(secs), "cpu_s": sorted(cpu)[len(cpu) // 2],
        "tokens_per_s": new / med, "best_tokens_per_s": new / min(secs),
        "baseline_rss_mib": baseline,
        "peak_rss_mib": peak_rss_mib(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
