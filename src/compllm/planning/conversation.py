"""How people write around their questions: the situation they describe first (with ages,
sums, dates, "and", commas and asides), the conditions they put on a question ("If I sue
and win, ..."), first-person frames ("Can you explain ..."), and word problems whose
statements carry numbers but ask nothing. Each pool is split train / held-out like the
phrasing families.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from compllm.planning.bank import Split

__all__ = ["condition", "frame", "situation", "word_problem"]

_FILL: dict[str, Callable[[random.Random], str]] = {
    "age": lambda r: str(r.randint(19, 84)),
    "kid_age": lambda r: str(r.randint(5, 17)),
    "money": lambda r: r.choice(
        ["40k", "$310,000", "$1,800", "6000 dollars", "$12k", "£900", "$2,450", "about 80k"]
    ),
    "n": lambda r: str(r.randint(2, 12)),
    "big": lambda r: r.choice(["10k", "40 million", "2,000", "300", "half a million"]),
    "duration": lambda r: r.choice(
        ["3 weeks", "two years", "a month", "six months", "like 10 years", "a couple of days"]
    ),
    "city": lambda r: r.choice(
        ["Oregon", "Chicago", "Lyon", "Toronto", "Austin", "Leeds", "Melbourne", "Pune"]
    ),
    "relation": lambda r: r.choice(
        [
            "dad",
            "mom",
            "sister",
            "brother",
            "daughter",
            "son",
            "husband",
            "wife",
            "neighbour",
            "grandmother",
        ]
    ),
    "job": lambda r: r.choice(
        [
            "nurse",
            "teacher",
            "software developer",
            "accountant",
            "electrician",
            "student",
            "barista",
        ]
    ),
    "items": lambda r: r.choice(["files", "rows", "photos", "users", "orders", "emails"]),
    "thing": lambda r: r.choice(
        ["the car", "the old laptop", "our house", "the business", "my bike", "the cabin"]
    ),
    "event": lambda r: r.choice(
        [
            "a dinner party",
            "my sister's wedding",
            "a team offsite",
            "a book club night",
            "a school fundraiser",
        ]
    ),
    "feeling": lambda r: r.choice(
        [
            "I'm kinda panicking",
            "honestly I'm a bit lost",
            "I'm so confused",
            "it's stressing me out",
            "I'm excited but nervous",
        ]
    ),
}

_SITUATIONS: dict[Split, tuple[str, ...]] = {
    "train": (
        "I'm {age} and work as a {job}.",
        "My {relation} is {age} and pretty stubborn about doctors.",
        "I've been learning to code for {duration} now.",
        "We've got about {money} saved and a plan lined up.",
        "I moved out {n} weeks ago, left the place spotless, and have photos.",
        "Long story short, my landlord kept {money} of my deposit.",
        "It works but it's slow on big folders (like {big} {items}).",
        "My friend said to just ignore it but i don't get why.",
        "I've read a dozen blog posts and I'm still fuzzy.",
        "My accountant is on vacation and {feeling}.",
        "I'm hosting {event} next month and want to be prepared.",
        "We have a rough budget of {money}.",
        "First time doing this for both of us!",
        "Kids keep asking me questions I can't answer on the spot.",
        "I drink like {n} cups of coffee a day and barely any water.",
        "No other health issues, {age} years old.",
        "I'm {age}, have about {money} invested, and spend around {money} a year.",
        "so i've been stuck on this for {duration}.",
        "Half of us thought it was great, half thought it was awful.",
        "The contract says one thing and my boss says another.",
        "We're selling {thing} and a buyer offered {money}.",
        "I live in {city}.",
        "My {relation} just started a new job in {city}.",
        "It's been {duration} and nothing has changed.",
        "I tried restarting it twice (no luck).",
        "Been thinking about this a lot lately.",
        "My {relation} was just diagnosed with something and {feeling}.",
        "ok so this is a weird one.",
        "Quick background: I run a small shop with {n} employees.",
        "We close on the house in {n} weeks.",
    ),
    "heldout": (
        "For context, I'm a {job} in {city}.",
        "My {relation} ({age}) keeps asking me about this.",
        "I've spent {duration} going back and forth on it.",
        "Our team of {n} just inherited a legacy system (yikes).",
        "I paid {money} for {thing} and regret it a little.",
        "Everyone online seems to disagree, which doesn't help.",
        "It's for {event}, so no pressure lol.",
        "Background: {big} {items}, one server, zero budget.",
        "I'm not a native speaker, sorry for mistakes.",
        "We've been arguing about this since dinner.",
    ),
}

_CONDITIONS: dict[Split, tuple[str, ...]] = {
    "train": (
        "If I use the 4% rule",
        "If I sue in small claims and win",
        "If I only have 20 minutes a day",
        "If we move there next year",
        "If I pay in cash",
        "If I double the recipe",
        "If the pre-money valuation is {money}",
        "If I start next month and keep my current job",
        "If it rains all week",
        "Assuming I have {money} to spend",
        "When I'm traveling for work",
        "Since I work nights",
        "As a complete beginner",
        "For a small team like ours",
        "Before I sign anything",
    ),
    "heldout": (
        "Say I quit tomorrow",
        "Supposing we go with the cheaper option",
        "In case I had to pick just one",
        "Given that I'm {age}",
    ),
}

_FRAMES: dict[Split, tuple[str, ...]] = {
    "train": (
        "Can you explain {bare}?",
        "Could you tell me {bare}?",
        "So {q}",
        "Do you know {bare}?",
        "Any idea {bare}?",
        "I need to know {bare}.",
        "Can someone tell me {bare}?",
        "I also want to know {bare}.",
        "Can you also tell me {bare}?",
    ),
    "heldout": (
        "I'm wondering {bare}.",
        "Would you mind telling me {bare}?",
        "My question is: {q}",
    ),
}


def _fill(template: str, rng: random.Random) -> str:
    return template.format_map({k: f(rng) for k, f in _FILL.items()})


def situation(split: Split, rng: random.Random, count: int) -> list[str]:
    """`count` sentences describing the asker's situation."""
    sentences = rng.sample(_SITUATIONS[split], count)
    return [_fill(s, rng) for s in sentences]


