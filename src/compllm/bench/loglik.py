"""Log-likelihood scoring of multiple-choice parts: each option's text is scored as the
model's reply under each system's own prompt, and the most likely option is the system's
answer. Nothing is generated, so answer format and letter habits stop deciding the score
(the usual way small models are evaluated on MMLU, in its "cloze" form: options by their text).

The prompts:
- `monolithic`: its system prompt and the whole composite query; the reply so far is
  "Part N:" (the format that system prompt asks for), then the option;
- `comp-llm`: for the sub-query that asks the part (strict matching; a part no sub-query asks
  has no answer), the routed expert's system prompt and the sub-question as the expert
  receives it (`expert.user` prompt, without parents' results: nothing is executed). A part
  routed to an expert without local weights (a calculator, a remote endpoint) has no answer;
- `oracle-plan`: the same with the gold sub-question and the gold expert.

Scores are total log-probabilities divided by the option's length in bytes (lm-eval's
`acc_norm`), so that long options are not penalised for their length. Arithmetic parts have
no options and are not scored in this mode.

Scoring needs the model's weights: `TransformersOptionScorer` works on the transformers model
and tokenizer (loaded explicitly through transformers, whatever backend the hub generates with).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from compllm.baselines import MONOLITHIC_SYSTEM_PROMPT
from compllm.bench.extract import LETTERS
from compllm.bench.matching import match_parts
from compllm.bench.suite import CompositeItem, Part
from compllm.bench.systems import PartOutcome, SystemName, SystemRun, is_local_model
from compllm.plan import Plan
from compllm.prompts import render_prompt
from compllm.registry import Registry

__all__ = [
    "LOGLIK_SYSTEMS",
    "OptionScorer",
    "TransformersOptionScorer",
    "best_option",
    "loglik_run",
]

LOGLIK_SYSTEMS: tuple[SystemName, ...] = ("monolithic", "comp-llm", "oracle-plan")
_ROLES = {"system": "system", "human": "user", "ai": "assistant"}


class OptionScorer(Protocol):
    def option_logprobs(
        self, messages: Sequence[BaseMessage], prefix: str, options: Sequence[str]
    ) -> list[float]:
        """Each option's total log-probability as the assistant's reply to `messages`,
        after `prefix` (text the reply already has)."""
        ...


def best_option(logprobs: Sequence[float], options: Sequence[str]) -> tuple[int, list[float]]:
    """(the chosen option, every option's length-normalised score)."""
    scores = [lp / max(1, len(o.encode())) for lp, o in zip(logprobs, options, strict=True)]
    return max(range(len(scores)), key=lambda i: scores[i]), scores


class TransformersOptionScorer:
    """Scores options with a causal LM: the prompt is run once, and each option continues it
    from a copy of its key/value cache."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model, self.tokenizer = model, tokenizer

    @classmethod
    def load(cls, ref: str) -> TransformersOptionScorer:
        """Load `ref` (a local folder, a hub id or `embedded:*`) through transformers."""
        from compllm.models import EMBEDDED_CHAT_MODEL, ModelHub, load_transformers

        # The embedded model's converted folder is the hub's to make (once, cached on disk).
        path = ModelHub()._embedded_smollm2() if ref == EMBEDDED_CHAT_MODEL else ref
        model, tokenizer = load_transformers(path)
        return cls(model, tokenizer)

    def option_logprobs(
        self, messages: Sequence[BaseMessage], prefix: str, options: Sequence[str]
    ) -> list[float]:
        import torch

        chat = [{"role": _ROLES.get(m.type, "user"), "content": m.text} for m in messages]
        prompt = self.tokenizer.apply_chat_template(
            chat, add_generation_prompt=True, tokenize=False
        )
        encode = self.tokenizer
        context = encode(prompt + prefix, add_special_tokens=False)["input_ids"]
        device = self.model.device
        # transformers renamed `past_key_values` to `cache` during 5.x: use the model's name.
        parameters = inspect.signature(self.model.forward).parameters
        cache_name = "cache" if "cache" in parameters else "past_key_values"
        with torch.inference_mode():
            first = self.model(
                torch.tensor([context], device=device), use_cache=True, logits_to_keep=1
            )
            cache = getattr(first, cache_name)
            totals = []
            for option in options:
                # Tokenised apart from the context, as lm-eval does: the option's tokens are
                # the same whatever the prompt ends with.
                tokens = encode(option, add_special_tokens=False)["input_ids"]
                if not tokens:
                    totals.append(float("-inf"))
                    continue
                step = self.model(
                    torch.tensor([tokens], device=device), use_cache=True, **{cache_name: cache}
                )
                logits = torch.cat([first.logits[0, -1:], step.logits[0, :-1]])
                logprobs = torch.log_softmax(logits.float(), dim=-1)
                picked = logprobs[torch.arange(len(tokens)), torch.tensor(tokens, device=device)]
                totals.append(float(picked.sum()))
                cache.crop(-len(tokens))  # back to the prompt alone for the next option
        return totals


def loglik_run(
    system: SystemName,
    item: CompositeItem,
    *,
    scorer_for: Callable[[str], OptionScorer],
    registry: Registry,
    monolithic_model: str,
    plan: Plan | None = None,
    plan_s: float = 0.0,
    planned_now: bool = False,
) -> SystemRun:
    """Score `system` on the multiple-choice parts of `item` (see the module doc). comp-llm
    needs its routed `plan` for the item and `plan_s`, the time it took; the run's latency
    includes that time only when the plan was made for this run (`planned_now`), not when it
    is the generation run's plan reused."""
    started = time.perf_counter()
    choice_parts = [(n, p) for n, p in enumerate(item.parts, 1) if p.kind == "choice"]
    matched: dict[str, str] = {}
    if system == "comp-llm":
        if plan is None:
            raise ValueError("comp-llm's log-likelihood run needs its routed plan")
        matched = match_parts(plan, item.parts)
    models: list[str] = []
    outcomes = []
    for number, part in choice_parts:
        prompt = _prompt(system, number, part, item, registry, monolithic_model, plan, matched)
        if prompt is None:  # comp-llm asked no sub-query for this part
            outcomes.append(_unanswered(part))
            continue
        model, messages, prefix, routed = prompt
        options = [(" " if prefix else "") + c.strip() for c in part.choices]
        logprobs = scorer_for(model).option_logprobs(messages, prefix, options)
        index, scores = best_option(logprobs, options)
        models.append(model)
        outcomes.append(
            PartOutcome(
                part_id=part.id,
                domain=part.domain,
                kind="choice",
                gold=part.answer,
                options=len(part.choices),
                predicted=LETTERS[index],
                correct=LETTERS[index] == part.answer,
                routed_to=routed,
                option_scores=scores,
            )
        )
    return SystemRun(
        system=system,
        mode="loglik",
        item_id=item.id,
        item_kind=item.kind,
        style=item.style,
        parts=outcomes,
        latency_s=time.perf_counter() - started + (plan_s if planned_now else 0.0),
        output_tokens=0,
        models=list(dict.fromkeys(models)),
        plan_size=len(plan) if plan is not None else 0,
        parts_found=len(matched),
        plan=plan if system == "comp-llm" else None,
        plan_s=plan_s,
    )


def _prompt(
    system: SystemName,
    number: int,
    part: Part,
    item: CompositeItem,
    registry: Registry,
    monolithic_model: str,
    plan: Plan | None,
    matched: dict[str, str],
) -> tuple[str, list[BaseMessage], str, str | None] | None:
    """(model, messages, reply prefix, expert) under which `system` is scored on `part`."""
    if system == "monolithic":
        messages = [SystemMessage(MONOLITHIC_SYSTEM_PROMPT), HumanMessage(item.query)]
        return monolithic_model, messages, f"Part {number}:", None
    if system == "oracle-plan":
        question, expert = part.question, part.domain
    elif system == "comp-llm" and plan is not None and part.id in matched:
        sub = plan.get(matched[part.id])
        question, expert = sub.question, sub.expert or registry.generalist
    else:
        return None
    spec = registry.expert(expert)
    if not is_local_model(spec.model):
        return None  # routed to an expert with no weights to score with (a calculator ...)
    user = render_prompt("expert.user", question=question, parents=[])
    system_prompt = spec.system_prompt or spec.prompt
    return spec.model, [SystemMessage(system_prompt), HumanMessage(user)], "", expert


def _unanswered(part: Part) -> PartOutcome:
    return PartOutcome(
        part_id=part.id,
        domain=part.domain,
        kind="choice",
        gold=part.answer,
        options=len(part.choices),
        predicted=None,
        correct=False,
    )
