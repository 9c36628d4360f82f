"""Routing by embedding similarity, with a threshold and a generalist."""

from compllm.registry import Expert, Registry
from compllm.router import ExpertRouter


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
