#!/usr/bin/env bash
# Run HERE (with network access to the package index) before a GPU session: gathers what
# benchmarks/gpu.sh needs on a GPU machine that has Python 3.12, PyTorch and transformers but
# no network and none of our other dependencies. Writes .gpu/ (ignored by git, ~15 MB):
#   .gpu/wheels/     langgraph, langchain-core, pydantic ... as py3.12 manylinux wheels
#   .gpu/tokenizer/  the embedded SmolLM2 tokenizer (the random-initialised experts use it)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
rm -rf .gpu && mkdir -p .gpu/wheels
python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d .gpu/wheels \
  "langgraph==$($PY -c 'import importlib.metadata as m; print(m.version("langgraph"))')" \
  "langchain-core==$($PY -c 'import importlib.metadata as m; print(m.version("langchain-core"))')" \
  pydantic jinja2 pyyaml
rm -f .gpu/wheels/comp_llm-*.whl  # ours travels as source
$PY - <<'PY'
from transformers import AutoTokenizer
from compllm.models import ModelHub
AutoTokenizer.from_pretrained(ModelHub()._embedded_smollm2()).save_pretrained(".gpu/tokenizer")
PY
du -sh .gpu
echo "now: run(command='bash benchmarks/gpu.sh', carry=['.gpu'], timeout_s=560)"
