"""The built-in calculator expert (`model: builtin:calculator`): exact arithmetic.

A small model is at chance on arithmetic; a parser is not. The calculator reads a
sub-question written in words or symbols ("What is 29 multiplied by 5?", "Then add 17 to
that result.", "15% of 240", "(3 + 4) * 2^3"), turns it into an arithmetic expression, and
evaluates it exactly in decimal arithmetic with `simpleeval` (no Python `eval`). References
to an earlier answer ("that result", "it", "the answer to step 1") take the number that
answer states: the calculator's own "... = 145", or the last number of a model's reply.

It claims only what it can read entirely: `accepts(question)` is true exactly when every
word of the question is arithmetic or filler, which is how the router sends arithmetic to it
and keeps questions about mathematics ("Is 221 prime?", "What is a derivative?") away from
it. A question it cannot read fails with `CalculatorError`, naming the words it did not
understand.
"""

from __future__ import annotations

import decimal
import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from simpleeval import SimpleEval

__all__ = ["Calculator", "CalculatorError", "read_expression"]

_PRECISION = 40  # digits of the decimal context; answers are rounded to 12 decimals
_MAX_EXPONENT = 1000


class CalculatorError(ValueError):
    """A sub-question the calculator cannot read or compute."""


# -- words to tokens -----------------------------------------------------------------------

_UNITS = "zero one two three four five six seven eight nine ten eleven twelve thirteen"
_TEENS = "fourteen fifteen sixteen seventeen eighteen nineteen twenty"
_NUMBER_WORDS = {word: index for index, word in enumerate(f"{_UNITS} {_TEENS}".split())}
_NUMBER_WORDS |= {"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70}
_NUMBER_WORDS |= {"eighty": 80}
_NUMBER_WORDS |= {"ninety": 90, "hundred": 100, "thousand": 1000, "million": 1_000_000}
_ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6}

# Words that carry no arithmetic: what is left after the operations are read must be these.
_FILLER = frozenset(
    (  # noqa: SIM905 - a word list reads better as text
        "what whats what's first second is are the a an value of compute calculate evaluate "
        "find work out how much tell me please then next finally now and also so result "
        "answer equal equals get do you give determine exactly number final step us could "
        "can would will i we just quickly let's lets that's thats gives total to be by "
        "using use with take solve it's its"
    ).split()
)

# A reference to an earlier answer; `step N` / `qN` / `the Nth result` pick a parent.
_REFERENCE = re.compile(
    r"\b(?:the\s+)?(?:answer|result)\s+(?:to|of|from)\s+(?:step|question|part|q)\s*#?(\d+)\b"
    r"|\b(?:step|q)\s*#?(\d+)(?:'s)?(?:\s+(?:result|answer))?\b"
    r"|\bthe\s+(first|second|third|fourth|fifth|sixth)\s+(?:result|answer|number|value)\b"
    r"|\b(?:that|this|the|previous|last|prior|above|earlier)\s+(?:previous\s+|last\s+)?"
    r"(?:result|answer|number|value|amount|figure|total|sum|product)\b(?!\s+(?:of|to|for)\b)"
    r"|\b(?:it|that|this)\b",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?!\w|\.\d)")
_ATOM = r"(?:N\d+)"  # every operand is a token Nk standing for a number or a computed value

