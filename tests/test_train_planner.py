"""`compllm train-planner` on a tiny subset, and the artefact it writes: it loads, it plans,
and its adapter really changes the encoder."""

import io
import json
import re
from collections import Counter
from pathlib import Path

import torch

from compllm.cli import main
from compllm.models import ModelHub, is_learned_planner
from compllm.planning.command import handwritten_examples
from compllm.planning.examples import read_examples
from compllm.planning.model import (
    LearnedPlanner,
    PlannerConfig,
    build_network,
    transitive_reduction,
)
from compllm.planning.training import save_artefact

EVALUATION = Path(__file__).parent.parent / "benchmarks" / "planner_eval"
QUERY = "Who painted The Night Watch? When was he born?"


def test_train_planner_writes_a_planner_that_loads_and_differs_from_the_untrained_one(tmp_path):
    mine = tmp_path / "mine.jsonl"
    mine.write_text(
        json.dumps(
            {
                "query": QUERY,
                "parts": [
                    {"text": "Who painted The Night Watch?"},
                    {"text": "When was he born?", "depends_on": [1]},
                ],
            }
        )
        + "\n"
    )
    folder = tmp_path / "planner"
    out, err = io.StringIO(), io.StringIO()
    arguments = ["train-planner", "--data", "generated", "--data", str(mine), "--out", str(folder)]
    arguments += ["--data", "handwritten"]  # the packaged hand-written examples
    arguments += ["--examples", "24", "--batch-size", "8", "--max-steps", "3", "--heldout", "8"]
    assert main(arguments, out=out, err=err) == 0
    report = out.getvalue()
    handwritten = len(read_examples(handwritten_examples()))
    assert f"training on {24 + 1 + handwritten} examples (generated, " in report
    assert "held-out families and topics (8 queries):" in report and "edges" in report
    assert "3/3" in err.getvalue()  # the progress bar
    manifest = json.loads((folder / "compllm-planner.json").read_text())
    assert manifest["report"]["training"]["steps"] == 3
    assert manifest["report"]["evaluation"]["held-out families and topics"]["parts"]["total"] == 8

    assert is_learned_planner(str(folder))
    trained = ModelHub().planner(str(folder))
    assert trained.plan(QUERY).subqueries  # plans something
    untrained, tokenizer = build_network(trained.config)
    untrained.eval()
    batch = tokenizer(QUERY, return_tensors="pt")
    with torch.inference_mode():
        before = untrained.encode(batch["input_ids"], batch["attention_mask"])
        after = trained.network.encode(batch["input_ids"], batch["attention_mask"])
        tags_before = untrained.tag_logits(before)
        tags_after = trained.network.tag_logits(after)
    assert not torch.allclose(before, after, atol=1e-4)  # the adapter changed the encoder
    assert not torch.allclose(tags_before, tags_after, atol=1e-4)  # and the heads were trained


def test_the_merged_adapter_computes_what_peft_computes(tmp_path):
    from peft import LoraConfig, get_peft_model

    config = PlannerConfig(lora_rank=4, lora_alpha=8)
    network, tokenizer = build_network(config)
    network.encoder = get_peft_model(
        network.encoder,
        LoraConfig(r=4, lora_alpha=8, target_modules=list(config.lora_targets), lora_dropout=0.0),
    )
    torch.manual_seed(1)
    with torch.no_grad():
        for name, parameter in network.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.05)  # B starts at zero: give the adapter an effect
    network.eval()
    batch = tokenizer(QUERY, return_tensors="pt")
    with torch.inference_mode():
        expected = network.encode(batch["input_ids"], batch["attention_mask"])
    save_artefact(network, config, tmp_path, {"training": {}})
    loaded = LearnedPlanner.load(tmp_path)
    with torch.inference_mode():
        merged = loaded.network.encode(batch["input_ids"], batch["attention_mask"])
    assert torch.allclose(expected, merged, atol=2e-2)  # the artefact stores float16
    assert (tmp_path / "weights.safetensors").stat().st_size < 8_000_000


def test_the_packaged_hand_written_examples_share_no_query_with_the_evaluation_sets():
    """`--data handwritten` trains on them: a query that is also in a set the planner is
    measured on (or a close rewording of one) would make that measure a training figure."""
    examples = read_examples(handwritten_examples())  # every part a verbatim span, in order
    assert len(examples) >= 500
    kinds = Counter(e.kind for e in examples)
    assert kinds["single"] >= 100  # enough asks that must not be split
    # The linker's chain rule (`transitive_reduction`) rests on this: people's plans almost
    # never link a part to a grandparent whose answer it also needs.
    implied = [e for e in examples if transitive_reduction(set(e.edges)) != set(e.edges)]
    assert len(implied) == 3
    evaluation = [
        _words(e.query)
        for name in ("handwritten_dev2.jsonl", "handwritten_test.jsonl")
        for e in read_examples(EVALUATION / name)
    ]
    for example in examples:
        words = _words(example.query)
        overlap = max(len(words & other) / len(words | other) for other in evaluation)
        assert overlap < 0.5, example.query


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9']+", text.lower()))
