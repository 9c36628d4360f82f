"""Servers the tests start for real on 127.0.0.1: a free port, start, wait until the server
answers, stop (with its workers). Used for `langgraph dev` and for llama.cpp's server."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def serving(
    command: list[str],
    log: Path,
    *,
    probe_url: str,
    ready: Callable[[Any], bool],
    name: str,
    timeout_s: float = 90,
    **popen: Any,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `command` (output to `log`) until `ready(reply to probe_url)`; stopped after."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its workers go down with it
            **popen,
        )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise AssertionError(f"{name} exited:\n{log.read_text()[-3000:]}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(probe_url, timeout=2) as reply,
            ):
                if ready(reply):
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextlib.contextmanager
def langgraph_dev(config: Path, log: Path, **extra_env: str) -> Iterator[str]:
    """`langgraph dev` on a free loopback port, offline and without tracing."""
    port = free_port()
    env = {
        **os.environ,
        **extra_env,
        "LANGSMITH_TRACING": "false",
        "LANGCHAIN_TRACING_V2": "false",
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",
        "HF_HUB_OFFLINE": "1",
    }
    command = [
        str(Path(sys.executable).parent / "langgraph"),
        *("dev", "--no-browser", "--no-reload", "--host", "127.0.0.1"),
        *("--port", str(port), "--config", str(config)),
    ]
    url = f"http://127.0.0.1:{port}"
    with serving(
        command,
        log,
        probe_url=f"{url}/ok",
        ready=lambda reply: reply.status == 200,
        name="langgraph dev",
        cwd=config.parent,
        env=env,
    ):
        yield url