# (pattern over tokenised text, how to write the expression from the operands), tried in
# order until none applies: powers and roots first, then products, then sums, so that the
# usual precedence holds ("2 plus 3 times 4" is 14).
_RULES: tuple[tuple[str, str], ...] = (
    (rf"increase ({_ATOM}) by ({_ATOM}) (?:%|percent)", "{0} * (1 + {1} / 100)"),
    (rf"(?:decrease|reduce) ({_ATOM}) by ({_ATOM}) (?:%|percent)", "{0} * (1 - {1} / 100)"),
    (rf"({_ATOM}) (?:%|percent) of ({_ATOM})", "{0} / 100 * {1}"),
    (rf"({_ATOM}) (?:%|percent)", "{0} / 100"),
    (rf"(?:the )?square root of ({_ATOM})", "sqrt({0})"),
    (rf"(?:the )?cube root of ({_ATOM})", "{0} ** (D('1') / 3)"),
    (rf"(?:the )?square of ({_ATOM})", "{0} ** 2"),
    (rf"(?:the )?cube of ({_ATOM})", "{0} ** 3"),
    (rf"({_ATOM}) squared", "{0} ** 2"),
    (rf"({_ATOM}) cubed", "{0} ** 3"),
    (
        rf"({_ATOM}) (?:\*\*|\^|to the power of|raised to the power of|raised to) ({_ATOM})",
        "{0} ** {1}",
    ),
    (rf"square ({_ATOM})", "{0} ** 2"),
    (rf"(?:double|twice) ({_ATOM})", "2 * {0}"),
    (rf"triple ({_ATOM})", "3 * {0}"),
    (rf"(?:halve|half of|half) ({_ATOM})", "{0} / 2"),
    (rf"the product of ({_ATOM}) and ({_ATOM})", "{0} * {1}"),
    (rf"the quotient of ({_ATOM}) and ({_ATOM})", "{0} / {1}"),
    (rf"({_ATOM}) (?:\*|x|×|times|multiplied by|multiplied with) ({_ATOM})", "{0} * {1}"),
    (rf"({_ATOM}) (?:/|÷|divided by|over) ({_ATOM})", "{0} / {1}"),
    (rf"multiply ({_ATOM}) (?:by|with|and) ({_ATOM})", "{0} * {1}"),
    (rf"divide ({_ATOM}) by ({_ATOM})", "{0} / {1}"),
    (rf"divide ({_ATOM}) into ({_ATOM})", "{1} / {0}"),
    (rf"the sum of ({_ATOM}) and ({_ATOM})", "{0} + {1}"),
    (rf"the difference (?:between|of) ({_ATOM}) and ({_ATOM})", "{0} - {1}"),
    (rf"({_ATOM}) (?:\+|plus|added to) ({_ATOM})", "{0} + {1}"),
    (rf"({_ATOM}) (?:-|−|minus|less) ({_ATOM})", "{0} - {1}"),
    (rf"add ({_ATOM}) (?:to|and) ({_ATOM})", "{1} + {0}"),
    (rf"subtract ({_ATOM}) from ({_ATOM})", "{1} - {0}"),
    (rf"take ({_ATOM}) (?:away )?from ({_ATOM})", "{1} - {0}"),
    (rf"increase ({_ATOM}) by ({_ATOM})", "{0} + {1}"),
    (rf"(?:decrease|reduce) ({_ATOM}) by ({_ATOM})", "{0} - {1}"),
    (rf"\( ({_ATOM}) \)", "{0}"),
)
# Operations on an earlier answer that leave it implicit: "then multiply by 6", "add 17".
_IMPLICIT: tuple[tuple[str, str], ...] = (
    (rf"^(?:multiply|multiplied) (?:by|with) ({_ATOM})$", "{P} * {0}"),
    (rf"^(?:divide|divided) by ({_ATOM})$", "{P} / {0}"),
    (rf"^add ({_ATOM})$", "{P} + {0}"),
    (rf"^(?:subtract|minus) ({_ATOM})$", "{P} - {0}"),
    (r"^(?:square|squared)$", "{P} ** 2"),
    (r"^(?:double|halve|triple)$", "{verb}"),
)
_COMPILED = tuple((re.compile(rf"(?<!\S){p}(?!\S)"), t) for p, t in _RULES)
_COMPILED_IMPLICIT = tuple((re.compile(p), t) for p, t in _IMPLICIT)
_SYMBOLS = {"×": " * ", "÷": " / ", "−": " - ", "^": " ^ ", "(": " ( ", ")": " ) ", "+": " + "}


