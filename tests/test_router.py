"""Routing: by embedding similarity with a threshold and a generalist, by the learned head
that `compllm fit` writes when the registry has one, and by measured competence."""

import numpy as np
import pytest

from compllm.competence import CompetenceProfile, Record
from compllm.plan import Plan, SubQuery
from compllm.registry import Expert, Registry
from compllm.router import ExpertRouter, route_plan
from compllm.routing_head import fit_head
from tests.fakes import KeywordEmbeddings


def test_each_question_goes_to_the_most_similar_expert(registry, embeddings):
    router = ExpertRouter(registry, embeddings)
    routes = router.route(
        [
            "What is the derivative of this polynomial?",
            "What are the symptoms of the flu disease?",
            "Is this contract binding in the courts?",
        ]
    )
    assert [r.expert for r in routes] == ["math", "medicine", "law"]


def test_every_expert_score_is_kept_so_users_can_see_why(registry, embeddings):
    (route,) = ExpertRouter(registry, embeddings).route(["symptoms of diabetes"])
    assert set(route.scores) == set(registry.names)
    assert route.scores["medicine"] == max(route.scores.values())
    assert all(-1.0 <= s <= 1.0 for s in route.scores.values())


def test_below_the_threshold_the_generalist_answers(registry, embeddings):
    router = ExpertRouter(registry, embeddings)
    (unrelated,) = router.route(["zebra xylophone quartz"])
    assert unrelated.expert == "general"
    (strict,) = router.route(["symptoms of diabetes"], threshold=0.99)
    assert strict.expert == "general"
    (lenient,) = router.route(["symptoms of diabetes"], threshold=-1.0)
    assert lenient.expert == "medicine"


def test_profiles_are_embedded_once(registry, embeddings):
    router = ExpertRouter(registry, embeddings)
    profile_count = sum(len(e.profile_texts) for e in registry.experts)
    router.route(["a question"])
    router.route(["another question", "and a third"])
    assert len(embeddings.embedded) == profile_count + 3


def test_embedding_many_profile_texts_reports_progress(embeddings):
    many = Registry(
        generalist="general",
        experts=(
            Expert(
                name="trivia",
                description="trivia",
                examples=tuple(f"fact {i}" for i in range(1100)),
            ),
            Expert(name="general", description="anything"),
        ),
    )
    messages: list[str] = []
    ExpertRouter(many, embeddings, on_progress=messages.append).route(["a fact"])
    assert messages[0] == "embedding 1,102 routing examples (once; cached on disk) ..."
    assert [m.split(" (")[0] for m in messages[1:]] == [
        "embedded 512/1,102 routing examples",
        "embedded 1,024/1,102 routing examples",
        "embedded 1,102/1,102 routing examples",
    ]


def test_an_expert_with_an_applicability_check_takes_what_it_accepts_and_nothing_else(
    embeddings,
):
    registry = Registry(
        generalist="general",
        experts=(
            Expert(
                name="numbers",
                description="numbers",
                accepts=lambda question: question.replace(" ", "").isdigit(),
            ),
            Expert(name="words", description="words letters spelling numbers"),
            Expert(name="general", description="anything"),
        ),
    )
    digits, spelling = ExpertRouter(
        registry,
        embeddings,
    ).route(["12 34", "spelling of numbers"])
    assert digits.expert == "numbers"
    assert spelling.expert == "words"  # its check refuses it, however similar it is
    assert spelling.scores["numbers"] > 0  # the scores are still all there


# -- the learned head --------------------------------------------------------------------------

LABELLED = {
    "math": ["integral of a polynomial", "prime factors of a number", "solve the quadratic"],
    "medicine": ["symptoms of measles", "dose of an antibiotic", "treatment of a fracture"],
    "law": ["breach of a contract", "appeal against a verdict", "liability in tort"],
    "general": ["plan a holiday", "bake a cake", "water the garden"],
}


def with_head(registry: Registry, embeddings, tmp_path, *, thresholds=None) -> Registry:
    """`registry` naming a head fitted on its own profiles and the questions above."""
    texts, experts = [], []
    for expert in registry.experts:
        texts += expert.profile_texts
        experts += [expert.name] * len(expert.profile_texts)
    for expert, questions in LABELLED.items():
        texts += questions
        experts += [expert] * len(questions)
    head = fit_head(np.asarray(embeddings.embed_documents(texts)), experts, [None] * len(texts))
    probe = np.asarray(embeddings.embed_documents([e.description for e in registry.experts]))
    head = head.with_thresholds(thresholds or {}).for_registry(
        registry.fingerprint(), probe, "keywords"
    )
    path = tmp_path / "experts.head.npz"
    head.save(path)
    embeddings.embedded.clear()
    return registry.model_copy(update={"routing_head": str(path)})


