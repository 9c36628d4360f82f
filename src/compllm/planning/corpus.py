"""The decomposition corpus: generated queries with gold parts and dependencies.

`generate(count, split, seed)` draws each query's shape (a single question, independent
asks, a dependency chain, fan-out, fan-in, diamond, a mix, a conversation), fills it from the
question bank (`bank`), and renders it with a phrasing family (`phrasing`). With
`split="heldout"` every choice that has a held-out pool takes it: held-out topics, joiners,
referring words, single-question forms and decorations, so the held-out figures measure
phrasing *and* subjects that no training example has.

Dependencies: a part depends on an earlier part when it needs that part's *answer* ("Who
painted The Night Watch? When was he born?"). A pronoun that points at a name written in the
query ("Who was Napoleon? When did he die?") is not a dependency; neither are "then" or
"result" in a part that asks something complete.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from compllm.planning.bank import (
    FOLLOW_UPS,
    Ask,
    Find,
    Split,
    Topic,
    entity_slots,
    load_bank,
    number_reference,
    parse_follow_ups,
)
from compllm.planning.conversation import condition, frame, situation, word_problem
from compllm.planning.examples import Example, GoldPart
from compllm.planning.phrasing import (
    DECORATIONS,
    JOINERS,
    Draft,
    Piece,
    lower_first,
    strip_end,
)
from compllm.planning.variety import (
    DISTRACTORS,
    EXTRA_JOINERS,
    IF_SO,
    INLINE_CODE,
    NAMED_THINGS,
    mmlu_asks,
    mmlu_singles,
    roughen,
    separate_link,
    with_options,
)
from compllm.planning.variety import (
    statements as borrowed_statements,
)

__all__ = ["KINDS", "generate"]

KINDS = {
    "single": 0.22,
    "independent": 0.28,
    "dependent": 0.22,
    "mixed": 0.1,
    "conversational": 0.18,
}
_CALCULATOR = "calculator"


class _Builder:
    """Draws one query's drafts for one split."""

    def __init__(self, split: Split, rng: random.Random) -> None:
        self.split = split
        self.rng = rng
        self.topics = load_bank().split(split)
        self.families: list[str] = []
        self.used_topics: list[str] = []

    # -- bank access ---------------------------------------------------------------------

    def topic(self) -> Topic:
        topic = self.rng.choice(self.topics)
        self.used_topics.append(topic.name)
        return topic

    def ask(self, *, value: bool = False, exclude: set[str] | None = None) -> Ask:
        for _ in range(50):
            topic = self.rng.choice(self.topics)
            asks = [a for a in topic.asks if (a.value is not None or not value)]
            asks = [a for a in asks if a.question not in (exclude or set())]
            if asks:
                self.used_topics.append(topic.name)
                return self.rng.choice(asks)
        raise RuntimeError("the question bank has no such question")

    def find(self) -> Find:
        topic = self.rng.choice([t for t in self.topics if t.finds])
        self.used_topics.append(topic.name)
        return self.rng.choice(topic.finds)

    # -- drafts ----------------------------------------------------------------------------

    def ask_draft(self, exclude: set[str]) -> Draft:
        if self.rng.random() < 0.15:
            return self.arithmetic()
        if self.split == "train" and self.rng.random() < 0.3:
            return self.other_ask(exclude)
        ask = self.ask(exclude=exclude)
        exclude.add(ask.question)
        return Draft(
            ask.question,
            ask.expert,
            noun_phrase=ask.noun_phrase,
            imperative=ask.imperative,
            value=ask.value,
            topic=ask.topic,
        )

    def other_ask(self, exclude: set[str]) -> Draft:
        """Training only: a question someone else wrote (MMLU), or one with "it", "that",
        "then" or "result" in it that needs nothing before it."""
        if self.rng.random() < 0.3:
            question, expert = self.rng.choice(DISTRACTORS)
            self.families.append("distractor-words")
            self.used_topics.append("distractors")
        else:
            ask = self.rng.choice(mmlu_asks())
            question, expert = ask.question, ask.expert
            self.used_topics.append(ask.topic)
        if question in exclude:
            return self.arithmetic()
        exclude.add(question)
        return Draft(question, expert)

    def arithmetic(self) -> Draft:
        self.used_topics.append("arithmetic")
        template = self.rng.choice(_ARITHMETIC)
        return Draft(_numbers(template, self.rng), _CALCULATOR, value="number")

    def follow(self, parent: int, drafts: Sequence[Draft], noun: str = "") -> Draft:
        """A question about the answer of `drafts[parent]`."""
        value = drafts[parent].value or "thing"
        if value == "number":
            return self.arithmetic_follow(parent)
        options = FOLLOW_UPS.get(value, FOLLOW_UPS["thing"])
        if self.split == "train":
            options = options + MORE_FOLLOW_UPS.get(value, MORE_FOLLOW_UPS["thing"])
        follow = self.rng.choice(options)
        slots = entity_slots(value, noun or _noun(value), self.split, self.rng)
        if self.split == "train" and self.rng.random() < 0.3:
            slots = more_entity_slots(value, noun or _noun(value), self.rng)
        slots["that"] = self.rng.choice(_VALUE_REFERENCES.get(value, {}).get(self.split, ["that"]))
        reference = "person" if value == "person" else "thing"
        self.families.append(f"ref-{reference}-{self.split}")
        text = _capitalise(follow.template.format_map(slots))
        expert = follow.expert if follow.expert not in ("", "-") else drafts[parent].expert
        return Draft(text, expert, (parent,), value=follow.result)

    def arithmetic_follow(self, parent: int, *, explicit: bool = False) -> Draft:
        """An arithmetic step on `parent`'s answer; `explicit` names it ("the first result"),
        as people do when the step does not follow the latest answer."""
        self.families.append(f"ref-number-{self.split}")
        pool = _ARITHMETIC_FOLLOW[self.split]
        if self.split == "train" and not explicit and self.rng.random() < 0.25:
            pool = _ELLIPTICAL
        template = self.rng.choice(pool)
        reference = (
            self.rng.choice(_FIRST_REFERENCES[self.split])
            if explicit
            else number_reference(self.split, self.rng)
        )
        if self.split == "train" and not explicit and self.rng.random() < 0.3:
            reference = self.rng.choice(_MORE_NUMBER_REFERENCES)
        text = _numbers(template, self.rng).replace("{that}", reference)
        return Draft(_capitalise(text), _CALCULATOR, (parent,), value="number")

    def fan_in(self, parents: Sequence[int], drafts: Sequence[Draft]) -> Draft:
        self.families.append(f"ref-fan-in-{self.split}")
        numeric = all(drafts[p].value in ("number", "year", "temperature") for p in parents)
        pool = _FAN_IN_NUMBERS if numeric else _FAN_IN_ENTITIES
        text = _numbers(self.rng.choice(pool[self.split]), self.rng)
        expert = _CALCULATOR if numeric else drafts[parents[0]].expert
        return Draft(text, expert, tuple(parents), value="number" if numeric else None)

    def entity_root(self) -> tuple[Draft, str]:
        if self.rng.random() < 0.3:
            ask = self.ask(value=True)
            return Draft(ask.question, ask.expert, value=ask.value, topic=ask.topic), ""
        find = self.find()
        return Draft(find.question, find.expert, value=find.type, topic=find.topic), find.noun

    # -- shapes ----------------------------------------------------------------------------

    def independent(self, count: int) -> list[Draft]:
        exclude: set[str] = set()
        if self.split == "train" and self.rng.random() < 0.08:  # sums that need nothing
            self.families.append("arithmetic-set")
            return [self.arithmetic() for _ in range(count)]
        drafts = [self.ask_draft(exclude) for _ in range(count)]
        if self.rng.random() < 0.15:  # one of them with an "If ..." or a frame
            index = self.rng.randrange(count)
            drafts[index] = _chatty(drafts[index], self)
        return drafts

    def if_so(self) -> list[Draft]:
        """Training only: 'Is X ...? If so, why?': the second needs the first's answer."""
        self.families.append("shape-if-so")
        for _ in range(50):
            ask = self.ask()
            if re.match(r"(Is|Are|Does|Do|Can|Should|Was|Were|Did|Could)\b", ask.question):
                break
        else:
            return [self.arithmetic(), self.arithmetic_follow(0)]
        follow = self.rng.choice(IF_SO)
        return [Draft(ask.question, ask.expert), Draft(follow, ask.expert, (0,))]

    def dependent(self) -> list[Draft]:
        if self.split == "train" and self.rng.random() < 0.06:
            return self.if_so()
        shape = self.rng.choices(
            ["pair", "chain", "fan-out", "fan-in", "diamond", "arithmetic-chain"],
            weights=[0.3, 0.18, 0.12, 0.14, 0.08, 0.18],
        )[0]
        self.families.append(f"shape-{shape}")
        if shape == "arithmetic-chain":
            drafts = [self.arithmetic()]
            for _ in range(self.rng.choice([1, 2, 2, 3])):
                drafts.append(self.arithmetic_follow(len(drafts) - 1))
            return drafts
        if shape == "fan-in":
            first = self.numeric_root()
            second = self.numeric_root()
            drafts = [first, second]
            drafts.append(self.fan_in([0, 1], drafts))
            return drafts
        if shape == "diamond":
            drafts = [self.numeric_root()]
            drafts.append(self.arithmetic_follow(0))
            drafts.append(self.arithmetic_follow(0, explicit=True))
            drafts.append(self.fan_in([1, 2], drafts))
            return drafts
        root, noun = self.entity_root()
        drafts = [root]
        numeric = root.value in ("number", "year", "temperature")
        if shape == "pair":
            drafts.append(self.follow(0, drafts, noun))
        elif shape == "chain" or numeric:  # steps on a number follow the latest result
            drafts.append(self.follow(0, drafts, noun))
            for _ in range(self.rng.choice([1, 1, 2])):
                kind = drafts[-1].value
                # "When did the same person die?" after two people is ambiguous: stop there.
                if kind is None or (kind != "number" and kind in {d.value for d in drafts[:-1]}):
                    break
                drafts.append(self.follow(len(drafts) - 1, drafts))
        else:  # fan-out: two questions about the same answer
            drafts.append(self.follow(0, drafts, noun))
            extra = self.follow(0, drafts, noun)
            if extra.sentence != drafts[1].sentence:
                drafts.append(extra)
        return drafts

    def numeric_root(self) -> Draft:
        if self.rng.random() < 0.5:
            return self.arithmetic()
        ask = self.ask(value=True)
        return Draft(ask.question, ask.expert, value=ask.value, topic=ask.topic)

    def named_pronoun(self) -> list[Draft]:
        """'Who was Napoleon? When did he die?': the pronoun names the query's own subject."""
        self.families.append(f"named-pronoun-{self.split}")
        if self.split == "train" and self.rng.random() < 0.35:
            return self.named_thing()
        topic = self.rng.choice([t for t in self.topics if t.named])
        self.used_topics.append(topic.name)
        named = self.rng.choice(topic.named)
        openers = {
            "person": ["Who was {n}?", "Tell me about {n}.", "Who is {n}?"],
            "thing": ["What is {n}?", "Tell me about {n}.", "What is {n} known for?"],
        }["person" if named.type == "person" else "thing"]
        follow_ups = list(FOLLOW_UPS.get(named.type, FOLLOW_UPS["thing"]))
        self.rng.shuffle(follow_ups)
        # "What is Brazil's population?": a property of the name, whose answer is a value (an
        # answer that is itself a person or a place could be what the pronoun means).
        values = [f for f in follow_ups if f.result in (None, "number", "year", "temperature")]
        if values and self.rng.random() < 0.5:
            name = {"he": named.name, "his": f"{named.name}'s", "him": named.name}
            name |= {"it": named.name, "its": f"{named.name}'s", "there": f"in {named.name}"}
            name["that"] = named.name
            used = values[0]
            opener = _capitalise(used.template.format_map(name))
            follow_ups.remove(used)
        else:
            opener = self.rng.choice(openers).format(n=named.name)
        first = Draft(opener, named.expert)
        follow = follow_ups[0]
        slots = entity_slots(named.type, _noun(named.type), self.split, self.rng)
        slots["that"] = "that"
        second = Draft(_capitalise(follow.template.format_map(slots)), named.expert)
        return [first, second]

    def named_thing(self) -> list[Draft]:
        """Training only: 'Who founded Amazon? Where is its headquarters?': "its" is the
        named company, not the founder the first question asks for."""
        name, kind, openers = self.rng.choice(NAMED_THINGS)
        self.used_topics.append("named-things")
        first = Draft(self.rng.choice(openers).format(n=name), "general")
        options = [
            f
            for f in FOLLOW_UPS.get(kind, FOLLOW_UPS["thing"])
            if "{he}" not in f.template and "{his}" not in f.template
        ]
        follow = self.rng.choice(options)
        there = self.rng.choice(["there", f"in {name}"])
        text = follow.template.format_map({"it": "it", "its": "its", "there": there, "that": "it"})
        return [first, Draft(_capitalise(text), follow.expert or "general")]

    def mixed(self) -> list[Draft]:
        dependent = self.dependent()
        others = self.independent(self.rng.choice([1, 1, 2]))
        if self.rng.random() < 0.5:  # unrelated asks first: shift the dependencies
            shift = len(others)
            moved = [
                Draft(d.sentence, d.expert, tuple(p + shift for p in d.depends_on), value=d.value)
                for d in dependent
            ]
            return [*others, *moved]
        return [*dependent, *others]


