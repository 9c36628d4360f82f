"""Objects a registry file names with `python:` references (tests/test_registry.py)."""


def shout(question: str) -> str:
    return question.upper()


def make_shouter() -> object:
    return shout
