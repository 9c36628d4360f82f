"""A LangChain chat model on llama.cpp, in process (llama-cpp-python), reading a GGUF file.

Why its own decoding loop instead of `llama_cpp.Llama`: `Llama` decodes one sequence at a
time and remembers only the previous prompt. This model drives llama.cpp's C API directly
(the bindings llama-cpp-python ships) so that it can

- decode several sequences in one `llama_decode` (`generate_batch`: the pool batches
  sub-queries that are ready together on the same weights; sequences that end early free
  their place for the next waiting one);
- keep a prompt cache per sequence slot: each call takes the slot whose cached tokens share
  the longest prefix with its prompt and evaluates only the rest, so the experts' system
  prompts (and a planner's long prompt) are not evaluated again on every call.

Each slot has a KV cache of its own (llama.cpp's non-unified KV cache). That costs memory
(`context_tokens` cells per slot, allocated at load) but keeps every answer independent of
what else runs or is cached: a sequence attends only over its own cells, so greedy output
does not change with the batch it ran in (a unified cache changes the rounding of attention
with the other sequences' cells, and with it greedy answers).

One llama.cpp context is not thread-safe: calls on one instance are serialised by a lock
(concurrent callers wait; the pool batches instead of waiting). The call-time settings are
those of `compllm.local_chat` (unknown keyword arguments raise `TypeError`); `json_schema`
constrains decoding with a llama.cpp grammar built from the schema.
"""

from __future__ import annotations

import codecs
import collections
import ctypes
import json
import logging
import math
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field, PrivateAttr

from compllm.local_chat import CallSettings, StopStringFilter, chat_roles

__all__ = [
    "THREADS_ENV",
    "LlamaCppChatModel",
    "cpu_threads",
    "gguf_memory_bytes",
    "kv_cache_bytes",
    "llama_cpp_available",
    "read_gguf_header",
]

log = logging.getLogger(__name__)

_KV_BYTES_PER_VALUE = 2  # llama.cpp's default KV cache type is f16
_TOKENS_PER_DECODE = 512  # most tokens (prompt chunks and new tokens) in one llama_decode


def llama_cpp_available() -> bool:
    """Whether llama-cpp-python is installed and its compiled library loads."""
    try:
        import llama_cpp  # noqa: F401
    except (ImportError, OSError):  # OSError: the package is there but its .so is not
        return False
    return True


THREADS_ENV = "COMPLLM_THREADS"


def cpu_threads() -> int:
    """`$COMPLLM_THREADS`, else every CPU core this process may run on.

    All cores is fastest on a machine of one's own; where other processes keep the cores
    busy, fewer threads are faster (llama.cpp's threads meet at a barrier several times per
    token, and a thread waiting for a core stalls the others: on 2 cores next to two busy
    processes, 1 thread gave ~50 tokens/s and 2 threads ~10-30)."""
    if os.environ.get(THREADS_ENV):
        return max(1, int(os.environ[THREADS_ENV]))
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def kv_cache_bytes(metadata: Mapping[str, Any], cells: int) -> int:
    """Bytes of an f16 KV cache of `cells` token positions for a standard-attention model
    described by GGUF metadata (`llama.block_count`, `llama.attention.head_count_kv`, ...)."""
    arch = str(metadata["general.architecture"])

    def key(name: str) -> Any:
        return metadata.get(f"{arch}.{name}")

    layers = int(key("block_count"))
    heads = int(key("attention.head_count"))
    kv_heads = int(key("attention.head_count_kv") or heads)
    head_dim = int(key("embedding_length")) // heads
    key_dim = int(key("attention.key_length") or head_dim)
    value_dim = int(key("attention.value_length") or head_dim)
    return layers * cells * kv_heads * (key_dim + value_dim) * _KV_BYTES_PER_VALUE