_VALUE_REFERENCES = {
    "year": {
        "train": ["that", "that year", "that year", "the year from before", "the year above"],
        "heldout": ["the same year", "this year"],
    },
    "temperature": {
        "train": ["that", "that temperature", "it"],
        "heldout": ["this value", "the same temperature"],
    },
}


def _noun(entity_type: str) -> str:
    return {"thing": "one", "number": "number"}.get(entity_type, entity_type)


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


_ARITHMETIC = (
    "What is {a} multiplied by {b}?",
    "What is {a} times {b}?",
    "Compute {a} * {b}.",
    "What's {a}*{b}?",
    "whats {a} x {b}",
    "What is {a} plus {b}?",
    "Calculate {a} + {b}.",
    "How much is {big} divided by {b}?",
    "What is {p}% of {big}?",
    "Take {p}% of {big}.",
    "What is {a} squared?",
    "What is the square root of {square}?",
    "What is {big} minus {a}?",
    "Add {a} and {b}.",
    "What's a {p}% tip on ${money}?",
    "Convert {a} miles to kilometres.",
    "How many seconds are in {small} hours?",
    "What is {small} cubed?",
    "What is {small} to the power of {exponent}?",
    "What is the sum of {a} and {b}?",
    "What is the product of {a} and {b}?",
    "What is the result of {big} divided by {b}?",
    "What is the total of {a}, {b} and {c}?",
    "Multiply {a} by {b}.",
    "Find {p} percent of {big}.",
    "{a} + {b} = ?",
    "What is {money} USD in euros at a rate of {rate}?",
    "How many minutes are in {small} days?",
    "What is {big} divided by {small}?",
)
_FIRST_REFERENCES = {
    "train": ("the first result", "the first answer", "the original number"),
    "heldout": ("the very first value", "the number from the start"),
}
_ARITHMETIC_FOLLOW = {
    "train": (
        "Take {that} and add {n}.",
        "With {that}, subtract {n}.",
        "Multiply {that} by {n}, please.",
        "Now add {n} to {that}.",
        "Add {n} to {that}.",
        "Then triple {that}.",
        "Subtract {n} from {that}.",
        "Divide {that} by {n}.",
        "Multiply {that} by {n}.",
        "What is {that} squared?",
        "Is {that} a prime number?",
        "Round {that} to the nearest ten.",
        "What is {p}% of {that}?",
        "What's {that} minus {n}?",
        "Double {that}.",
        "What do you get if you add {n} to {that}?",
        "Is {that} even or odd?",
        "How much is {that} divided by {n}?",
        "Now multiply {that} by {n}.",
    ),
    "heldout": (
        "Using {that}, add {n}.",
        "Take {that} and subtract {n}.",
        "Halve {that}.",
        "What is {that} plus {n}?",
        "Take the square root of {that}.",
        "Is {that} divisible by {small}?",
        "What is {that} times {n}?",
        "Divide {that} by {n}, please.",
    ),
}
_ELLIPTICAL = (
    "Then subtract {n}.",
    "Now divide by {n}.",
    "Multiply by {n}.",
    "then add {n}",
    "Then double.",
    "then divide what's left by {n}",
    "and add {n}",
    "minus {n}?",
    "times {n}?",
    "then /{small}",
    "+{n}",
    "Square it.",
    "Now round to one decimal place.",
    "and what's {p}% of it?",
    "Double it and add {n}.",
)
# Training only: more ways of pointing at the latest number.
_MORE_NUMBER_REFERENCES = (
    "that total",
    "the outcome",
    "the answer above",
    "the result from step 1",
    "the output",
    "that answer",
    "your answer",
    "the last result",
    "the number above",
    "the answer to (1)",
    "the result of that",
    "that product",
    "the figure from before",
    "that one",
)
_FAN_IN_NUMBERS = {
    "train": (
        "Add the two results.",
        "What is the difference between those two numbers?",
        "Multiply the first answer by the second.",
        "What is their sum?",
        "Which of the two is larger?",
        "Divide the first result by the second.",
        "Add them together.",
        "Using those two, what's the ratio?",
        "Use those to get the ratio.",
        "What's the total of the two?",
        "Add them up.",
        "Now subtract the smaller from the larger.",
        "Put those two together: what's the product?",
        "How far apart are they?",
        "Average them.",
    ),
    "heldout": (
        "What is the sum of both answers?",
        "Subtract the second from the first.",
        "Which one of these values is bigger?",
        "Combine both values by multiplying them.",
    ),
}
_FAN_IN_ENTITIES = {
    "train": ("Which of the two is older?", "Which of them is better known?"),
    "heldout": ("Compare the two answers.", "Have those two ever been linked?"),
}


