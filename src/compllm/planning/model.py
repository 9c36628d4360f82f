"""The learned planner: a sentence encoder (all-MiniLM-L6-v2 by default) with a LoRA adapter,
a token tagger (the segmenter) and a pair classifier over parts (the dependency linker).

One encoder pass reads the whole query. The tagger labels every token (see
`compllm.planning.segments`); the linker scores each (earlier part, later part) pair from
the two parts' token vectors, which already attend to the whole query: "When was he born?"
depends on "Who painted The Night Watch?" when its "he" is that answer.

An artefact is a folder with `compllm-planner.json` (the manifest: base encoder, adapter
shape, training report) and `weights.safetensors` (the LoRA matrices and the heads, a few
MB). The base encoder's weights are not in it: they come from the installed encoder package
(or the hub id / path the manifest names). Loading merges the adapter into the encoder, so
inference runs a plain encoder and needs no `peft`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compllm.errors import ModelLoadError
from compllm.models import EMBEDDED_EMBEDDINGS, PLANNER_MANIFEST, embedded_encoder_path
from compllm.plan import DEFAULT_MAX_SUBQUERIES, Plan
from compllm.planning.segments import (
    LABELS,
    Segment,
    build_plan,
    decode_labels,
    model_text,
    repair,
    word_starts,
)

__all__ = [
    "MANIFEST",
    "Analysis",
    "LearnedPlanner",
    "PlannerConfig",
    "PlannerNetwork",
    "resolve_encoder",
    "transitive_reduction",
]

MANIFEST = PLANNER_MANIFEST
WEIGHTS = "weights.safetensors"
FORMAT = "compllm-planner"
_MAX_DISTANCE = 8


@dataclass(frozen=True)
class PlannerConfig:
    """The shape of a learned planner (kept in its manifest)."""

    base: str = "embedded:all-minilm-l6-v2"
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_targets: tuple[str, ...] = ("query", "key", "value", "dense")
    max_length: int = 320
    pair_hidden: int = 256
    edge_threshold: float = 0.5


def resolve_encoder(base: str) -> str:
    """A loadable path or hub id for the encoder reference `base`."""
    return str(embedded_encoder_path()) if base == EMBEDDED_EMBEDDINGS else base


class PlannerNetwork(nn.Module):
    """Encoder + tagger + pair linker."""

    def __init__(self, encoder: nn.Module, hidden: int, config: PlannerConfig) -> None:
        super().__init__()
        self.encoder = encoder
        self.tagger = nn.Sequential(nn.Dropout(0.1), nn.Linear(hidden, len(LABELS)))
        self.part = nn.Linear(2 * hidden, config.pair_hidden)
        self.distance = nn.Embedding(_MAX_DISTANCE + 1, 16)
        self.pair = nn.Sequential(
            nn.Linear(4 * config.pair_hidden + 16, config.pair_hidden),
            nn.GELU(),
            nn.Dropout(0.1),
            nn.Linear(config.pair_hidden, 1),
        )

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        output = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        hidden: torch.Tensor = output.last_hidden_state
        return hidden

    def tag_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.tagger(hidden)
        return logits

    def pair_logits(self, hidden: torch.Tensor, ranges: Sequence[tuple[int, int]]) -> torch.Tensor:
        """Logits for every pair (i, j), i < j, in row-major order, of the parts whose token
        ranges [start, end) are `ranges`, in one row's `hidden` (tokens x hidden)."""
        if len(ranges) < 2:
            return hidden.new_zeros(0)
        vectors = torch.stack([torch.cat([hidden[a:b].mean(dim=0), hidden[a]]) for a, b in ranges])
        parts = self.part(vectors)
        left, right, distance = [], [], []
        for j in range(len(ranges)):
            for i in range(j):
                left.append(i)
                right.append(j)
                distance.append(min(j - i, _MAX_DISTANCE))
        a, b = parts[left], parts[right]
        steps = self.distance(torch.tensor(distance, device=hidden.device))
        logits: torch.Tensor = self.pair(torch.cat([a, b, a * b, b - a, steps], dim=-1))
        return logits.squeeze(-1)


