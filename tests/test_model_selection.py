"""Which backend runs a local chat model: llama.cpp for GGUF files and for the embedded
SmolLM2 when llama-cpp-python is installed, transformers otherwise; `$COMPLLM_BACKEND`
forces the embedded model's backend. Loading the real GGUF on llama.cpp takes well under a
second; the transformers path is checked up to the call that would load it (it converts
the GGUF first, ~40 s), which a fake stands in for."""

from __future__ import annotations

import shutil
import sys

import pytest

from compllm import models
from compllm.errors import ModelLoadError
from compllm.llamacpp_chat import llama_cpp_available
from compllm.models import BACKEND_ENV, EMBEDDED_CHAT_MODEL, ModelHub, chat_backend

needs_llama_cpp = pytest.mark.skipif(
    not llama_cpp_available(),
    reason="llama-cpp-python is the `fast` extra (make setup)",
)


@pytest.fixture(autouse=True)
def no_forced_backend(monkeypatch):
    monkeypatch.delenv(BACKEND_ENV, raising=False)


@pytest.fixture
def without_llama_cpp(monkeypatch):
    """As on a machine where llama-cpp-python is not installed: importing it fails."""
    monkeypatch.setitem(sys.modules, "llama_cpp", None)


@pytest.fixture
def fake_transformers_load(monkeypatch):
    """Records what the transformers path would load, instead of converting and loading."""
    loaded: list[str] = []

    class Loaded:
        pass

    def load_transformers(path, *, trust_remote_code=False):
        loaded.append(path)
        return Loaded(), Loaded()

    monkeypatch.setattr(ModelHub, "_embedded_smollm2", lambda self: "converted-folder")
    monkeypatch.setattr(models, "load_transformers", load_transformers)
    return loaded


@needs_llama_cpp
def test_the_embedded_model_runs_on_llama_cpp_when_it_is_installed():
    from compllm.llamacpp_chat import LlamaCppChatModel

    said: list[str] = []
    chat = ModelHub(on_event=said.append).chat_model(EMBEDDED_CHAT_MODEL)
    assert isinstance(chat, LlamaCppChatModel)
    assert chat.model_path.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")  # the packaged file
    assert said[0] == f"loading {EMBEDDED_CHAT_MODEL} on llama.cpp ..."
    assert chat.invoke("Say yes.", max_new_tokens=2).text


def test_without_llama_cpp_the_embedded_model_runs_on_transformers(
    without_llama_cpp, fake_transformers_load
):
    from compllm.transformers_chat import TransformersChatModel

    said: list[str] = []
    assert chat_backend(EMBEDDED_CHAT_MODEL) == "transformers"
    chat = ModelHub(on_event=said.append).chat_model(EMBEDDED_CHAT_MODEL)
    assert isinstance(chat, TransformersChatModel)
    assert fake_transformers_load == ["converted-folder"]
    assert said[0] == f"loading {EMBEDDED_CHAT_MODEL} on transformers ..."


def test_the_environment_forces_transformers(monkeypatch, fake_transformers_load):
    monkeypatch.setenv(BACKEND_ENV, "transformers")
    assert chat_backend(EMBEDDED_CHAT_MODEL) == "transformers"
    ModelHub().chat_model(EMBEDDED_CHAT_MODEL)
    assert fake_transformers_load == ["converted-folder"]


@needs_llama_cpp
def test_the_environment_forces_llama_cpp(monkeypatch):
    monkeypatch.setenv(BACKEND_ENV, "LlamaCpp")  # case does not matter
    assert chat_backend(EMBEDDED_CHAT_MODEL) == "llamacpp"


def test_forcing_llama_cpp_without_it_is_an_error_not_a_fallback(monkeypatch, without_llama_cpp):
    monkeypatch.setenv(BACKEND_ENV, "llamacpp")
    with pytest.raises(ModelLoadError, match=r"llama-cpp-python is not installed.*\[fast\]"):
        ModelHub().chat_model(EMBEDDED_CHAT_MODEL)


def test_an_unknown_backend_name_is_an_error(monkeypatch):
    monkeypatch.setenv(BACKEND_ENV, "vllm")
    with pytest.raises(ModelLoadError, match=r"must be one of llamacpp, transformers"):
        chat_backend(EMBEDDED_CHAT_MODEL)


def test_models_only_one_backend_can_run_ignore_the_preference(monkeypatch):
    monkeypatch.setenv(BACKEND_ENV, "llamacpp")
    assert chat_backend("HuggingFaceTB/SmolLM2-360M-Instruct") == "transformers"
    assert chat_backend("openai:qwen@http://127.0.0.1:8000/v1") == "remote"
    monkeypatch.setenv(BACKEND_ENV, "transformers")
    with pytest.raises(ModelLoadError, match=r"GGUF file, which compllm runs on llama.cpp only"):
        chat_backend("/models/qwen.gguf")


@needs_llama_cpp
@pytest.mark.parametrize("form", ["path", "gguf:path"])
def test_any_local_gguf_file_is_a_model_reference(tmp_path, form):
    from compllm.llamacpp_chat import LlamaCppChatModel

    copy = tmp_path / "my-model.GGUF"
    shutil.copy(ModelHub()._gguf_path(EMBEDDED_CHAT_MODEL), copy)
    ref = str(copy) if form == "path" else f"gguf:{copy}"
    hub = ModelHub()
    assert hub.estimate_chat_model_bytes(ref) > 0
    chat = hub.chat_model(ref)
    assert isinstance(chat, LlamaCppChatModel)
    assert chat.model_path == str(copy)
    assert hub.estimate_chat_model_bytes(ref) == chat.memory_bytes()
    assert models.parameter_count(hub, ref) == 134_515_008  # SmolLM2-135M


def test_a_missing_gguf_file_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match=r"no GGUF file at .*missing.gguf"):
        ModelHub().chat_model(f"gguf:{tmp_path / 'missing.gguf'}")
    assert ModelHub().estimate_chat_model_bytes(str(tmp_path / "missing.gguf")) == 0
