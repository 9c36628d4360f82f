"""Batching and weight sharing on the embedded model (SmolLM2-135M-Instruct, real weights).

    .venv/bin/python benchmarks/embedded_model.py [--prompts 8] [--max-new-tokens 48]

1. Throughput: the same N questions (MMLU development questions, one per subject) answered
   one `generate` at a time vs in one batched `generate` (useful tokens per second), and the
   same comparison end to end: a given plan of N independent sub-queries through the pipeline
   with `max_batch_size=1` vs `max_batch_size=N` (expert-stage makespan).
2. Memory: the default registry's seven experts all name the embedded model. Through the pool
   they share one loaded copy; loading one copy per expert is what a naive executor would do.
   Each case runs in a fresh process, answers once per expert, and reports bytes of weights
   and the process's peak resident memory. (On CPU, float32 safetensors are memory-mapped:
   copies share the file's pages until used, so the RSS gap is smaller than the weights gap;
   on a GPU every copy is a real copy.)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import (
    RESULTS,
    makespan,
    print_table,
    pyplot,
    save_plot,
    with_max_new_tokens,
    write_json,
)
from langchain_core.messages import HumanMessage, SystemMessage

from compllm import CompLLM, Plan, SubQuery
from compllm.models import EMBEDDED_CHAT_MODEL, ModelHub, load_transformers, weights_bytes
from compllm.pool import ExpertPool
from compllm.registry import default_registry
from compllm.transformers_chat import TransformersChatModel

MMLU = Path(__file__).resolve().parents[2] / "shared" / "data" / "mmlu" / "mmlu_dev.jsonl"
FALLBACK_QUESTIONS = [
    "What is the derivative of x squared?",
    "What are common symptoms of influenza?",
    "What makes a contract legally binding?",
    "Explain what a hash table is.",
    "Who wrote the Odyssey?",
    "What is the boiling point of water at sea level?",
    "What is the capital of France?",
    "How many sides does a hexagon have?",
]


def questions(n: int, path: Path) -> tuple[list[str], str]:
    if not path.is_file():
        return [FALLBACK_QUESTIONS[i % len(FALLBACK_QUESTIONS)] for i in range(n)], "built-in"
    by_subject: dict[str, str] = {}
    # split("\n"), not splitlines(): some questions contain U+2028
    for line in path.read_text().split("\n"):
        if line.strip():
            row = json.loads(line)
            by_subject.setdefault(row["subject"], row["question"].strip())
    picked = [by_subject[s] for s in sorted(by_subject)][:n]
    return picked, str(path)


def peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def measure_throughput(texts: list[str], tokens: int) -> dict[str, Any]:
    hub = ModelHub()
    model: Any = hub.chat_model(EMBEDDED_CHAT_MODEL)
    system = default_registry().expert("general").system_prompt
    conversations = [[SystemMessage(system), HumanMessage(q)] for q in texts]
    model.invoke(conversations[0], max_new_tokens=4)  # warm up
    started = time.perf_counter()
    single = [model.invoke(c, max_new_tokens=tokens) for c in conversations]
    one_by_one = time.perf_counter() - started
    started = time.perf_counter()
    batched = model.generate_batch(conversations, max_new_tokens=tokens)
    in_batch = time.perf_counter() - started
    single_tokens = sum(m.usage_metadata["output_tokens"] for m in single)
    batch_tokens = sum(m.usage_metadata["output_tokens"] for m in batched)
    same = sum(a.text == b.text for a, b in zip(single, batched, strict=True))
    return {
        "prompts": len(texts),
        "one_by_one_s": one_by_one,
        "batched_s": in_batch,
        "one_by_one_tok_s": single_tokens / one_by_one,
        "batched_tok_s": batch_tokens / in_batch,
        "throughput_ratio": (batch_tokens / in_batch) / (single_tokens / one_by_one),
        "identical_answers": same,
    }


def measure_pipeline(texts: list[str], tokens: int) -> dict[str, Any]:
    registry = with_max_new_tokens(default_registry(), tokens)
    pool = ExpertPool(ModelHub())
    pipeline = CompLLM(registry=registry, pool=pool)
    plan = Plan.build(
        [SubQuery(id=f"q{i}", question=q, expert="general") for i, q in enumerate(texts)]
    )
    makespans = {}
    for batch in (1, len(texts)):
        result = pipeline.invoke(
            "batch", plan=plan, max_parallel_experts=len(texts), max_batch_size=batch,
            aggregator_max_new_tokens=1,
        )  # fmt: skip
        makespans[batch] = makespan(result)
    return {
        "subqueries": len(texts),
        "unbatched_s": makespans[1],
        "batched_s": makespans[len(texts)],
        "speedup": makespans[1] / makespans[len(texts)],
        "batch_sizes": pool.stats().batch_sizes,
    }


def memory_probe(mode: str) -> dict[str, Any]:
    """Run in a fresh process: answer one question per default expert through the pool
    ("shared") or load one copy of the model per expert ("copies"); report weights and the
    process's peak resident memory."""
    registry = default_registry()
    if mode == "shared":
        pool = ExpertPool(ModelHub())
        for expert in registry.experts:
            pool.call(expert.model, [HumanMessage("Say yes.")], {"max_new_tokens": 1}).result()
        stats = pool.stats()
        return {
            "weights_bytes": stats.peak_bytes,
            "loads": stats.loads,
            "peak_rss_bytes": peak_rss_bytes(),
        }
    path = ModelHub()._embedded_smollm2()
    copies = []
    for _ in registry.experts:  # each copy answers once, as its expert would
        model, tokenizer = load_transformers(path)
        chat = TransformersChatModel(model=model, tokenizer=tokenizer, model_ref=path)
        chat.invoke([HumanMessage("Say yes.")], max_new_tokens=1)
        copies.append(model)
    weights = sum(weights_bytes(m) for m in copies)
    return {"weights_bytes": weights, "loads": len(copies), "peak_rss_bytes": peak_rss_bytes()}


