"""The learned routing head: why it beats nearest neighbours, what its scores are, how it is
stored, and how its per-expert thresholds are chosen."""

from __future__ import annotations

import numpy as np
import pytest

from compllm.routing_head import (
    RoutingHead,
    cluster_topics,
    fit_head,
    fit_thresholds,
    route_with_thresholds,
)

EXPERTS = ("a", "b", "general")


def sample(rng: np.random.Generator, count: int) -> tuple[np.ndarray, list[str]]:
    """Vectors whose expert shows only in three weak directions, while five other
    directions vary a lot and say nothing about the expert (as wording, length or options
    do in a sentence embedding)."""
    owners = rng.integers(0, 3, count)
    vectors = np.zeros((count, 8))
    vectors[np.arange(count), owners] = 0.5
    vectors[:, 3:] = rng.normal(0.0, 1.0, (count, 5))
    return vectors, [EXPERTS[o] for o in owners]


def nearest_vote(train: np.ndarray, labels: list[str], queries: np.ndarray, k: int) -> list[str]:
    unit_train = train / np.linalg.norm(train, axis=1, keepdims=True)
    unit_queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    nearest = np.argsort(-(unit_queries @ unit_train.T), axis=1)[:, :k]
    votes = [[labels[i] for i in row] for row in nearest]
    return [max(set(v), key=v.count) for v in votes]


def test_the_head_learns_which_directions_tell_experts_apart():
    rng = np.random.default_rng(0)
    train, labels = sample(rng, 300)
    queries, gold = sample(rng, 200)
    head = fit_head(train, labels, [None] * len(labels))
    routed = [head.experts[i] for i in head.probabilities(queries).argmax(axis=1)]
    head_accuracy = np.mean([r == g for r, g in zip(routed, gold, strict=True)])
    knn_accuracy = np.mean(
        [r == g for r, g in zip(nearest_vote(train, labels, queries, 10), gold, strict=True)]
    )
    assert knn_accuracy < 0.75  # raw cosine is dominated by the uninformative directions
    assert head_accuracy > 0.95


def test_scores_are_vote_shares_of_the_nearest_examples():
    rng = np.random.default_rng(1)
    train, labels = sample(rng, 120)
    head = fit_head(train, labels, [None] * len(labels))
    probabilities = head.probabilities(sample(rng, 30)[0])
    assert probabilities.shape == (30, 3)
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    assert probabilities.min() >= 0.0
    assert head.experts == tuple(dict.fromkeys(labels))


def test_a_weighted_example_outvotes_as_many_plain_ones_and_the_weights_are_saved(tmp_path):
    """A registry's own profile texts vote with `PROFILE_WEIGHT`: what its author says an
    expert is for outweighs a few fitted questions that a foreign taxonomy labels otherwise."""
    rng = np.random.default_rng(4)
    train, labels = sample(rng, 120)
    query = train[:1]
    plain = fit_head(train, labels, [None] * len(labels))
    label = labels[0]
    other = next(e for e in EXPERTS if e != label)
    relabelled = [other if i == 0 else lab for i, lab in enumerate(labels)]
    weights = [1000.0 if i == 0 else 1.0 for i in range(len(labels))]
    weighted = fit_head(train, relabelled, [None] * len(labels), weights=weights)
    assert plain.experts[int(plain.probabilities(query).argmax())] == label
    assert weighted.experts[int(weighted.probabilities(query).argmax())] == other
    weighted.save(tmp_path / "h.npz")
    loaded = RoutingHead.load(tmp_path / "h.npz")
    assert loaded.weights is not None and loaded.weights[0] == 1000.0


def test_given_topics_are_kept_and_the_rest_are_clustered_within_their_expert():
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(100, 6))
    experts = ["a"] * 60 + ["b"] * 40
    topics: list[str | None] = ["algebra"] * 10 + [None] * 50 + [None] * 40
    index = cluster_topics(vectors, experts, topics)
    assert len(set(index[:10])) == 1  # one given topic
    assert set(index[10:60]).isdisjoint(index[60:])  # clusters never mix experts
    assert len(set(index[10:60])) == 2  # 50 questions: clusters of about 20
    assert len(set(index[60:])) == 2
    assert set(index[:10]).isdisjoint(index[10:])


def test_a_saved_head_routes_as_before(tmp_path):
    rng = np.random.default_rng(3)
    train, labels = sample(rng, 150)
    head = fit_head(train, labels, [None] * len(labels)).with_thresholds({"a": 0.4})
    head = head.for_registry("abc123", np.eye(3, 8), "some-model")
    path = tmp_path / "experts.head.npz"
    head.save(path)
    loaded = RoutingHead.load(path)
    queries = sample(rng, 40)[0]
    # Examples are stored in half precision: the shares agree to about 1e-2.
    assert np.abs(loaded.probabilities(queries) - head.probabilities(queries)).max() < 0.02
    assert (loaded.experts, dict(loaded.thresholds)) == (head.experts, {"a": 0.4})
    assert (loaded.registry_fingerprint, loaded.embedding_model) == ("abc123", "some-model")
    assert loaded.probe is not None and np.array_equal(loaded.probe, np.eye(3, 8))


def test_a_file_that_is_no_head_is_refused(tmp_path):
    path = tmp_path / "not-a-head.npz"
    np.savez(path, something=np.zeros(3))
    with pytest.raises(ValueError, match="not a routing head"):
        RoutingHead.load(path)


def test_below_its_threshold_an_expert_hands_the_question_to_the_generalist():
    probabilities = np.array([[0.9, 0.1, 0.0], [0.5, 0.4, 0.1], [0.2, 0.7, 0.1]])
    routed = route_with_thresholds(probabilities, EXPERTS, {"a": 0.6}, "general")
    assert routed == ["a", "general", "b"]


def test_thresholds_rise_only_where_they_send_more_questions_right():
    # Expert a wins the first six rows; where it is unsure (0.45), the question belongs to
    # the generalist. Expert b is right even when unsure: its threshold must stay at 0.
    probabilities = np.array(
        [[0.9, 0.1, 0.0]] * 3 + [[0.45, 0.3, 0.25]] * 3 + [[0.1, 0.45, 0.45]] * 3,
    )
    gold = ["a"] * 3 + ["general"] * 3 + ["b"] * 3
    thresholds = fit_thresholds(probabilities, EXPERTS, gold, "general")
    assert 0.45 < thresholds["a"] <= 0.9
    assert thresholds["b"] == 0.0
    routed = route_with_thresholds(probabilities, EXPERTS, thresholds, "general")
    assert routed == gold
