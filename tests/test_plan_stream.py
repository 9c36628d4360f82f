"""Reading a plan while it is written: each sub-query is handed out when its object closes."""

import json

from hypothesis import given
from hypothesis import strategies as st

from compllm.plan_stream import SubQueryStream

PLAN = {
    "subqueries": [
        {"id": "q1", "question": "What is 29 multiplied by 5? {not json}", "depends_on": []},
        {"id": "q2", "question": 'Add 17 to "that" result.', "depends_on": ["q1"]},
        {"id": "q3", "question": "Which organ makes insulin?", "depends_on": []},
    ]
}


def feed_in_pieces(text: str, size: int) -> list[tuple[int, str]]:
    """(characters fed so far, id) for each sub-query, as it was handed out."""
    stream, handed = SubQueryStream(), []
    for start in range(0, len(text), size):
        for item in stream.feed(text[start : start + size]):
            handed.append((start + size, item["id"]))
    return handed


def test_each_subquery_is_handed_out_as_soon_as_its_object_closes():
    # The plan's text, and where each sub-query object ends in it (braces inside strings
    # such as q1's "{not json}" do not count).
    objects = [json.dumps(item) for item in PLAN["subqueries"]]
    text = '{"subqueries": [' + ", ".join(objects) + "]}"
    ends = [text.index(o) + len(o) for o in objects]
    handed = feed_in_pieces(text, 1)
    assert handed == [(end, sub["id"]) for end, sub in zip(ends, PLAN["subqueries"], strict=True)]


def test_prose_and_code_fences_around_the_json_are_skipped():
    text = "Sure! Here is the plan:\n```json\n" + json.dumps(PLAN) + "\n```\nDone."
    assert [sid for _, sid in feed_in_pieces(text, 7)] == ["q1", "q2", "q3"]


def test_a_bare_list_of_subqueries_is_read_too():
    text = json.dumps(PLAN["subqueries"])
    assert [sid for _, sid in feed_in_pieces(text, 5)] == ["q1", "q2", "q3"]


def test_nothing_is_handed_out_from_an_unfinished_object_or_after_the_array():
    stream = SubQueryStream()
    assert stream.feed('{"subqueries": [{"id": "q1", "question": "Wh') == []
    assert stream.feed('at?", "depends_on": []}]') == [
        {"id": "q1", "question": "What?", "depends_on": []}
    ]
    assert stream.feed(', "extra": [{"id": "q9"}]}') == []


@given(st.text(max_size=300), st.integers(min_value=1, max_value=20))
def test_any_text_in_any_pieces_ends_without_error(text, size):
    stream = SubQueryStream()
    for start in range(0, len(text), size):
        for item in stream.feed(text[start : start + size]):
            assert isinstance(item, dict)
