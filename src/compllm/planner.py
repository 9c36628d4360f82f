"""The planner: splits the query into sub-queries with dependencies.

Three planners, chosen by `Context.planner_mode` and `Context.planner_model`:
- the learned planner (`embedded:compllm-planner`, the default, or a folder written by
  `compllm train-planner`): a trained segmenter and dependency linker on a small encoder,
  tens of milliseconds per plan (`compllm.planning`);
- an LLM planner (any other reference: hub id, local path, `openai:...`): the model writes a
  JSON plan, which is parsed, repaired, validated and checked against the query;
- the rule-based decomposer (`compllm.decompose`), the last resort, so a plan always exists.

In `auto` mode with an LLM planner, the learned plan is made first (it costs nothing next
to the LLM); the LLM's plan is used only if it passes the checks, and every part the learned
planner found must be in it: otherwise the learned plan is used, without a second LLM call.
A per-model record of how often the LLM's plans pass decides whether it is asked at all
(`compllm.planning.acceptance`). Every fallback is in `planner_attempts` with its reason.
"""

from __future__ import annotations

import json
import re
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from pydantic import ValidationError

from compllm.decompose import asks, decompose, explicit_parts
from compllm.errors import CompLLMError, ConfigError
from compllm.models import EMBEDDED_PLANNER, ModelHub, cache_dir, is_learned_planner
from compllm.plan import Plan, PlanError, PlannerPath, SubQuery
from compllm.plan_stream import SubQueryStream
from compllm.planner_llm import PlannerLLM
from compllm.planning.acceptance import LLMAcceptance
from compllm.planning.segments import build_plan
from compllm.prompts import render_prompt
from compllm.state import Context, PlannerAttempt

if TYPE_CHECKING:
    from compllm.planning.model import LearnedPlanner
    from compllm.services import Services

__all__ = [
    "llm_plan_schema",
    "parse_plan",
    "plan_query",
    "plan_run",
    "planner_token_budget",
]

_ID_REFERENCE = re.compile(r"\bq(\d{1,2})\b")
_END_PUNCTUATION = ".,;:?!()'"
_REFERENCE_WORDS = ("the", "result", "answer", "of", "that", "is", "what", "step")
_WORD = re.compile(r"[a-z0-9]+(?:['^.][a-z0-9]+)*")
_STOPWORDS = frozenset(
    (  # noqa: SIM905 - a word list reads better as text
        "a an the of to in on for and or is are was were be been what who whom which when "
        "where why how does do did can could should would will with by from at as that this "
        "it its me my i you your tell give find explain describe please about result answer "
        "q1 q2 q3 q4 q5 step part question whether"
    ).split()
)


