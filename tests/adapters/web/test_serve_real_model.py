"""`botkit serve` end to end: the real CLI process, the real embedded model, real HTTP."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]


def test_serve_answers_the_widget_and_the_openai_api_and_stops_cleanly_on_sigterm(
    tmp_path: Path, embedded_cache: Path
) -> None:
    pytest.importorskip("gguf")
    from openai import OpenAI

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "models").symlink_to(embedded_cache, target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTKIT_")}
    env["BOTKIT_BOT__DATA_DIR"] = str(data_dir)
    process = subprocess.Popen(
        [sys.executable, "-m", "botkit.cli", "serve", "--port", "0"], cwd=REPO, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.extend(process.stderr or []), daemon=True)
    reader.start()
    try:
        url = _wait_for_url(process)
        with httpx.Client(base_url=url, timeout=120) as client:
            assert client.get("/readyz").json()["status"] == "ready"
            token = client.post("/widget/api/sessions", json={}).json()["token"]
            headers = {"Authorization": f"Bearer {token}"}
            turn = client.post("/widget/api/messages", headers=headers, json={
                "text": "Do you ship to Canada?", "client_message_id": "q1",
            }).json()["turn_id"]
            with client.stream("GET", f"/widget/api/turns/{turn}/events",
                               headers=headers) as stream:
                events = [json.loads(line[6:]) for line in stream.iter_lines()
                          if line.startswith("data: ")]
            history = client.get("/widget/api/conversation", headers=headers).json()

        deltas = "".join(e["text"] for e in events[:-1])
        assert len(events) > 2, "the reply came in one piece, not streamed"
        assert events[-1]["text"] == deltas
        assert deltas.strip(), "the reply is empty"
        assert [m["text"] for m in history["messages"]] == ["Do you ship to Canada?", deltas]

        api = OpenAI(base_url=f"{url}/v1", api_key="unused-on-loopback", max_retries=0)
        completion = api.chat.completions.create(
            model="pine", messages=[{"role": "user", "content": "What is your return policy?"}],
            max_tokens=40, temperature=0,
        )
        assert completion.choices[0].message.content
        assert completion.usage is not None
        assert completion.usage.completion_tokens > 0
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(60)
        finally:
            process.kill()
        reader.join(5)

    log = "".join(stderr)
    assert code == 0, log
    assert "Traceback" not in log
    assert "botkit stopped" in log
    turns = [json.loads(line.split("botkit.turns: ", 1)[1]) for line in log.splitlines()
             if "botkit.turns: " in line]
    assert [t["channel"] for t in turns] == ["web", "openai"]
    assert all(t["status"] == "ok" and t["reply_tokens"] > 0 for t in turns)
    assert "Canada" not in "".join(json.dumps(t) for t in turns)  # no text at INFO


def _wait_for_url(process: subprocess.Popen[str]) -> str:
    deadline = time.monotonic() + 240
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"botkit serve exited with {process.wait()} before serving")
        found = re.search(r"^open (http://127\.0\.0\.1:\d+)", line)
        if found:
            return found.group(1)
    raise AssertionError("botkit serve did not print its URL within 240 s")