def _numbers(template: str, rng: random.Random) -> str:
    """Fill {a} {b} {c} {big} {small} {p} {n} {money} {rate} {square} {exponent}."""
    values = {
        "a": str(rng.randint(2, 99)),
        "b": str(rng.randint(2, 99)),
        "c": str(rng.randint(2, 99)),
        "big": rng.choice(
            [str(rng.randint(100, 999)), f"{rng.randint(1, 9)},{rng.randint(100, 999)}"]
        ),
        "small": str(rng.randint(2, 12)),
        "p": str(rng.choice([5, 8, 10, 12, 15, 18, 20, 25, 30, 40, 75])),
        "n": str(rng.randint(2, 60)),
        "money": rng.choice(
            [f"{rng.randint(10, 999)}.{rng.randint(10, 99)}", str(rng.randint(20, 5000))]
        ),
        "rate": f"{rng.uniform(0.5, 160):.2f}".rstrip("0").rstrip("."),
        "square": str(rng.randint(2, 30) ** 2),
        "exponent": str(rng.randint(2, 6)),
        "that": "{that}",
    }
    return template.format_map(values)


# -- single questions ------------------------------------------------------------------------

_OPTION_FORMATS = {
    "train": (
        "({A}) {x} ({B}) {y} ({C}) {z}",
        "{A}) {x} {B}) {y} {C}) {z}",
        "Options: ({A}) {x}; ({B}) {y}; ({C}) {z}.",
        "A. {x} B. {y} C. {z}",
        "1) {x} 2) {y} 3) {z}",
    ),
    "heldout": ("(1) {x} (2) {y} (3) {z}", "a. {x} b. {y} c. {z}", "Choices: {x} / {y} / {z}"),
}
_CODE = {
    "train": (
        ("why does this print None?", "def add(a, b):\n    result = a + b\n\nprint(add(2, 3))"),
        (
            "Why is this loop so slow?",
            "for i in range(len(items)):\n    if items[i] in seen_list:\n        count += 1",
        ),
        ("what does this return?", "function f(x) {\n  return x && x.length > 0;\n}"),
        ("Why do I get a KeyError here?", "data = {}\ndata['a'] += 1"),
        ("why does this print nothing?", "grep -r 'TODO' src | wc -l > /dev/null"),
    ),
    "heldout": (
        (
            "what's wrong with this query?",
            "SELECT name, COUNT(*) FROM users WHERE COUNT(*) > 2 GROUP BY name;",
        ),
        ("Can you explain what this does?", "find . -name '*.log' -mtime +7 -delete"),
        ("Why does this never stop?", "i = 0\nwhile i < 10:\n    print(i)"),
    ),
}
_FILLER = {
    "train": (
        "I've read a few articles and I'm still confused.",
        "Honestly I didn't follow the explanation.",
        "It's been bugging me all week.",
        "My friend and I argued about this.",
        "Long story short, I need a clear answer.",
    ),
    "heldout": (
        "I tried searching but got mixed answers.",
        "This came up at dinner last night.",
        "I feel a bit silly asking.",
    ),
}


