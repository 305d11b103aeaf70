#!/usr/bin/env bash
# Compile-checks `--features cuda` on a machine without a GPU or a CUDA install: nvcc comes from NVIDIA's PyPI
# wheels in a venv, candle-kernels' .cu files are compiled by it, and `cargo check` stops before linking (which
# would need libcuda, cudart, cuBLAS, cuRAND and NVRTC). About 11 minutes on 2 cores, mostly candle-kernels.
#
#   bash scripts/check-cuda.sh            # venv in ${ABBA_CUDA_VENV:-/tmp/abba-cuda-venv}
#
# Versions: nvcc 13.4.92 (cudarc 0.19 refuses 13.5), crt/runtime/nvvm 13.4.92, cccl 13.3.5 (no 13.4 wheel).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${ABBA_CUDA_VENV:-/tmp/abba-cuda-venv}"
if [ ! -x "$VENV/bin/pip" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check \
  "nvidia-cuda-nvcc==13.4.92" "nvidia-cuda-crt==13.4.92" "nvidia-cuda-runtime==13.4.92" \
  "nvidia-nvvm==13.4.92" "nvidia-cuda-cccl==13.3.5.0.6"
CUDA_HOME="$(echo "$VENV"/lib/python3*/site-packages/nvidia/cu13)"
export CUDA_HOME CUDA_PATH="$CUDA_HOME" CUDA_ROOT="$CUDA_HOME"
export PATH="$CUDA_HOME/bin:$CUDA_HOME/nvvm/bin:$PATH"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
nvcc --version | tail -1
cargo check --release --features cuda --lib --bins --target-dir target/cuda-check
echo "cuda check: ok (compiled, not linked)"
