"""Evaluation harness: MMLU data, multi-expert composite suites, systems compared side by
side (monolithic, sequential, comp-llm, oracle-plan), metrics and reports."""
