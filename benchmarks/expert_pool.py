"""The expert pool on real transformer weights: batching, memory budget, parallel execution.

    .venv/bin/python benchmarks/expert_pool.py --preset cpu    # minutes on a laptop CPU
    .venv/bin/python benchmarks/expert_pool.py --preset gpu    # 0.5B/1.5B/7B in bf16, one GPU

Experts are random-initialised Llama-architecture models of three sizes built from configs
on the device (nothing is downloaded), using the embedded SmolLM2 tokenizer. Random weights
make the answers meaningless but the compute and memory real, so the figures are about speed
and memory only. Three measurements, side by side in one process:

1. batching: N prompts on each model, one `generate` per prompt vs one batched `generate`
   (useful tokens per second);
2. memory budget: independent sub-queries spread over the three models with a budget that
   holds only the two largest, so the pool must evict; reports the pool's peak against the
   budget, loads and evictions (and the device's own peak allocation on a GPU);
3. plan suite: the dataflow executor vs the wave executor vs sequential processing on a few
   plan shapes, experts assigned round-robin over the three models.
"""

from __future__ import annotations

import argparse
import gc
import resource
import time
from pathlib import Path
from typing import Any

from _common import (
    RESULTS,
    ConstantEmbeddings,
    makespan,
    print_table,
    pyplot,
    save_plot,
    with_max_new_tokens,
    write_json,
)
from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from scheduling import Shape, chain, random_dag

from compllm import CompLLM, Context, Plan, SubQuery
from compllm.models import ModelHub, config_weights_bytes
from compllm.pool import ExpertPool
from compllm.registry import parse_registry
from compllm.transformers_chat import TransformersChatModel

# Llama-architecture shapes. The GPU ones follow Qwen2.5 0.5B/1.5B/7B (hidden size, layers,
# heads, MLP width) with the SmolLM2 tokenizer's 49,152-token vocabulary.
ARCHITECTURES: dict[str, dict[str, int]] = {
    "0.5b": {"hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14,
             "num_key_value_heads": 2, "intermediate_size": 4864},
    "1.5b": {"hidden_size": 1536, "num_hidden_layers": 28, "num_attention_heads": 12,
             "num_key_value_heads": 2, "intermediate_size": 8960},
    "7b": {"hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28,
           "num_key_value_heads": 4, "intermediate_size": 18944},
    "20m": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
            "num_key_value_heads": 2, "intermediate_size": 704},
    "45m": {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 6,
            "num_key_value_heads": 2, "intermediate_size": 1024},
    "90m": {"hidden_size": 512, "num_hidden_layers": 8, "num_attention_heads": 8,
            "num_key_value_heads": 4, "intermediate_size": 1408},
}  # fmt: skip
PRESETS = {
    "cpu": {"sizes": ["20m", "45m", "90m"], "max_new_tokens": 16, "batch": 8},
    "gpu": {"sizes": ["0.5b", "1.5b", "7b"], "max_new_tokens": 64, "batch": 16},
}
QUESTIONS = [
    "What is the derivative of x squared?",
    "Name the largest planet in the solar system.",
    "What are common symptoms of influenza?",
    "What makes a contract legally binding?",
    "Explain what a hash table is.",
    "Who wrote the Odyssey?",
    "What is the boiling point of water at sea level?",
    "How many sides does a hexagon have?",
]


class RandomInitProvider:
    """`random:<size>` models built from a config on the device, with random weights."""

    def __init__(self, device: str, tokenizer_dir: Path | None = None) -> None:
        import torch
        from transformers import AutoTokenizer

        self.device = device
        self.dtype = torch.bfloat16 if device == "cuda" else torch.float32
        if tokenizer_dir is None:  # the embedded model's own folder (converted once)
            tokenizer_dir = Path(ModelHub()._embedded_smollm2())
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        self.tokenizer.padding_side = "left"

    def config(self, ref: str) -> Any:
        from transformers import LlamaConfig

        return LlamaConfig(
            vocab_size=len(self.tokenizer),
            bos_token_id=self.tokenizer.bos_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
            tie_word_embeddings=False,
            max_position_embeddings=4096,
            **ARCHITECTURES[ref.removeprefix("random:")],
        )

    def chat_model(self, ref: str, *, trust_remote_code: bool = False) -> BaseChatModel:
        import torch
        from transformers import AutoModelForCausalLM

        if not ref.startswith("random:"):  # the aggregator: not what is measured here
            return FakeListChatModel(responses=["aggregated"])
        torch.manual_seed(0)
        with torch.device(self.device):
            model = AutoModelForCausalLM.from_config(self.config(ref), dtype=self.dtype)  # type: ignore[no-untyped-call]
        model.eval()
        return TransformersChatModel(model=model, tokenizer=self.tokenizer, model_ref=ref)

    def estimate_chat_model_bytes(self, ref: str, *, trust_remote_code: bool = False) -> int:

        if not ref.startswith("random:"):
            return 0
        return config_weights_bytes(self.config(ref), self.dtype)

    def release_chat_model(self, ref: str, *, trust_remote_code: bool = False) -> None:
        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def embeddings(self, ref: str) -> Embeddings:
        return ConstantEmbeddings()


