"""Sentence embeddings straight from transformers, for sentence-transformers folders whose
pipeline is a transformer, mean pooling and normalisation (all-MiniLM-L6-v2, the embedded
routing model, is one).

Why not `HuggingFaceEmbeddings`: importing sentence-transformers also imports scikit-learn
and SciPy, 2-3 s on a 2-core CPU before the first query can be routed; the transformer
and the pooling are a few lines. The vectors are the same (the tests compare the two on the
embedded model). Any other folder or hub id goes through `HuggingFaceEmbeddings`.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from langchain_core.embeddings import Embeddings

__all__ = ["MeanPoolingEncoder", "is_mean_pooling_folder"]

_PIPELINE = [
    "sentence_transformers.models.Transformer",
    "sentence_transformers.models.Pooling",
    "sentence_transformers.models.Normalize",
]
_BATCH = 32  # sentence-transformers' default


def is_mean_pooling_folder(path: str | Path) -> bool:
    """Whether `path` is a local sentence-transformers folder that `MeanPoolingEncoder`
    reproduces exactly: transformer, mean pooling over tokens, unit length."""
    folder = Path(path)
    try:
        modules = json.loads((folder / "modules.json").read_text())
        pooling = json.loads((folder / modules[1]["path"] / "config.json").read_text())
        json.loads((folder / "sentence_bert_config.json").read_text())  # the length limit
    except (OSError, ValueError, LookupError, TypeError):
        return False
    others = {k for k, v in pooling.items() if k.startswith("pooling_mode_") and v}
    return (
        [m.get("type") for m in modules] == _PIPELINE
        and modules[0].get("path") == ""
        and others == {"pooling_mode_mean_tokens"}
    )


class MeanPoolingEncoder(Embeddings):
    """A sentence-transformers folder of the kind `is_mean_pooling_folder` accepts, run
    with transformers: tokens truncated at the folder's `max_seq_length`, the last hidden
    states averaged over real tokens, scaled to unit length."""

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        folder = Path(path)
        if not is_mean_pooling_folder(folder):
            raise ValueError(f"{folder} is not a mean-pooling sentence-transformers folder")
        settings = json.loads((folder / "sentence_bert_config.json").read_text())
        self.max_length = int(settings.get("max_seq_length") or 512)
        self.lowercase = bool(settings.get("do_lower_case"))
        self.device = device
        self._torch = torch
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # (a 0.1 s load)
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(folder)
            self._model = AutoModel.from_pretrained(folder).to(device).eval()
        finally:
            if bars:
                hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]
        # One encoding at a time: the hub shares this object between threads, and a fast
        # tokenizer called from two threads at once can fail ("Already borrowed").
        self._lock = threading.Lock()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), _BATCH):
            vectors.extend(self._encode(texts[start : start + _BATCH]))
        return vectors

    def embed_query(self, text: str) -> list[float]:
        return self._encode([text])[0]

    def _encode(self, texts: list[str]) -> list[list[float]]:
        torch = self._torch
        if self.lowercase:
            texts = [t.lower() for t in texts]
        with self._lock, torch.inference_mode():
            batch: Any = self._tokenizer(
                texts,
                padding=True,
                truncation="longest_first",
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            hidden = self._model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        unit = torch.nn.functional.normalize(mean, p=2, dim=1)
        return unit.float().cpu().tolist()  # type: ignore[no-any-return]
