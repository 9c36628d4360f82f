"""The embedded chat model (SmolLM2-135M-Instruct, real weights) on both local backends, side
by side in one run: transformers (float32 safetensors converted from the packaged GGUF) and
llama.cpp in process (the packaged Q4_1 GGUF as it is).

    .venv/bin/python benchmarks/embedded_model.py [--prompts 8] [--max-new-tokens 48]

1. Load: each backend loads in a fresh process (seconds, memory it reports, resident memory).
2. Throughput: the same N questions (MMLU questions shipped in compllm/data, one per subject,
   each with its domain expert's system prompt) answered one call at a time vs in one
   `generate_batch` (generated tokens per second), and end to end: a given plan of N
   independent sub-queries through the pipeline with `max_batch_size=1` vs `N`.
3. Agreement: greedy answers of the two backends to the same prompts (llama.cpp computes with
   quantized weights and kernels, transformers with the same weights de-quantized to float32,
   so they drift apart at some token): identical answers, the share of the answer that agrees
   before the first difference, and a character similarity ratio.
4. Prompt-prefix reuse (llama.cpp): the time to evaluate each prompt when the experts' system
   prompts come back, interleaved, as they do across runs: compllm's per-slot prompt cache,
   no cache, and llama-cpp-python's own `Llama` (it reuses the previous prompt only) with and
   without its `LlamaRAMCache`.
5. Threads (llama.cpp): one call at a time with 1 thread vs all cores, with the load average,
   because other busy processes change which is faster.
6. Memory: the default registry's experts all name the embedded model; through the pool they
   share one loaded copy, against one copy per expert (fresh processes, peak RSS).
7. `compllm ask --planner rules` on the demo query, one run after a warm-up run, per backend
   (wall time and stage timings); and a first run with an empty cache folder.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import subprocess
import sys
import tempfile
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
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from compllm import CompLLM, Plan, SubQuery
from compllm.llamacpp_chat import LlamaCppChatModel, cpu_threads
from compllm.local_chat import chat_roles
from compllm.mmlu import DEFAULT_MMLU_FILE, SUBJECT_DOMAINS
from compllm.models import BACKEND_ENV, EMBEDDED_CHAT_MODEL, ModelHub
from compllm.pool import ExpertPool
from compllm.registry import default_registry

BACKENDS = ("transformers", "llamacpp")
DEMO_QUERY = (
    "What is the derivative of x^3 + 2x, and what are the common symptoms of type 2 diabetes?"
)
FALLBACK_QUESTIONS = [
    ("What is the derivative of x squared?", "math"),
    ("What are common symptoms of influenza?", "medicine"),
    ("What makes a contract legally binding?", "law"),
    ("Explain what a hash table is.", "computing"),
    ("Who wrote the Odyssey?", "humanities"),
    ("What is the boiling point of water at sea level?", "science"),
    ("What is the capital of France?", "general"),
    ("How many sides does a hexagon have?", "math"),
]


def questions(n: int, path: Path) -> tuple[list[tuple[str, str]], str]:
    """N (question, expert) pairs: one question per MMLU subject, in subject order."""
    if not path.is_file():
        return [FALLBACK_QUESTIONS[i % len(FALLBACK_QUESTIONS)] for i in range(n)], "built-in"
    by_subject: dict[str, str] = {}
    # split("\n"), not splitlines(): some questions contain U+2028
    for line in path.read_text().split("\n"):
        if line.strip():
            row = json.loads(line)
            by_subject.setdefault(row["subject"], row["question"].strip())
    picked = [(by_subject[s], SUBJECT_DOMAINS[s]) for s in sorted(by_subject)][:n]
    source = "compllm/data/mmlu" if path == DEFAULT_MMLU_FILE else str(path)
    return picked, source


def conversations(picked: list[tuple[str, str]]) -> list[list[BaseMessage]]:
    registry = default_registry()
    names = {e.name for e in registry.experts}
    return [
        [SystemMessage(registry.expert(d if d in names else "general").prompt), HumanMessage(q)]
        for q, d in picked
    ]


def peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def load_chat(backend: str) -> Any:
    os.environ[BACKEND_ENV] = backend
    return ModelHub().chat_model(EMBEDDED_CHAT_MODEL)


# -- 1. load, in a fresh process -------------------------------------------------------------


def load_probe(backend: str) -> dict[str, Any]:
    started = time.perf_counter()
    rss_before = rss_bytes()
    chat = load_chat(backend)
    loaded = time.perf_counter()
    chat.invoke([HumanMessage("Say yes.")], max_new_tokens=1)
    return {
        "load_s": loaded - started,
        "first_call_s": time.perf_counter() - loaded,
        "memory_bytes": chat.memory_bytes(),
        "rss_added_by_load_bytes": rss_bytes() - rss_before,
        "peak_rss_bytes": peak_rss_bytes(),
    }


# -- 2. throughput ---------------------------------------------------------------------------


def measure_throughput(chat: Any, prompts: list[list[BaseMessage]], tokens: int) -> dict[str, Any]:
    chat.invoke(prompts[0], max_new_tokens=4)  # warm up
    settings = {"max_new_tokens": tokens, "repetition_penalty": 1.1}  # as the experts ask
    started = time.perf_counter()
    single = [chat.invoke(c, **settings) for c in prompts]
    one_by_one = time.perf_counter() - started
    started = time.perf_counter()
    batched = chat.generate_batch(prompts, **settings)
    in_batch = time.perf_counter() - started
    single_tokens = sum(m.usage_metadata["output_tokens"] for m in single)
    batch_tokens = sum(m.usage_metadata["output_tokens"] for m in batched)
    return {
        "prompts": len(prompts),
        "load_avg_1min": os.getloadavg()[0],
        "one_by_one_s": one_by_one,
        "batched_s": in_batch,
        "one_by_one_tok_s": single_tokens / one_by_one,
        "batched_tok_s": batch_tokens / in_batch,
        "throughput_ratio": (batch_tokens / in_batch) / (single_tokens / one_by_one),
        "identical_answers": sum(a.text == b.text for a, b in zip(single, batched, strict=True)),
        "answers": [m.text for m in single],
        "prompt_tokens": [m.usage_metadata["input_tokens"] for m in single],
    }


def measure_pipeline(backend: str, picked: list[tuple[str, str]], tokens: int) -> dict[str, Any]:
    os.environ[BACKEND_ENV] = backend
    registry = with_max_new_tokens(default_registry(), tokens)
    pool = ExpertPool(ModelHub())
    pipeline = CompLLM(registry=registry, pool=pool)
    plan = Plan.build(
        [SubQuery(id=f"q{i}", question=q, expert="general") for i, (q, _) in enumerate(picked)]
    )
    makespans = {}
    for batch in (1, len(picked)):
        result = pipeline.invoke(
            "batch", plan=plan, max_parallel_experts=len(picked), max_batch_size=batch,
            aggregator_max_new_tokens=1,
        )  # fmt: skip
        makespans[batch] = makespan(result)
    pool.close()
    return {
        "subqueries": len(picked),
        "unbatched_s": makespans[1],
        "batched_s": makespans[len(picked)],
        "speedup": makespans[1] / makespans[len(picked)],
        "batch_sizes": pool.stats().batch_sizes,
    }


# -- 3. agreement ----------------------------------------------------------------------------


def measure_agreement(
    chats: dict[str, Any], prompts: list[list[BaseMessage]], answers: dict[str, list[str]]
) -> dict[str, Any]:
    reference, other = answers["transformers"], answers["llamacpp"]
    transformers_chat, llama_chat = chats["transformers"], chats["llamacpp"]
    same_prompt_tokens = 0
    for messages in prompts:
        text = llama_chat.chat_prompt(messages)
        hf_ids = transformers_chat.tokenizer(text, add_special_tokens=False)["input_ids"]
        same_prompt_tokens += hf_ids == llama_chat._engine.tokenize(text)
    rows = []
    for a, b in zip(reference, other, strict=True):
        differ = (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)
        prefix = next(differ, min(len(a), len(b)))  # characters before the first difference
        rows.append(
            {
                "identical": a == b,
                "agreeing_prefix_chars": prefix,
                "agreeing_share": prefix / max(len(a), 1),
                "similarity": difflib.SequenceMatcher(None, a, b).ratio(),
                "same_first_word": a.split()[:1] == b.split()[:1],
            }
        )
    count = len(rows)
    return {
        "prompts": count,
        "identical_prompt_tokens": same_prompt_tokens,
        "identical_answers": sum(r["identical"] for r in rows),
        "same_first_word": sum(r["same_first_word"] for r in rows),
        "mean_agreeing_share": sum(r["agreeing_share"] for r in rows) / count,
        "mean_similarity": sum(r["similarity"] for r in rows) / count,
        "per_prompt": rows,
        "examples": [
            {"transformers": a, "llamacpp": b} for a, b in zip(reference, other, strict=True)
        ][:3],
    }


# -- 4. prompt-prefix reuse ------------------------------------------------------------------


def measure_prefix_reuse(prompts: list[list[BaseMessage]], path: str) -> dict[str, Any]:
    """Each prompt answered with one token, so the time is the prompt's evaluation. A first
    pass fills the caches; in the second, each expert's system prompt comes back with another
    question (the next one in the list), as experts meet new sub-queries. The variants take
    turns on every prompt, so they see the same machine load."""
    import llama_cpp

    second_pass = [[prompts[i][0], prompts[(i + 1) % len(prompts)][1]] for i in range(len(prompts))]

    def compllm_model(prefix_cache: bool) -> Any:
        chat = LlamaCppChatModel(model_path=path, prefix_cache=prefix_cache)

        def run(messages: list[BaseMessage]) -> int:
            message = chat.invoke(messages, max_new_tokens=1)
            return int(message.usage_metadata["input_token_details"]["cache_read"])

        return run

    def llama_class(ram_cache: bool) -> Any:
        llama = llama_cpp.Llama(
            path, n_ctx=2048, n_threads=cpu_threads(), n_threads_batch=cpu_threads(),
            verbose=False,
        )  # fmt: skip
        if ram_cache:
            llama.set_cache(llama_cpp.LlamaRAMCache(capacity_bytes=2**30))
        template = LlamaCppChatModel(model_path=path, parallel_sequences=1)

        def run(messages: list[BaseMessage]) -> int:
            llama.create_completion(template.chat_prompt(messages), max_tokens=1, temperature=0)
            return -1  # Llama does not say how much it reused

        return run

    variants = {
        "compllm_slots": compllm_model(True),
        "no_cache": compllm_model(False),
        "llama_cpp_Llama": llama_class(False),
        "llama_cpp_Llama_RAMCache": llama_class(True),
    }
    probe = LlamaCppChatModel(model_path=path, parallel_sequences=1)
    engine = probe._engine
    system_tokens = [
        len(engine.tokenize(engine.render(chat_roles(p[:1]), generation_prompt=False)))
        for p in prompts
    ]
    prompt_tokens = [len(probe._engine.tokenize(probe.chat_prompt(p))) for p in second_pass]
    for messages in prompts:  # first pass: fills the caches
        for run in variants.values():
            run(messages)
    seconds = dict.fromkeys(variants, 0.0)
    reused: dict[str, list[int]] = {name: [] for name in variants}
    for messages in second_pass:
        for name, run in variants.items():
            started = time.perf_counter()
            reused[name].append(run(messages))
            seconds[name] += time.perf_counter() - started
    results: dict[str, Any] = {
        "prompts": len(prompts),
        "distinct_system_prompts": len({p[0].text for p in prompts}),
        "mean_prompt_tokens": sum(prompt_tokens) / len(prompt_tokens),
        "mean_system_prompt_tokens": sum(system_tokens) / len(system_tokens),
        "load_avg_1min": os.getloadavg()[0],
    }
    for name in variants:
        results[name] = {
            "ms_per_prompt": 1000 * seconds[name] / len(second_pass),
            "mean_tokens_reused": (
                None if reused[name][0] < 0 else sum(reused[name]) / len(reused[name])
            ),
        }
    return results


# -- 5. threads ------------------------------------------------------------------------------


def measure_threads(prompts: list[list[BaseMessage]], path: str, tokens: int) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for threads in sorted({1, cpu_threads()}):
        chat = LlamaCppChatModel(model_path=path, threads=threads, parallel_sequences=1)
        chat.invoke(prompts[0], max_new_tokens=4)
        load = os.getloadavg()[0]
        started = time.perf_counter()
        generated = sum(
            chat.invoke(p, max_new_tokens=tokens).usage_metadata["output_tokens"] for p in prompts
        )
        rows[str(threads)] = {
            "tok_s": generated / (time.perf_counter() - started),
            "load_avg_1min": load,
        }
    return rows


# -- 6. memory -------------------------------------------------------------------------------


def memory_probe(mode: str, backend: str) -> dict[str, Any]:
    """Run in a fresh process: answer one question per default expert through the pool
    ("shared") or load one copy of the model per expert ("copies"); report the bytes the
    models report and the process's peak resident memory."""
    registry = default_registry()
    os.environ[BACKEND_ENV] = backend
    if mode == "shared":
        pool = ExpertPool(ModelHub())
        for expert in registry.experts:
            if expert.reference == EMBEDDED_CHAT_MODEL:
                message = [HumanMessage("Say yes.")]
                pool.call(expert.reference, message, {"max_new_tokens": 1}).result()
        stats = pool.stats()
        return {"bytes": stats.peak_bytes, "loads": stats.loads, "peak_rss_bytes": peak_rss_bytes()}
    copies = []
    named = [e for e in registry.experts if e.reference == EMBEDDED_CHAT_MODEL]
    for _ in named:  # each copy answers once, as its expert would
        chat = ModelHub().chat_model(EMBEDDED_CHAT_MODEL)
        chat.invoke([HumanMessage("Say yes.")], max_new_tokens=1)
        copies.append(chat)
    total = sum(c.memory_bytes() for c in copies)
    return {"bytes": total, "loads": len(copies), "peak_rss_bytes": peak_rss_bytes()}


