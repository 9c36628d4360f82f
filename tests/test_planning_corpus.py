"""The decomposition corpus: reproducible, well-formed, and split so that the held-out
figures are on phrasing and topics that training never saw."""

import collections
import itertools

import pytest

from compllm.planning.bank import load_bank
from compllm.planning.corpus import generate
from compllm.planning.examples import Example, read_examples, write_examples
from compllm.planning.phrasing import JOINERS
from compllm.planning.variety import _HELDOUT_NEAR


@pytest.fixture(scope="module")
def train():
    return generate(1500, "train", seed=3)


@pytest.fixture(scope="module")
def heldout():
    return generate(600, "heldout", seed=3)


def test_the_same_seed_gives_the_same_corpus():
    assert [e.query for e in generate(50, "train", seed=7)] == [
        e.query for e in generate(50, "train", seed=7)
    ]
    assert generate(50, "train", seed=7) != generate(50, "train", seed=8)


def test_every_part_is_a_span_of_its_query_and_depends_only_on_earlier_parts(train, heldout):
    for example in [*train, *heldout]:
        assert example.parts
        for index, part in enumerate(example.parts):
            text = example.text(index)
            assert text and text == text.strip() and 0 <= part.start < part.end
            assert all(0 <= d < index for d in part.depends_on)
        spans = sorted([(p.start, p.end) for p in example.parts] + list(example.context))
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), example.query


def test_held_out_examples_share_no_phrasing_family_and_no_topic_with_training(train, heldout):
    train_families = {f for e in train for f in e.families}
    train_topics = {t for e in train for t in e.topics} - {"arithmetic"}
    for example in heldout:
        joiner_or_form = example.families[0]
        assert joiner_or_form not in train_families, example.families
        assert not (set(example.topics) & train_topics), example.topics
    banks = {t.name: t.split for t in load_bank().topics}
    borrowed = {t for t in train_topics if t.startswith("mmlu-")}
    borrowed |= {"distractors", "named-things"} & train_topics
    assert all(banks[t] == "train" for t in train_topics - borrowed)
    # questions borrowed from MMLU come from subjects near no held-out topic
    assert borrowed and not {t.removeprefix("mmlu-") for t in borrowed} & _HELDOUT_NEAR
    assert {f.split for f in JOINERS} == {"train", "heldout"}


def test_the_corpus_has_every_shape_of_dependency_and_single_questions_that_must_not_split(train):
    shapes = collections.Counter(f for e in train for f in e.families if f.startswith("shape-"))
    assert {"shape-pair", "shape-chain", "shape-fan-out", "shape-fan-in", "shape-diamond"} <= set(
        shapes
    )
    longest_chain = max(_chain_length(e) for e in train)
    assert longest_chain >= 3
    singles = [e for e in train if e.kind == "single"]
    forms = {f for e in singles for f in e.families}
    assert {"single-compound-train", "single-options-train", "single-code-train"} <= forms
    assert any(" and " in e.query and len(e.parts) == 1 for e in singles)
    # "then" and "result" inside parts that depend on nothing
    independent = [e for e in train if not e.edges and len(e.parts) > 1]
    assert any("then" in e.query.lower() for e in independent)
    assert any("result" in e.query.lower() for e in independent)


def _chain_length(example: Example) -> int:
    depth: dict[int, int] = {}
    for index, part in enumerate(example.parts):
        depth[index] = 1 + max((depth[d] for d in part.depends_on), default=0)
    return max(depth.values())


def test_pronouns_that_point_at_a_name_in_the_query_are_not_dependencies(train):
    named = [e for e in train if any(f.startswith("named-pronoun") for f in e.families)]
    assert named and all(not e.edges for e in named)


def test_examples_round_trip_through_jsonl(tmp_path, train):
    path = tmp_path / "corpus.jsonl"
    assert write_examples(train[:100], path) == 100
    again = read_examples(path)
    assert [(e.query, e.parts, e.context, e.families) for e in again] == [
        (e.query, e.parts, e.context, e.families) for e in train[:100]
    ]


def test_a_users_jsonl_line_is_checked_against_its_query(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text(
        '{"query": "Who wrote Emma? When did she die?", "parts": [{"text": "Who wrote Emma?"},'
        ' {"text": "When did she die?", "depends_on": [1]}]}\n'
        '{"query": "What is 2+2?", "parts": [{"text": "What is 3+3?"}]}\n'
    )
    with pytest.raises(ValueError, match=r"mine.jsonl:2: part 1 is not a verbatim span"):
        read_examples(path)
    path.write_text(path.read_text().splitlines()[0] + "\n")
    (example,) = read_examples(path)
    assert example.edges == {(0, 1)}
