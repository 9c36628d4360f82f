"""The routing encoder without sentence-transformers: which folders it takes, and that its
vectors are sentence-transformers' own."""

import json
import shutil

import numpy as np
import pytest

from compllm.encoder import MeanPoolingEncoder, is_mean_pooling_folder
from compllm.models import EMBEDDED_EMBEDDINGS, ModelHub, embedded_encoder_path

TEXTS = [
    "What is the derivative of x^3 + 2x?",
    "Can my employer fire me without giving a reason?",
    "Übersetze bitte: « café naïve » — ça va ?",
    "",
    "symptoms of type 2 diabetes " * 80,  # past the 256-token limit: truncated alike
]


def folder_like_the_embedded_one(tmp_path, *, with_length_limit=True, **pooling_changes):
    folder = tmp_path / "encoder"
    source = embedded_encoder_path()
    (folder / "1_Pooling").mkdir(parents=True)
    shutil.copy(source / "modules.json", folder / "modules.json")
    if with_length_limit:  # sentence_bert_config.json: max_seq_length
        shutil.copy(source / "sentence_bert_config.json", folder / "sentence_bert_config.json")
    pooling = json.loads((source / "1_Pooling" / "config.json").read_text())
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({**pooling, **pooling_changes}))
    return folder


def test_the_embedded_model_is_a_mean_pooling_folder(tmp_path):
    assert is_mean_pooling_folder(embedded_encoder_path())
    assert is_mean_pooling_folder(folder_like_the_embedded_one(tmp_path))


def test_other_pooling_hub_ids_and_missing_folders_go_to_sentence_transformers(tmp_path):
    cls_pooling = folder_like_the_embedded_one(
        tmp_path, pooling_mode_mean_tokens=False, pooling_mode_cls_token=True
    )
    assert not is_mean_pooling_folder(cls_pooling)
    assert not is_mean_pooling_folder("sentence-transformers/all-MiniLM-L6-v2")
    assert not is_mean_pooling_folder(tmp_path / "nothing-here")
    no_limit = folder_like_the_embedded_one(tmp_path / "other", with_length_limit=False)
    assert not is_mean_pooling_folder(no_limit)
    with pytest.raises(ValueError, match="not a mean-pooling sentence-transformers folder"):
        MeanPoolingEncoder(cls_pooling)


@pytest.mark.slow
def test_its_vectors_are_sentence_transformers_vectors():
    from langchain_huggingface import HuggingFaceEmbeddings

    ours = ModelHub().embeddings(EMBEDDED_EMBEDDINGS)
    assert isinstance(ours, MeanPoolingEncoder)
    theirs = HuggingFaceEmbeddings(
        model_name=str(embedded_encoder_path()),
        model_kwargs={"device": "cpu"},
        encode_kwargs={"normalize_embeddings": True},
    )
    documents = np.array(ours.embed_documents(TEXTS))
    assert documents.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(documents, theirs.embed_documents(TEXTS), atol=1e-6)
    np.testing.assert_allclose(ours.embed_query(TEXTS[0]), theirs.embed_query(TEXTS[0]), atol=1e-6)