def registry_for(sizes: list[str]) -> Any:
    experts = "\n".join(
        f"  - {{name: e{size.replace('.', '_')}, description: expert on random:{size}, "
        f"system_prompt: You are terse., model: 'random:{size}'}}"
        for size in sizes
    )
    return parse_registry(
        f"generalist: e{sizes[0].replace('.', '_')}\nexperts:\n{experts}\n", source="pool-bench"
    )


def conversation(question: str) -> list[Any]:
    return [SystemMessage("You are terse."), HumanMessage(question)]


def sync_device(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def measure_batching(
    provider: RandomInitProvider, sizes: list[str], n: int, tokens: int
) -> list[dict[str, Any]]:
    rows = []
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(n)]
    for size in sizes:
        model: Any = provider.chat_model(f"random:{size}")
        model.invoke(conversation("warm up"), max_new_tokens=2)
        started = time.perf_counter()
        single = [model.invoke(conversation(q), max_new_tokens=tokens) for q in questions]
        sync_device(provider.device)
        one_by_one = time.perf_counter() - started
        started = time.perf_counter()
        batched = model.generate_batch([conversation(q) for q in questions], max_new_tokens=tokens)
        sync_device(provider.device)
        in_batch = time.perf_counter() - started
        single_tokens = sum(m.usage_metadata["output_tokens"] for m in single)
        batch_tokens = sum(m.usage_metadata["output_tokens"] for m in batched)
        rows.append(
            {
                "model": size,
                "prompts": n,
                "one_by_one_s": one_by_one,
                "batched_s": in_batch,
                "one_by_one_tok_s": single_tokens / one_by_one,
                "batched_tok_s": batch_tokens / in_batch,
                "throughput_ratio": (batch_tokens / in_batch) / (single_tokens / one_by_one),
            }
        )
        print(f"  batching {size}: {rows[-1]['throughput_ratio']:.2f}x tokens/s")
        del model
        provider.release_chat_model(size)
    return rows


