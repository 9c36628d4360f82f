"""Router calibration: fitted examples, thresholds and learned head, the report on held-out
questions (nothing is chosen on them), and the fitted registry written back (comments kept,
examples and head in files beside it)."""

from __future__ import annotations

import io

import pytest

from compllm.calibrate import (
    LabelledQuestion,
    fit_router,
    routing_report,
    split_by_hash,
    write_fitted_registry,
)
from compllm.cli import main
from compllm.errors import RegistryError
from compllm.registry import load_registry
from compllm.router import ExpertRouter
from tests.fakes import TEST_REGISTRY_YAML, FakeProvider, KeywordEmbeddings, make_test_registry

TOPICS = {
    "math": ["integral", "matrix", "prime", "fraction", "polygon", "logarithm"],
    "medicine": ["vaccine", "tumour", "insulin", "fracture", "antibiotic", "kidney"],
    "law": ["plaintiff", "statute", "tort", "verdict", "appeal", "contract"],
    "general": ["weather", "holiday", "recipe", "garden", "music", "travel"],
}


def labelled() -> list[LabelledQuestion]:
    """Questions whose words belong to one expert's topic only."""
    return [
        LabelledQuestion(f"question {n} on the {word} and the {other}", expert)
        for expert, words in TOPICS.items()
        for n, (word, other) in enumerate(zip(words, words[1:] + words[:1], strict=True))
        for _ in range(2)
    ]


def test_confusion_matrix_and_accuracy_arithmetic():
    scores = [{"a": 0.9, "b": 0.1}, {"a": 0.2, "b": 0.6}, {"a": 0.05, "b": 0.04}]
    report = routing_report(scores, ["a", "a", "g"], threshold=0.1, generalist="g")
    assert (report.correct, report.total, report.to_generalist) == (2, 3, 1)
    assert report.confusion == {"a": {"a": 1, "b": 1}, "g": {"g": 1}}
    assert report.per_expert() == {"a": 0.5, "g": 1.0}
    assert report.render()[0].split()[-1] == "accuracy"


def test_fitting_learns_examples_that_route_unseen_questions():
    registry = make_test_registry()
    questions = labelled()
    before = ExpertRouter(registry, KeywordEmbeddings())
    result = fit_router(registry, KeywordEmbeddings(), questions, holdout=0.5, seed=1)
    assert result.held_out.total > 0
    assert (
        result.held_out.accuracy
        > routing_report(
            before.scores([q.text for q in questions]),
            [q.expert for q in questions],
            threshold=registry.threshold,
            generalist="general",
        ).accuracy
    )
    assert set(result.threshold_curve) >= {0.0, 0.1, 0.6}
    assert result.registry.threshold == max(
        result.threshold_curve, key=lambda t: (result.threshold_curve[t], -t)
    )
    # refit: every labelled question becomes a routing example
    assert len(result.examples) == len(questions)
    assert len(result.registry.expert("law").examples) == 3 + 2 * len(TOPICS["law"])


def test_fitting_refuses_labels_the_registry_does_not_have():
    with pytest.raises(RegistryError, match=r"not in test-registry\.yaml: poetry"):
        fit_router(make_test_registry(), KeywordEmbeddings(), [LabelledQuestion("x", "poetry")])


def test_the_fitted_registry_keeps_comments_and_loads_its_examples(tmp_path):
    source = tmp_path / "experts.yaml"
    source.write_text("# my experts\n" + TEST_REGISTRY_YAML)
    result = fit_router(make_test_registry(), KeywordEmbeddings(), labelled())
    target = tmp_path / "fitted" / "experts.yaml"
    examples = write_fitted_registry(source, target, result)
    text = target.read_text()
    assert text.startswith("# my experts\n")
    assert f"threshold: {result.registry.threshold:.2f}" in text
    assert 'routing_examples: "experts.routing.jsonl"' in text
    assert examples == tmp_path / "fitted" / "experts.routing.jsonl"
    fitted = load_registry(target)
    assert fitted.fingerprint() == result.registry.fingerprint()
    assert load_registry(target, routing_examples=False).fingerprint() == (
        make_test_registry().fingerprint()
    )
    # TOML: `key = value` lines
    toml = tmp_path / "experts.toml"
    toml.write_text(
        'generalist = "general"\n[[experts]]\nname = "general"\ndescription = "All."\n'
        'system_prompt = "Help."\n'
    )
    only_general = [LabelledQuestion(f"anything {n}", "general") for n in range(8)]
    general = fit_router(load_registry(toml), KeywordEmbeddings(), only_general, holdout=0.5)
    write_fitted_registry(toml, tmp_path / "out.toml", general)
    assert load_registry(tmp_path / "out.toml").expert("general").examples