# Training only: more follow-ups on an earlier answer, by the type of that answer.
MORE_FOLLOW_UPS = {
    key: parse_follow_ups(lines)
    for key, lines in {
        "person": """
            What did {he} invent? @- humanities
            Where did {he} live most of {his} life? @city humanities
            Is {he} still alive? @- humanities
            How did {he} die? @- humanities
            Who were {his} parents? @person humanities
            What's {his} most famous quote? @- humanities
            Give me a short bio of {him}. @- humanities
            Tell me more about {him}. @- humanities
            What awards did {he} get? @- humanities
        """,
        "country": """
            How big is {it}? @number social-science
            Is {it} safe to visit? @- general
            What's the national dish of {it}? @- general
            When is the best time to visit {it}? @- general
            Who borders {it}? @country social-science
        """,
        "city": """
            What's the best time to visit {it}? @- general
            How do I get to {it} from the airport? @- general
            What is {it} famous for? @- general
            How old is {it}? @number humanities
        """,
        "thing": """
            Tell me more about {it}. @- -
            Why is {it} famous? @- -
            Give me a fun fact about {it}. @- -
            How old is {it}? @number -
            Who named {it}? @person -
            What is special about {it}? @- -
        """,
    }.items()
}


def more_entity_slots(entity_type: str, noun: str, rng: random.Random) -> dict[str, str]:
    """Training only: other ways of pointing at an earlier answer."""
    name = rng.choice(
        [
            f"the {noun} you mentioned",
            f"said {noun}",
            f"the {noun} in question",
            f"the {noun} from question 1",
            f"the {noun} above",
            f"that {noun} you named",
            "that one" if entity_type != "person" else "that guy",
            f"the {noun} from before",
        ]
    )
    return {
        "he": name,
        "his": f"{name}'s",
        "him": name,
        "it": name,
        "its": f"{name}'s",
        "there": f"in {name}",
    }


