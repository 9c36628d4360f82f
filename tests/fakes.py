"""Test doubles: deterministic embeddings, scripted chat models and a model provider."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict, Field, PrivateAttr

from compllm.errors import ModelLoadError
from compllm.registry import Registry, parse_registry

_STOPWORDS = frozenset(
    ["the", "this", "that", "what", "are", "and", "for", "how", "with", "from", "into"]
)


class KeywordEmbeddings(Embeddings):
    """Bag of words hashed into a fixed number of dimensions: texts that share words are
    similar, so routing tests can reason about which expert should win."""

    def __init__(self, dimensions: int = 512) -> None:
        self.dimensions = dimensions
        self.embedded: list[str] = []

    def _vector(self, text: str) -> list[float]:
        vector = [0.0] * self.dimensions
        for word in re.findall(r"[a-z0-9]+", text.lower()):
            if len(word) > 2 and word not in _STOPWORDS:
                digest = hashlib.sha256(word.encode()).digest()
                vector[int.from_bytes(digest[:4], "big") % self.dimensions] += 1.0
        return vector

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.embedded.extend(texts)
        return [self._vector(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


@dataclass
class Call:
    messages: list[BaseMessage]
    kwargs: dict[str, Any]
    started: float
    finished: float = 0.0

    @property
    def prompt(self) -> str:
        return "\n".join(m.text for m in self.messages)

    @property
    def system(self) -> str:
        return self.messages[0].text if self.messages else ""


# The call-time settings compllm's own local models take (`TransformersChatModel`, the
# llama.cpp model): a fake standing in for them accepts these and, like any real LangChain
# model, rejects every other keyword argument.
LOCAL_MODEL_SETTINGS = frozenset(
    ("max_new_tokens", "temperature", "top_p", "repetition_penalty", "json_schema")
)


def reject_unknown_settings(kwargs: dict[str, Any], accepted: frozenset[str]) -> None:
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise TypeError(f"got an unexpected keyword argument {unknown[0]!r}")


class ScriptedChatModel(BaseChatModel):
    """Answers with `respond(prompt_text, call)`; records every call with its interval.

    `respond` may raise to simulate a failing model; `delay_s` simulates generation time.
    Keyword arguments other than `accepts` raise `TypeError`, as real models do.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    respond: Callable[[str, Call], str]
    delay_s: float = 0.0
    accepts: frozenset[str] = LOCAL_MODEL_SETTINGS
    _calls: list[Call] = PrivateAttr(default_factory=list)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def calls(self) -> list[Call]:
        return list(self._calls)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        reject_unknown_settings(kwargs, self.accepts)
        call = Call(messages=list(messages), kwargs=kwargs, started=time.perf_counter())
        with self._lock:
            self._calls.append(call)
        try:
            if self.delay_s:
                time.sleep(self.delay_s)
            text = self.respond(call.prompt, call)
        finally:
            call.finished = time.perf_counter()
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


def answer_by_question(
    answers: dict[str, str], default: str = "I do not know."
) -> Callable[[str, Call], str]:
    """A `respond` that answers with the value of the first key found in the prompt."""

    def respond(prompt: str, call: Call) -> str:
        for key, value in answers.items():
            if key in call.messages[-1].text:
                return value
        return default

    return respond


def plan_json(*subqueries: tuple[str, str, list[str]]) -> str:
    return json.dumps(
        {"subqueries": [{"id": i, "question": q, "depends_on": d} for i, q, d in subqueries]}
    )


@dataclass
class FakeProvider:
    """Hands out scripted chat models by reference and keyword embeddings."""

    chat: dict[str, BaseChatModel] = field(default_factory=dict)
    embedding: Embeddings = field(default_factory=KeywordEmbeddings)
    loads: list[str] = field(default_factory=list)

    def chat_model(self, ref: str, *, trust_remote_code: bool = False) -> BaseChatModel:
        self.loads.append(ref)
        if ref not in self.chat:  # as the real hub fails on a reference it cannot load
            raise ModelLoadError(f"cannot load model '{ref}' (the test provider has none)")
        return self.chat[ref]

    def embeddings(self, ref: str) -> Embeddings:
        return self.embedding


TEST_REGISTRY_YAML = """
generalist: general
threshold: 0.2
experts:
  - name: math
    description: mathematics arithmetic algebra calculus equations numbers
    examples:
      [what is the derivative of a polynomial, multiply two numbers, solve the equation for x]
    model: expert-model
    system_prompt: You are a mathematician.
  - name: medicine
    description: medicine health disease symptoms treatment doctor
    examples: [what are the symptoms of diabetes, how is flu treated, side effects of a drug]
    model: expert-model
    system_prompt: You are a physician.
  - name: law
    description: law legal contracts courts rights crimes
    examples: [what makes a contract binding, what is a felony, rights of a tenant]
    model: expert-model
    system_prompt: You are a lawyer.
  - name: general
    description: general everyday questions
    examples: [how do I write an email]
    model: expert-model
    system_prompt: You are a helpful assistant.
"""