class _Reading:
    """The tokenised question: text over operand tokens N0, N1, ... and their expressions."""

    def __init__(self, question: str, parent_values: Sequence[Decimal | None]) -> None:
        self.parent_values = parent_values
        self.operands: list[str] = []
        self.uses_parent = False
        text = question.lower().replace(",", "") if _thousands(question) else question.lower()
        text = re.sub(r"[$€£]", "", text)
        text = _REFERENCE.sub(lambda m: f" {self._reference(m)} ", text)
        text = re.sub(r"(\d)\s*%", r"\1 %", text)
        text = re.sub(r"(\d)\s*[x×]\s*(?=\d)", r"\1 * ", text)  # "3x4", "3 x 4"
        text = text.replace("**", " ^ ")
        for symbol, spaced in _SYMBOLS.items():
            text = text.replace(symbol, spaced)
        text = re.sub(r"(?<=[\s(])-\s+(?=\d)", " - ", text)
        text = re.sub(r"(?<![\w.])\*(?![\w.])", " * ", text)
        text = re.sub(r"(?<=\s)/(?=\s)|(?<=\d)/(?=\d)", " / ", text)
        text = _NUMBER.sub(lambda m: f" {self._operand(repr(Decimal(m.group())))} ", text)
        words = [self._word(w) for w in re.findall(r"N\d+|[^\s?!.,;:]+|[%()*/+^-]", text)]
        self.text = " ".join(w for w in words if w)

    def _reference(self, match: re.Match[str]) -> str:
        self.uses_parent = True
        number = match.group(1) or match.group(2)
        ordinal = match.group(3)
        if number is not None:
            index = int(number) - 1
        elif ordinal is not None:
            index = _ORDINALS[ordinal.lower()] - 1
        else:
            index = len(self.parent_values) - 1  # "that result": the latest parent
        if not self.parent_values:
            return self._operand("P")  # routing time: a placeholder for the parent's answer
        if not 0 <= index < len(self.parent_values):
            raise CalculatorError(
                f"'{match.group().strip()}' refers to an earlier answer this question does not "
                f"have ({len(self.parent_values)} given)"
            )
        value = self.parent_values[index]
        if value is None:
            raise CalculatorError(
                f"'{match.group().strip()}' refers to an earlier answer that states no number"
            )
        return self._operand(repr(value))

    def _operand(self, expression: str) -> str:
        self.operands.append(expression)
        return f"N{len(self.operands) - 1}"

    def _word(self, word: str) -> str:
        word = word.strip("'\"")
        if word in _NUMBER_WORDS:
            return self._operand(repr(Decimal(_NUMBER_WORDS[word])))
        return word

    def reduce(self) -> str:
        """The whole question as one expression, or `CalculatorError` naming what is left."""
        text = self.text
        changed = True
        while changed:
            changed = False
            for pattern, template in _COMPILED:
                match = pattern.search(text)
                if match:
                    parts = [self.operands[int(g[1:])] for g in match.groups()]
                    token = self._operand("(" + template.format(*parts) + ")")
                    text = f"{text[: match.start()]}{token}{text[match.end() :]}"
                    changed = True
                    break
        remaining = [w for w in text.split() if w not in _FILLER]
        if len(remaining) == 1 and re.fullmatch(_ATOM, remaining[0]):
            return self.operands[int(remaining[0][1:])]
        implicit = self._implicit(" ".join(remaining), text)
        if implicit is not None:
            return implicit
        unknown = [w for w in remaining if not re.fullmatch(_ATOM, w)]
        raise CalculatorError(
            "cannot read this as arithmetic"
            + (f" (words it does not understand: {', '.join(unknown[:6])})" if unknown else "")
        )

    def _implicit(self, remaining: str, text: str) -> str | None:
        for pattern, template in _COMPILED_IMPLICIT:
            match = pattern.match(remaining)
            if not match:
                continue
            parent = self._latest_parent()
            if template == "{verb}":
                factor = {"double": "2 *", "triple": "3 *", "halve": "D('0.5') *"}[remaining]
                return f"({factor} {parent})"
            parts = [self.operands[int(g[1:])] for g in match.groups()]
            return "(" + template.format(*parts, P=parent) + ")"
        return None

    def _latest_parent(self) -> str:
        self.uses_parent = True
        if not self.parent_values:
            return "P"
        value = self.parent_values[-1]
        if value is None:
            raise CalculatorError("the earlier answer this question continues states no number")
        return repr(value)


