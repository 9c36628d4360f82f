"""`compllm train-planner`: train a learned planner and report on held-out phrasing.

    compllm train-planner --out my-planner/                       # the generated corpus
    compllm train-planner --data generated --data mine.jsonl --out my-planner/
    compllm train-planner --data generated --data handwritten --data handwritten ...
    compllm train-planner --data mine.jsonl --base sentence-transformers/all-MiniLM-L12-v2 ...

The output folder is a planner: `Context(planner_model="my-planner/")` or
`compllm ask --planner-model my-planner/ ...` uses it. `--data` takes the generated corpus
(`generated`, the default), the packaged hand-written examples (`handwritten`: 1,077 queries
written one by one in many styles, none from the generator) and/or JSONL files in the format
of `compllm.planning.examples`; a source named twice counts twice (to weigh a small set).
The report at the end is measured on generated queries whose phrasing families and topics no
training example has, and on any `--eval` files.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

from compllm.errors import CompLLMError

__all__ = ["add_command", "handwritten_examples", "run"]

GENERATED = "generated"
HANDWRITTEN = "handwritten"


def add_command(commands: Any) -> None:
    """Declare `train-planner` on the CLI's subparsers."""
    parser = commands.add_parser(
        "train-planner",
        help="train the learned planner (segmenter + dependency linker) on your queries",
        description="Train a learned planner: a LoRA adapter and two small heads on a sentence "
        "encoder. Reports part-count and dependency-edge accuracy on held-out phrasing.",
    )
    parser.add_argument(
        "--data",
        action="append",
        metavar="SOURCE",
        help="'generated' (the built-in corpus), 'handwritten' (the packaged hand-written "
        "examples) or a JSONL file of planning examples; repeat to combine or to weigh "
        "(default: generated)",
    )
    parser.add_argument("--out", metavar="DIR", required=True, help="folder to write")
    parser.add_argument(
        "--base", default="embedded:all-minilm-l6-v2", help="encoder: embedded, hub id or path"
    )
    parser.add_argument("--examples", type=int, default=20_000, help="generated examples")
    parser.add_argument("--epochs", type=float, default=1.6)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-steps", type=int, help="stop after this many steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--heldout", type=int, default=1000, help="generated held-out queries for the report"
    )
    parser.add_argument(
        "--eval", action="append", default=[], metavar="FILE", help="JSONL to report on too"
    )


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from compllm.planning.corpus import generate
    from compllm.planning.examples import Example, read_examples
    from compllm.planning.model import PlannerConfig
    from compllm.planning.training import TrainSettings, train_planner

    examples: list[Example] = []
    sources = args.data or [GENERATED]
    for source in sources:
        if source == GENERATED:
            examples += generate(args.examples, "train", seed=args.seed)
        elif source == HANDWRITTEN:
            examples += read_examples(handwritten_examples())
        else:
            try:
                examples += read_examples(source)
            except (OSError, ValueError) as exc:
                raise CompLLMError(f"cannot read planning examples: {exc}") from None
    evaluation: dict[str, Sequence[Example]] = {}
    if args.heldout > 0:
        evaluation["held-out families and topics"] = generate(
            args.heldout, "heldout", seed=args.seed + 1
        )
    for path in args.eval:
        try:
            evaluation[Path(path).name] = read_examples(path)
        except (OSError, ValueError) as exc:
            raise CompLLMError(f"cannot read evaluation examples: {exc}") from None
    print(
        f"training on {len(examples)} examples ({', '.join(sources)}), base {args.base}",
        file=out,
        flush=True,
    )
    bar = _ProgressBar(err)
    report = train_planner(
        examples,
        args.out,
        config=PlannerConfig(base=args.base),
        settings=TrainSettings(
            epochs=args.epochs,
            batch_size=args.batch_size,
            seed=args.seed,
            max_steps=args.max_steps,
        ),
        evaluation=evaluation,
        progress=bar.update,
        describe={"data": sources, "generated_examples": args.examples},
    )
    bar.close()
    training = report["training"]
    print(
        f"trained {training['steps']} steps in {training['seconds'] / 60:.1f} min; "
        f"wrote {args.out}",
        file=out,
    )
    for name, rates in report["evaluation"].items():
        print(f"{name} ({rates['parts']['total']} queries):", file=out)
        for metric in ("parts", "edges", "dropped_or_merged"):
            rate = rates[metric]
            low, high = rate["ci95"]
            print(
                f"  {metric:<18} {100 * rate['rate']:5.1f}%  [{100 * low:.1f}, {100 * high:.1f}]",
                file=out,
            )
    return 0


def handwritten_examples() -> Path:
    """The packaged hand-written planning examples (`--data handwritten`)."""
    return Path(str(resources.files("compllm").joinpath("data/planning/handwritten.jsonl")))


class _ProgressBar:
    """A tqdm bar on the error stream (the report goes to the output stream)."""

    def __init__(self, err: TextIO) -> None:
        self.err = err
        self.bar: Any = None

    def update(self, step: int, steps: int, loss: float) -> None:
        if self.bar is None:
            from tqdm import tqdm  # type: ignore[import-untyped]

            self.bar = tqdm(total=steps, desc="train-planner", unit="step", file=self.err)
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
