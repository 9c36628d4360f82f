"""What the benchmarks share: simulated experts, a fake provider, tables, JSON and plots.

Simulated experts sleep for the latency written in their question ("Do n3 [0.1 s]"), so the
scheduling figures measure the executor, not a model.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from compllm import CompLLMResult
from compllm.registry import Registry, parse_registry

RESULTS = Path(__file__).parent / "results"

SIMULATED_REGISTRY: Registry = parse_registry(
    """
generalist: worker
experts:
  - {name: worker, description: simulated expert, system_prompt: simulated, model: sim}
""",
    source="benchmark-registry",
)


def simulated_latency(messages: list[BaseMessage]) -> float:
    question = messages[-1].text.splitlines()[-1]
    return float(question.rsplit("[", 1)[1].split()[0]) if "[" in question else 0.0


class SimulatedExpert(BaseChatModel):
    """Sleeps for the latency written in the question; answers "done"."""

    @property
    def _llm_type(self) -> str:
        return "simulated"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        latency = simulated_latency(messages)
        if latency:
            time.sleep(latency)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content="done"))])

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        latency = simulated_latency(messages)
        if latency:
            await asyncio.sleep(latency)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content="done"))])


class ConstantEmbeddings(Embeddings):
    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [[1.0, 0.0] for _ in texts]

    def embed_query(self, text: str) -> list[float]:
        return [1.0, 0.0]


@dataclass
class SimulatedProvider:
    """`sim` is the simulated expert; any other model aggregates with a fixed answer."""

    expert: BaseChatModel

    def chat_model(self, ref: str, *, trust_remote_code: bool = False) -> BaseChatModel:
        return self.expert if ref == "sim" else FakeListChatModel(responses=["aggregated"])

    def embeddings(self, ref: str) -> Embeddings:
        return ConstantEmbeddings()


def makespan(result: CompLLMResult) -> float:
    """The expert stage of a run: first expert start to last expert end (seconds)."""
    starts = [a.started_at for a in result.answers if a.started_at is not None]
    ends = [a.finished_at for a in result.answers if a.finished_at is not None]
    return max(ends) - min(starts)


def with_max_new_tokens(registry: Registry, tokens: int) -> Registry:
    """The registry with every expert's answer length set to `tokens`."""
    experts = tuple(
        e.model_copy(
            update={"generation": e.generation.model_copy(update={"max_new_tokens": tokens})}
        )
        for e in registry.experts
    )
    return registry.model_copy(update={"experts": experts})


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def print_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> None:
    """columns: (title, key, format spec such as '>8.2f')."""
    widths = [max(len(title), 8) for title, _, _ in columns]
    print("  ".join(f"{t:>{w}}" for (t, _, _), w in zip(columns, widths, strict=True)))
    for row in rows:
        cells = []
        for (_, key, spec), width in zip(columns, widths, strict=True):
            value = row.get(key)
            text = "-" if value is None else format(value, spec)
            cells.append(f"{text:>{width}}")
        print("  ".join(cells))


def write_json(name: str, payload: dict[str, Any], out_dir: Path = RESULTS) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
    print(f"wrote {path}")
    return path


def save_plot(figure: Any, name: str, out_dir: Path = RESULTS) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.png"
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    print(f"wrote {path}")
    return path


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: benchmarks run headless
    import matplotlib.pyplot as plt

    return plt