def in_fresh_process(*args: str) -> dict[str, Any]:
    output = subprocess.run(
        [sys.executable, __file__, *args], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])  # type: ignore[no-any-return]


def measure_memory(backend: str) -> dict[str, Any]:
    shared = in_fresh_process("--probe", f"shared:{backend}")
    copies = in_fresh_process("--probe", f"copies:{backend}")
    named = [e for e in default_registry().experts if e.reference == EMBEDDED_CHAT_MODEL]
    return {
        "experts_on_the_model": len(named),
        "shared": shared,
        "copy_per_expert": copies,
        "bytes_ratio": copies["bytes"] / shared["bytes"],
        "peak_rss_ratio": copies["peak_rss_bytes"] / shared["peak_rss_bytes"],
    }


# -- 7. compllm ask --------------------------------------------------------------------------


def ask(backend: str, *, cache_dir: str | None = None) -> dict[str, Any]:
    env = {**os.environ, BACKEND_ENV: backend, "HF_HUB_OFFLINE": "1"}
    if cache_dir is not None:
        env["COMPLLM_CACHE_DIR"] = cache_dir
    compllm = Path(sys.executable).with_name("compllm")
    command = [str(compllm), "ask", "--planner", "rules", "--json", DEMO_QUERY]
    load = os.getloadavg()[0]
    started = time.perf_counter()
    run = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    result = json.loads(run.stdout)
    timings = result["timings"]
    stages = {k: v for k, v in timings.items() if k != "total"}
    return {
        "wall_s": wall,
        "load_avg_1min": load,
        "timings": timings,
        # The graph's time outside planning, routing and aggregation.
        "experts_stage_s": timings["total"] - sum(stages.values()),
        "experts_s": {a["id"]: a["finished_at"] - a["started_at"] for a in result["answers"]},
        "output_tokens": {a["id"]: a["output_tokens"] for a in result["answers"]},
        "aggregation": result["aggregation"],
        "messages": [line for line in run.stderr.splitlines() if line.startswith("·")],
    }