def device_peak_reset(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats()


def device_peak_bytes(device: str) -> int:
    if device == "cuda":
        import torch

        return int(torch.cuda.max_memory_allocated())
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure_budget(provider: RandomInitProvider, sizes: list[str], tokens: int) -> dict[str, Any]:
    estimates = {s: provider.estimate_chat_model_bytes(f"random:{s}") for s in sizes}
    two_largest = sorted(estimates.values())[-2:]
    budget = int(sum(two_largest) * 1.02)
    pool = ExpertPool(provider, memory_budget_bytes=budget)
    registry = registry_for(sizes)
    plan = Plan.build(
        [
            SubQuery(
                id=f"q{i}",
                question=QUESTIONS[i % len(QUESTIONS)],
                expert=registry.experts[i % len(sizes)].name,
            )
            for i in range(3 * len(sizes))
        ]
    )
    device_peak_reset(provider.device)
    pipeline = pipeline_for(registry, pool, tokens)
    started = time.perf_counter()
    result = pipeline.invoke("budget", plan=plan, max_parallel_experts=6)
    stats = pool.stats()
    row = {
        "model_bytes": estimates,
        "budget_bytes": budget,
        "pool_peak_bytes": stats.peak_bytes,
        "within_budget": stats.peak_bytes <= budget,
        "loads": stats.loads,
        "evictions": stats.evictions,
        "device_peak_bytes": device_peak_bytes(provider.device),
        "wall_s": time.perf_counter() - started,
        "answers_ok": sum(a.status == "ok" for a in result.answers),
        "subqueries": len(plan),
    }
    pool.unload_all()
    peak, limit = stats.peak_bytes / 2**30, budget / 2**30
    print(f"  budget: peak {peak:.2f} of {limit:.2f} GiB, {stats.evictions} evictions")
    return row


def pipeline_for(registry: Any, pool: ExpertPool, tokens: int) -> CompLLM:
    registry = with_max_new_tokens(registry, tokens)
    return CompLLM(
        registry=registry,
        pool=pool,
        context=Context(
            aggregator_model="agg", embedding_model="const", planner_mode="rules", max_subqueries=64
        ),
    )


def suite() -> dict[str, Shape]:
    return {
        "fan-out-6": {f"n{i}": (1.0, ()) for i in range(6)},
        "diamond": {"a": (1.0, ()), "b": (1.0, ("a",)), "c": (1.0, ("a",)), "d": (1.0, ("b", "c"))},
        "chain-4": chain(4),
        "random-10": random_dag(10, seed=10),
    }


def measure_suite(
    provider: RandomInitProvider, sizes: list[str], tokens: int
) -> list[dict[str, Any]]:
    registry = registry_for(sizes)
    pool = ExpertPool(provider)
    pipeline = pipeline_for(registry, pool, tokens)
    rows = []
    for name, shape in suite().items():
        plan = Plan.build(
            [
                SubQuery(
                    id=sid,
                    question=QUESTIONS[i % len(QUESTIONS)],
                    depends_on=deps,
                    expert=registry.experts[i % len(sizes)].name,
                )
                for i, (sid, (_, deps)) in enumerate(shape.items())
            ]
        )
        pipeline.invoke("warm", plan=plan, max_parallel_experts=len(plan))  # loads, warms
        timings = {}
        for label, settings in (
            ("dataflow", {"max_parallel_experts": len(plan)}),
            ("waves", {"max_parallel_experts": len(plan), "executor": "waves"}),
            ("sequential", {"max_parallel_experts": 1}),
        ):
            result = pipeline.invoke(name, plan=plan, **settings)
            timings[label] = makespan(result)
        rows.append(
            {
                "shape": name,
                "subqueries": len(plan),
                "dataflow_s": timings["dataflow"],
                "waves_s": timings["waves"],
                "sequential_s": timings["sequential"],
                "dataflow_speedup": timings["sequential"] / timings["dataflow"],
                "waves_speedup": timings["sequential"] / timings["waves"],
            }
        )
        print(f"  suite {name}: dataflow {rows[-1]['dataflow_speedup']:.2f}x over sequential")
    pool.unload_all()
    return rows


def plot(
    batching: list[dict[str, Any]], suite_rows: list[dict[str, Any]], name: str, out_dir: Path
) -> None:
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    x = range(len(batching))
    left.bar(
        [i - 0.2 for i in x], [r["one_by_one_tok_s"] for r in batching], 0.4, label="one by one"
    )
    left.bar(
        [i + 0.2 for i in x],
        [r["batched_tok_s"] for r in batching],
        0.4,
        label=f"batched ({batching[0]['prompts']})",
    )
    left.set_xticks(list(x), [r["model"] for r in batching])
    left.set_ylabel("generated tokens / s")
    left.legend()
    x = range(len(suite_rows))
    for offset, key, label in (
        (-0.27, "dataflow_s", "dataflow"),
        (0, "waves_s", "waves"),
        (0.27, "sequential_s", "sequential"),
    ):
        right.bar([i + offset for i in x], [r[key] for r in suite_rows], 0.27, label=label)
    right.set_xticks(list(x), [r["shape"] for r in suite_rows])
    right.set_ylabel("expert stage (s)")
    right.legend()
    save_plot(figure, name, out_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if present)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument(
        "--tokenizer", type=Path, default=None, help="tokenizer folder (default: SmolLM2's)"
    )
    args = parser.parse_args()
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    preset = PRESETS[args.preset]
    sizes, tokens = preset["sizes"], preset["max_new_tokens"]
    provider = RandomInitProvider(device, args.tokenizer)
    print(f"preset {args.preset} on {device}: models {sizes}, {tokens} new tokens per answer")
    batching = measure_batching(provider, sizes, preset["batch"], tokens)
    budget = measure_budget(provider, sizes, tokens)
    suite_rows = measure_suite(provider, sizes, tokens)
    print()
    print_table(
        batching,
        [
            ("model", "model", "<6"),
            ("prompts", "prompts", ">7"),
            ("1-by-1 tok/s", "one_by_one_tok_s", ".1f"),
            ("batched tok/s", "batched_tok_s", ".1f"),
            ("ratio", "throughput_ratio", ".2f"),
        ],
    )
    print()
    gib = {k: budget[k] / 2**30 for k in ("budget_bytes", "pool_peak_bytes", "device_peak_bytes")}
    print(
        f"budget {gib['budget_bytes']:.2f} GiB, pool peak {gib['pool_peak_bytes']:.2f} GiB "
        f"(within: {budget['within_budget']}), "
        f"device (GPU) or process (CPU) peak {gib['device_peak_bytes']:.2f} GiB, "
        f"loads {budget['loads']}, evictions {budget['evictions']}, "
        f"{budget['answers_ok']}/{budget['subqueries']} answered"
    )
    print()
    print_table(
        suite_rows,
        [
            ("shape", "shape", "<10"),
            ("n", "subqueries", ">3"),
            ("dataflow s", "dataflow_s", ".2f"),
            ("waves s", "waves_s", ".2f"),
            ("seq s", "sequential_s", ".2f"),
            ("df speedup", "dataflow_speedup", ".2f"),
            ("wv speedup", "waves_speedup", ".2f"),
        ],
    )
    name = f"expert_pool_{args.preset}"
    write_json(
        name,
        {
            "preset": args.preset,
            "device": device,
            "max_new_tokens": tokens,
            "batching": batching,
            "budget": budget,
            "suite": suite_rows,
        },
        args.out_dir,
    )
    plot(batching, suite_rows, name, args.out_dir)


if __name__ == "__main__":
    main()
