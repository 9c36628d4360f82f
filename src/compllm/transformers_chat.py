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
        message = self._generate_messages([messages], stop=stop, **kwargs)[0]
        return ChatResult(generations=[ChatGeneration(message=message)])

    def generate_batch(
        self, conversations: Sequence[Sequence[BaseMessage]], **kwargs: Any
    ) -> list[AIMessage]:
        """Answer several conversations in one left-padded `generate` call (same settings).
        The pool uses it for sub-queries that are ready together on the same weights."""
        return self._generate_messages(conversations, **kwargs)

    def memory_bytes(self) -> int:
        """Bytes held by the weights (parameters and buffers; tied tensors counted once)."""
        from compllm.models import weights_bytes

        return weights_bytes(self.model)

    def _generate_messages(
        self,
        conversations: Sequence[Sequence[BaseMessage]],
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> list[AIMessage]:
        import torch

        prompts = [
            self.tokenizer.apply_chat_template(
                [{"role": _ROLES.get(m.type, "user"), "content": m.text} for m in messages],
                add_generation_prompt=True,
                tokenize=False,
            )
            for messages in conversations
        ]
        # The chat template already wrote the special tokens; padding goes on the left so
        # that every row's continuation starts at the same column.
        inputs = self.tokenizer(
            prompts, return_tensors="pt", padding=True, add_special_tokens=False
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
            if len(prompts) > 1:
                raise ValueError("json_schema decoding takes one conversation at a time")
            generate_kwargs["logits_processor"] = [self._json_processor(kwargs["json_schema"])]
        prompt_length = inputs["input_ids"].shape[1]
        with torch.inference_mode():
            output = self.model.generate(**inputs, **generate_kwargs)
        stop_ids = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id} - {None}
        messages = []
        for row, attention in zip(output, inputs["attention_mask"], strict=True):
            new_tokens = row[prompt_length:].tolist()
            # A finished row is padded to the batch's length: cut at its first stop token.
            length = next((i for i, t in enumerate(new_tokens) if t in stop_ids), None)
            generated = new_tokens if length is None else new_tokens[:length]
            text = _cut_at_stop(self.tokenizer.decode(generated, skip_special_tokens=True), stop)
            input_tokens = int(attention.sum())
            output_tokens = len(generated) + (0 if length is None else 1)  # + the stop token
            finish = "length" if length is None else "stop"
            messages.append(
                AIMessage(
                    content=text,
                    usage_metadata={
                        "input_tokens": input_tokens,
                        "output_tokens": output_tokens,
                        "total_tokens": input_tokens + output_tokens,
                    },
                    response_metadata={"model": self.model_ref, "finish_reason": finish},
                )
            )
        return messages

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
