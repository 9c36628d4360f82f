"""The aggregator's check that the final answer covers every answered part."""

from compllm.aggregator import uncovered_parts
from compllm.state import SubAnswer


def part(sid: str, answer: str, status: str = "ok") -> SubAnswer:
    return SubAnswer(id=sid, question=f"question {sid}", expert="e", status=status, answer=answer)  # type: ignore[arg-type]


PARTS = [
    part("q1", "Rembrandt painted The Night Watch in Amsterdam."),
    part("q2", "Rembrandt was born in Leiden in 1606."),
    part("q3", "Ascorbic acid deficiency causes scurvy."),
]


def test_a_final_answer_with_every_part_leaves_none_out() -> None:
    final = "Rembrandt painted The Night Watch; born in Leiden, 1606. Scurvy: ascorbic deficiency."
    assert uncovered_parts(final, PARTS) == []


def test_a_part_whose_distinctive_words_are_missing_is_reported() -> None:
    # "Rembrandt" is in two answers, so it is not distinctive of either: mentioning it alone
    # does not cover q2, whose own words (born, Leiden, 1606) are all missing.
    final = "Rembrandt painted The Night Watch in Amsterdam. Scurvy comes from ascorbic deficiency."
    assert uncovered_parts(final, PARTS) == ["q2"]


def test_failed_parts_are_not_required_but_their_words_are_not_distinctive() -> None:
    parts = [*PARTS[:2], part("q3", "Leiden deficiency", status="failed")]
    # q2's distinctive words are born and 1606 (Leiden is also in the failed part's text).
    assert uncovered_parts("Rembrandt painted The Night Watch in Amsterdam.", parts) == ["q2"]
    assert uncovered_parts("Night Watch, Amsterdam; born 1606.", parts) == []