def pair_order(count: int) -> Iterator[tuple[int, int]]:
    """The (i, j) pairs in the order `pair_logits` returns them."""
    for j in range(count):
        for i in range(j):
            yield i, j


@dataclass
class Analysis:
    """What the planner read in a query: its segments and each pair's dependency odds."""

    segments: list[Segment]
    edge_probabilities: dict[tuple[int, int], float] = field(default_factory=dict)
    threshold: float = 0.5

    @property
    def parts(self) -> list[Segment]:
        return [s for s in self.segments if s.kind == "part"]

    @property
    def edges(self) -> set[tuple[int, int]]:
        """The likely (parent, child) pairs, less those a longer chain of them implies: a
        part needs the answer of the part it refers to ("What's that country's capital?"
        after "Which country shares it with Nepal?"), not of that part's own parents. The
        linker scores each pair on its own and often adds the grandparent too; people's
        queries almost never need it (3 of the 1,077 packaged hand-written examples do),
        and the order of the calls is the same either way."""
        likely = {pair for pair, p in self.edge_probabilities.items() if p >= self.threshold}
        return transitive_reduction(likely)


def transitive_reduction(edges: set[tuple[int, int]]) -> set[tuple[int, int]]:
    """`edges` (parent < child) without those that a path of two or more edges implies."""
    children: dict[int, set[int]] = {}
    for parent, child in edges:
        children.setdefault(parent, set()).add(child)

    def reachable_through_others(parent: int, child: int) -> bool:
        stack = [c for c in children[parent] if c != child]
        seen = set(stack)
        while stack:
            node = stack.pop()
            if node == child:
                return True
            for following in children.get(node, ()):
                if following not in seen and following <= child:
                    seen.add(following)
                    stack.append(following)
        return False

    return {(p, c) for p, c in edges if not reachable_through_others(p, c)}


class LearnedPlanner:
    """Plans queries with a trained network. Thread-safe; CPU inference in milliseconds."""

    def __init__(
        self,
        network: PlannerNetwork,
        tokenizer: Any,
        config: PlannerConfig,
        *,
        source: str = "",
        manifest: dict[str, Any] | None = None,
    ) -> None:
        self.network = network.eval()
        self.tokenizer = tokenizer
        self.config = config
        self.source = source
        self.manifest = manifest or {}
        self._lock = threading.Lock()

    # -- loading -------------------------------------------------------------------------

    @classmethod
    def load(cls, folder: str | Path, *, source: str = "") -> LearnedPlanner:
        """Load an artefact folder (see the module docstring)."""
        folder = Path(folder)
        try:
            manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot read the planner manifest in {folder}: {exc}") from None
        if manifest.get("format") != FORMAT:
            raise ModelLoadError(f"{folder / MANIFEST} is not a compllm planner manifest")
        config = PlannerConfig(
            **{
                **manifest["config"],
                "lora_targets": tuple(manifest["config"]["lora_targets"]),
            }
        )
        network, tokenizer = build_network(config)
        from safetensors.torch import load_file

        tensors = load_file(str(folder / WEIGHTS))
        merge_adapter(network.encoder, tensors, config)
        heads = {k[len("head.") :]: v.float() for k, v in tensors.items() if k.startswith("head.")}
        network.load_state_dict(heads, strict=False)
        missing = [n for n, _ in network.named_parameters() if not n.startswith("encoder.")]
        absent = [n for n in missing if n not in heads]
        if absent:
            raise ModelLoadError(f"{folder / WEIGHTS} lacks {', '.join(absent[:3])}")
        return cls(network, tokenizer, config, source=source or str(folder), manifest=manifest)

    # -- inference -----------------------------------------------------------------------

    def analyse(self, query: str) -> Analysis:
        """Segments and dependency probabilities for `query`."""
        segments: list[Segment] = []
        probabilities: dict[tuple[int, int], float] = {}
        for start, chunk in self._chunks(query):
            found, pairs = self._analyse_chunk(chunk)
            offset = len([s for s in segments if s.kind == "part"])
            segments += [Segment(s.kind, s.start + start, s.end + start) for s in found]
            probabilities |= {(i + offset, j + offset): p for (i, j), p in pairs.items()}
        return Analysis(segments, probabilities, self.config.edge_threshold)

    def plan(self, query: str, *, max_subqueries: int = DEFAULT_MAX_SUBQUERIES) -> Plan:
        analysis = self.analyse(query)
        return build_plan(query, analysis.segments, analysis.edges, max_subqueries=max_subqueries)

    def _chunks(self, query: str) -> list[tuple[int, str]]:
        """The query in pieces the encoder can read whole (cut at line or sentence ends):
        most queries are one piece; a very long one is planned piece by piece."""
        limit = 4 * (self.config.max_length - 2)  # characters; wordpieces are ~4 characters
        chunks, start = [], 0
        while len(query) - start > limit:
            window = query[start : start + limit]
            cut = max(window.rfind("\n"), window.rfind(". "), window.rfind("? "))
            cut = cut + 1 if cut > limit // 3 else limit
            chunks.append((start, query[start : start + cut]))
            start += cut
        chunks.append((start, query[start:]))
        return chunks

    def _analyse_chunk(self, query: str) -> tuple[list[Segment], dict[tuple[int, int], float]]:
        text = model_text(query)
        encoded = self.tokenizer(
            text,
            return_offsets_mapping=True,
            truncation=True,
            max_length=self.config.max_length,
            return_tensors="pt",
        )
        offsets = [tuple(o) for o in encoded.pop("offset_mapping")[0].tolist()]
        starts = word_starts(text, offsets)
        with self._lock, torch.inference_mode():
            hidden = self.network.encode(encoded["input_ids"], encoded["attention_mask"])[0]
            log_probs = torch.log_softmax(self.network.tag_logits(hidden), dim=-1).numpy()
            segments = repair(query, decode_labels(log_probs, offsets, starts))
            parts = [s for s in segments if s.kind == "part"]
            ranges = [token_range(offsets, p.start, p.end) for p in parts]
            logits = self.network.pair_logits(hidden, ranges)
        probabilities = torch.sigmoid(logits).tolist()
        pairs = dict(zip(pair_order(len(parts)), probabilities, strict=True))
        return segments, pairs