def test_routing_examples_for_unknown_experts_are_an_error(tmp_path):
    (tmp_path / "examples.jsonl").write_text('{"expert": "poetry", "text": "a sonnet"}\n')
    registry = tmp_path / "experts.yaml"
    registry.write_text(TEST_REGISTRY_YAML + 'routing_examples: "examples.jsonl"\n')
    with pytest.raises(RegistryError, match="examples for unknown experts: poetry"):
        load_registry(registry)


def test_profiles_are_cached_on_disk_per_model_and_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPLLM_CACHE_DIR", str(tmp_path))
    embeddings = KeywordEmbeddings()
    first = ExpertRouter(make_test_registry(), embeddings, embedding_model="kw")
    scores = first.scores(["what is a felony"])
    embedded = len(embeddings.embedded)
    again = ExpertRouter(make_test_registry(), embeddings, embedding_model="kw")
    assert again.scores(["what is a felony"]) == scores
    assert len(embeddings.embedded) == embedded + 1  # only the question, not the profiles
    assert len(list((tmp_path / "routing").glob("*.npy"))) == 1


def test_cli_fit_reports_and_writes_the_registry(tmp_path):
    data = tmp_path / "labelled.jsonl"
    data.write_text(
        "".join(f'{{"text": "{q.text}", "expert": "{q.expert}"}}\n' for q in labelled())
    )
    source = tmp_path / "experts.yaml"
    source.write_text(TEST_REGISTRY_YAML)
    out = io.StringIO()
    code = main(
        ["fit", "--data", str(data), "--experts", str(source), "--out", str(tmp_path / "f.yaml")],
        out=out,
        provider=FakeProvider(),
    )
    printed = out.getvalue()
    assert code == 0, printed
    assert "48 labelled questions" in printed and "routing accuracy" in printed
    assert "wrote" in printed and (tmp_path / "f.routing.jsonl").is_file()


def test_thresholds_are_chosen_without_looking_at_the_held_out_part():
    questions = labelled()
    first = fit_router(make_test_registry(), KeywordEmbeddings(), questions, seed=1)
    # Relabel every held-out question: the report changes, what was fitted does not.
    _, held_out = split_by_hash(questions, lambda q: q.text, holdout=0.5, seed=1)
    moved = {q.text for q in held_out}
    relabelled = [
        LabelledQuestion(q.text, "law" if q.expert != "law" else "math") if q.text in moved else q
        for q in questions
    ]
    second = fit_router(make_test_registry(), KeywordEmbeddings(), relabelled, seed=1, refit=False)
    again = fit_router(make_test_registry(), KeywordEmbeddings(), questions, seed=1, refit=False)
    assert second.registry.threshold == again.registry.threshold == first.registry.threshold
    assert second.threshold_curve == again.threshold_curve
    assert second.held_out.accuracy < again.held_out.accuracy
    assert second.learned is not None and again.learned is not None
    assert second.learned.accuracy < again.learned.accuracy


def test_the_fit_measures_both_routers_and_writes_the_head_it_keeps(tmp_path):
    source = tmp_path / "experts.yaml"
    source.write_text(TEST_REGISTRY_YAML)
    result = fit_router(make_test_registry(), KeywordEmbeddings(), labelled(), seed=1)
    assert result.similarity is not None and result.learned is not None
    assert result.head is not None  # it routed at least as well as similarity
    assert result.learned.accuracy >= result.similarity.accuracy
    assert result.held_out == result.learned
    target = tmp_path / "fitted" / "experts.yaml"
    write_fitted_registry(source, target, result)
    assert 'routing_head: "experts.head.npz"' in target.read_text()
    router = ExpertRouter(load_registry(target), KeywordEmbeddings())
    assert router.method == "learned"
    assert router.head() is not None
    assert router.route(["question on the tort and the plaintiff"])[0].expert == "law"


def test_a_fit_without_a_head_removes_the_line_naming_an_old_one(tmp_path):
    source = tmp_path / "experts.yaml"
    source.write_text(TEST_REGISTRY_YAML + 'routing_head: "experts.head.npz"\n')
    result = fit_router(make_test_registry(), KeywordEmbeddings(), labelled(), learned=False)
    assert result.head is None and result.learned is None
    target = tmp_path / "out.yaml"
    write_fitted_registry(source, target, result)
    assert "routing_head" not in target.read_text()
    assert not (tmp_path / "out.head.npz").exists()
    assert ExpertRouter(load_registry(target), KeywordEmbeddings()).method == "similarity"