def _thousands(text: str) -> bool:
    """Whether commas in the text are thousands separators ("1,200") rather than lists."""
    return bool(re.search(r"\d,\d{3}(?!\d)", text)) and not re.search(r"\d,\s+\d", text)


def read_expression(question: str, parent_values: Sequence[Decimal | None] = ()) -> str:
    """The arithmetic expression a question asks for (`CalculatorError` if it asks something
    else). Without parent values, a reference to an earlier answer reads as `P`."""
    return _Reading(question, parent_values).reduce()


# -- evaluation ----------------------------------------------------------------------------


def _sqrt(value: Decimal) -> Decimal:
    if value < 0:
        raise CalculatorError("the square root of a negative number is not a real number")
    return value.sqrt()


def _power(base: Decimal, exponent: Decimal) -> Decimal:
    if abs(exponent) > _MAX_EXPONENT:
        raise CalculatorError(f"the exponent {exponent} is too large (at most {_MAX_EXPONENT})")
    return base**exponent


def evaluate(expression: str) -> Decimal:
    """The exact value of an expression built by `read_expression`."""
    literal = re.sub(r"Decimal\('([^']*)'\)", r"D('\1')", expression)
    evaluator = SimpleEval(functions={"D": Decimal, "sqrt": _sqrt}, names={})
    import ast

    evaluator.operators[ast.Pow] = _power
    try:
        with decimal.localcontext() as context:
            context.prec = _PRECISION
            context.traps[decimal.DivisionByZero] = True
            value = evaluator.eval(literal)
            return Decimal(value) + 0  # applies the context (rounds to its precision)
    except CalculatorError:
        raise
    except (decimal.DivisionByZero, decimal.InvalidOperation, ZeroDivisionError):
        raise CalculatorError("division by zero") from None
    except Exception as exc:  # simpleeval's errors: the expression is not arithmetic
        raise CalculatorError(f"cannot evaluate {expression}: {exc}") from None


def format_number(value: Decimal) -> str:
    """`145`, `0.3`, `0.333333333333` (12 decimals at most), `-7.5`."""
    rounded = value.quantize(Decimal("1e-12")) if value != value.to_integral() else value
    text = format(rounded.normalize(), "f")
    return "0" if text in ("-0", "") else text


def readable(expression: str) -> str:
    """The expression as a person writes it: `(29 * 5) + 17`."""
    text = re.sub(
        r"Decimal\('([^']*)'\)|D\('([^']*)'\)", lambda m: m.group(1) or m.group(2), expression
    )
    return text[1:-1] if text.startswith("(") and _balanced(text[1:-1]) else text


def _balanced(text: str) -> bool:
    depth = 0
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


# -- the expert ----------------------------------------------------------------------------

_STATED = re.compile(r"(?:=|\bis|\bequals|answer:?|result:?)\s*\**\s*(-?\d[\d,]*(?:\.\d+)?)", re.I)
_ANY_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def stated_number(answer: str) -> Decimal | None:
    """The number an earlier answer gives: its last stated result ("= 145", "is 145"),
    else its last number; None when it has none."""
    found = _STATED.findall(answer) or _ANY_NUMBER.findall(answer)
    if not found:
        return None
    try:
        return Decimal(found[-1].replace(",", ""))
    except decimal.InvalidOperation:
        return None


class Calculator:
    """The calculator as an expert model: a function of the sub-question and its parents'
    answers (see `compllm.experts` for how functions are called)."""

    __name__ = "calculator"

    def accepts(self, question: str) -> bool:
        """Whether the question is arithmetic the calculator can read entirely."""
        try:
            read_expression(question)
        except CalculatorError:
            return False
        return True

    def __call__(self, question: str, parents: Sequence[dict[str, Any]] = ()) -> str:
        values = [stated_number(str(p.get("answer", ""))) for p in parents]
        expression = read_expression(question, values)
        return f"{readable(expression)} = {format_number(evaluate(expression))}"
