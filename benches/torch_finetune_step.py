#!/usr/bin/env python3
"""PyTorch + PEFT reference for `abba bench --suite finetune|layer` (one configuration per process).

finetune: training steps of a randomly initialised float32 `LlamaForCausalLM` (eager attention) on one fixed batch
of random token ids, with an adapter on all seven projections (q, k, v, o, gate, up, down):

    lora   PEFT LoraConfig(r, lora_alpha=16, lora_dropout=0)
    hira   PEFT HiraConfig(r)
    abba   a hand-written ABBA module (PEFT has none): y = W0 x + s (B1 A1 ⊙ B2 A2) x, s = α²/√(r1 r2), α = 16,
           factors random (timing does not depend on the SVD initialisation). ΔW x is computed along the path
           that the Rust crate's cost model (`ForwardPath::cheapest`) picks for the layer and the number of rows:
           Khatri–Rao, W0 x + (x A_krᵀ) B_krᵀ, or materialised, x (W0 + ΔW)ᵀ in one product as the crate
           computes it; `--abba-path` forces one.
    dora   PEFT LoraConfig(r, lora_alpha=16, lora_dropout=0, use_dora=True)
    full   full fine-tuning, every parameter trainable

A step is zero_grad + forward + cross-entropy of every position's logits against the next token (mean, float32,
as the crate's `masked_cross_entropy` with an all-ones mask) + backward + torch.optim.AdamW (lr 1e-3, weight decay 0).

layer: one 4096×4096 (--m, --n) ABBA-adapted linear layer, y = x (W0 + ΔW)ᵀ with r1 = r2 = 16, x of --batch rows;
forward, then backward of ⟨y, G⟩ for a fixed random G into the four factors, along the --path forced.

Both print ONE JSON line on stdout with the timing, `baseline_rss_mib` (VmRSS after the imports, before any
model or tensor is built) and `peak_rss_mib` (getrusage ru_maxrss: this process's peak resident memory).

Usage:
  python benches/torch_finetune_step.py finetune --method lora [--r 8 --r1 4 --r2 4 --vocab 259 --hidden 256
      --intermediate 688 --layers 4 --heads 8 --kv-heads 4 --batch 8 --seq 128 --steps 10 --warmup 2 --threads N
      --device cpu|cuda --dtype float32|bfloat16]
  python benches/torch_finetune_step.py layer --path khatri-rao|materialised [--m 4096 --n 4096 --r1 16 --r2 16
      --batch 256 --iters 5 --warmup 1 --threads N]
"""
import argparse
import json
import math
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def rss_mib(field="VmRSS"):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def cheapest(m, n, r1, r2, batch):
    """The crate's `ForwardPath::cheapest`: fewer multiply-adds wins, ties go to Khatri–Rao."""
    k = r1 * r2
    kr = k * (m + n) + k * (m + n) * batch
    mat = (r1 + r2) * m * n + m * n + m * n * batch
    return "khatri-rao" if kr <= mat else "materialised"


def abba_layer_forward(x, w0, a1, b1, a2, b2, scale, path):
    """x (W0 + ΔW)ᵀ for rows x (N×n), ΔW = s (B1 A1) ⊙ (B2 A2), along `path` as the crate computes it
    (layers/adapter.rs): the Khatri–Rao term beside the frozen product, or the materialised ΔW merged into it."""
    if path == "khatri-rao":
        m, r1 = b1.shape
        r2, n = a2.shape
        b_kr = (b1.unsqueeze(2) * b2.unsqueeze(1)).reshape(m, r1 * r2)
        a_kr = (a1.unsqueeze(1) * a2.unsqueeze(0)).reshape(r1 * r2, n)
        return x @ w0.T + (x @ a_kr.T) @ b_kr.T * scale
    delta = (b1 @ a1) * (b2 @ a2) * scale
    return x @ (w0 + delta).T


class AbbaLinear(nn.Module):
    """A frozen nn.Linear plus s (B1 A1 ⊙ B2 A2) x, PEFT layout (A r×in, B out×r)."""

    def __init__(self, base, r1, r2, alpha, path, gen):
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        m, n = base.out_features, base.in_features
        self.r1, self.r2, self.path = r1, r2, path
        self.scale = alpha * alpha / math.sqrt(r1 * r2)

        def factor(rows, cols):
            return nn.Parameter(torch.randn(rows, cols, generator=gen) * 0.02)

        self.abba_A1, self.abba_B1 = factor(r1, n), factor(m, r1)
        self.abba_A2, self.abba_B2 = factor(r2, n), factor(m, r2)

    def forward(self, x):
        m, n = self.base.out_features, self.base.in_features
        rows = x.reshape(-1, n)
        path = self.path if self.path != "auto" else cheapest(m, n, self.r1, self.r2, rows.shape[0])
        y = abba_layer_forward(rows, self.base.weight, self.abba_A1, self.abba_B1, self.abba_A2, self.abba_B2,
                               self.scale, path)
        if self.base.bias is not None:
            y = y + self.base.bias
        return y.reshape(*x.shape[:-1], m)


