"""Remote models: experts, planners and aggregators served by an OpenAI-compatible engine
(vLLM, llama.cpp's server, TGI, SGLang), called through LangChain's `ChatOpenAI`.

A model reference names the served model and the endpoint, anywhere a model id is accepted
(an expert's `model:`, `--planner-model`, `Context.aggregator_model`, ...):

    openai:MODEL@http://HOST:PORT/v1[?timeout=60&api_key_env=NAME&stream=true&json=object]

- `MODEL`: the name the engine serves (vLLM's `--served-model-name`, llama.cpp's alias).
- `timeout`: seconds per request (default 120). Retries are compllm's (the expert retry
  policy), so the client itself does not retry.
- `api_key_env`: the environment variable that holds the key (default `OPENAI_API_KEY`; an
  engine without keys gets a placeholder). Keys never appear in a reference.
- `stream`: stream tokens from the engine (token usage only where the engine sends it).
- `json`: how the planner's JSON schema is sent: `schema` (default: OpenAI's
  `json_schema`, as vLLM and SGLang take it), `object` (`{"type": "json_object", "schema":
  ...}`, as llama.cpp's server takes it) or `off`.

Requests carry the expert's generation settings: `max_new_tokens` becomes
`max_completion_tokens` and `max_tokens`;
`repetition_penalty` is sent as the engines' extra field; the planner's JSON schema becomes
`response_format`. Remote models take no memory in the pool's budget, and calls to one
endpoint run concurrently (no batching: the engine batches).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit, urlunsplit

from langchain_core.language_models import BaseChatModel

from compllm.errors import ConfigError

__all__ = ["RemoteEndpoint", "is_remote", "parse_remote", "remote_chat_model"]

_PREFIX = "openai:"
_PLACEHOLDER_KEY = "not-needed"


@dataclass(frozen=True)
class RemoteEndpoint:
    model: str
    base_url: str
    timeout_s: float = 120.0
    api_key_env: str = "OPENAI_API_KEY"
    stream: bool = False
    json_mode: Literal["schema", "object", "off"] = "schema"


def is_remote(ref: str) -> bool:
    return ref.startswith(_PREFIX)


def parse_remote(ref: str) -> RemoteEndpoint:
    """The endpoint a remote reference names; `ConfigError` says what is wrong with it."""
    body = ref.removeprefix(_PREFIX)
    cut = max(body.find("@http://"), body.find("@https://"))
    if cut <= 0:
        raise ConfigError(f"remote model {ref!r}: expected openai:MODEL@http(s)://HOST:PORT/PATH")
    model, url = body[:cut], body[cut + 1 :]
    parts = urlsplit(url)
    if not parts.hostname:
        raise ConfigError(f"remote model {ref!r}: the endpoint URL has no host")
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = sorted(set(options) - {"timeout", "api_key_env", "stream", "json"})
    if unknown:
        raise ConfigError(f"remote model {ref!r}: unknown options {', '.join(unknown)}")
    try:
        timeout = float(options.get("timeout", 120.0))
    except ValueError:
        raise ConfigError(f"remote model {ref!r}: timeout must be a number") from None
    if timeout <= 0:
        raise ConfigError(f"remote model {ref!r}: timeout must be positive")
    json_mode = options.get("json", "schema")
    if json_mode not in ("schema", "object", "off"):
        raise ConfigError(f"remote model {ref!r}: json must be schema, object or off")
    return RemoteEndpoint(
        model=model,
        base_url=urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")),
        timeout_s=timeout,
        api_key_env=options.get("api_key_env", "OPENAI_API_KEY"),
        stream=options.get("stream", "false").lower() in ("1", "true", "yes"),
        json_mode=json_mode,  # type: ignore[arg-type]  # checked above
    )


def remote_chat_model(ref: str) -> BaseChatModel:
    """A `ChatOpenAI` for the endpoint `ref` names (no request is made here)."""
    endpoint = parse_remote(ref)
    try:
        from langchain_openai import ChatOpenAI
    except ImportError:
        raise ConfigError(
            'remote models need langchain-openai: pip install "comp-llm[remote]"'
        ) from None

    class RemoteChatModel(ChatOpenAI):
        """`ChatOpenAI` that understands compllm's generation settings."""

        def _get_request_payload(
            self, input_: Any, *, stop: list[str] | None = None, **kwargs: Any
        ) -> dict[str, Any]:
            settings = _openai_settings(kwargs, endpoint.json_mode)
            return super()._get_request_payload(input_, stop=stop, **settings)

    return RemoteChatModel(
        model=endpoint.model,
        base_url=endpoint.base_url,
        api_key=os.environ.get(endpoint.api_key_env) or _PLACEHOLDER_KEY,
        timeout=endpoint.timeout_s,
        max_retries=0,
        streaming=endpoint.stream,
        stream_usage=True,
        temperature=0.0,
    )


def _openai_settings(settings: dict[str, Any], json_mode: str = "schema") -> dict[str, Any]:
    """compllm's generation settings as OpenAI chat-completion parameters."""
    settings = dict(settings)
    out: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    if (tokens := settings.pop("max_new_tokens", None)) is not None:
        out["max_tokens"] = int(tokens)  # sent by ChatOpenAI as max_completion_tokens ...
        extra["max_tokens"] = int(tokens)  # ... which older engines ignore: send both
    if (penalty := settings.pop("repetition_penalty", None)) is not None and penalty != 1.0:
        # Not an OpenAI field: vLLM, TGI and SGLang read repetition_penalty, llama.cpp
        # repeat_penalty; each ignores the other.
        extra.update(repetition_penalty=penalty, repeat_penalty=penalty)
    if extra:
        out["extra_body"] = extra
    if (schema := settings.pop("json_schema", None)) is not None and json_mode != "off":
        out["response_format"] = (
            {"type": "json_schema", "json_schema": {"name": "plan", "schema": schema}}
            if json_mode == "schema"
            else {"type": "json_object", "schema": schema}
        )
    for key in ("temperature", "top_p"):
        if settings.get(key) is not None:
            out[key] = settings.pop(key)
    return out