def generate(count: int, split: Split = "train", seed: int = 0) -> list[Example]:
    """`count` examples of `split`, reproducible from `seed`."""
    rng = random.Random(f"{split}-{seed}")
    examples: list[Example] = []
    kinds, weights = zip(*KINDS.items(), strict=True)
    while len(examples) < count:
        kind = rng.choices(kinds, weights=weights)[0]
        example = _example(kind, split, rng)
        if example is not None:
            examples.append(example)
    return examples


def _example(kind: str, split: Split, rng: random.Random) -> Example | None:
    builder = _Builder(split, rng)
    context: list[str] = []
    if kind == "single":
        return _single(builder)
    if kind == "independent":
        if rng.random() < 0.15:
            drafts = builder.named_pronoun()
        else:
            drafts = builder.independent(rng.choices([2, 3, 4], weights=[0.55, 0.33, 0.12])[0])
    elif kind == "dependent":
        drafts = builder.dependent()
    elif kind == "mixed":
        drafts = builder.mixed()
    else:
        return _conversation(builder)
    joiners = [
        f
        for f in (*JOINERS, *EXTRA_JOINERS)
        if f.split == split
        and f.min_parts <= len(drafts) <= f.max_parts
        and (not f.noun_phrases or all(d.noun_phrase and not d.depends_on for d in drafts))
    ]
    if not joiners:
        return None
    family = rng.choice(joiners)
    pieces = family.render(drafts, rng)
    if context:
        lead = [Piece(" ".join(context), "context"), Piece(" ")]
        pieces = lead + pieces
    pieces = _decorate(pieces, builder, rng)
    return _assemble(pieces, drafts, kind, [family.name, *builder.families], builder, split)