def llm_plan_schema(query: str, max_subqueries: int, parts: int | None = None) -> dict[str, Any]:
    """The JSON schema the planner LLM's output is constrained to.

    Sub-question text may only use the query's own words and punctuation (plus a few words to
    refer to earlier steps): small models otherwise copy the prompt's examples or invent
    topics, and the grammar makes that impossible instead of merely detectable. The plan
    must have at least `parts` sub-queries (the learned planner's count), else at least the
    query's explicit parts.
    """
    least = parts if parts is not None else len(explicit_parts(query))
    text = re.sub(r"[\"\\\[\]]", " ", query)  # characters no grammar takes in a word
    words = {w.strip(_END_PUNCTUATION) for w in text.split()}
    words |= set(_REFERENCE_WORDS) | {f"q{i}" for i in range(1, max_subqueries + 1)}
    words |= {w[:1].upper() + w[1:] for w in words}
    words.discard("")
    word = "(" + "|".join(_literal(w) for w in sorted(words, key=lambda w: (-len(w), w))) + ")"
    # No escapes inside the class: none is needed there, and llama.cpp's grammar rejects them.
    punctuation = "[" + _END_PUNCTUATION + "]"
    ids = [f"q{i}" for i in range(1, max_subqueries + 1)]
    subquery = {
        "type": "object",
        "properties": {
            "id": {"type": "string", "enum": ids},
            "question": {
                "type": "string",
                # Words separated by single spaces, each optionally followed by punctuation.
                "pattern": f"^{word}{punctuation}?( {word}{punctuation}?)*$",
            },
            "depends_on": {
                "type": "array",
                "items": {"type": "string", "enum": ids},
                "maxItems": max_subqueries - 1,
            },
        },
        "required": ["id", "question", "depends_on"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {
            "subqueries": {
                "type": "array",
                "items": subquery,
                # At least the parts a reader sees (question ends, "and what ...", lists).
                "minItems": min(max_subqueries, max(1, least)),
                "maxItems": min(max_subqueries, 2 * max(1, least) + 2),
            }
        },
        "required": ["subqueries"],
        "additionalProperties": False,
    }


def _literal(word: str) -> str:
    """`word` as a regular expression that xgrammar, llama.cpp and Python all read the same
    way: special characters as one-character classes ("[.]"), never as escapes ("\\."),
    which llama.cpp's grammar rejects ("^" has no class of its own: "[$^]" is the nearest)."""
    return "".join("[$^]" if c == "^" else f"[{c}]" if c in ".*+?$|(){}" else c for c in word)


def planner_token_budget(query: str, limit: int) -> int:
    """Enough tokens for a plan that restates the query in a few parts, and no more: a small
    model that loops is cut off early instead of running to a large fixed budget."""
    # Measured with SmolLM2's tokenizer: a plan costs about (query length / 3.5) tokens for
    # the questions plus ~21 per sub-query of JSON; one extra part is allowed for.
    parts = max(1, len(explicit_parts(query)))
    return min(limit, 16 + len(query) // 3 + 24 * (parts + 1))


def parse_plan(
    text: str, query: str, *, max_subqueries: int, parts: Sequence[str] | None = None
) -> Plan:
    """Turn LLM output into a validated plan, or raise `PlanError` saying what is wrong.

    Repairs what has one obvious fix (surrounding prose, duplicate or self dependencies,
    dependencies on ids that do not exist); rejects what does not (duplicate ids, cycles,
    invented topics, statements, sub-questions of reference words only). `parts` (the learned
    planner's parts, when known) must each be carried by a sub-question of its own.
    """
    data = _extract_json(text)
    raw = data.get("subqueries") if isinstance(data, dict) else data
    if not isinstance(raw, list):
        raise PlanError('expected a JSON object {"subqueries": [...]}')
    ids = {str(item.get("id", "")).strip() for item in raw if isinstance(item, dict)}
    items = []
    for position, item in enumerate(raw, start=1):
        if not isinstance(item, dict):
            raise PlanError(f"sub-query #{position} is not a JSON object")
        sid = str(item.get("id") or f"q{position}").strip()
        deps = item.get("depends_on") or []
        if not isinstance(deps, list):
            raise PlanError(f"sub-query {sid}: depends_on must be a list of ids")
        question = str(item.get("question", ""))
        # Repairs: drop self and unknown ids; add ids the question itself names ("q1 ...").
        named = [f"q{n}" for n in _ID_REFERENCE.findall(question)]
        kept = [d for d in (*map(str, deps), *named) if d.strip() in ids and d.strip() != sid]
        try:
            items.append(
                SubQuery(
                    id=sid,
                    question=question,
                    depends_on=tuple(dict.fromkeys(d.strip() for d in kept)),
                )
            )
        except ValidationError as exc:
            raise PlanError(f"sub-query {sid}: {exc.errors()[0]['msg']}") from None
    plan = Plan.build(items, max_subqueries=max_subqueries)
    _check_against_query(plan, query, parts)
    return plan


def plan_query(
    query: str,
    llm: BaseChatModel | PlannerLLM | None,
    *,
    max_subqueries: int,
    max_new_tokens: int,
    allow_fallback: bool = True,
    learned: LearnedPlanner | None = None,
    on_subquery: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[Plan, PlannerPath, list[PlannerAttempt]]:
    """Plan `query` with the planners given.

    - `learned` only: its plan. `llm` only: the LLM's plan, one different retry, then the
      rules. Neither: the rules.
    - Both: the learned plan first; the LLM's plan replaces it only when it passes the checks
      and carries every part the learned planner found. With `allow_fallback` (auto) a
      rejected LLM plan falls back to the learned plan at once; without it (llm mode) the
      LLM is retried once, shown the learned parts, and a second rejection raises
      `PlanError`.

    `llm` is a chat model that takes compllm's call keywords (a model the hub loaded), or a
    `PlannerLLM` for any other kind. With `on_subquery`, the LLM's first plan is streamed and
    each sub-query object is handed over as soon as it is written (the plan that counts is
    still the one returned, after every check).
    """
    attempts: list[PlannerAttempt] = []
    fallback: Plan | None = None
    parts: list[str] | None = None
    if learned is not None:
        try:
            analysis = learned.analyse(query)
            plan = build_plan(
                query, analysis.segments, analysis.edges, max_subqueries=max_subqueries
            )
        except CompLLMError:
            raise
        except Exception as exc:  # a planner bug must not stop the run: the rules plan
            attempts.append(PlannerAttempt(source="learned", output="", error=_one_line(exc)))
        else:
            attempts.append(PlannerAttempt(source="learned", output=plan.model_dump_json()))
            if llm is None:
                return plan, "learned", attempts
            fallback = plan
            parts = [query[p.start : p.end] for p in analysis.parts]
    if llm is not None:
        caller = llm if isinstance(llm, PlannerLLM) else PlannerLLM(llm, native=True)
        result = _ask_llm(
            query,
            caller,
            on_subquery=on_subquery,
            parts=parts,
            max_subqueries=max_subqueries,
            max_new_tokens=max_new_tokens,
            retry=fallback is None or not allow_fallback,
            attempts=attempts,
        )
        if result is not None:
            return result[0], result[1], attempts
        if not allow_fallback:
            raise PlanError(f"the planner LLM gave no valid plan: {attempts[-1].error}")
        if fallback is not None:
            return fallback, "learned", attempts
    plan = decompose(query, max_subqueries=max_subqueries)
    attempts.append(PlannerAttempt(source="rules", output=plan.model_dump_json()))
    return plan, "rules", attempts


def _ask_llm(
    query: str,
    llm: PlannerLLM,
    *,
    on_subquery: Callable[[dict[str, Any]], None] | None,
    parts: list[str] | None,
    max_subqueries: int,
    max_new_tokens: int,
    retry: bool,
    attempts: list[PlannerAttempt],
) -> tuple[Plan, PlannerPath] | None:
    """The LLM's plan when it passes the checks (first try or the retry), else None.

    The retry is not the first try again: it shows the rejected plan with the error (and the
    learned parts, when known) and samples instead of decoding greedily. A model that crashed
    is not asked again."""
    messages: list[BaseMessage] = [
        SystemMessage(render_prompt("planner.system", max_subqueries=max_subqueries)),
        HumanMessage(render_prompt("planner.user", query=query)),
    ]
    schema = llm_plan_schema(query, max_subqueries, len(parts) if parts is not None else None)
    budget = planner_token_budget(query, max_new_tokens)
    settings: dict[str, Any] = {"repetition_penalty": 1.0}  # JSON repeats its own structure
    sources: tuple[PlannerPath, ...] = ("llm", "llm-retry") if retry else ("llm",)
    for source in sources:
        # Only the first try streams: what it hands over early is what the executor starts.
        stream = SubQueryStream() if on_subquery is not None and source == "llm" else None
        try:
            output = llm.ask(
                messages,
                query=query,
                schema=schema,
                max_new_tokens=budget,
                settings=settings,
                on_text=_handing_over(stream, on_subquery) if stream and llm.streams else None,
            )
        except CompLLMError:
            raise  # configuration errors (a model that cannot load) must surface
        except Exception as exc:  # a model that crashes counts as a failed attempt
            attempts.append(PlannerAttempt(source=source, output="", error=_one_line(exc)))
            return None
        try:
            plan = parse_plan(output, query, max_subqueries=max_subqueries, parts=parts)
        except PlanError as exc:
            attempts.append(PlannerAttempt(source=source, output=output, error=str(exc)))
            retry_prompt = render_prompt(
                "planner.retry", error=str(exc), query=query, parts=parts or []
            )
            messages = [*messages[:2], AIMessage(output), HumanMessage(retry_prompt)]
            settings = {**settings, "temperature": 0.7, "top_p": 0.95}
            continue
        attempts.append(PlannerAttempt(source=source, output=output))
        return plan, source
    return None


def _handing_over(
    stream: SubQueryStream, on_subquery: Callable[[dict[str, Any]], None] | None
) -> Callable[[str], None]:
    def on_text(text: str) -> None:
        for item in stream.feed(text):
            if on_subquery is not None:
                on_subquery(item)

    return on_text


# A plan of DEFAULT_MAX_SUBQUERIES sub-queries is a few kilobytes; these bound the work spent
# on output that is not one (a model that loops, or hostile text from a remote engine).
_MAX_PLAN_CHARS = 64_000
_MAX_JSON_STARTS = 256


def _extract_json(text: str) -> Any:
    """The first JSON object or array in `text` (models wrap JSON in prose or fences)."""
    if len(text) > _MAX_PLAN_CHARS:
        raise PlanError(
            f"the planner's output is {len(text)} characters long; a plan needs at most "
            f"{_MAX_PLAN_CHARS}"
        )
    decoder = json.JSONDecoder()
    starts = [index for index, char in enumerate(text) if char in "{["][:_MAX_JSON_STARTS]
    for index in starts:
        try:
            value = decoder.raw_decode(text, index)[0]
        except (json.JSONDecodeError, RecursionError):  # deep nesting is not a plan either
            continue
        if (isinstance(value, dict) and "subqueries" in value) or (
            isinstance(value, list) and value and all(isinstance(v, dict) for v in value)
        ):
            return value
    if starts:
        raise PlanError(
            "the JSON plan is incomplete (cut off before its end: too many or too long sub-queries)"
        )
    raise PlanError("the output contains no JSON plan")


def _content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS}


def _check_against_query(plan: Plan, query: str, parts: Sequence[str] | None = None) -> None:
    """Reject plans that invent topics, state instead of asking, ask nothing of their own,
    repeat themselves, or leave out parts of the query (`parts`: the learned planner's
    parts; without them, the query's explicit parts are counted)."""
    query_words = _content_words(query)
    for sub in plan.subqueries:
        words = _content_words(sub.question)
        if not words:
            raise PlanError(
                f"sub-query {sub.id} asks nothing of its own (only reference words: "
                f"{sub.question!r})"
            )
        if len(words & query_words) < 0.5 * len(words):
            invented = ", ".join(sorted(words - query_words)[:5])
            raise PlanError(
                f"sub-query {sub.id} asks about things the request does not mention ({invented})"
            )
        if not asks(sub.question) and _STATEMENT.search(sub.question):
            raise PlanError(
                f"sub-query {sub.id} states something instead of asking it ({sub.question!r})"
            )
    seen: dict[str, str] = {}
    for sub in plan.subqueries:
        key = " ".join(sorted(_content_words(sub.question)))
        if key in seen:
            raise PlanError(f"sub-queries {seen[key]} and {sub.id} ask the same question")
        seen[key] = sub.id
    if parts is not None:
        missing = _uncovered(parts, [s.question for s in plan.subqueries])
        if missing:
            raise PlanError(
                f"no sub-query of its own asks this part of the request: {missing[0]!r}"
            )
        return
    expected = len(explicit_parts(query))
    if len(plan) < expected:
        raise PlanError(
            f"the request has {expected} explicit parts but the plan has {len(plan)} sub-queries"
        )


# A sentence that says "X is Y" without asking (small models answer instead of asking).
_STATEMENT = re.compile(r"\b(?:is|are|was|were|equals?)\b", re.IGNORECASE)


def _uncovered(parts: Sequence[str], questions: Sequence[str]) -> list[str]:
    """The parts no sub-question of their own carries. A question carries a part when it has
    at least half the part's content words; each question carries one part (a maximum
    matching), so a question that merged two parts covers only one of them. A part of
    reference words only ("Double it.") needs no question of its own words."""
    words = [_content_words(q) for q in questions]
    candidates = []
    for part in parts:
        need = _content_words(part)
        candidates.append(
            [i for i, have in enumerate(words) if len(need & have) >= 0.5 * len(need)]
            if need
            else None
        )
    owner: dict[int, int] = {}

    def assign(part: int, visited: set[int]) -> bool:
        for question in candidates[part] or ():
            if question in visited:
                continue
            visited.add(question)
            if question not in owner or assign(owner[question], visited):
                owner[question] = part
                return True
        return False

    return [
        part
        for index, part in enumerate(parts)
        if candidates[index] is not None and not assign(index, set())
    ]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def plan_run(
    query: str,
    context: Context,
    services: Services,
    *,
    config: RunnableConfig | None = None,
    on_subquery: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[Plan, PlannerPath, list[PlannerAttempt]]:
    """Plan with what the run's context asks for (see the module docstring): the planner
    node's whole decision. An object given as the graph's `planner` (a chat model, a
    Runnable, a function) is an LLM planner; a string names a model like `planner_model`.
    `config` goes with every model call; `on_subquery` streams an LLM's plan (see
    `plan_query`)."""

    def planned(
        llm: PlannerLLM | None, learned: LearnedPlanner | None = None, fallback: bool = True
    ) -> tuple[Plan, PlannerPath, list[PlannerAttempt]]:
        return plan_query(
            query,
            llm,
            max_subqueries=context.max_subqueries,
            max_new_tokens=context.planner_max_new_tokens,
            allow_fallback=fallback,
            learned=learned,
            on_subquery=on_subquery,
        )

    mode, model = context.planner_mode, context.planner_model
    given = services.planner
    if isinstance(given, str):
        model, given = given, None
    if given is not None:
        model = f"object:{type(given).__name__}:{getattr(given, 'model_name', '')}"
    if mode == "rules":
        return planned(None)
    learned_model = model if is_learned_planner(model) else EMBEDDED_PLANNER
    if mode == "learned":
        return planned(None, _learned(services, learned_model))
    if is_learned_planner(model):
        if mode == "llm":
            raise ConfigError(
                f"planner_mode 'llm' needs an LLM planner_model (a hub id, a path or "
                f"openai:...); '{model}' is a learned planner"
            )
        try:
            return planned(None, _learned(services, model))
        except CompLLMError as exc:  # auto: a planner that cannot load leaves the rules
            plan, path, attempts = planned(None)
            failed = PlannerAttempt(source="learned", output="", error=str(exc))
            return plan, path, [failed, *attempts]
    learned = None
    if getattr(services.provider, "planner", None) is not None:
        try:
            learned = _learned(services, learned_model)
        except CompLLMError:
            learned = None  # the LLM plans alone, as it would without a learned planner
    record = _acceptance(services)
    if mode == "auto" and not record.worth_trying(model):
        plan, path, attempts = planned(None, learned)
        accepted, tried = record.rate(model)
        skipped = PlannerAttempt(
            source="llm",
            output="",
            error=f"not asked: {accepted} of its {tried} plans so far passed the checks",
        )
        return plan, path, [skipped, *attempts]
    with _caller(services, model, given, config) as llm:
        plan, path, attempts = planned(llm, learned, fallback=mode != "llm")
    if any(a.source in ("llm", "llm-retry") for a in attempts):
        record.record(model, accepted=path in ("llm", "llm-retry"))
    return plan, path, attempts


@contextmanager
def _caller(
    services: Services, model: str, given: Any, config: RunnableConfig | None
) -> Iterator[PlannerLLM]:
    """The planner to ask: an object the graph was given, or the model the reference names
    (loaded and pinned by the pool for the call)."""
    if given is not None:
        yield PlannerLLM(given, native=False, config=config)
        return
    with services.pool.lease(model) as llm:
        yield PlannerLLM(llm, native=True, config=config)


def _learned(services: Services, model: str) -> LearnedPlanner:
    """The learned planner `model` from the run's model provider (loaded once there)."""
    load = getattr(services.provider, "planner", None)
    if load is None:
        raise ConfigError(
            f"the model provider ({type(services.provider).__name__}) offers no learned "
            f"planner for '{model}'"
        )
    planner: LearnedPlanner = load(model)
    return planner


# One record per graph's services, and one for the process-wide hub (kept on disk, so that
# each `compllm ask` process starts from what the last one learned). Test doubles and other
# providers keep theirs in memory only: a fake must never teach a real model's record.
_RECORDS: weakref.WeakKeyDictionary[Services, LLMAcceptance] = weakref.WeakKeyDictionary()
_HUB_RECORD: list[LLMAcceptance] = []
_RECORDS_LOCK = threading.Lock()


def _acceptance(services: Services) -> LLMAcceptance:
    with _RECORDS_LOCK:
        if isinstance(services.provider, ModelHub):
            if not _HUB_RECORD:
                _HUB_RECORD.append(LLMAcceptance(cache_dir() / "planner" / "llm-acceptance.json"))
            return _HUB_RECORD[0]
        if services not in _RECORDS:
            _RECORDS[services] = LLMAcceptance()
        return _RECORDS[services]