def token_range(offsets: Sequence[tuple[int, int]], start: int, end: int) -> tuple[int, int]:
    """[first, last + 1) of the tokens overlapping characters [start, end)."""
    inside = [i for i, (s, e) in enumerate(offsets) if s != e and s < end and e > start]
    if not inside:  # cut off by truncation: the last real token stands for it
        last = max(i for i, (s, e) in enumerate(offsets) if s != e)
        return last, last + 1
    return inside[0], inside[-1] + 1


def build_network(config: PlannerConfig) -> tuple[PlannerNetwork, Any]:
    """A fresh network (untrained heads) on the base encoder, and its tokenizer."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    path = resolve_encoder(config.base)
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        encoder = AutoModel.from_pretrained(path, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load the planner's encoder '{config.base}': {exc}") from None
    torch.manual_seed(0)  # the heads' initial weights, for reproducible training
    return PlannerNetwork(encoder, encoder.config.hidden_size, config), tokenizer


def lora_modules(encoder: nn.Module, config: PlannerConfig) -> list[str]:
    """Names of the encoder's linear layers the adapter changes."""
    return [
        name
        for name, module in encoder.named_modules()
        if isinstance(module, nn.Linear)
        and name.split(".")[-1] in config.lora_targets
        and not name.startswith("pooler")
    ]


def merge_adapter(
    encoder: nn.Module, tensors: dict[str, torch.Tensor], config: PlannerConfig
) -> None:
    """Add the adapter's low-rank update (B @ A * alpha / rank) to each target's weight."""
    scale = config.lora_alpha / config.lora_rank
    modules = dict(encoder.named_modules())
    for name in lora_modules(encoder, config):
        a, b = tensors.get(f"lora.{name}.A"), tensors.get(f"lora.{name}.B")
        if a is None or b is None:
            raise ModelLoadError(f"the planner's adapter has no weights for {name}")
        layer = modules[name]
        assert isinstance(layer, nn.Linear)
        with torch.no_grad():
            layer.weight += (b.float() @ a.float()) * scale


def config_dict(config: PlannerConfig) -> dict[str, Any]:
    data = asdict(config)
    data["lora_targets"] = list(config.lora_targets)
    return data
