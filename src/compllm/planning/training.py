"""Training the learned planner: LoRA on the encoder (with `peft`) plus the two heads, on
planning examples; the artefact is written with its held-out report.

The loss is the tagger's cross-entropy over tokens plus the linker's binary cross-entropy
over all pairs of gold parts. Batches group queries of similar length (less padding, faster
on a CPU). Everything is seeded: the same data and settings give the same artefact.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compllm.planning.examples import Example
from compllm.planning.metrics import Rate, score_plan, summarise
from compllm.planning.model import (
    FORMAT,
    MANIFEST,
    WEIGHTS,
    LearnedPlanner,
    PlannerConfig,
    PlannerNetwork,
    build_network,
    config_dict,
    lora_modules,
    pair_order,
    token_range,
)
from compllm.planning.segments import IGNORE, model_text, token_labels

__all__ = ["TrainSettings", "encode", "evaluate", "train_planner"]


@dataclass(frozen=True)
class TrainSettings:
    epochs: float = 2.0
    batch_size: int = 32
    learning_rate: float = 6e-4  # LoRA matrices
    head_learning_rate: float = 2e-3
    warmup: float = 0.06
    seed: int = 0
    max_steps: int | None = None  # stop early (tests, smoke runs)


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    ranges: list[tuple[int, int]]
    pair_labels: list[float]


def encode(examples: Sequence[Example], tokenizer: Any, config: PlannerConfig) -> list[Encoded]:
    """Token ids, gold labels, part token ranges and pair labels for each example."""
    encoded = []
    for example in examples:
        batch = tokenizer(
            model_text(example.query),
            return_offsets_mapping=True,
            truncation=True,
            max_length=config.max_length,
        )
        offsets = [tuple(o) for o in batch["offset_mapping"]]
        ranges = [token_range(offsets, p.start, p.end) for p in example.parts]
        edges = example.edges
        pairs = [float((i, j) in edges) for i, j in pair_order(len(ranges))]
        encoded.append(Encoded(batch["input_ids"], token_labels(offsets, example), ranges, pairs))
    return encoded


def _batches(items: list[Encoded], size: int, rng: random.Random) -> list[list[Encoded]]:
    """Batches of similar length, in random order."""
    order = sorted(range(len(items)), key=lambda i: (len(items[i].input_ids), rng.random()))
    batches = [[items[i] for i in order[k : k + size]] for k in range(0, len(order), size)]
    rng.shuffle(batches)
    return batches


def _tensors(batch: list[Encoded]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(e.input_ids) for e in batch)
    ids = torch.zeros(len(batch), width, dtype=torch.long)
    mask = torch.zeros(len(batch), width, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    for row, item in enumerate(batch):
        n = len(item.input_ids)
        ids[row, :n] = torch.tensor(item.input_ids)
        mask[row, :n] = 1
        labels[row, :n] = torch.tensor(item.labels)
    return ids, mask, labels


def train_planner(
    examples: Sequence[Example],
    out: str | Path,
    *,
    config: PlannerConfig | None = None,
    settings: TrainSettings | None = None,
    evaluation: Mapping[str, Sequence[Example]] | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    describe: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train on `examples`, write the artefact to `out`, evaluate the written artefact on each
    `evaluation` set and return the report (also kept in the manifest). `progress(step,
    steps, loss)` is called after each step."""
    from peft import LoraConfig, get_peft_model

    config = config or PlannerConfig()
    settings = settings or TrainSettings()
    torch.manual_seed(settings.seed)
    rng = random.Random(settings.seed)
    network, tokenizer = build_network(config)
    targets = lora_modules(network.encoder, config)
    network.encoder = get_peft_model(
        network.encoder,
        LoraConfig(
            r=config.lora_rank,
            lora_alpha=config.lora_alpha,
            target_modules=targets,
            lora_dropout=0.05,
            bias="none",
        ),
    )
    data = encode(examples, tokenizer, config)
    per_epoch = math.ceil(len(data) / settings.batch_size)
    steps = max(1, round(per_epoch * settings.epochs))
    if settings.max_steps is not None:
        steps = min(steps, settings.max_steps)
    adapter = [p for n, p in network.named_parameters() if "lora_" in n]
    heads = [p for n, p in network.named_parameters() if not n.startswith("encoder.")]
    optimizer = torch.optim.AdamW(
        [
            {"params": adapter, "lr": settings.learning_rate},
            {"params": heads, "lr": settings.head_learning_rate},
        ],
        weight_decay=0.01,
    )
    warmup = max(1, int(steps * settings.warmup))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min((step + 1) / warmup, max(0.0, (steps - step) / max(1, steps - warmup))),
    )
    tag_loss = nn.CrossEntropyLoss(ignore_index=IGNORE)
    pair_loss = nn.BCEWithLogitsLoss()
    network.train()
    started = time.perf_counter()
    step, batches = 0, _batches(data, settings.batch_size, rng)
    while step < steps:
        if not batches:
            batches = _batches(data, settings.batch_size, rng)
        batch = batches.pop()
        ids, mask, labels = _tensors(batch)
        hidden = network.encode(ids, mask)
        logits = network.tag_logits(hidden)
        loss = tag_loss(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
        pair_logits = [
            network.pair_logits(hidden[row], item.ranges) for row, item in enumerate(batch)
        ]
        flat = torch.cat(pair_logits)
        if flat.numel():
            targets_t = torch.tensor([y for item in batch for y in item.pair_labels])
            loss = loss + pair_loss(flat, targets_t)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(network.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        step += 1
        if progress is not None:
            progress(step, steps, loss.item())
    seconds = time.perf_counter() - started
    network.eval()
    report: dict[str, Any] = {
        "training": {
            "examples": len(examples),
            "steps": steps,
            "batch_size": settings.batch_size,
            "epochs": round(steps / per_epoch, 2),
            "seconds": round(seconds, 1),
            "seed": settings.seed,
            **(describe or {}),
        }
    }
    folder = Path(out)
    save_artefact(network, config, folder, report)
    planner = LearnedPlanner.load(folder)
    report["evaluation"] = {
        name: {k: r.as_dict() for k, r in evaluate(planner, items).items()}
        for name, items in (evaluation or {}).items()
    }
    _write_manifest(folder, config, report)
    return report


def save_artefact(
    network: PlannerNetwork, config: PlannerConfig, folder: Path, report: dict[str, Any]
) -> None:
    """Write the adapter's matrices and the heads (float16) and the manifest."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    for name, parameter in network.encoder.named_parameters():
        for side in ("A", "B"):
            marker = f".lora_{side}."
            if marker in name:
                module = name.split(marker)[0].removeprefix("base_model.model.")
                tensors[f"lora.{module}.{side}"] = parameter.detach().to(torch.float16)
    for name, parameter in network.named_parameters():
        if not name.startswith("encoder."):
            tensors[f"head.{name}"] = parameter.detach().to(torch.float16)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / WEIGHTS))
    _write_manifest(folder, config, report)


def _write_manifest(folder: Path, config: PlannerConfig, report: dict[str, Any]) -> None:
    manifest = {"format": FORMAT, "version": 1, "config": config_dict(config), "report": report}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def evaluate(planner: LearnedPlanner, examples: Sequence[Example]) -> dict[str, Rate]:
    """Part-count and edge accuracy (and dropped/merged questions) of `planner` on
    `examples`."""
    return summarise([score_plan(planner.plan(e.query), e) for e in examples])