def test_with_a_head_the_scores_are_probabilities_and_no_profile_is_embedded(
    registry, embeddings, tmp_path
):
    router = ExpertRouter(with_head(registry, embeddings, tmp_path), embeddings)
    routes = router.route(["symptoms of the flu disease", "is this contract binding in court"])
    assert router.method == "learned"
    assert [r.expert for r in routes] == ["medicine", "law"]
    for route in routes:
        assert sum(route.scores.values()) == pytest.approx(1.0, abs=1e-3)
        assert route.scores[route.expert] == max(route.scores.values())
    # Only the experts' descriptions (to check the embedding model) and the questions.
    assert len(embeddings.embedded) == len(registry.experts) + 2


def test_a_head_fitted_for_other_profiles_is_set_aside_for_similarity(
    registry, embeddings, tmp_path, caplog
):
    fitted = with_head(registry, embeddings, tmp_path)
    math = fitted.expert("math")
    edited = fitted.model_copy(
        update={
            "experts": tuple(
                e.model_copy(update={"examples": (*e.examples, "what is a matrix")})
                if e is math
                else e
                for e in fitted.experts
            )
        }
    )
    router = ExpertRouter(edited, embeddings)
    assert router.method == "similarity"
    assert "fitted for other routing profiles" in caplog.text
    assert router.route(["symptoms of diabetes"])[0].scores["medicine"] < 1.0


class ReversedEmbeddings(KeywordEmbeddings):
    """Another embedding model of the same size: the same texts land elsewhere."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [vector[::-1] for vector in super().embed_documents(texts)]


def test_a_head_fitted_under_another_embedding_model_is_set_aside(registry, tmp_path, caplog):
    fitted = with_head(registry, KeywordEmbeddings(), tmp_path)
    router = ExpertRouter(fitted, ReversedEmbeddings())
    assert router.method == "similarity"
    assert "another embedding model" in caplog.text


def test_each_expert_has_its_own_threshold_and_a_given_threshold_replaces_them(
    registry, embeddings, tmp_path
):
    strict = with_head(registry, embeddings, tmp_path, thresholds={"law": 0.7})
    router = ExpertRouter(strict, embeddings)
    unsure, sure = router.route(["symptoms of a contract dispute", "breach of a contract"])
    assert max(unsure.scores, key=lambda n: unsure.scores[n]) == "law"
    assert unsure.scores["law"] < 0.7
    assert unsure.expert == "general"  # law is not sure enough for its threshold
    assert sure.expert == "law"
    (lenient,) = router.route(["symptoms of a contract dispute"], threshold=0.0)
    assert lenient.expert == "law"


def test_learned_false_routes_by_similarity_even_with_a_head(registry, embeddings, tmp_path):
    router = ExpertRouter(with_head(registry, embeddings, tmp_path), embeddings, learned=False)
    assert router.method == "similarity"
    (route,) = router.route(["symptoms of diabetes"])
    assert route.expert == "medicine"
    assert sum(route.scores.values()) != pytest.approx(1.0)


def test_dependent_sub_queries_are_routed_with_their_parents_by_the_head(
    registry, embeddings, tmp_path
):
    router = ExpertRouter(with_head(registry, embeddings, tmp_path), embeddings)
    plan = Plan.build(
        [
            SubQuery(id="q1", question="Which antibiotic treats measles symptoms?"),
            SubQuery(id="q2", question="And what is its dose?", depends_on=("q1",)),
        ]
    )
    routed = route_plan(plan, router)
    assert [s.expert for s in routed.subqueries] == ["medicine", "medicine"]


# -- competence ------------------------------------------------------------------------------


def competence(general: tuple[int, int], math: tuple[int, int]) -> CompetenceProfile:
    sums = tuple(f"add {a} and {b} together" for a, b in [(3, 4), (10, 20), (7, 8), (1, 9)])
    return CompetenceProfile(
        records={"general": {"sums": Record(*general)}, "math": {"sums": Record(*math)}},
        topic_texts={"sums": sums, "symptoms": ("symptoms of measles", "symptoms of flu")},
    )


def test_an_expert_measurably_better_on_the_topic_takes_the_question(registry, embeddings):
    question = ["add 5 and 6 together, multiply the numbers"]
    (similar,) = ExpertRouter(registry, embeddings).route(question)
    assert similar.expert == "math"
    better = competence(general=(19, 20), math=(2, 20))
    (measured,) = ExpertRouter(registry, embeddings, competence_profile=better).route(question)
    assert measured.expert == "general"
    assert measured.scores == similar.scores  # the scores say what similarity thought


def test_a_difference_the_validation_set_cannot_show_changes_nothing(registry, embeddings):
    question = ["add 5 and 6 together, multiply the numbers"]
    close = competence(general=(11, 20), math=(9, 20))
    (route,) = ExpertRouter(registry, embeddings, competence_profile=close).route(question)
    assert route.expert == "math"
    # Another topic, where nobody was measured: the similarity choice stands.
    (other,) = ExpertRouter(
        registry, embeddings, competence_profile=competence((19, 20), (2, 20))
    ).route(["what are the symptoms of measles"])
    assert other.expert == "medicine"