_LINKS = (" ", " ", " And ", " Also, ", " Also ", " oh and ", "\n\n", " and also ", " Plus ")
_DEPENDENT_LINKS = (" ", " ", " And ", " Then ", " and ")


def _conversation(builder: _Builder) -> Example:
    """A message that describes a situation, then asks one to three things (possibly with
    more situation between the asks), in a chatty register."""
    rng, split = builder.rng, builder.split
    topic = builder.topic()
    context = situation(split, rng, rng.choice([1, 2, 2, 3, 4]))
    if split == "train" and rng.random() < 0.6:  # what others wrote: far more varied
        for sentence in borrowed_statements(rng, rng.choice([1, 2, 2, 3, 4])):
            context.insert(rng.randrange(len(context) + 1), sentence)
        if rng.random() < 0.3:
            context = context[-rng.choice([1, 2, 3]) :]
    if topic.context and rng.random() < 0.6:
        context.insert(rng.randrange(len(context) + 1), rng.choice(topic.context))
    if rng.random() < 0.3:
        context.append(rng.choice(_FILLER[split]))
    drafts: list[Draft]
    if rng.random() < 0.15:
        statements, asks = word_problem(split, rng, follow=rng.random() < 0.5)
        context.append(statements)
        drafts = [Draft(asks[0], "math")]
        if len(asks) > 1:
            drafts.append(Draft(asks[1], _CALCULATOR, (0,)))
        builder.families.append(f"word-problem-{split}")
    else:
        drafts = [_chatty(_from_ask(rng.choice(topic.asks)), builder)]
        roll = rng.random()
        if roll < 0.55:
            drafts += [_chatty(d, builder) for d in builder.independent(rng.choice([1, 1, 2]))]
        elif roll < 0.75 and drafts[0].value is not None:
            drafts.append(builder.follow(0, drafts))
    pieces: list[Piece] = []
    if rng.random() < 0.3:
        pieces.append(Piece(rng.choice(DECORATIONS["greeting"][split])))
    pieces.append(Piece(" ".join(context), "context"))
    if rng.random() < 0.15:
        pieces.append(Piece(rng.choice([" Today's was: ", " My questions: ", " So: "])))
    for index, draft in enumerate(drafts):
        if index and rng.random() < 0.15:  # more situation between the asks
            pieces += [Piece(" "), Piece(situation(split, rng, 1)[0], "context")]
        elif index and split == "train" and rng.random() < 0.12:
            pieces += [Piece(" "), Piece(borrowed_statements(rng, 1)[0], "context")]
        link = " " if not index else rng.choice(_DEPENDENT_LINKS if draft.depends_on else _LINKS)
        if index and split == "train" and not draft.depends_on and rng.random() < 0.3:
            link = " " + separate_link(rng)
        text = draft.sentence if link.strip() == "" else lower_first(draft.sentence)
        pieces += [Piece(link), Piece(text, "part", index)]
    if rng.random() < 0.3:
        pieces.append(Piece(rng.choice(DECORATIONS["sign-off"][split])))
    if split == "train" and rng.random() < 0.2:
        pieces = [Piece(p.text.lower(), p.role, p.part) for p in pieces]
        builder.families.append("lowercase")
    if split == "train" and rng.random() < 0.12:
        pieces, kinds = roughen(pieces, rng)
        builder.families += kinds
    builder.families.insert(0, f"conversation-{split}")
    return _assemble(pieces, drafts, "conversational", builder.families, builder, split)