def condition(split: Split, rng: random.Random) -> str:
    """An "If ..." clause to put before a question."""
    return _fill(rng.choice(_CONDITIONS[split]), rng)


def frame(question: str, split: Split, rng: random.Random) -> str:
    """The question inside a first-person frame ("Can you explain what X is?")."""
    bare = question.rstrip("?.! ")
    lowered = question
    if bare[:1].isupper() and not bare[1:2].isupper():  # "What ..." but not "HTTP ..."
        bare, lowered = bare[0].lower() + bare[1:], question[0].lower() + question[1:]
    return rng.choice(_FRAMES[split]).format(bare=bare, q=lowered)


def _money(rng: random.Random) -> str:
    return f"{rng.randint(2, 90)}.{rng.choice(['00', '50', '99', '25'])}"


# Word problems: statements with numbers, then what is asked; the follow-up (when present)
# needs the first answer.
_PROBLEMS: dict[Split, tuple[tuple[str, str, str], ...]] = {
    "train": (
        (
            "A train leaves at 2:{m} pm going {a} mph, and another leaves the same station at "
            "3:{m} pm going {b} mph in the same direction.",
            "When does the second train catch up?",
            "How far from the station is that?",
        ),
        (
            "In a class of {c} students, {a} play soccer, {b} play basketball and {n} play both.",
            "How many play neither?",
            "What fraction of the class is that?",
        ),
        (
            "I'm baking for {c} people and the recipe serves {n}.",
            "How many cups of flour do I need if the original calls for {n}.5 cups?",
            "And how many grams is that?",
        ),
        (
            "A laptop costs ${a}0 and is {p}% off.",
            "What is the sale price?",
            "How much is that with 8% tax?",
        ),
        (
            "My car gets {a} miles per gallon and gas is ${money} a gallon.",
            "How much does a {c}0-mile trip cost?",
            "What would that be for the return trip too?",
        ),
        (
            "A rectangle is {a} m long and {b} m wide.",
            "What is its area?",
            "How many 1 m tiles cover it?",
        ),
        (
            "Tom is {a} years old and his sister is {n} years older.",
            "How old will she be in {b} years?",
            "What year will that be if it is 2025 now?",
        ),
        (
            "A tank holds {c}0 litres and fills at {n} litres a minute.",
            "How long does it take to fill?",
            "Convert that to hours.",
        ),
    ),
    "heldout": (
        (
            "We have {c} guests and each eats {n} slices, and a pizza has 8 slices.",
            "How many pizzas should I order?",
            "At ${money} each, what do they cost?",
        ),
        (
            "A runner does {n} laps of a {a}0 m track, then walks {b}0 m.",
            "How far did she go in total?",
            "How many kilometres is that?",
        ),
        (
            "The bill is ${a}.{m} for {n} of us and we want to leave a {p}% tip.",
            "How much should each person pay?",
            "Round it up to the next dollar.",
        ),
    ),
}


def word_problem(split: Split, rng: random.Random, *, follow: bool) -> tuple[str, list[str]]:
    """(statements, [question, follow-up?])."""
    statements, question, follow_up = rng.choice(_PROBLEMS[split])
    values = {
        "a": str(rng.randint(11, 60)),
        "b": str(rng.randint(11, 60)),
        "c": str(rng.randint(12, 40)),
        "n": str(rng.randint(2, 9)),
        "m": f"{rng.choice([0, 15, 30, 45]):02d}",
        "p": str(rng.choice([10, 15, 20, 25, 30])),
        "money": _money(rng),
    }
    asks = [question.format_map(values)]
    if follow:
        asks.append(follow_up.format_map(values))
    return statements.format_map(values), asks