def gguf_memory_bytes(
    path: str,
    *,
    context_tokens: int | None = None,
    parallel_sequences: int | None = None,
    saved_prefix_tokens: int | None = None,
) -> int:
    """What `LlamaCppChatModel.memory_bytes()` will report for this GGUF (with these
    settings, or the model's defaults), read from the file's header without loading it:
    the tensors' bytes plus the KV caches of the sequence slots and the saved prompts."""
    fields = LlamaCppChatModel.model_fields

    def setting(value: int | None, name: str) -> int:
        return int(fields[name].default) if value is None else value

    cells = _context_cells(setting(context_tokens, "context_tokens")) * setting(
        parallel_sequences, "parallel_sequences"
    ) + setting(saved_prefix_tokens, "saved_prefix_tokens")
    metadata, tensors_bytes = read_gguf_header(path)
    return tensors_bytes + kv_cache_bytes(metadata, cells)


_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?"}
_GGUF_SCALARS.update({10: "<Q", 11: "<q", 12: "<d"})
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def read_gguf_header(path: str) -> tuple[dict[str, Any], int]:
    """A GGUF file's scalar metadata and its tensors' total bytes, from the header alone.
    (gguf's `GGUFReader` parses every array, the vocabulary too: seconds, not milliseconds.)"""
    import struct

    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    with open(path, "rb") as file:
        if file.read(4) != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")

        def number(fmt: str) -> Any:
            return struct.unpack(fmt, file.read(struct.calcsize(fmt)))[0]

        def string() -> str:
            return file.read(number("<Q")).decode("utf-8", errors="replace")

        def value(kind: int) -> Any:
            if kind == _GGUF_STRING:
                return string()
            if kind == _GGUF_ARRAY:
                item_kind, count = number("<I"), number("<Q")
                if item_kind in _GGUF_SCALARS:  # skipped whole: arrays are not needed here
                    file.seek(count * struct.calcsize(_GGUF_SCALARS[item_kind]), 1)
                else:
                    for _ in range(count):
                        value(item_kind)
                return None
            return number(_GGUF_SCALARS[kind])

        version, tensor_count, field_count = number("<I"), number("<Q"), number("<Q")
        if version < 2:
            raise ValueError(f"{path}: GGUF version {version} is too old")
        metadata: dict[str, Any] = {}
        for _ in range(field_count):
            key = string()
            metadata[key] = value(number("<I"))
        tensors_bytes = 0
        for _ in range(tensor_count):
            string()  # the tensor's name
            shape = [number("<Q") for _ in range(number("<I"))]
            block_size, block_bytes = GGML_QUANT_SIZES[GGMLQuantizationType(number("<I"))]
            number("<Q")  # the tensor's offset in the data section
            tensors_bytes += math.prod(shape) // block_size * block_bytes
    return metadata, tensors_bytes


def _context_cells(context_tokens: int) -> int:
    return math.ceil(context_tokens / 256) * 256  # llama.cpp pads each cache to 256 cells


