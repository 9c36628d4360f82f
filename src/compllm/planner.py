"""Sub-query generator: an LLM writes a JSON plan; it is parsed, repaired, validated and
checked against the query; one retry carries the error back; the rule-based decomposer is the
last resort, so a plan always exists.

Small models write plausible but wrong plans, so an LLM plan is only accepted when it is
grounded in the query (no invented topics) and splits at least at the query's explicit
boundaries (no question silently dropped).
"""

from __future__ import annotations

import json
import re
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from pydantic import ValidationError

from compllm.decompose import decompose, explicit_parts
from compllm.errors import CompLLMError
from compllm.plan import Plan, PlanError, PlannerPath, SubQuery
from compllm.prompts import render_prompt
from compllm.state import PlannerAttempt

__all__ = [
    "llm_plan_schema",
    "parse_plan",
    "plan_query",
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


def llm_plan_schema(query: str, max_subqueries: int) -> dict[str, Any]:
    """The JSON schema the planner LLM's output is constrained to.

    Sub-question text may only use the query's own words and punctuation (plus a few words to
    refer to earlier steps): small models otherwise copy the prompt's examples or invent
    topics, and the grammar makes that impossible instead of merely detectable.
    """
    words = {w.strip(_END_PUNCTUATION) for w in query.replace('"', " ").replace("\\", " ").split()}
    words |= set(_REFERENCE_WORDS) | {f"q{i}" for i in range(1, max_subqueries + 1)}
    words |= {w[:1].upper() + w[1:] for w in words}
    words.discard("")
    word = "(?:" + "|".join(re.escape(w) for w in sorted(words, key=lambda w: (-len(w), w))) + ")"
    punctuation = "[" + re.escape(_END_PUNCTUATION) + "]"
    ids = [f"q{i}" for i in range(1, max_subqueries + 1)]
    subquery = {
        "type": "object",
        "properties": {
            "id": {"type": "string", "enum": ids},
            "question": {
                "type": "string",
                # Words separated by single spaces, each optionally followed by punctuation.
                "pattern": f"^{word}{punctuation}?(?: {word}{punctuation}?)*$",
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
                "minItems": min(max_subqueries, max(1, len(explicit_parts(query)))),
                "maxItems": min(max_subqueries, 2 * len(explicit_parts(query)) + 2),
            }
        },
        "required": ["subqueries"],
        "additionalProperties": False,
    }


def planner_token_budget(query: str, limit: int) -> int:
    """Enough tokens for a plan that restates the query in a few parts, and no more: a small
    model that loops is cut off early instead of running to a large fixed budget."""
    # Measured with SmolLM2's tokenizer: a plan costs about (query length / 3.5) tokens for
    # the questions plus ~21 per sub-query of JSON; one extra part is allowed for.
    parts = max(1, len(explicit_parts(query)))
    return min(limit, 16 + len(query) // 3 + 24 * (parts + 1))


def parse_plan(text: str, query: str, *, max_subqueries: int) -> Plan:
    """Turn LLM output into a validated plan, or raise `PlanError` saying what is wrong.

    Repairs what has one obvious fix (surrounding prose, duplicate or self dependencies,
    dependencies on ids that do not exist); rejects what does not (duplicate ids, cycles).
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
    _check_against_query(plan, query)
    return plan


def plan_query(
    query: str,
    llm: BaseChatModel | None,
    *,
    max_subqueries: int,
    max_new_tokens: int,
    allow_fallback: bool = True,
) -> tuple[Plan, PlannerPath, list[PlannerAttempt]]:
    """Plan `query`: LLM first (when given), one retry with the error, then the rules."""
    attempts: list[PlannerAttempt] = []
    if llm is not None:
        messages: list[BaseMessage] = [
            SystemMessage(render_prompt("planner.system", max_subqueries=max_subqueries)),
            HumanMessage(render_prompt("planner.user", query=query)),
        ]
        schema = llm_plan_schema(query, max_subqueries)
        budget = planner_token_budget(query, max_new_tokens)
        for source in ("llm", "llm-retry"):
            try:
                # No repetition penalty: JSON repeats its own structure by design.
                output = llm.invoke(
                    messages, json_schema=schema, max_new_tokens=budget, repetition_penalty=1.0
                ).text
            except CompLLMError:
                raise  # configuration errors (a model that cannot load) must surface
            except Exception as exc:  # a model that crashes counts as a failed attempt
                attempts.append(PlannerAttempt(source=source, output="", error=_one_line(exc)))
                break
            try:
                plan = parse_plan(output, query, max_subqueries=max_subqueries)
            except PlanError as exc:
                attempts.append(PlannerAttempt(source=source, output=output, error=str(exc)))
                messages = [
                    *messages[:2],
                    AIMessage(output),
                    HumanMessage(render_prompt("planner.retry", error=str(exc), query=query)),
                ]
                continue
            attempts.append(PlannerAttempt(source=source, output=output))
            return plan, source, attempts
        if not allow_fallback:
            raise PlanError(f"the planner LLM gave no valid plan: {attempts[-1].error}")
    plan = decompose(query, max_subqueries=max_subqueries)
    attempts.append(PlannerAttempt(source="rules", output=plan.model_dump_json()))
    return plan, "rules", attempts


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


def _check_against_query(plan: Plan, query: str) -> None:
    """Reject plans that invent topics or drop explicit parts of the query."""
    query_words = _content_words(query)
    for sub in plan.subqueries:
        words = _content_words(sub.question)
        if words and len(words & query_words) < 0.5 * len(words):
            invented = ", ".join(sorted(words - query_words)[:5])
            raise PlanError(
                f"sub-query {sub.id} asks about things the request does not mention ({invented})"
            )
    seen: dict[str, str] = {}
    for sub in plan.subqueries:
        key = " ".join(sorted(_content_words(sub.question))) or sub.question.lower()
        if key in seen:
            raise PlanError(f"sub-queries {seen[key]} and {sub.id} ask the same question")
        seen[key] = sub.id
    expected = len(explicit_parts(query))
    if len(plan) < expected:
        raise PlanError(
            f"the request has {expected} explicit parts but the plan has {len(plan)} sub-queries"
        )


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")
