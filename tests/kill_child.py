"""A pipeline run in its own process, for the SIGKILL test: fake experts that log every call
to a file (so calls can be counted across processes), checkpoints in SQLite. Prints `END
<id>` as each sub-query finishes and the result as JSON at the end.

    python -m tests.kill_child DATABASE THREAD CALL_LOG [HOLD_CALL]

With HOLD_CALL n, the nth expert call waits until the answers of the calls before it are
in the checkpoint, prints `HOLD <question>` and never ends: the process is busy inside a
call, with a known checkpoint, when the test kills it.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

from compllm import CompLLM, Context, open_checkpointer
from tests.fakes import Call, ScriptedChatModel, make_provider, make_test_registry, plan_json
from tests.saved_answers import SavedAnswers

QUERY = "Multiply two numbers, 12 and 7. Then add 1. Then double it. What is a felony?"
PLAN = plan_json(
    ("q1", "Multiply two numbers, 12 and 7.", []),
    ("q2", "Add 1 to the result of q1.", ["q1"]),
    ("q3", "Double the result of q2.", ["q2"]),
    ("q4", "What is a felony?", []),
)
ANSWERS = {"Double": "170", "Add 1": "85", "Multiply": "84", "felony": "A serious crime."}


def main(database: str, thread: str, call_log: str, hold_call: int | None = None) -> None:
    saved: SavedAnswers | None = None  # the checkpointer's, once it is open
    calls = 0

    def respond(prompt: str, call: Call) -> str:
        nonlocal calls
        question = call.messages[-1].text.splitlines()[-1].removeprefix("Question: ")
        with Path(call_log).open("a") as log:
            log.write(question + "\n")
        calls += 1  # one call at a time (max_parallel_experts=1)
        if calls == hold_call:
            assert saved is not None
            saved.wait_for(calls - 1)
            print(f"HOLD {question}", flush=True)
            threading.Event().wait()  # set by nobody: the process dies in this call
        return next(v for k, v in ANSWERS.items() if k in question)

    provider = make_provider(planner=PLAN, aggregate="84, 85, 170; a felony is a serious crime.")
    provider.chat["expert-model"] = ScriptedChatModel(respond=respond)
    context = Context(
        planner_model="planner-model",
        aggregator_model="aggregator-model",
        embedding_model="fake",
        max_parallel_experts=1,
    )
    with open_checkpointer(database) as saver:
        saved = SavedAnswers(saver)
        app = CompLLM(
            registry=make_test_registry(), context=context, provider=provider, checkpointer=saver
        )
        for kind, payload in app.stream(QUERY, thread_id=thread):
            if kind == "event" and payload["event"] == "subquery_end":
                print(f"END {payload['id']}", flush=True)
            elif kind == "result":
                print(
                    json.dumps(
                        {
                            "answer": payload.answer,
                            "answers": {a.id: a.answer for a in payload.answers},
                        }
                    ),
                    flush=True,
                )


if __name__ == "__main__":
    database, thread, call_log, *hold = sys.argv[1:5]
    main(database, thread, call_log, int(hold[0]) if hold else None)
