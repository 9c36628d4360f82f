"""How the benchmark scores: strict answer extraction, final answers cut into parts, strict
plan matching, option log-likelihood, naive baselines, intervals and paired tests."""

from __future__ import annotations

import pytest
from langchain_core.messages import HumanMessage, SystemMessage

from compllm.bench.extract import extract_choice, extract_number
from compllm.bench.matching import match_parts
from compllm.bench.naive import naive_baselines
from compllm.bench.sections import split_sections
from compllm.bench.stats import bootstrap_interval, mcnemar
from compllm.bench.suite import CompositeItem, Part
from compllm.plan import Plan, SubQuery

CHOICES = ("Paris", "London", "Berlin", "Rome")

# -- multiple choice --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("The answer is (B)", 1),
        ("B.", 1),
        ("b) London", 1),
        ("**Answer: C**", 2),
        ("Answer: c.", 2),
        ("The correct option is D because it is the capital.", 3),
        ("(C) Berlin is the capital of Germany.", 2),
        ("A", 0),
        ("I'd choose D", 3),
        ("B is correct.", 1),
        ("The answer is option B", 1),
        ("I am quite sure it is Rome.", 3),
        ("The answer is a city: Paris.", 0),
        ("I do not know.", None),
        ("A man walks into a bar.", None),  # an article, not an option
    ],
)
def test_choice_extraction_reads_how_small_models_state_an_answer(reply, expected):
    assert extract_choice(reply, CHOICES) == expected


def test_the_last_explicit_statement_wins():
    assert extract_choice("The answer is A. No wait, the answer is C.", CHOICES) == 2
    assert extract_choice("Answer: D. On reflection, I would choose B", CHOICES) == 1


@pytest.mark.parametrize(
    "reply",
    [
        "The answer is A or B.",
        "The answer is B and C",
        "The answer is (B) London or (C) Berlin",
        "The answer is either Paris or London.",
        "It could be (A) or (C).",
        "Both Paris and London are capitals.",
    ],
)
def test_a_hedge_over_several_options_is_no_answer(reply):
    assert extract_choice(reply, CHOICES) is None


@pytest.mark.parametrize(
    "reply",
    [
        "A) Paris\nB) London\nC) Berlin\nD) Rome",
        "Options: (A) Paris; (B) London; (C) Berlin; (D) Rome.",
        "Which city is the capital of France? (A) Paris (B) London (C) Berlin (D) Rome",
    ],
)
def test_a_restated_option_list_is_no_answer(reply):
    assert extract_choice(reply, CHOICES) is None


def test_an_answer_after_a_restated_option_list_is_read():
    reply = "Options: (A) Paris; (B) London; (C) Berlin; (D) Rome. The answer is B."
    assert extract_choice(reply, CHOICES) == 1


def test_echoed_data_never_matches_a_number_option():
    """The README run's false positive: a median question whose reply only lists the data
    matched option C ("22") through the option-text fallback."""
    options = ("10", "13", "22", "24")
    reply = (
        "To find the median of the given dataset, we need to first arrange the numbers in "
        "order from smallest to largest: 10, 13, 10, 22, 24, 26, 32, 35"
    )
    assert extract_choice(reply, options) is None
    assert extract_choice("The answer is 22.", options) == 2  # stated, it counts
    assert extract_choice("The answer is C", options) == 2


# -- numbers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("29 * 5 = 145", 145),
        ("Step 1: 3 + 4 = 7. Step 2: 7 * 2 = 14. The answer is 14.", 14),
        ("The result is -7.5.", -7.5),
        ("That makes 1,234 apples", 1234),
        ("What is 23 times 7? 23 times 7 is 161", 161),  # the question asked back is skipped
        ("161", 161),
        ("25% of 80 is 20.", 20),
        ("no number here", None),
        ("10, 13, 10, 22, 24", None),  # several numbers, none stated: no answer
        ("It is 12 or 13", None),  # a hedge
        ("Multiply 145 by 7", None),
    ],
)
def test_number_extraction_takes_the_last_stated_result(reply, expected):
    assert extract_number(reply) == expected


# -- final answers cut into parts -------------------------------------------------------


def test_markers_of_every_common_kind_cut_a_reply():
    reply = "Part 1: (B) because...\nQuestion 2 - 42\n3. C\n**Q4**: D"
    assert split_sections(reply, 4).texts == ["(B) because...", "42", "C", "D"]
    assert split_sections(reply, 4).how == ["marker"] * 4


def test_ordinal_markers_and_lettered_parts():
    assert split_sections("First: B. Second question: 17.", 2).texts == ["B.", "17."]
    lettered = "a) B\nb) The answer is C"  # read as part markers when the query lettered
    assert split_sections(lettered, 2, lettered=True).texts == ["B", "The answer is C"]


