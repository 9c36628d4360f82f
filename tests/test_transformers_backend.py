"""The real transformers backend on a tiny random-weight model built from a config
(milliseconds, no download)."""

import json

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import HumanMessage, SystemMessage

from compllm.errors import ModelLoadError
from compllm.models import ModelHub
from compllm.transformers_chat import TransformersChatModel

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    corpus = ['{"answer": "yes"}', "What is the derivative of x?", "system user assistant"] * 5
    backend.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=400,
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
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_chat(tiny_model_dir) -> TransformersChatModel:
    return ModelHub().chat_model(str(tiny_model_dir))


MESSAGES = [SystemMessage("You are terse."), HumanMessage("What is the derivative of x?")]


def test_generates_text_and_reports_token_usage(tiny_chat):
    message = tiny_chat.invoke(MESSAGES, max_new_tokens=5)
    assert isinstance(message.text, str)
    assert 1 <= message.usage_metadata["output_tokens"] <= 5
    assert message.usage_metadata["input_tokens"] > 5
    assert message.response_metadata["model"].endswith("tiny-llama0")


def test_greedy_decoding_is_deterministic(tiny_chat):
    first = tiny_chat.invoke(MESSAGES, max_new_tokens=8, temperature=0.0).text
    assert tiny_chat.invoke(MESSAGES, max_new_tokens=8, temperature=0.0).text == first


def test_json_schema_constrains_even_a_random_model(tiny_chat):
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    for _ in range(2):  # the second call reuses the compiled grammar
        text = tiny_chat.invoke(MESSAGES, json_schema=schema, max_new_tokens=40).text
        assert json.loads(text)["answer"] in {"yes", "no"}


def test_experts_naming_the_same_weights_share_one_loaded_model(tiny_model_dir):
    hub = ModelHub()
    assert hub.chat_model(str(tiny_model_dir)) is hub.chat_model(str(tiny_model_dir))


def test_an_unknown_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match=r"cannot load model '.*no-such-model'"):
        ModelHub().chat_model(str(tmp_path / "no-such-model"))


def test_a_batch_of_conversations_gets_the_same_answers_as_one_at_a_time(tiny_chat):
    conversations = [
        [SystemMessage("You are terse."), HumanMessage(question)]
        for question in ("What is the derivative of x?", "yes", "What is x? What is the answer?")
    ]
    one_by_one = [tiny_chat.invoke(c, max_new_tokens=6) for c in conversations]
    batched = tiny_chat.generate_batch(conversations, max_new_tokens=6)
    assert [m.text for m in batched] == [m.text for m in one_by_one]
    assert [m.usage_metadata for m in batched] == [m.usage_metadata for m in one_by_one]


def test_the_memory_estimate_made_before_loading_matches_the_loaded_weights(tiny_model_dir):
    hub = ModelHub()
    estimate = hub.estimate_chat_model_bytes(str(tiny_model_dir))
    assert estimate > 0
    assert hub.chat_model(str(tiny_model_dir)).memory_bytes() == estimate


class TokenRecorder(BaseCallbackHandler):
    """Records the tokens a chat model run reports, as LangSmith or a UI would see them."""

    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str, **kwargs: object) -> None:
        self.tokens.append(token)


def test_streaming_gives_the_answer_invoke_gives_piece_by_piece(tiny_chat):
    answer = tiny_chat.invoke(MESSAGES, max_new_tokens=12)
    chunks = list(tiny_chat.stream(MESSAGES, max_new_tokens=12))
    pieces = [c.text for c in chunks if c.text]
    assert len(pieces) > 1
    assert "".join(pieces) == answer.text
    streamed = chunks[0]
    for chunk in chunks[1:]:
        streamed += chunk
    assert streamed.usage_metadata == answer.usage_metadata
    assert streamed.response_metadata["finish_reason"] == answer.response_metadata["finish_reason"]


def test_streamed_tokens_reach_the_runs_callbacks(tiny_chat):
    recorder = TokenRecorder()
    text = "".join(
        c.text for c in tiny_chat.stream(MESSAGES, {"callbacks": [recorder]}, max_new_tokens=8)
    )
    assert "".join(recorder.tokens) == text
    assert len([t for t in recorder.tokens if t]) > 1


def test_a_langgraph_node_calling_the_model_streams_its_tokens_in_messages_mode(tiny_chat):
    from langgraph.graph import END, START, MessagesState, StateGraph

    def answer(state: MessagesState) -> dict[str, object]:
        return {"messages": [tiny_chat.invoke(state["messages"], max_new_tokens=8)]}

    graph = StateGraph(MessagesState).add_node("answer", answer)
    graph = graph.add_edge(START, "answer").add_edge("answer", END).compile()
    streamed = [
        (chunk.text, meta["langgraph_node"])
        for chunk, meta in graph.stream({"messages": MESSAGES}, stream_mode="messages")
    ]
    final = graph.invoke({"messages": MESSAGES})["messages"][-1].text
    assert len([t for t, _ in streamed if t]) > 1
    assert "".join(t for t, _ in streamed) == final
    assert {node for _, node in streamed} == {"answer"}


def test_a_stop_string_ends_the_stream_where_it_begins(tiny_chat):
    full = tiny_chat.invoke(MESSAGES, max_new_tokens=16).text
    stop = full[len(full) // 2 : len(full) // 2 + 2]  # a piece from the middle of the answer
    expected = full[: full.find(stop)]
    chunks = list(tiny_chat.stream(MESSAGES, stop=[stop], max_new_tokens=16))
    assert "".join(c.text for c in chunks) == expected
    assert chunks[-1].response_metadata["finish_reason"] == "stop"
    assert tiny_chat.invoke(MESSAGES, stop=[stop], max_new_tokens=16).text == expected


@pytest.mark.parametrize("call", ["invoke", "stream", "generate_batch"])
def test_unknown_keyword_arguments_are_rejected_by_name(tiny_chat, call):
    calls = {
        "invoke": lambda: tiny_chat.invoke(MESSAGES, max_tokens=5),
        "stream": lambda: list(tiny_chat.stream(MESSAGES, max_tokens=5)),
        "generate_batch": lambda: tiny_chat.generate_batch([MESSAGES], max_tokens=5),
    }
    with pytest.raises(TypeError, match=r"unexpected keyword argument.*'max_tokens'"):
        calls[call]()


def test_a_batch_reports_each_conversations_text_as_it_is_decoded(tiny_chat):
    conversations = [MESSAGES, [SystemMessage("You are terse."), HumanMessage("yes")]]
    pieces: dict[int, list[str]] = {0: [], 1: []}
    answers = tiny_chat.generate_batch(
        conversations, max_new_tokens=10, on_text=lambda i, text: pieces[i].append(text)
    )
    assert ["".join(pieces[i]) for i in (0, 1)] == [a.text for a in answers]
    assert all(len(p) > 1 for p in pieces.values())