def make_test_registry() -> Registry:
    return parse_registry(TEST_REGISTRY_YAML, source="test-registry.yaml")


def make_provider(
    planner: str | None = None,
    expert_answers: dict[str, str] | None = None,
    aggregate: str = "FINAL",
    expert_delay_s: float = 0.0,
) -> FakeProvider:
    """Planner replies `planner` (JSON text); experts answer by question; the aggregator
    replies `aggregate`."""
    return FakeProvider(
        chat={
            "planner-model": ScriptedChatModel(respond=lambda prompt, call: planner or "no plan"),
            "expert-model": ScriptedChatModel(
                respond=answer_by_question(expert_answers or {}), delay_s=expert_delay_s
            ),
            "aggregator-model": ScriptedChatModel(respond=lambda prompt, call: aggregate),
        },
    )


class BatchingChatModel(ScriptedChatModel):
    """A scripted model that can also answer several conversations in one call, like
    `TransformersChatModel.generate_batch`; records the size of every batch."""

    _batches: list[int] = PrivateAttr(default_factory=list)

    @property
    def batches(self) -> list[int]:
        return list(self._batches)

    def generate_batch(
        self, conversations: list[list[BaseMessage]], **kwargs: Any
    ) -> list[AIMessage]:
        reject_unknown_settings(kwargs, self.accepts)
        with self._lock:
            self._batches.append(len(conversations))
        if self.delay_s:
            time.sleep(self.delay_s)  # one generation for the whole batch
        calls = [Call(list(c), kwargs, started=time.perf_counter()) for c in conversations]
        with self._lock:
            self._calls.extend(calls)
        return [AIMessage(content=self.respond(call.prompt, call)) for call in calls]


@dataclass
class SizedProvider(FakeProvider):
    """A provider whose models have sizes: it estimates them before loading, frees them on
    release, and records the most bytes it ever held loaded at once."""

    sizes: dict[str, int] = field(default_factory=dict)
    live: dict[str, int] = field(default_factory=dict)
    peak_live: int = 0
    released: list[str] = field(default_factory=list)

    def chat_model(self, ref: str, *, trust_remote_code: bool = False) -> BaseChatModel:
        model = super().chat_model(ref)
        self.live[ref] = self.sizes.get(ref, 0)
        self.peak_live = max(self.peak_live, sum(self.live.values()))
        return model

    def estimate_chat_model_bytes(self, ref: str, *, trust_remote_code: bool = False) -> int:
        return self.sizes.get(ref, 0)

    def release_chat_model(self, ref: str, *, trust_remote_code: bool = False) -> None:
        self.live.pop(ref, None)
        self.released.append(ref)


class AsyncNativeChatModel(BaseChatModel):
    """A natively async model (like a remote endpoint): `_agenerate` awaits `delay_s` (or,
    with `answers=False`, never answers, like a stuck endpoint) and notes whether it was
    cancelled."""

    delay_s: float = 0.0
    answers: bool = True
    cancelled: bool = False
    threads: list[str] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "async-native"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        raise AssertionError("an async-native model should be awaited, not called in a thread")

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        self.threads.append(threading.current_thread().name)
        try:
            if self.answers:
                await asyncio.sleep(self.delay_s)
            else:
                await asyncio.Event().wait()  # set by nobody: only cancelling ends it
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content="async answer"))])


class QuestionMarkPlanner:
    """A learned-planner double: each stretch of the query ending in '?' is a part; `edges`
    are the (parent, child) part indices it reports as dependencies."""

    def __init__(self, edges: frozenset[tuple[int, int]] = frozenset()) -> None:
        self.edges = edges
        self.queries: list[str] = []

    def analyse(self, query: str) -> Any:
        from compllm.planning.model import Analysis
        from compllm.planning.segments import Segment

        self.queries.append(query)
        segments = []
        for match in re.finditer(r"[^?]+\?", query):
            start = match.start() + len(match.group(0)) - len(match.group(0).lstrip())
            segments.append(Segment("part", start, match.end()))
        if not segments:
            segments = [Segment("part", 0, len(query))]
        probabilities = {
            (i, j): float((i, j) in self.edges) for j in range(len(segments)) for i in range(j)
        }
        return Analysis(segments, probabilities)


@dataclass
class PlannerProvider(FakeProvider):
    """A fake provider that also offers learned planners by reference, like `ModelHub`."""

    planners: dict[str, Any] = field(default_factory=dict)
    planner_loads: list[str] = field(default_factory=list)

    def planner(self, ref: str) -> Any:
        from compllm.errors import ModelLoadError

        self.planner_loads.append(ref)
        if ref not in self.planners:
            raise ModelLoadError(f"no learned planner '{ref}' in this test")
        return self.planners[ref]