def test_a_part_marked_twice_gets_both_sections():
    reply = "Part 1: the answer is A\nPart 2: B\nPart 1: on second thoughts, the answer is C"
    texts = split_sections(reply, 2).texts
    assert texts[0] == "the answer is A\non second thoughts, the answer is C"
    assert extract_choice(texts[0], CHOICES) == 2  # the later statement wins


def test_unmarked_parts_are_found_by_their_echoed_question_or_one_line_each():
    questions = ["What is the capital of France?", "What is 12 times 4?"]
    reply = "What is the capital of France? Paris.\nWhat is 12 times 4? It is 48."
    sections = split_sections(reply, 2, questions=questions)
    assert sections.how == ["echo", "echo"]
    assert extract_number(sections.texts[1]) == 48
    assert split_sections("Paris\n48", 2).texts == ["Paris", "48"]
    assert split_sections("Paris\n48", 2).how == ["line", "line"]
    assert split_sections("The answer is B", 1).how == ["whole"]


def test_numbered_sections_that_repeat_questions_are_read_by_the_question():
    """The aggregator's fallback numbers its own plan: here an extra first sub-query (the
    query's greeting) shifts every number by one."""
    questions = ["Which city is the capital of France?", "Which city is the capital of Italy?"]
    reply = (
        "1. Can you help me with these? (general)\nOf course!\n\n"
        "2. Which city is the capital of France? (geography)\nThe answer is (A)\n\n"
        "3. Which city is the capital of Italy? (geography)\nThe answer is (D)"
    )
    sections = split_sections(reply, 2, questions=questions)
    assert sections.how == ["echo", "echo"]
    assert [extract_choice(s, CHOICES) for s in sections.texts] == [0, 3]


def test_a_numbered_section_without_its_question_keeps_its_number():
    questions = ["Which city is the capital of France?", "Which city is the capital of Italy?"]
    reply = "Part 1: B\nPart 2: Which city is the capital of Italy? The answer is D"
    sections = split_sections(reply, 2, questions=questions)
    assert sections.how == ["marker", "echo"]
    assert [extract_choice(s, CHOICES) for s in sections.texts] == [1, 3]


def test_a_reply_that_cannot_be_cut_leaves_parts_unlocated():
    sections = split_sections("I think it is Paris and the other one is 48, maybe.", 2)
    assert sections.texts == ["", ""]
    assert sections.how == ["none", "none"]


# -- strict plan matching ---------------------------------------------------------------


def gold(*questions: str) -> list[Part]:
    return [
        Part(id=f"q{i}", question=q, kind="number", answer="0", domain="math")
        for i, q in enumerate(questions, 1)
    ]


def plan(*questions: str) -> Plan:
    return Plan.build([SubQuery(id=f"s{i}", question=q) for i, q in enumerate(questions, 1)])


PARTS = gold(
    "What is the boiling point of water at sea level in kelvin?",
    "Which enzyme breaks down starch in human saliva?",
    "Who wrote the novel War and Peace in Russian?",
    "How many bones does an adult human skeleton have?",
)


def test_one_sub_query_per_gold_part_matches_every_part():
    exact = plan(*(p.question for p in PARTS))
    assert match_parts(exact, PARTS) == {"q1": "s1", "q2": "s2", "q3": "s3", "q4": "s4"}


def test_a_merged_sub_query_counts_as_a_miss_for_all_but_one_part():
    merged = plan(f"{PARTS[0].question} And {PARTS[1].question}", *(p.question for p in PARTS[2:]))
    matched = match_parts(merged, PARTS)
    assert (matched["q3"], matched["q4"]) == ("s2", "s3")
    assert len(matched) == 3  # the merged sub-query counts for q1 or q2, not both
    assert ("q1" in matched) != ("q2" in matched)


def test_a_sub_query_holding_the_whole_query_matches_no_part():
    superset = plan(" ".join(p.question for p in PARTS))
    assert match_parts(superset, PARTS) == {}


def test_a_reworded_dependent_step_still_matches():
    steps = gold("What is 23 multiplied by 7?", "Add 15 to it")
    reworded = plan("Compute 23 multiplied by 7", "Add 15 to the result of step 1")
    assert match_parts(reworded, steps) == {"q1": "s1", "q2": "s2"}


# -- naive baselines --------------------------------------------------------------------


def item(answers: str, numbers: int = 0) -> CompositeItem:
    parts = [
        Part(
            id=f"q{i}",
            question=f"question {i}",
            kind="choice",
            answer=a,
            choices=CHOICES,
            domain="law",
        )
        for i, a in enumerate(answers, 1)
    ]
    parts += [
        Part(id=f"n{i}", question=f"sum {i}", kind="number", answer="7", domain="math")
        for i in range(numbers)
    ]
    return CompositeItem(id=f"i{answers}", kind="parallel", query="...", parts=tuple(parts))


