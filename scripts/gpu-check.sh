#!/usr/bin/env bash
# For a machine with an NVIDIA GPU and the CUDA toolkit: build with CUDA, run the GPU tests, then train a tiny
# random Llama for 30 steps per method on the GPU and print tokens/s, host peak memory and the peak GPU memory
# in use (sampled with nvidia-smi).
#   bash scripts/gpu-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)}"
cargo build --release --features cuda
cargo test --release --features cuda --test finetune_cuda
work="$(mktemp -d)"
printf "%-6s %-5s %12s %14s %14s\n" method dtype tokens/s host_peak_MiB gpu_peak_MiB
for dtype in f32 bf16; do
  for method in lora hira abba full; do
    case $method in
      abba) adapter='method = "abba"
r1 = 8
r2 = 8
alpha = 4.0' ;;
      full) adapter='method = "full"' ;;
      *) adapter="method = \"$method\"
r = 16" ;;
    esac
    cat > "$work/$method-$dtype.toml" <<TOML
name = "gpu-$method-$dtype"
[model]
tokenizer = "bytes"
dtype = "$dtype"
[model.random]
vocab_size = 259
hidden_size = 512
intermediate_size = 1376
num_hidden_layers = 8
num_attention_heads = 8
num_key_value_heads = 4
max_position_embeddings = 1024
[data]
synthetic = { train = 512, eval = 8, seed = 1 }
max_len = 512
[adapter]
$adapter
[train]
max_steps = 30
batch_size = 16
[eval]
generate = 0
[output]
dir = "$work/run-$method-$dtype"
TOML
    ./target/release/abba finetune --quiet --device cuda "$work/$method-$dtype.toml" > /dev/null &
    pid=$!
    used=0  # GPU memory in use, sampled while the run lasts (the device-wide peak seen)
    while kill -0 "$pid" 2> /dev/null; do
      now=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
      [ "$now" -gt "$used" ] && used=$now
      sleep 0.2
    done
    wait "$pid"
    report="$work/run-$method-$dtype/report.json"
    tps=$(grep -o '"tokens_per_s": [0-9.]*' "$report" | awk '{print $2}')
    rss=$(grep -o '"peak_rss_mib": [0-9.]*' "$report" | awk '{print $2}')
    printf "%-6s %-5s %12.0f %14.0f %14s\n" "$method" "$dtype" "$tps" "$rss" "$used"
  done
done