def finetune(args):
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM

    import peft

    baseline = rss_mib()
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed + 1)
    cfg = LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
        max_position_embeddings=args.max_pos, rms_norm_eps=1e-5, hidden_act="silu", tie_word_embeddings=False,
        attention_bias=False, mlp_bias=False, attention_dropout=0.0, initializer_range=0.02,
    )
    cfg._attn_implementation = "eager"
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    model = LlamaForCausalLM(cfg).to(device=device, dtype=dtype)
    assert model.config._attn_implementation == "eager", model.config._attn_implementation
    method = args.method
    if method == "lora":
        model = peft.get_peft_model(model, peft.LoraConfig(
            r=args.r, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS, bias="none"))
    elif method == "dora":
        model = peft.get_peft_model(model, peft.LoraConfig(
            r=args.r, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS, bias="none", use_dora=True))
    elif method == "hira":
        model = peft.get_peft_model(model, peft.HiraConfig(r=args.r, target_modules=TARGETS))
    elif method == "abba":
        for p in model.parameters():
            p.requires_grad_(False)
        for layer in model.model.layers:
            for parent in (layer.self_attn, layer.mlp):
                for name in TARGETS:
                    if hasattr(parent, name):
                        setattr(parent, name,
                                AbbaLinear(getattr(parent, name), args.r1, args.r2, 16.0, args.abba_path, gen))
    elif method != "full":
        raise SystemExit(f"unknown method {method}")
    model = model.to(device=device, dtype=dtype)  # adapter factors too, created after the first cast
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    trainable = sum(p.numel() for p in params)
    total = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)

    ids = torch.randint(0, args.vocab, (args.batch, args.seq + 1), generator=gen).to(device)
    x, y = ids[:, :-1].contiguous(), ids[:, 1:].contiguous()

    def step():
        opt.zero_grad(set_to_none=True)
        logits = model(input_ids=x).logits
        loss = F.cross_entropy(logits.float().reshape(-1, args.vocab), y.reshape(-1))
        loss.backward()
        opt.step()
        return loss.item()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    sync()
    secs = time.perf_counter() - t0
    tokens = args.batch * args.seq
    out = {
        "impl": "pytorch-peft" if method in ("lora", "hira", "dora") else "pytorch",
        "method": method,
        "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
        "threads": torch.get_num_threads(),
        "trainable_params": trainable, "total_params": total,
        "tokens_per_step": tokens,
        "ms_per_step": secs * 1e3 / args.steps,
        "tokens_per_s": tokens * args.steps / secs,
        "final_loss": loss,
        "baseline_rss_mib": baseline,
        "peak_rss_mib": peak_rss_mib(),
        "device": args.device, "dtype": args.dtype,
    }
    if device.type == "cuda":
        out["gpu_peak_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    if method == "abba":
        out["abba_path"] = args.abba_path
    return out


def layer(args):
    baseline = rss_mib()
    gen = torch.Generator().manual_seed(args.seed)
    m, n, r1, r2, batch = args.m, args.n, args.r1, args.r2, args.batch
    w0 = torch.randn(m, n, generator=gen) / math.sqrt(n)
    x = torch.randn(batch, n, generator=gen)
    g = torch.randn(batch, m, generator=gen)

    def factor(rows, cols):
        return (torch.randn(rows, cols, generator=gen) * 0.02).requires_grad_(True)

    a1, b1, a2, b2 = factor(r1, n), factor(m, r1), factor(r2, n), factor(m, r2)
    factors = (a1, b1, a2, b2)

    def fwd_bwd():
        for p in factors:
            p.grad = None
        y = abba_layer_forward(x, w0, a1, b1, a2, b2, 1.0, args.path)
        (y * g).sum().backward()

    for _ in range(args.warmup):
        fwd_bwd()
    ms = []
    for _ in range(args.iters):
        t0 = time.perf_counter()
        fwd_bwd()
        ms.append((time.perf_counter() - t0) * 1e3)
    return {
        "impl": "pytorch",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "m": m, "n": n, "r1": r1, "r2": r2, "batch": batch, "path": args.path,
        "cost_model_pick": cheapest(m, n, r1, r2, batch),
        "iters": args.iters,
        "median_ms": statistics.median(ms), "min_ms": min(ms),
        "baseline_rss_mib": baseline,
        "peak_rss_mib": peak_rss_mib(),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="suite", required=True)
    f = sub.add_parser("finetune")
    f.add_argument("--method", required=True, choices=["lora", "hira", "abba", "dora", "full"])
    f.add_argument("--r", type=int, default=8, help="LoRA / HiRA rank")
    f.add_argument("--r1", type=int, default=4)
    f.add_argument("--r2", type=int, default=4)
    f.add_argument("--abba-path", default="auto", choices=["auto", "khatri-rao", "materialised"])
    f.add_argument("--vocab", type=int, default=259)
    f.add_argument("--hidden", type=int, default=256)
    f.add_argument("--intermediate", type=int, default=688)
    f.add_argument("--layers", type=int, default=4)
    f.add_argument("--heads", type=int, default=8)
    f.add_argument("--kv-heads", type=int, default=4)
    f.add_argument("--max-pos", type=int, default=256)
    f.add_argument("--batch", type=int, default=8)
    f.add_argument("--seq", type=int, default=128)
    f.add_argument("--steps", type=int, default=10)
    f.add_argument("--warmup", type=int, default=2)
    f.add_argument("--device", default="cpu", help="cpu or cuda (scripts/gpu-check.sh)")
    f.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    lay = sub.add_parser("layer")
    lay.add_argument("--path", required=True, choices=["khatri-rao", "materialised"])
    lay.add_argument("--m", type=int, default=4096)
    lay.add_argument("--n", type=int, default=4096)
    lay.add_argument("--r1", type=int, default=16)
    lay.add_argument("--r2", type=int, default=16)
    lay.add_argument("--batch", type=int, default=256)
    lay.add_argument("--iters", type=int, default=5)
    lay.add_argument("--warmup", type=int, default=1)
    for s in (f, lay):
        s.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
        s.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.suite == "finetune":
        if args.steps < 1 or args.warmup < 0 or args.seq > args.max_pos:
            p.error("need steps >= 1, warmup >= 0 and seq <= max-pos")
        out = finetune(args)
    else:
        if args.iters < 1 or args.warmup < 0:
            p.error("need iters >= 1 and warmup >= 0")
        out = layer(args)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