class LlamaCppChatModel(BaseChatModel):
    """Chat model on llama.cpp, in process. Loads `model_path` (a GGUF file) on creation.

    Call-time keyword arguments: `max_new_tokens`, `temperature` (0 = greedy), `top_p`,
    `repetition_penalty` (over the prompt and the answer, as transformers applies it), and
    `json_schema` (a JSON schema dict the output must satisfy); their defaults are the fields
    of the same names. Others raise `TypeError`.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model_path: str
    model_ref: str = ""  # the reference it was loaded for (defaults to model_path)
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None  # sampling seed when temperature > 0 (None: a random one)
    context_tokens: int = Field(default=2048, ge=16)  # prompt + answer, per sequence
    parallel_sequences: int = Field(default=4, ge=1, le=64)  # decoded together; each a slot
    prefix_cache: bool = True  # reuse the cached tokens of the most similar earlier prompt
    # System prompts kept cached apart from the slots, in tokens (their KV memory is counted).
    saved_prefix_tokens: int = Field(default=2048, ge=0)
    threads: int = Field(default_factory=cpu_threads, ge=1)

    _engine: _Engine = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        if not self.model_ref:
            self.model_ref = self.model_path
        self._engine = _Engine(
            self.model_path,
            context_tokens=self.context_tokens,
            slots=self.parallel_sequences,
            threads=self.threads,
            saved_prefix_tokens=self.saved_prefix_tokens if self.prefix_cache else 0,
        )

    @property
    def _llm_type(self) -> str:
        return "compllm-llamacpp"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_ref": self.model_ref}

    # -- LangChain ---------------------------------------------------------------------------

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        settings = CallSettings.resolve(self, kwargs)
        job = self._job(messages, settings, stop)
        for _ in self._engine.run([job], prefix_cache=self.prefix_cache):
            pass
        return ChatResult(generations=[ChatGeneration(message=self._message(job))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        """Text as it is decoded (held back only while it may be the start of a stop
        string), then an empty chunk with the usage and the finish reason."""
        settings = CallSettings.resolve(self, kwargs)
        job = self._job(messages, settings, stop)
        for _, text in self._engine.run([job], prefix_cache=self.prefix_cache):
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
            if run_manager is not None:
                run_manager.on_llm_new_token(text, chunk=chunk)
            yield chunk
        final = self._message(job)
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata=final.usage_metadata,
                response_metadata=final.response_metadata,
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
        """Answer several conversations with the same settings, decoding up to
        `parallel_sequences` of them together (the rest start as others finish). Each
        answer is the one its conversation gets alone. `on_text(i, text)` receives each
        conversation's text as it is decoded."""
        settings = CallSettings.resolve(self, kwargs)
        jobs = [self._job(messages, settings, None) for messages in conversations]
        for index, text in self._engine.run(jobs, prefix_cache=self.prefix_cache):
            if on_text is not None:
                on_text(index, text)
        return [self._message(job) for job in jobs]

    # -- what the pool and the hub read --------------------------------------------------------

    def memory_bytes(self) -> int:
        """Bytes this model holds: its tensors, the KV cache of every sequence slot
        (allocated at load, whatever the calls use) and at most `saved_prefix_tokens` of
        saved system prompts. Compute buffers are not counted."""
        return self._engine.weights_bytes + self._engine.kv_bytes

    def parameter_count(self) -> int:
        return self._engine.parameters

    def chat_prompt(self, messages: Sequence[BaseMessage]) -> str:
        """The prompt text the model's chat template makes of `messages`."""
        return self._engine.render(chat_roles(messages))

    # -- internals ------------------------------------------------------------------------------

    def _job(
        self, messages: Sequence[BaseMessage], settings: CallSettings, stop: list[str] | None
    ) -> _Job:
        prompt = self._engine.tokenize(self.chat_prompt(messages))
        if not prompt:
            raise ValueError(f"the chat template of {self.model_ref} made an empty prompt")
        if len(prompt) >= self.context_tokens:
            raise ValueError(
                f"the prompt has {len(prompt)} tokens; {self.model_ref} holds "
                f"{self.context_tokens} per sequence (raise context_tokens)"
            )
        seed = self.seed if self.seed is not None else int.from_bytes(os.urandom(4), "little")
        return _Job(
            prompt=prompt,
            shared_prefix=self._system_prefix(messages, prompt),
            settings=settings,
            max_new_tokens=min(settings.max_new_tokens, self.context_tokens - len(prompt)),
            stop=StopStringFilter(stop),
            seed=seed,
        )

    def _system_prefix(self, messages: Sequence[BaseMessage], prompt: list[int]) -> int:
        """How many tokens of `prompt` the leading system messages make: the part other
        calls of the same expert share."""
        leading = 0
        while leading < len(messages) and messages[leading].type == "system":
            leading += 1
        if not leading or leading == len(messages):
            return 0
        try:
            text = self._engine.render(chat_roles(messages[:leading]), generation_prompt=False)
        except Exception:  # a template that cannot render system messages alone
            return 0
        tokens = self._engine.tokenize(text)
        return len(tokens) if prompt[: len(tokens)] == tokens else 0

    def _message(self, job: _Job) -> AIMessage:
        usage: UsageMetadata = {
            "input_tokens": len(job.prompt),
            "output_tokens": len(job.generated),
            "total_tokens": len(job.prompt) + len(job.generated),
            "input_token_details": {"cache_read": job.cached_tokens},
        }
        return AIMessage(
            content=job.stop.text,
            usage_metadata=usage,
            response_metadata={
                "model": self.model_ref,
                "model_provider": "llama.cpp",
                "finish_reason": job.finish_reason,
            },
        )