def measure_ask(first_run: bool) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for backend in BACKENDS:
        ask(backend)  # warm-up: caches on disk and in the page cache
        results[backend] = {"warm": ask(backend)}
        if first_run:
            with tempfile.TemporaryDirectory(prefix="compllm-first-run-") as empty:
                results[backend]["first_run_empty_cache"] = ask(backend, cache_dir=empty)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--data", type=Path, default=DEFAULT_MMLU_FILE)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--skip-first-run", action="store_true", help="no empty-cache run")
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        mode, backend = args.probe.split(":")
        probe = load_probe(backend) if mode == "load" else memory_probe(mode, backend)
        print(json.dumps(probe))
        return
    picked, source = questions(args.prompts, args.data)
    prompts = conversations(picked)
    tokens = args.max_new_tokens
    print(f"{len(picked)} questions from {source}, {tokens} new tokens at most")
    load_start = os.getloadavg()
    loads = {b: in_fresh_process("--probe", f"load:{b}") for b in BACKENDS}
    chats = {b: load_chat(b) for b in BACKENDS}
    throughput = {b: measure_throughput(chats[b], prompts, tokens) for b in BACKENDS}
    agreement = measure_agreement(
        chats, prompts, {b: throughput[b].pop("answers") for b in BACKENDS}
    )
    gguf = chats["llamacpp"].model_path
    prefix = measure_prefix_reuse(prompts, gguf)
    threads = measure_threads(prompts, gguf, tokens)
    pipeline = {b: measure_pipeline(b, picked, tokens) for b in BACKENDS}
    memory = {b: measure_memory(b) for b in BACKENDS}
    demo = measure_ask(first_run=not args.skip_first_run)

    print()
    print_table(
        [{"backend": b, **loads[b], **throughput[b], **pipeline[b]} for b in BACKENDS],
        [
            ("backend", "backend", ">12"),
            ("load s", "load_s", ".2f"),
            ("1-by-1 tok/s", "one_by_one_tok_s", ".1f"),
            ("batched tok/s", "batched_tok_s", ".1f"),
            ("ratio", "throughput_ratio", ".2f"),
            ("same text", "identical_answers", ">9"),
            ("pipe unbatched s", "unbatched_s", ".1f"),
            ("pipe batched s", "batched_s", ".1f"),
        ],
    )
    mib = 2**20
    for b in BACKENDS:
        shared, copies = memory[b]["shared"], memory[b]["copy_per_expert"]
        print(
            f"memory {b}: one loaded copy {shared['bytes'] / mib:.0f} MiB reported, peak RSS "
            f"{shared['peak_rss_bytes'] / mib:.0f} MiB; a copy per expert "
            f"{copies['bytes'] / mib:.0f} MiB, peak RSS {copies['peak_rss_bytes'] / mib:.0f} MiB"
        )
    print(
        f"agreement: {agreement['identical_answers']}/{agreement['prompts']} identical greedy "
        f"answers, {agreement['mean_agreeing_share']:.0%} of each answer agrees before the first "
        f"difference, similarity {agreement['mean_similarity']:.2f}; prompt tokens identical "
        f"for {agreement['identical_prompt_tokens']}/{agreement['prompts']}"
    )
    print(
        "prompt evaluation (ms per prompt, second pass): "
        + ", ".join(
            f"{k} {v['ms_per_prompt']:.0f}" for k, v in prefix.items() if isinstance(v, dict)
        )
    )
    by_threads = [
        f"{t}: {r['tok_s']:.1f} tok/s (load {r['load_avg_1min']:.1f})" for t, r in threads.items()
    ]
    print("llama.cpp threads: " + ", ".join(by_threads))
    for b in BACKENDS:
        warm = demo[b]["warm"]
        stages = ", ".join(f"{k} {v:.1f} s" for k, v in warm["timings"].items())
        experts = ", ".join(f"{k} {v:.1f} s" for k, v in warm["experts_s"].items())
        print(f"compllm ask, {b}, warm: {warm['wall_s']:.1f} s wall ({stages}; {experts})")
        if "first_run_empty_cache" in demo[b]:
            print(f"  first run, empty cache: {demo[b]['first_run_empty_cache']['wall_s']:.1f} s")
    write_json(
        "embedded_model",
        {
            "source": source,
            "max_new_tokens": tokens,
            "load_avg_at_start": load_start,
            "load_avg_at_end": os.getloadavg(),
            "llamacpp_threads": cpu_threads(),
            "load": loads,
            "throughput": throughput,
            "pipeline": pipeline,
            "agreement": agreement,
            "prefix_reuse": prefix,
            "threads": threads,
            "memory": memory,
            "ask": demo,
        },
        args.out_dir,
    )
    plot(loads, throughput, memory, prefix, demo, args.out_dir)