def measure_memory() -> dict[str, Any]:
    registry = default_registry()
    probes = {}
    for mode in ("shared", "copies"):
        output = subprocess.run(
            [sys.executable, __file__, "--memory-probe", mode],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        probes[mode] = json.loads(output.strip().splitlines()[-1])
    return {
        "experts": len(registry.experts),
        "models_named": sorted({e.model for e in registry.experts}),
        "shared": probes["shared"],
        "copy_per_expert": probes["copies"],
        "weights_ratio": probes["copies"]["weights_bytes"] / probes["shared"]["weights_bytes"],
        "peak_rss_ratio": probes["copies"]["peak_rss_bytes"] / probes["shared"]["peak_rss_bytes"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--data", type=Path, default=MMLU)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--memory-probe", choices=["shared", "copies"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        print(json.dumps(memory_probe(args.memory_probe)))
        return
    texts, source = questions(args.prompts, args.data)
    print(f"{len(texts)} questions from {source}, {args.max_new_tokens} new tokens at most")
    throughput = measure_throughput(texts, args.max_new_tokens)
    pipeline = measure_pipeline(texts, args.max_new_tokens)
    memory = measure_memory()
    print()
    print_table(
        [throughput],
        [
            ("prompts", "prompts", ">7"),
            ("1-by-1 s", "one_by_one_s", ".1f"),
            ("batched s", "batched_s", ".1f"),
            ("1-by-1 tok/s", "one_by_one_tok_s", ".1f"),
            ("batched tok/s", "batched_tok_s", ".1f"),
            ("ratio", "throughput_ratio", ".2f"),
            ("same text", "identical_answers", ">9"),
        ],
    )
    print(
        f"\npipeline, {pipeline['subqueries']} sub-queries on one model: "
        f"{pipeline['unbatched_s']:.1f} s unbatched, {pipeline['batched_s']:.1f} s batched "
        f"({pipeline['speedup']:.2f}x); batches {pipeline['batch_sizes']}"
    )
    mib = 2**20
    shared, copies = memory["shared"], memory["copy_per_expert"]
    print(
        f"memory, {memory['experts']} experts on {memory['models_named']}: "
        f"shared {shared['weights_bytes'] / mib:.0f} MiB of weights "
        f"(peak RSS {shared['peak_rss_bytes'] / mib:.0f} MiB, {shared['loads']} load) vs one "
        f"copy per expert {copies['weights_bytes'] / mib:.0f} MiB "
        f"(peak RSS {copies['peak_rss_bytes'] / mib:.0f} MiB): "
        f"{memory['weights_ratio']:.1f}x weights, {memory['peak_rss_ratio']:.1f}x peak RSS"
    )
    payload = {"source": source, "max_new_tokens": args.max_new_tokens}
    write_json(
        "embedded_model",
        {**payload, "throughput": throughput, "pipeline": pipeline, "memory": memory},
        args.out_dir,
    )
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    left.bar(
        ["one by one", f"batched ({len(texts)})"],
        [throughput["one_by_one_tok_s"], throughput["batched_tok_s"]],
    )
    left.set_ylabel("generated tokens / s")
    right.bar(
        ["shared (pool)", "copy per expert"],
        [shared["peak_rss_bytes"] / mib, copies["peak_rss_bytes"] / mib],
    )
    right.set_ylabel("peak RSS (MiB), default registry")
    save_plot(figure, "embedded_model", args.out_dir)


if __name__ == "__main__":
    main()
