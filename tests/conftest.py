"""Shared fixtures. No test touches the network: the hub is forced offline here."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest

from compllm.registry import Registry
from tests.fakes import KeywordEmbeddings, make_test_registry


@pytest.fixture
def registry() -> Registry:
    return make_test_registry()


@pytest.fixture
def embeddings() -> KeywordEmbeddings:
    return KeywordEmbeddings()