def plot(
    loads: dict[str, Any],
    throughput: dict[str, Any],
    memory: dict[str, Any],
    prefix: dict[str, Any],
    demo: dict[str, Any],
    out_dir: Path,
) -> None:
    plt = pyplot()
    figure, axes = plt.subplots(1, 4, figsize=(15, 3.6))
    width = 0.38
    for offset, (key, label) in enumerate(
        [("one_by_one_tok_s", "one by one"), ("batched_tok_s", "batched")]
    ):
        axes[0].bar(
            [i + (offset - 0.5) * width for i in range(len(BACKENDS))],
            [throughput[b][key] for b in BACKENDS],
            width,
            label=label,
        )
    axes[0].set_xticks(range(len(BACKENDS)), BACKENDS)
    axes[0].set_ylabel("generated tokens / s")
    axes[0].legend()
    axes[1].bar(BACKENDS, [memory[b]["shared"]["peak_rss_bytes"] / 2**20 for b in BACKENDS])
    axes[1].set_ylabel("peak RSS (MiB), default registry")
    for i, b in enumerate(BACKENDS):
        axes[1].annotate(f"load {loads[b]['load_s']:.1f} s", (i, 0), ha="center", va="bottom")
    names = [k for k, v in prefix.items() if isinstance(v, dict)]
    axes[2].barh(names, [prefix[k]["ms_per_prompt"] for k in names])
    axes[2].set_xlabel("ms to evaluate a prompt (system prompts recur)")
    stages = ["plan", "route", "experts", "aggregate"]
    for i, b in enumerate(BACKENDS):
        warm = demo[b]["warm"]
        values = {**warm["timings"], "experts": warm["experts_stage_s"]}
        left = 0.0
        for stage, color in zip(stages, ["C0", "C1", "C2", "C3"], strict=True):
            value = float(values.get(stage, 0.0))
            axes[3].barh(b, value, left=left, color=color, label=stage if i == 0 else None)
            left += value
    axes[3].set_xlabel("compllm ask, warm: in-graph seconds by stage")
    axes[3].legend(fontsize=7)
    save_plot(figure, "embedded_model", out_dir)


if __name__ == "__main__":
    main()
