#!/usr/bin/env bash
# Runs on a GPU machine with no Rust toolchain what scripts/build-cuda.sh built elsewhere (target/cuda/dist/, carried
# with the repository: the `run` tool's carry = ["target/cuda/dist"]): the CUDA tests (logits against the
# transformers fixture in f32 and bf16, GPU against CPU per adapter), then a short training run per method of a
# ~25 M-parameter byte-level Llama in f32 and bf16, ours (`abba finetune --device cuda`) beside PyTorch (+ PEFT for
# LoRA and HiRA) with benches/torch_finetune_step.py on the same GPU and shapes. Prints one table, and writes it as
# CSV to ${1:-results/bench/gpu.csv}:
# tokens/s (ours: the 30-step run's own figure, kernel compilation included; PyTorch: 20 steps after 3 untimed) and
# the peak GPU memory in use (nvidia-smi, sampled every 0.2 s, the same sampler for both).
#
#   bash scripts/gpu-check.sh [OUT.csv]      # needs nvidia-smi, python3 with torch + transformers + peft
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-results/bench/gpu.csv}"
dist=target/cuda/dist
[ -f "$dist/abba.gz" ] || { echo "gpu-check: $dist/abba.gz missing: run scripts/build-cuda.sh on the build machine and carry $dist" >&2; exit 2; }
# The binaries travel gzipped (the PTX of candle's kernels makes each ~60 MiB, ~17 MiB compressed).
bin="$(mktemp -d)"
for b in abba finetune_cuda; do
  gunzip -c "$dist/$b.gz" > "$bin/$b" && chmod +x "$bin/$b"
done

# The CUDA libraries the binaries were linked against (cuBLAS 13, cuRAND 10, NVRTC 13), from the machine's toolkit
# or its Python's NVIDIA wheels; libcuda.so.1 comes with the driver.
libs=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
  $(python3 -c 'import glob, site; print(" ".join(glob.glob(p + "/nvidia/*/lib") for p in site.getsitepackages()))' 2> /dev/null | tr ' ' '\n'); do
  [ -d "$d" ] && libs="$libs:$d"
done
export LD_LIBRARY_PATH="${libs#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export ABBA_REPO_ROOT="$PWD"
missing=$(ldd "$bin/abba" | grep "not found" || true)
[ -z "$missing" ] || { echo "gpu-check: libraries not found: $missing" >&2; exit 2; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

"$bin/finetune_cuda" --test-threads 1

work="$(mktemp -d)"
gpu_used() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1; }
# Runs "${@:2}" in the background with its stdout into $1 and prints the most GPU memory in use (MiB) seen while
# it ran, less what was in use before it started.
sample_peak() {
  local log=$1 idle peak now pid
  shift
  idle=$(gpu_used); peak=$idle
  "$@" > "$log" &
  pid=$!
  while kill -0 "$pid" 2> /dev/null; do
    now=$(gpu_used); [ "$now" -gt "$peak" ] && peak=$now
    sleep 0.2
  done
  wait "$pid"
  echo $((peak - idle))
}
shape=(--vocab 259 --hidden 512 --intermediate 1376 --layers 8 --heads 8 --kv-heads 4 --max-pos 1024 --batch 16 --seq 512)
echo "implementation,method,dtype,tokens_per_s,gpu_peak_mib,version" > "$work/gpu.csv"
for dtype in f32 bf16; do
  torch_dtype=$([ $dtype = f32 ] && echo float32 || echo bfloat16)
  for method in lora hira abba full; do
    case $method in
      abba) adapter=$'method = "abba"\nr1 = 8\nr2 = 8'; torch_rank=(--r1 8 --r2 8) ;;
      full) adapter='method = "full"'; torch_rank=() ;;
      *) adapter=$'method = "'$method$'"\nr = 16'; torch_rank=(--r 16) ;;
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
# Fixed windows of 513 bytes: every step is 16 × 512 predicted tokens, the shape PyTorch's run gets.
text = "data/text/shakespeare-6plays.txt.gz"
max_len = 513
eval_fraction = 0.01
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
    ours_mib=$(sample_peak /dev/null "$bin/abba" finetune --quiet --device cuda "$work/$method-$dtype.toml")
    ours_tps=$(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["tokens_per_s"]))' "$work/run-$method-$dtype/report.json")
    echo "abba-rs,$method,$dtype,$ours_tps,$ours_mib,$("$bin/abba" --version)" >> "$work/gpu.csv"
    torch_mib=$(sample_peak "$work/torch-$method-$dtype.json" python3 benches/torch_finetune_step.py finetune --method $method "${torch_rank[@]}" \
      "${shape[@]}" --steps 20 --warmup 3 --device cuda --dtype $torch_dtype)
    python3 - "$work/torch-$method-$dtype.json" "$method" "$dtype" "$torch_mib" >> "$work/gpu.csv" <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
print(f"pytorch,{sys.argv[2]},{sys.argv[3]},{round(r['tokens_per_s'])},{sys.argv[4]},torch {r['torch']} peft {r['peft']}")
PY
  done
done
mkdir -p "$(dirname "$out")"
cp "$work/gpu.csv" "$out"
column -s, -t < "$out"
