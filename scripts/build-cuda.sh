#!/usr/bin/env bash
# Builds and links the CUDA binaries on a machine without a GPU or a CUDA install, so a GPU machine without a Rust
# toolchain only has to run them (scripts/gpu-check.sh): `abba` and the CUDA test binary (tests/finetune_cuda.rs),
# stripped and gzipped, into target/cuda/dist/. About 15 minutes on 2 cores, mostly candle-kernels and the release
# build.
#
#   bash scripts/build-cuda.sh            # venv in ${ABBA_CUDA_VENV:-/tmp/abba-cuda13-venv}
#
# Everything comes from NVIDIA's PyPI wheels, pinned to CUDA 13.0 because a GPU's driver loads PTX only from an
# nvcc no newer than itself, and the GPU machines this targets run driver 580 (CUDA 13.0): nvcc, crt, nvvm and the
# runtime 13.0.x, cccl 13.0.85, and for linking cuBLAS 13.0, cuRAND 10.4.0 (CUDA 13.0's), NVRTC 13.0 and cudart. The
# driver library (libcuda) ships with the GPU's driver, never in a wheel: the link uses a stub generated from the
# names cudarc's driver bindings declare, with the driver's soname, and the GPU machine's real libcuda.so.1
# answers at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${ABBA_CUDA_VENV:-/tmp/abba-cuda13-venv}"
if [ ! -x "$VENV/bin/pip" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check \
  "nvidia-cuda-nvcc==13.0.88" "nvidia-cuda-crt==13.0.88" "nvidia-cuda-runtime==13.0.96" \
  "nvidia-nvvm==13.0.88" "nvidia-cuda-cccl==13.0.85" "nvidia-cuda-nvrtc==13.0.88" \
  "nvidia-curand==10.4.0.35" "nvidia-cublas==13.0.2.14"
CUDA_HOME="$(echo "$VENV"/lib/python3*/site-packages/nvidia/cu13)"
export CUDA_HOME CUDA_PATH="$CUDA_HOME" CUDA_ROOT="$CUDA_HOME"
export PATH="$CUDA_HOME/bin:$CUDA_HOME/nvvm/bin:$PATH"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export CUDARC_CUDA_VERSION=13000
nvcc --version | tail -1

# The linker looks for unversioned names; the wheels ship only the sonames. (cudart: candle-kernels' MoE kernels.)
link="$PWD/target/cuda/link"
mkdir -p "$link"
for lib in cublas cublasLt curand nvrtc cudart; do
  ln -sf "$(ls "$CUDA_HOME"/lib/lib$lib.so.* | head -1)" "$link/lib$lib.so"
done
cudarc="$(cargo metadata --format-version 1 --features cuda |
  python3 -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"] == "cudarc"))')"
grep -o 'pub unsafe fn cu[A-Za-z0-9_]*' "$(dirname "$cudarc")/src/driver/sys/mod.rs" | sort -u |
  awk '{print "void " $4 "(void) {}"}' > "$link/cuda_stub.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$link/libcuda.so" "$link/cuda_stub.c"

# -rpath-link: the wheels' libraries name each other (cuBLAS needs cuBLASLt) by soname.
export RUSTFLAGS="${RUSTFLAGS:-} -L native=$link -C link-arg=-Wl,-rpath-link,$CUDA_HOME/lib"
cargo build --release --features cuda --bin abba --target-dir target/cuda
test_bin="$(cargo test --release --features cuda --test finetune_cuda --no-run --target-dir target/cuda \
  --message-format=json | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "finetune_cuda":
        print(m["executable"])')"
dist=target/cuda/dist
rm -rf "$dist" && mkdir -p "$dist"
# Gzipped: the PTX of candle's kernels makes each binary ~60 MiB stripped, ~17 MiB compressed, and a GPU machine
# takes at most 64 MiB of carried files.
strip -o "$dist/abba" target/cuda/release/abba
strip -o "$dist/finetune_cuda" "$test_bin"
gzip -9 "$dist/abba" "$dist/finetune_cuda"
ls -l "$dist"
echo "cuda build: ok (linked against CUDA 13.0 wheels; libcuda resolves on the GPU machine)"
