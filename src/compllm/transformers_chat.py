"""A LangChain chat model over an already loaded transformers model.

One instance wraps one (model, tokenizer) pair; every expert that names the same weights
shares the instance, and each call brings its own system prompt and generation settings.
JSON-constrained decoding (for the planner) uses xgrammar's transformers logits processor.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict, PrivateAttr

__all__ = ["TransformersChatModel"]

_ROLES = {"system": "system", "human": "user", "ai": "assistant", "tool": "tool"}
_GENERATION_KEYS = ("max_new_tokens", "temperature", "top_p", "repetition_penalty")


class TransformersChatModel(BaseChatModel):
    """Chat model backed by `transformers` `generate`.

    Call-time keyword arguments: `max_new_tokens`, `temperature` (0 = greedy), `top_p`,
    `repetition_penalty`, and `json_schema` (a JSON schema dict the output must satisfy).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: Any
    tokenizer: Any
    model_ref: str
    max_new_tokens: int = 256

    _grammar_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _grammar_compiler: Any = PrivateAttr(default=None)
    _grammars: dict[str, Any] = PrivateAttr(default_factory=dict)

    @property
    def _llm_type(self) -> str:
        return "compllm-transformers"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_ref": self.model_ref}

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        import torch

        chat = [{"role": _ROLES.get(m.type, "user"), "content": m.text} for m in messages]
        inputs = self.tokenizer.apply_chat_template(
            chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(self.model.device)
        settings = {k: kwargs[k] for k in _GENERATION_KEYS if kwargs.get(k) is not None}
        temperature = float(settings.pop("temperature", 0.0))
        generate_kwargs: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            **settings,
            "do_sample": temperature > 0,
            "pad_token_id": self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
        }
        if temperature > 0:
            generate_kwargs["temperature"] = temperature
        else:
            generate_kwargs["top_p"] = None  # greedy: silence sampling-only settings
        if kwargs.get("json_schema") is not None:
            generate_kwargs["logits_processor"] = [self._json_processor(kwargs["json_schema"])]
        prompt_length = inputs["input_ids"].shape[1]
        with torch.inference_mode():
            output = self.model.generate(**inputs, **generate_kwargs)
        new_tokens = output[0][prompt_length:]
        text = self.tokenizer.decode(new_tokens, skip_special_tokens=True)
        finish = "length" if len(new_tokens) >= generate_kwargs["max_new_tokens"] else "stop"
        text = _cut_at_stop(text, stop)
        message = AIMessage(
            content=text,
            usage_metadata={
                "input_tokens": int(prompt_length),
                "output_tokens": len(new_tokens),
                "total_tokens": int(prompt_length + len(new_tokens)),
            },
            response_metadata={"model": self.model_ref, "finish_reason": finish},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _json_processor(self, schema: dict[str, Any]) -> Any:
        """A fresh xgrammar logits processor (they are stateful) for a cached grammar."""
        import xgrammar as xgr
        from xgrammar.contrib.hf import LogitsProcessor

        key = json.dumps(schema)  # keep property order: it is the order the model writes
        with self._grammar_lock:
            if self._grammar_compiler is None:
                info = xgr.TokenizerInfo.from_huggingface(
                    self.tokenizer, vocab_size=self.model.config.vocab_size
                )
                self._grammar_compiler = xgr.GrammarCompiler(info)
            if key not in self._grammars:
                # Compact JSON: small models ramble in free whitespace and run out of tokens.
                self._grammars[key] = self._grammar_compiler.compile_json_schema(
                    key, any_whitespace=False
                )
            return LogitsProcessor(self._grammars[key])


def _cut_at_stop(text: str, stop: Sequence[str] | None) -> str:
    for marker in stop or ():
        index = text.find(marker)
        if index >= 0:
            text = text[:index]
    return text
