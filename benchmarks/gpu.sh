#!/usr/bin/env bash
# GPU benchmarks, one GPU, no network, under 8 minutes. Prepare with benchmarks/prepare_gpu.sh
# (it fills .gpu/), then run on the GPU machine from the repository root:
#     bash benchmarks/gpu.sh            # results in $OUT (or benchmarks/results)
#     PRESET=cpu PYTHON=.venv/bin/python bash benchmarks/gpu.sh   # a dry run on a CPU
# Random-initialised experts of Qwen2.5-0.5B/1.5B/7B shapes in bf16: batched vs unbatched
# throughput, the pool's peak memory against its budget, and parallel vs sequential latency
# on a plan suite (benchmarks/expert_pool.py --preset gpu).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${OUT:-benchmarks/results}
PY=${PYTHON:-python3}
if ! $PY -c "import langgraph, langchain_core" 2>/dev/null && [ -d .gpu/wheels ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/compllm-site .gpu/wheels/*.whl
  export PYTHONPATH="/tmp/compllm-site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY -c "import torch, transformers, langgraph; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
tokenizer=()
[ -d .gpu/tokenizer ] && tokenizer=(--tokenizer .gpu/tokenizer)
mkdir -p "$OUT_DIR"
timeout 450 $PY benchmarks/expert_pool.py --preset "${PRESET:-gpu}" --out-dir "$OUT_DIR" "${tokenizer[@]}" \
  2>&1 | tee "$OUT_DIR/gpu.log"
