"""The learned planner and what it is made from.

- `corpus`, `bank`, `phrasing`: the generated decomposition corpus (phrasing families and
  topics, each tagged train or held-out) and `examples`, its JSONL format;
- `segments`: the segmenter's labels and the decoding of labels into parts and a plan;
- `model`: the network (encoder + LoRA + tagger + pair linker) and `LearnedPlanner`;
- `training`: training and the artefact; `command`: `compllm train-planner`;
- `metrics`: plan accuracy against gold decompositions, with Wilson intervals;
- `acceptance`: the record that decides whether an LLM planner is worth calling.

Importing this package loads no weights and does not import torch.
"""