def _chatty(draft: Draft, builder: _Builder) -> Draft:
    """The ask as people write it in a message: sometimes framed, sometimes conditioned."""
    rng, split = builder.rng, builder.split
    roll = rng.random()
    if roll < 0.2:
        text = frame(draft.sentence, split, rng)
    elif roll < 0.35:
        text = f"{condition(split, rng)}, {lower_first(draft.sentence)}"
    else:
        return draft
    return Draft(text, draft.expert, draft.depends_on, value=draft.value, topic=draft.topic)


def _from_ask(ask: Ask) -> Draft:
    return Draft(
        ask.question,
        ask.expert,
        noun_phrase=ask.noun_phrase,
        imperative=ask.imperative,
        value=ask.value,
        topic=ask.topic,
    )


_SINGLE_FORMS = (
    "plain",
    "compound",
    "compound",
    "options",
    "code",
    "context",
    "trailing",
    "problem",
    "condition",
    "situation",
)


def _single(builder: _Builder) -> Example:
    rng, split = builder.rng, builder.split
    if split == "train" and rng.random() < 0.3:
        return _other_single(builder)
    form = rng.choice(_SINGLE_FORMS)
    topic = builder.topic()
    ask = rng.choice(topic.asks)
    context: list[Piece] = []
    trailing: list[Piece] = []
    if form == "compound" and topic.singles:
        text = rng.choice(topic.singles)
    elif form == "options":
        values = _option_values(ask, builder)
        layout = rng.choice(_OPTION_FORMATS[split])
        labels = (
            {"A": "A", "B": "B", "C": "C"} if rng.random() < 0.7 else {"A": "a", "B": "b", "C": "c"}
        )
        text = f"{ask.question} {layout.format(x=values[0], y=values[1], z=values[2], **labels)}"
    elif form == "code":
        question, code = rng.choice(_CODE[split])
        text = f"{question}\n\n{code}"
    elif form == "context" and topic.context:
        text = ask.question
        context = [Piece(rng.choice(topic.context), "context"), Piece(" ")]
    elif form == "problem":
        statements, (text,) = word_problem(split, rng, follow=False)
        context = [Piece(statements, "context"), Piece(" ")]
    elif form == "condition":
        text = f"{condition(split, rng)}, {lower_first(ask.question)}"
    elif form == "situation":
        text = frame(ask.question, split, rng) if rng.random() < 0.5 else ask.question
        sentences = situation(split, rng, rng.choice([1, 2, 3]))
        if split == "train" and rng.random() < 0.5:
            sentences = borrowed_statements(rng, rng.choice([1, 2, 3]))
        context = [Piece(" ".join(sentences), "context")]
        context.append(Piece(" "))
    elif form == "trailing" and topic.context and split == "heldout":
        text = ask.question
        trailing = [Piece(" "), Piece(rng.choice(topic.context), "context")]
    else:
        form = "plain"
        text = rng.choice(
            [
                ask.question,
                ask.question,
                ask.noun_phrase or ask.question,
                ask.imperative or ask.question,
            ]
        )
        if rng.random() < 0.3:
            text = strip_end(lower_first(text)).lower() + rng.choice(["", "?"])
    draft = Draft(text, ask.expert)
    pieces = [*context, Piece(text, "part", 0), *trailing]
    pieces = _decorate(pieces, builder, rng)
    return _assemble(pieces, [draft], "single", [f"single-{form}-{split}"], builder, split)


def _other_single(builder: _Builder) -> Example:
    """Training only: one question someone else wrote (MMLU), whatever it contains
    (statements before the ask, options, lists, "and", numbers), or one with words that
    look like references."""
    rng = builder.rng
    roll = rng.random()
    if roll < 0.15:
        text, expert = rng.choice(DISTRACTORS)
        builder.used_topics.append("distractors")
        form = "distractor"
    elif roll < 0.22:
        text, expert = rng.choice(INLINE_CODE)
        builder.used_topics.append("distractors")
        form = "inline-code"
    else:
        ask = rng.choice(mmlu_singles())
        builder.used_topics.append(ask.topic)
        text, expert, form = ask.question, ask.expert, "mmlu"
        if roll < 0.55:
            choices = _MMLU_CHOICES.get(ask.question)
            if choices:
                text, form = with_options(ask, choices, rng), "mmlu-options"
        if rng.random() < 0.2:
            text = text.lower()
    pieces = _decorate([Piece(text, "part", 0)], builder, rng)
    return _assemble(
        pieces, [Draft(text, expert)], "single", [f"single-{form}-train"], builder, "train"
    )