@dataclass(eq=False)
class _Job:
    """One conversation being answered."""

    prompt: list[int]
    settings: CallSettings
    max_new_tokens: int
    stop: StopStringFilter
    seed: int
    generated: list[int] = field(default_factory=list)  # incl. the end-of-generation token
    pending: list[int] = field(default_factory=list)  # tokens to evaluate next
    slot: int = -1
    cached_tokens: int = 0
    shared_prefix: int = 0  # tokens of the leading system messages (0: none)
    save_at: int = 0  # save the sequence's state once this many tokens are in (0: no)
    finish_reason: str | None = None
    sampler: Any = None  # penalties, then greedy or temperature / top-p / draw
    grammar: Any = None  # the JSON schema's grammar sampler, checked after the choice
    decoder: Any = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))
    raw_text: str = ""


@dataclass
class _Slot:
    tokens: list[int] = field(default_factory=list)  # what its KV cache holds, in order
    last_used: int = 0
    busy: bool = False


class _Engine:
    """A llama.cpp model and context with `slots` sequences, driven through the C API."""

    def __init__(
        self,
        path: str,
        *,
        context_tokens: int,
        slots: int,
        threads: int,
        saved_prefix_tokens: int,
    ) -> None:
        import llama_cpp as lib

        if logging.getLogger("llama-cpp-python").level == logging.NOTSET:
            # llama.cpp logs every tensor on load; keep its errors only.
            logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
        self.lib = lib
        lib.llama_backend_init()
        if not os.path.isfile(path):
            raise ValueError(f"no GGUF file at {path}")
        model = lib.llama_model_load_from_file(path.encode(), lib.llama_model_default_params())
        if model is None:
            raise ValueError(f"llama.cpp cannot load {path} (not a GGUF model it supports)")
        self.model = model
        self.vocab = lib.llama_model_get_vocab(model)
        params = lib.llama_context_default_params()
        params.n_ctx = _context_cells(context_tokens) * slots
        params.n_seq_max = slots
        params.kv_unified = False  # a KV cache per slot: see the module's docstring
        params.n_batch = params.n_ubatch = _TOKENS_PER_DECODE
        params.n_threads = params.n_threads_batch = threads
        params.no_perf = True
        context = lib.llama_init_from_model(model, params)
        if context is None:
            lib.llama_model_free(model)
            raise ValueError(f"llama.cpp cannot make a context for {path}")
        self.context = context
        self.memory = lib.llama_get_memory(context)
        self.batch = lib.llama_batch_init(_TOKENS_PER_DECODE, 0, 1)
        self.slots = [_Slot() for _ in range(slots)]
        self.n_vocab = lib.llama_vocab_n_tokens(self.vocab)
        self.metadata = self._metadata()
        self.weights_bytes = int(lib.llama_model_size(model))
        cells = _context_cells(context_tokens) * slots + saved_prefix_tokens
        self.kv_bytes = kv_cache_bytes(self.metadata, cells)
        self.parameters = int(lib.llama_model_n_params(model))
        self.template = self._chat_template(path)
        self.lock = threading.Lock()
        self.clock = 0
        self.grammars: dict[str, str] = {}
        # System prompts' KV caches kept apart from the slots (oldest out first), so that
        # more experts' prompts stay cached than there are slots.
        self.saved: collections.OrderedDict[tuple[int, ...], Any] = collections.OrderedDict()
        self.saved_limit = saved_prefix_tokens
        self.candidate_buffer: Any = None

    def __del__(self) -> None:
        lib = getattr(self, "lib", None)
        if lib is None:
            return
        if getattr(self, "batch", None) is not None:
            lib.llama_batch_free(self.batch)
        if getattr(self, "context", None) is not None:
            lib.llama_free(self.context)
        if getattr(self, "model", None) is not None:
            lib.llama_model_free(self.model)

    # -- text ---------------------------------------------------------------------------------

    def _metadata(self) -> dict[str, str]:
        values: dict[str, str] = {}
        buffer = ctypes.create_string_buffer(1024)
        for i in range(self.lib.llama_model_meta_count(self.model)):
            key_length = self.lib.llama_model_meta_key_by_index(self.model, i, buffer, 1024)
            key = buffer.value.decode("utf-8", errors="replace") if key_length >= 0 else ""
            if key and self.lib.llama_model_meta_val_str_by_index(self.model, i, buffer, 1024):
                values[key] = buffer.value.decode("utf-8", errors="replace")
        return values

    def _chat_template(self, path: str) -> Any:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        source = self.lib.llama_model_chat_template(self.model, None)
        if not source:
            raise ValueError(f"{path} has no chat template (tokenizer.chat_template)")

        def raise_exception(message: str) -> None:
            raise ValueError(f"chat template: {message}")

        # As transformers renders chat templates, so that both backends see the same prompt.
        environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        environment.globals["raise_exception"] = raise_exception
        return environment.from_string(source.decode("utf-8"))

    def render(self, messages: list[dict[str, str]], *, generation_prompt: bool = True) -> str:
        return str(
            self.template.render(
                messages=messages,
                add_generation_prompt=generation_prompt,
                bos_token=self._token_text(self.lib.llama_vocab_bos(self.vocab)),
                eos_token=self._token_text(self.lib.llama_vocab_eos(self.vocab)),
            )
        )

    def _token_text(self, token: int) -> str:
        return "" if token < 0 else self._piece(token, special=True).decode("utf-8", "replace")

    def tokenize(self, text: str) -> list[int]:
        """Tokens of `text`, reading the special tokens the chat template wrote (no BOS is
        added: the template writes what the model needs)."""
        data = text.encode("utf-8")
        capacity = len(data) + 16
        while True:
            buffer = (self.lib.llama_token * capacity)()
            count = self.lib.llama_tokenize(
                self.vocab, data, len(data), buffer, capacity, False, True
            )
            if count >= 0:
                return list(buffer[:count])
            capacity = -count

    def _piece(self, token: int, *, special: bool = False) -> bytes:
        buffer = ctypes.create_string_buffer(64)
        length = self.lib.llama_token_to_piece(self.vocab, token, buffer, 64, 0, special)
        if length < 0:
            buffer = ctypes.create_string_buffer(-length)
            length = self.lib.llama_token_to_piece(self.vocab, token, buffer, -length, 0, special)
        return buffer.raw[:length]

    # -- decoding -----------------------------------------------------------------------------

    def run(self, jobs: list[_Job], *, prefix_cache: bool) -> Iterator[tuple[int, str]]:
        """Answer `jobs` (filled in place), yielding `(job index, new text)` as it comes."""
        with self.lock:
            try:
                waiting = list(range(len(jobs)))
                active: list[int] = []
                while waiting or active:
                    while waiting and len(active) < len(self.slots):
                        index = waiting.pop(0)
                        self._start(jobs[index], prefix_cache=prefix_cache)
                        active.append(index)
                    for index, text in self._step([jobs[i] for i in active], active):
                        yield index, text
                    for index in [i for i in active if jobs[i].finish_reason is not None]:
                        active.remove(index)
                        self._finish(jobs[index])
            finally:  # an abandoned stream or an error: free what the jobs hold
                for job in jobs:
                    if job.slot >= 0 and self.slots[job.slot].busy:
                        self._finish(job)

    def _start(self, job: _Job, *, prefix_cache: bool) -> None:
        lib = self.lib
        free = [i for i, slot in enumerate(self.slots) if not slot.busy]
        reusable = {i: _common_prefix(self.slots[i].tokens, job.prompt) for i in free}
        saved = self._longest_saved_prefix(job.prompt) if prefix_cache else ()
        if prefix_cache and max(reusable.values()) > len(saved):
            job.slot = max(free, key=lambda i: (reusable[i], -self.slots[i].last_used))
        else:  # the least recently used slot (restoring a saved prefix into it, if any)
            job.slot = min(free, key=lambda i: self.slots[i].last_used)
        slot = self.slots[job.slot]
        keep = reusable[job.slot] if prefix_cache else 0
        if len(saved) > keep:
            lib.llama_memory_seq_rm(self.memory, job.slot, -1, -1)
            buffer = self.saved[saved]
            self.saved.move_to_end(saved)
            if lib.llama_state_seq_set_data(self.context, buffer, len(buffer), job.slot):
                slot.tokens, keep = list(saved), len(saved)
            else:
                slot.tokens, keep = [], 0
        keep = min(keep, len(job.prompt) - 1)  # the last prompt token is evaluated for logits
        if not lib.llama_memory_seq_rm(self.memory, job.slot, keep, -1):
            lib.llama_memory_seq_rm(self.memory, job.slot, -1, -1)
            keep = 0
        slot.tokens = slot.tokens[:keep]
        slot.busy = True
        self.clock += 1
        slot.last_used = self.clock
        job.cached_tokens = keep
        job.pending = job.prompt[keep:]
        worth_saving = prefix_cache and 0 < job.shared_prefix <= self.saved_limit
        if worth_saving and keep < job.shared_prefix < len(job.prompt):
            job.save_at = job.shared_prefix
        job.sampler = self._sampler(job)

    def _longest_saved_prefix(self, prompt: list[int]) -> tuple[int, ...]:
        fitting = [key for key in self.saved if tuple(prompt[: len(key)]) == key]
        return max(fitting, key=len, default=())

    def _save(self, job: _Job) -> None:
        """Keep the KV cache of the job's system prompt (its slot holds just that now)."""
        lib = self.lib
        size = lib.llama_state_seq_get_size(self.context, job.slot)
        buffer = (ctypes.c_uint8 * size)()
        if lib.llama_state_seq_get_data(self.context, buffer, size, job.slot) != size:
            return
        key = tuple(self.slots[job.slot].tokens)
        self.saved[key] = buffer
        while sum(len(k) for k in self.saved) > self.saved_limit:
            self.saved.popitem(last=False)

    def _sampler(self, job: _Job) -> Any:
        lib, settings = self.lib, job.settings
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        if settings.repetition_penalty != 1.0:
            window = len(job.prompt) + job.max_new_tokens  # the whole sequence
            penalties = lib.llama_sampler_init_penalties(
                self.n_vocab, window, settings.repetition_penalty, 0.0, 0.0
            )
            # transformers penalises every token already in the sequence, prompt included.
            for token in job.prompt:
                lib.llama_sampler_accept(penalties, token)
            lib.llama_sampler_chain_add(chain, penalties)
        if settings.json_schema is not None:
            job.grammar = lib.llama_sampler_init_grammar(
                self.vocab, self._grammar(settings.json_schema).encode(), b"root"
            )
            if job.grammar is None:
                lib.llama_sampler_free(chain)
                raise ValueError("llama.cpp cannot compile a grammar for this JSON schema")
        if settings.temperature == 0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
        else:  # transformers' order: temperature, then top-p
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(settings.temperature))
            if settings.top_p < 1.0:
                lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(settings.top_p, 1))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(job.seed))
        return chain

    def _grammar(self, schema: dict[str, Any]) -> str:
        from llama_cpp.llama_grammar import json_schema_to_gbnf

        key = json.dumps(schema)  # keep property order: it is the order the model writes
        if key not in self.grammars:
            # Compact JSON, as on transformers: small models ramble in free whitespace and
            # run out of tokens (the converter allows one optional space between tokens).
            rules = json_schema_to_gbnf(key).splitlines()
            self.grammars[key] = "\n".join(
                'space ::= ""' if rule.startswith("space ::=") else rule for rule in rules
            )
        return self.grammars[key]

    def _sample(self, job: _Job, position: int) -> int:
        """The next token from the logits at batch `position`. A grammar is checked against
        the token chosen without it, and applied to the whole vocabulary only when it
        rejects that token (as llama.cpp's own tools do: masking 49,152 tokens on every
        step halves the speed of a 135M model)."""
        lib = self.lib
        if job.grammar is None:
            return int(lib.llama_sampler_sample(job.sampler, self.context, position))
        logits = lib.llama_get_logits_ith(self.context, position)
        candidates = self._candidates(logits)
        lib.llama_sampler_apply(job.sampler, ctypes.byref(candidates))
        token = int(candidates.data[candidates.selected].id)
        single = lib.llama_token_data(token, 1.0, 0.0)
        check = lib.llama_token_data_array(ctypes.pointer(single), 1, -1, False)
        lib.llama_sampler_apply(job.grammar, ctypes.byref(check))
        if math.isinf(single.logit):  # not allowed here: choose among the allowed tokens
            candidates = self._candidates(logits)
            lib.llama_sampler_apply(job.grammar, ctypes.byref(candidates))
            lib.llama_sampler_apply(job.sampler, ctypes.byref(candidates))
            token = int(candidates.data[candidates.selected].id)
        lib.llama_sampler_accept(job.grammar, token)
        lib.llama_sampler_accept(job.sampler, token)
        return token

    def _candidates(self, logits: Any) -> Any:
        """Every token with its logit, as the samplers take them (a buffer reused)."""
        import numpy as np

        if self.candidate_buffer is None:
            dtype = np.dtype([("id", np.intc), ("logit", np.single), ("p", np.single)])
            self.candidate_buffer = np.zeros(self.n_vocab, dtype=dtype)
            self.candidate_buffer["id"] = np.arange(self.n_vocab, dtype=np.intc)
        buffer = self.candidate_buffer
        buffer["logit"] = np.ctypeslib.as_array(logits, shape=(self.n_vocab,))
        buffer["p"] = 0.0
        data = buffer.ctypes.data_as(ctypes.POINTER(self.lib.llama_token_data))
        return self.lib.llama_token_data_array(data, self.n_vocab, -1, False)

    def _step(self, jobs: list[_Job], indexes: list[int]) -> Iterator[tuple[int, str]]:
        """One llama_decode: a new token for each answering job, and as much of the waiting
        prompts as fits; then a token is sampled for each job whose input is all in."""
        lib, batch = self.lib, self.batch
        batch.n_tokens = 0
        sampled: list[tuple[int, _Job, int]] = []
        # Jobs that are answering first (one token each), then prompt chunks.
        for index, job in sorted(zip(indexes, jobs, strict=True), key=lambda p: len(p[1].pending)):
            room = _TOKENS_PER_DECODE - batch.n_tokens
            if room == 0:
                break
            slot = self.slots[job.slot]
            if job.save_at > len(slot.tokens):  # stop where the system prompt ends
                room = min(room, job.save_at - len(slot.tokens))
            chunk, job.pending = job.pending[:room], job.pending[room:]
            for token in chunk:
                position = batch.n_tokens
                batch.token[position] = token
                batch.pos[position] = len(slot.tokens)
                batch.n_seq_id[position] = 1
                batch.seq_id[position][0] = job.slot
                batch.logits[position] = False
                batch.n_tokens += 1
                slot.tokens.append(token)
            if not job.pending:
                batch.logits[batch.n_tokens - 1] = True
                sampled.append((index, job, batch.n_tokens - 1))
        status = lib.llama_decode(self.context, batch)
        if status != 0:
            for job in jobs:  # what their caches hold is unknown now: start them afresh
                lib.llama_memory_seq_rm(self.memory, job.slot, -1, -1)
                self.slots[job.slot].tokens = []
            raise RuntimeError(f"llama_decode failed with status {status}")
        for job in jobs:
            if job.save_at and len(self.slots[job.slot].tokens) == job.save_at:
                self._save(job)
                job.save_at = 0
        for index, job, position in sampled:
            token = self._sample(job, position)
            text = self._accept(job, token)
            if text:
                yield index, text

    def _accept(self, job: _Job, token: int) -> str:
        """Record a sampled token; returns the text now safe to show."""
        job.generated.append(token)
        if self.lib.llama_vocab_is_eog(self.vocab, token):
            job.finish_reason = "stop"
            job.raw_text += job.decoder.decode(b"", final=True)
            return job.stop.feed(job.raw_text) + job.stop.flush()
        job.raw_text += job.decoder.decode(self._piece(token))
        text = job.stop.feed(job.raw_text)
        if job.stop.stopped:
            job.finish_reason = "stop"
        elif len(job.generated) >= job.max_new_tokens:
            job.finish_reason = "length"
            job.raw_text += job.decoder.decode(b"", final=True)
            text += job.stop.feed(job.raw_text) + job.stop.flush()
        else:
            job.pending = [token]
        return text

    def _finish(self, job: _Job) -> None:
        slot = self.slots[job.slot]
        slot.busy = False
        if job.pending:  # abandoned midway: the cache holds what was evaluated, and no more
            job.pending = []
        for sampler in (job.sampler, job.grammar):
            if sampler is not None:
                self.lib.llama_sampler_free(sampler)
        job.sampler = job.grammar = None


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    length = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        length += 1
    return length
