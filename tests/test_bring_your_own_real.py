"""Bring your own model, with real weights: `ChatHuggingFace` (langchain-huggingface) over
the embedded SmolLM2, as an expert next to compllm's own, streaming its tokens. Slow: it
loads the model through a transformers pipeline on the CPU."""

from __future__ import annotations

import pytest

from compllm import CompLLM, Context, Expert, Plan, SubQuery
from compllm.models import ModelHub

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chat_huggingface():
    from langchain_huggingface import ChatHuggingFace, HuggingFacePipeline

    path = ModelHub()._embedded_smollm2()  # the converted safetensors folder
    llm = HuggingFacePipeline.from_model_id(
        model_id=path,
        task="text-generation",
        pipeline_kwargs={"max_new_tokens": 12, "do_sample": False, "return_full_text": False},
    )
    return ChatHuggingFace(llm=llm, model_id=path)


def test_chat_huggingface_is_an_expert_and_streams_its_tokens(chat_huggingface):
    app = CompLLM(
        experts=[
            Expert(name="hf", description="anything", model=chat_huggingface),
            Expert(name="calculator", description="arithmetic", model="builtin:calculator"),
        ],
        context=Context(planner_mode="rules"),
    )
    plan = Plan.build(
        [
            SubQuery(id="q1", question="What is the capital of France?", expert="hf"),
            SubQuery(id="q2", question="What is 6 times 7?", expert="calculator"),
        ]
    )
    tokens = []
    for chunk, metadata in app.graph.stream(
        {
            "query": "What is the capital of France? What is 6 times 7?",
            "plan": plan.model_dump(mode="json"),
        },
        context=app.context,
        stream_mode="messages",
    ):
        if metadata.get("compllm_subquery") == "q1":
            tokens.append(chunk.text)
    result = app.invoke("What is the capital of France? What is 6 times 7?", plan=plan)
    hf, calculator = result.answers
    assert hf.status == "ok" and hf.answer
    assert calculator.answer == "6 * 7 = 42"
    assert tokens  # the expert's reply reached the messages stream