def _mmlu_choices() -> dict[str, list[str]]:
    from compllm.mmlu import load_mmlu

    return {" ".join(q.question.split()): list(q.choices) for q in load_mmlu().questions}


class _LazyChoices:
    """The options of each MMLU question, read on first use."""

    def __init__(self) -> None:
        self._data: dict[str, list[str]] | None = None

    def get(self, question: str) -> list[str] | None:
        if self._data is None:
            self._data = _mmlu_choices()
        return self._data.get(question)


_MMLU_CHOICES = _LazyChoices()


def _option_values(ask: Ask, builder: _Builder) -> list[str]:
    rng = builder.rng
    if ask.value is not None:
        base = rng.randint(2, 400)
        return [str(base + rng.randint(1, 50) * k) for k in range(3)]
    names = [n.name for t in builder.topics for n in t.named]
    return rng.sample(names, 3)


# -- decorations and assembly ------------------------------------------------------------------


def _decorate(pieces: list[Piece], builder: _Builder, rng: random.Random) -> list[Piece]:
    split = builder.split
    if rng.random() < 0.15:
        pieces = [Piece(rng.choice(DECORATIONS["greeting"][split])), *pieces]
        builder.families.append(f"greeting-{split}")
    if rng.random() < 0.12:
        pieces = [*pieces, Piece(rng.choice(DECORATIONS["sign-off"][split]))]
        builder.families.append(f"sign-off-{split}")
    if split == "train" and rng.random() < 0.12:
        pieces = [Piece(p.text.lower(), p.role, p.part) for p in pieces]
        builder.families.append("lowercase")
    if split == "train" and rng.random() < 0.1:
        pieces = [
            Piece(_typos(p.text, rng), p.role, p.part) if p.role != "drop" else p for p in pieces
        ]
        builder.families.append("typos")
    if split == "train" and rng.random() < 0.2:
        pieces, kinds = roughen(pieces, rng)
        builder.families += kinds
    return pieces


_MISSPELLINGS = {
    "what's": "wats",
    "the": "teh",
    "difference": "diffrence",
    "capital": "captial",
    "because": "becuase",
    "definitely": "definately",
    "what": "wat",
    "you": "u",
}


def _typos(text: str, rng: random.Random) -> str:
    def noise(match: re.Match[str]) -> str:
        word = match.group(0)
        if rng.random() > 0.15:
            return word
        if word.lower() in _MISSPELLINGS:
            return _MISSPELLINGS[word.lower()]
        if len(word) < 4:
            return word
        i = rng.randrange(1, len(word) - 1)
        op = rng.choice(["swap", "drop", "double"])
        if op == "swap":
            return word[: i - 1] + word[i] + word[i - 1] + word[i + 1 :]
        if op == "drop":
            return word[:i] + word[i + 1 :]
        return word[:i] + word[i] + word[i:]

    return re.sub(r"[A-Za-z']+", noise, text)


def _assemble(
    pieces: Sequence[Piece],
    drafts: Sequence[Draft],
    kind: str,
    families: Sequence[str],
    builder: _Builder,
    split: Split,
) -> Example:
    query, cursor = "", 0
    part_spans: dict[int, tuple[int, int]] = {}
    context: list[tuple[int, int]] = []
    for piece in pieces:
        start, end = cursor, cursor + len(piece.text)
        query += piece.text
        cursor = end
        stripped = _strip_span(query, start, end)
        if stripped is None:
            continue
        if piece.role == "part":
            old = part_spans.get(piece.part)
            part_spans[piece.part] = stripped if old is None else (old[0], stripped[1])
        elif piece.role == "context":
            context.append(stripped)
    parts = tuple(
        GoldPart(*part_spans[i], depends_on=d.depends_on, expert=d.expert)
        for i, d in enumerate(drafts)
    )
    return Example(
        query=query,
        parts=parts,
        context=tuple(context),
        kind=kind,
        families=tuple(dict.fromkeys(families)),
        topics=tuple(dict.fromkeys(builder.used_topics)),
        split=split,
    )


def _strip_span(text: str, start: int, end: int) -> tuple[int, int] | None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if end > start else None
