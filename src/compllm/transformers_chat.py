"""A LangChain chat model over an already loaded transformers model.

One instance wraps one (model, tokenizer) pair; every expert that names the same weights
shares the instance, and each call brings its own system prompt and generation settings.
JSON-constrained decoding (for the planner) uses xgrammar's transformers logits processor.

Streaming (`_stream`) runs `generate` on a helper thread and hands its tokens over one by one,
so `stream()`, callbacks and LangGraph's `stream_mode="messages"` see the answer as it is
written; `generate_batch` answers several conversations in one padded `generate`, returns
whole messages and can report each conversation's text as it is decoded (`on_text`).
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, PrivateAttr

from compllm.local_chat import CallSettings, StopStringFilter, chat_roles, cut_at_stop

__all__ = ["TransformersChatModel"]


class TransformersChatModel(BaseChatModel):
    """Chat model backed by `transformers` `generate`.

    Call-time keyword arguments: `max_new_tokens`, `temperature` (0 = greedy), `top_p`,
    `repetition_penalty`, and `json_schema` (a JSON schema dict the output must satisfy);
    their defaults are the fields of the same names. Others raise `TypeError`.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: Any
    tokenizer: Any
    model_ref: str
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0

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
        settings = CallSettings.resolve(self, kwargs)
        message = self._generate_messages([messages], settings, stop=stop)[0]
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        """Text as it is decoded (held back only while it may be the start of a stop
        string, and while a character's bytes are incomplete), then an empty chunk with the
        usage and the finish reason. Greedy answers are the ones `invoke` gives."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList
        from transformers.generation.streamers import BaseStreamer

        settings = CallSettings.resolve(self, kwargs)
        inputs = self._inputs([messages])
        generate_kwargs = self._generate_kwargs(settings, conversations=1)
        tokens: queue.Queue[int | BaseException | None] = queue.Queue()
        cancelled = threading.Event()

        class TokenQueue(BaseStreamer):
            """Receives generate's new tokens (after the prompt, which comes first)."""

            prompt_seen = False

            def put(self, value: Any) -> None:
                if not self.prompt_seen:
                    self.prompt_seen = True
                    return
                tokens.put(int(value.reshape(-1)[0]))

            def end(self) -> None:
                tokens.put(None)

        class WhenCancelled(StoppingCriteria):
            """Ends generation when the consumer stops reading or a stop string appears."""

            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), cancelled.is_set(), dtype=torch.bool)

        def generate() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(
                        **inputs,
                        **generate_kwargs,
                        streamer=TokenQueue(),
                        stopping_criteria=StoppingCriteriaList([WhenCancelled()]),
                    )
            except BaseException as exc:  # handed to the reading side, which raises it
                tokens.put(exc)
                tokens.put(None)

        worker = threading.Thread(target=generate, name="compllm-transformers-stream")
        worker.start()
        stop_ids = self._stop_ids()
        generated: list[int] = []
        filter_ = StopStringFilter(stop)
        finish = "length"
        try:
            while (token := tokens.get()) is not None:
                if isinstance(token, BaseException):
                    raise token
                if cancelled.is_set():
                    continue  # drain what generate made before it saw the flag
                generated.append(token)
                if token in stop_ids:
                    finish = "stop"
                    cancelled.set()
                    continue
                text = self.tokenizer.decode(generated, skip_special_tokens=True)
                if text.endswith("\ufffd"):
                    continue  # a character split across tokens: wait for its other bytes
                new_text = filter_.feed(text)
                if filter_.stopped:
                    finish = "stop"
                    cancelled.set()
                if new_text:
                    yield self._chunk(new_text, run_manager)
            rest = filter_.flush()
            if not filter_.stopped:  # bytes of an unfinished character: as `invoke` shows them
                rest += filter_.feed(self.tokenizer.decode(generated, skip_special_tokens=True))
                rest += filter_.flush()
            if rest:
                yield self._chunk(rest, run_manager)
        finally:
            cancelled.set()
            worker.join()
        input_tokens = int(inputs["input_ids"].shape[1])
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata=_usage(input_tokens, len(generated)),
                response_metadata={"model": self.model_ref, "finish_reason": finish},
                chunk_position="last",
            )
        )

    def generate_batch(
        self,
        conversations: Sequence[Sequence[BaseMessage]],
        *,
        on_text: Callable[[int, str], None] | None = None,
        **kwargs: Any,
    ) -> list[AIMessage]:
        """Answer several conversations in one left-padded `generate` call (same settings).
        The pool uses it for sub-queries that are ready together on the same weights.
        `on_text(i, text)` receives each conversation's text as it is decoded."""
        settings = CallSettings.resolve(self, kwargs)
        streamer = (
            None if on_text is None else _BatchTextStreamer(self, len(conversations), on_text)
        )
        return self._generate_messages(conversations, settings, streamer=streamer)

    def memory_bytes(self) -> int:
        """Bytes held by the weights (parameters and buffers; tied tensors counted once)."""
        from compllm.models import weights_bytes

        return weights_bytes(self.model)

    # -- internals ------------------------------------------------------------------------------

    def _chunk(
        self, text: str, run_manager: CallbackManagerForLLMRun | None
    ) -> ChatGenerationChunk:
        chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
        if run_manager is not None:
            run_manager.on_llm_new_token(text, chunk=chunk)
        return chunk

    def _inputs(self, conversations: Sequence[Sequence[BaseMessage]]) -> Any:
        prompts = [
            self.tokenizer.apply_chat_template(
                chat_roles(messages), add_generation_prompt=True, tokenize=False
            )
            for messages in conversations
        ]
        # The chat template already wrote the special tokens; padding goes on the left so
        # that every row's continuation starts at the same column.
        return self.tokenizer(
            prompts, return_tensors="pt", padding=True, add_special_tokens=False
        ).to(self.model.device)

    def _generate_kwargs(self, settings: CallSettings, *, conversations: int) -> dict[str, Any]:
        sampling = settings.temperature > 0
        generate_kwargs: dict[str, Any] = {
            "max_new_tokens": settings.max_new_tokens,
            "repetition_penalty": settings.repetition_penalty,
            "do_sample": sampling,
            "pad_token_id": self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
        }
        if sampling:
            generate_kwargs.update(temperature=settings.temperature, top_p=settings.top_p)
        else:
            generate_kwargs["top_p"] = None  # greedy: silence sampling-only settings
        if settings.json_schema is not None:
            if conversations > 1:
                raise ValueError("json_schema decoding takes one conversation at a time")
            generate_kwargs["logits_processor"] = [self._json_processor(settings.json_schema)]
        return generate_kwargs

    def _stop_ids(self) -> set[int]:
        return {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id} - {None}

    def _generate_messages(
        self,
        conversations: Sequence[Sequence[BaseMessage]],
        settings: CallSettings,
        stop: list[str] | None = None,
        streamer: _BatchTextStreamer | None = None,
    ) -> list[AIMessage]:
        import torch

        inputs = self._inputs(conversations)
        generate_kwargs = self._generate_kwargs(settings, conversations=len(conversations))
        if streamer is not None:
            generate_kwargs["streamer"] = streamer
        prompt_length = inputs["input_ids"].shape[1]
        with torch.inference_mode():
            output = self.model.generate(**inputs, **generate_kwargs)
        if streamer is not None:
            streamer.flush()
        stop_ids = self._stop_ids()
        messages = []
        for row, attention in zip(output, inputs["attention_mask"], strict=True):
            new_tokens = row[prompt_length:].tolist()
            # A finished row is padded to the batch's length: cut at its first stop token.
            length = next((i for i, t in enumerate(new_tokens) if t in stop_ids), None)
            generated = new_tokens if length is None else new_tokens[:length]
            full_text = self.tokenizer.decode(generated, skip_special_tokens=True)
            text = cut_at_stop(full_text, stop)
            output_tokens = len(generated) + (0 if length is None else 1)  # + the stop token
            finish = "length" if length is None and text == full_text else "stop"
            messages.append(
                AIMessage(
                    content=text,
                    usage_metadata=_usage(int(attention.sum()), output_tokens),
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


class _BatchTextStreamer:
    """A `generate` streamer for a batch: splits each step's tokens by row and hands each
    row's new text to `on_text(row, text)` until the row's first stop token."""

    def __init__(
        self, chat: TransformersChatModel, rows: int, on_text: Callable[[int, str], None]
    ) -> None:
        self.chat, self.on_text = chat, on_text
        self.stop_ids = chat._stop_ids()
        self.tokens: list[list[int]] = [[] for _ in range(rows)]
        self.shown = [""] * rows
        self.done = [False] * rows
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # generate hands over the prompt first
            self.prompt_seen = True
            return
        for row, token in enumerate(value.reshape(-1).tolist()):
            if self.done[row]:
                continue
            if token in self.stop_ids:
                self.done[row] = True
                continue
            self.tokens[row].append(token)
            self._show(row, final=False)

    def end(self) -> None:
        pass

    def flush(self) -> None:
        for row in range(len(self.tokens)):
            self._show(row, final=True)

    def _show(self, row: int, *, final: bool) -> None:
        text = self.chat.tokenizer.decode(self.tokens[row], skip_special_tokens=True)
        if not final and text.endswith("\ufffd"):
            return  # a character split across tokens: wait for its other bytes
        if len(text) > len(self.shown[row]) and text.startswith(self.shown[row]):
            self.on_text(row, text[len(self.shown[row]) :])
            self.shown[row] = text


def _usage(input_tokens: int, output_tokens: int) -> UsageMetadata:
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
    }