def test_naive_baselines_score_what_guessing_would():
    items = [item("CCA", numbers=1), item("CB")]  # letters C C A C B: C is 3/5
    chance, constant, prior = naive_baselines(items)
    assert constant.name == "constant letter C"
    mean = lambda rows: sum(map(sum, rows)) / sum(map(len, rows))  # noqa: E731
    assert mean(chance.item_scores(items, "choice")) == 0.25
    assert mean(chance.item_scores(items)) == 0.25 * 5 / 6  # the arithmetic part scores 0
    assert mean(constant.item_scores(items, "choice")) == 3 / 5
    assert mean(prior.item_scores(items, "choice")) == pytest.approx(
        (3 * 0.6 + 0.2 + 0.2) / 5  # each part scores the prior of its own right letter
    )


# -- statistics -------------------------------------------------------------------------


def test_mcnemar_exact_on_a_small_table():
    # b = 1 part only the first got right, c = 6 only the second: p = 2 * (1 + 7) / 2^7
    first = [True] + [False] * 6 + [True] * 3 + [False] * 2
    second = [False] + [True] * 6 + [True] * 3 + [False] * 2
    test = mcnemar(first, second)
    assert (test.both, test.only_first, test.only_second, test.neither) == (3, 1, 6, 2)
    assert test.p_value == pytest.approx(0.125)
    assert test.test == "exact binomial"


def test_mcnemar_chi_square_on_a_large_table():
    # b = 10, c = 25: (|10 - 25| - 1)^2 / 35 = 5.6, p = 0.01796 (one degree of freedom)
    test = mcnemar([True] * 10 + [False] * 25, [False] * 10 + [True] * 25)
    assert test.test == "chi-square, continuity-corrected"
    assert test.p_value == pytest.approx(0.017960, abs=1e-5)


def test_mcnemar_without_discordant_pairs_finds_no_difference():
    assert mcnemar([True, False], [True, False]).p_value == 1.0


def test_bootstrap_resamples_whole_items():
    # Two items: resampling items gives means of 1.0, 0.8 (one of each) or 0.0 only.
    interval = bootstrap_interval([[1, 1, 1, 1], [0]])
    assert interval is not None
    assert (interval.value, interval.low, interval.high, interval.n) == (0.8, 0.0, 1.0, 5)


def test_bootstrap_interval_holds_the_mean_and_narrows_with_more_items():
    few = bootstrap_interval([[1, 0]] * 5)
    many = bootstrap_interval([[1, 0, 1, 0, 1], [0, 0, 1], [1, 1], [0]] * 25)
    assert few is not None and many is not None
    assert few.low <= few.value <= few.high
    assert many.low < many.value < many.high
    assert many.high - many.low < 0.25
    constant = bootstrap_interval([[0.25, 0.25]] * 4)  # an expected score, the same everywhere
    assert constant is not None
    assert (constant.value, constant.low, constant.high) == (0.25, 0.25, 0.25)
    assert bootstrap_interval([]) is None


def test_bootstrap_is_reproducible():
    rows = [[1, 0, 1], [0], [1, 1], [0, 0]]
    assert bootstrap_interval(rows) == bootstrap_interval(rows)


# -- option log-likelihood on a real (tiny, random) transformers model ------------------


CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tiny_lm():
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    corpus = ["Paris London Berlin Rome", "What is the capital of France?", "Part 1:"] * 5
    backend.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=300,
            special_tokens=["<|im_start|>", "<|im_end|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", bos_token="<|im_start|>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
    )
    return LlamaForCausalLM(config).eval(), tokenizer


def test_option_log_probabilities_equal_a_full_forward_pass(tiny_lm):
    """The scorer runs the prompt once and each option from its cache; the result must be
    what scoring each prompt + option from scratch gives."""
    import torch

    from compllm.bench.loglik import TransformersOptionScorer

    model, tokenizer = tiny_lm
    messages = [SystemMessage("You answer."), HumanMessage("What is the capital of France?")]
    options = [" Paris", " London", " Berlin and Rome"]
    scored = TransformersOptionScorer(model, tokenizer).option_logprobs(
        messages, "Part 1:", options
    )
    prompt = tokenizer.apply_chat_template(
        [
            {"role": "system", "content": "You answer."},
            {"role": "user", "content": messages[1].text},
        ],
        add_generation_prompt=True,
        tokenize=False,
    )
    context = tokenizer(prompt + "Part 1:", add_special_tokens=False)["input_ids"]
    for option, value in zip(options, scored, strict=True):
        tokens = tokenizer(option, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            logits = model(torch.tensor([context + tokens])).logits[0]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        expected = sum(
            float(logprobs[len(context) + i - 1, token]) for i, token in enumerate(tokens)
        )
        assert value == pytest.approx(expected, abs=1e-4)


def test_the_best_option_is_chosen_per_byte():
    from compllm.bench.loglik import best_option

    # "Berlin and Rome" has more bytes: its lower total is a higher score per byte.
    index, scores = best_option([-6.0, -12.0, -14.0], ["Paris", "London", "Berlin and Rome"])
    assert index == 2
    assert scores == pytest.approx([-1.2, -2.0, -14 / 15])
