"""`reflexa serve` on the real vLLM server: the official OpenAI SDK and LangChain as clients,
streamed and not, bad requests, and the chat page in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from langchain_openai import ChatOpenAI

from tests.helpers import free_port
from tests.integration.conftest import Session

pytestmark = pytest.mark.integration
SUM = "What is 17 + 25? Reply with only the number."
MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def api_home(vllm_session: Session, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A `reflexa serve` process on a free loopback port; its home (its URL in `url`)."""
    home = tmp_path_factory.mktemp("serve-home")
    child, url = start_api(vllm_session, home, free_port())
    (home / "url").write_text(url)
    yield home
    child.terminate()
    child.wait(timeout=30)


@pytest.fixture(scope="module")
def api(api_home: Path) -> str:
    return (api_home / "url").read_text()


def start_api(
    vllm_session: Session, home: Path, port: int, max_tokens: int = 64
) -> tuple[subprocess.Popen[bytes], str]:
    """`reflexa serve` with its own home, on the session's vLLM; once healthy."""
    env = vllm_session.env | {"REFLEXA_HOME": str(home),
                              "REFLEXA_VLLM_URL": f"http://127.0.0.1:{vllm_session.port}",
                              "REFLEXA_REFLECT__MAX_TOKENS": str(max_tokens)}  # fmt: skip
    log = (home / "serve.log").open("a")
    child = subprocess.Popen([sys.executable, "-m", "reflexa.agent", "serve", "--port", str(port)],
                             env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return child, url
        except httpx.HTTPError:
            pass
        assert child.poll() is None, (home / "serve.log").read_text()
        assert time.monotonic() < deadline, "reflexa serve never became healthy"
        time.sleep(0.5)


def test_the_api_killed_mid_stream_cuts_the_stream_and_loses_nothing(
    vllm_session: Session, tmp_path: Path
) -> None:
    """SIGKILL while tokens stream: the client sees the stream end without [DONE] (an error,
    not a short answer); after a restart the episode's request is on record, marked
    interrupted, and the API answers again."""
    port = free_port()
    child, url = start_api(vllm_session, tmp_path, port, max_tokens=256)
    prompt = "Write a long story about a lighthouse keeper."
    body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 256, "reflexa": {"max_repairs": 0}}  # fmt: skip
    lines = []
    request = httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60)
    try:
        with pytest.raises(httpx.HTTPError), request as response:  # it drops mid-body
            for line in response.iter_lines():
                lines.append(line)
                if len([x for x in lines if x.startswith("data: {")]) == 3:
                    child.kill()
    finally:
        child.kill()  # killed above, or still running after a failure: never left behind
        child.wait(timeout=30)
    assert "data: [DONE]" not in lines, lines
    child, url = start_api(vllm_session, tmp_path, port)
    try:
        reply = httpx.post(f"{url}/v1/chat/completions", timeout=120, json={
            "model": MODEL, "messages": [{"role": "user", "content": "Say OK."}]})  # fmt: skip
        assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"]
    finally:
        child.terminate()
        child.wait(timeout=30)
    with sqlite3.connect(tmp_path / "reflexa.db") as db:
        rows = db.execute("select prompt, status, error from episodes order by created_at")
        (killed, killed_status, why), (_, status, _) = rows.fetchall()
    assert (killed, killed_status) == (prompt, "error") and why.startswith("interrupted:")
    assert status in ("passed", "unresolved", "repaired")


def test_openai_sdk_non_streaming_and_streaming(api: str) -> None:
    client = openai.OpenAI(base_url=f"{api}/v1", api_key="unused")
    reply = client.chat.completions.create(
        model="smollm2-135m-instruct", messages=[{"role": "user", "content": SUM}],
        extra_body={"reflexa": {"checks": [{"type": "numeric", "expected": 42}]}},
    )  # fmt: skip
    assert reply.choices[0].message.content
    trace = reply.model_extra["reflexa"]  # type: ignore[index]
    assert trace["status"] in ("passed", "repaired", "unresolved")
    assert trace["attempts"][0]["verdicts"][0]["verifier"] == "numeric"
    episode = httpx.get(f"{api}/v1/episodes/{trace['episode_id']}").json()
    assert episode["prompt"] == SUM
    stream = client.chat.completions.create(
        model="smollm2-135m-instruct", messages=[{"role": "user", "content": "Say hello."}],
        stream=True, max_tokens=16, extra_body={"reflexa": {"max_repairs": 0}},
    )  # fmt: skip
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len([p for p in pieces if p]) > 1  # no repairs: tokens arrive as written
    assert "".join(pieces).strip()
    models = [m.id for m in client.models.list()]
    assert models[0] == "smollm2-135m-instruct"


def test_langchain_chat_openai(api: str) -> None:
    llm = ChatOpenAI(base_url=f"{api}/v1", api_key="unused", model="smollm2-135m-instruct",
                     max_tokens=16)  # type: ignore[arg-type]  # fmt: skip
    assert llm.invoke("Say OK.").text
    chunks = list(llm.stream("Say hello."))
    assert "".join(c.text for c in chunks).strip()


def test_bad_requests_get_4xx(api: str) -> None:
    client = openai.OpenAI(base_url=f"{api}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model="smollm2-135m-instruct", messages=[])
    broken = httpx.post(f"{api}/v1/chat/completions", content=b"{not json",
                        headers={"content-type": "application/json"})  # fmt: skip
    assert broken.status_code == 400 and broken.json()["error"]["type"] == "invalid_request_error"
    huge = httpx.post(f"{api}/v1/chat/completions", content=b"x" * 2_000_000)
    assert huge.status_code == 413


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
EMOJI = re.compile("[\U0001f300-\U0001faff\u2600-\u27bf]")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_chat_page_in_headless_chromium(api: str, api_home: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox"])  # fmt: skip
        page = browser.new_page()
        page.goto(api)
        page.fill("#prompt", "Say hello.")
        page.click("#send")
        answer = page.locator(".msg.assistant").first
        page.locator(".tools .down").first.wait_for(timeout=120_000)  # the reply is complete
        assert answer.inner_text().strip()
        trace = page.locator(".trace").first
        assert not trace.is_visible()
        page.check("#show-trace")
        assert trace.is_visible() and "episode" in trace.inner_text()
        assert "recalled:" in trace.inner_text()  # the memories shown, or why none
        episode_id = trace.inner_text().rsplit("episode ", 1)[1].strip()
        bar = page.locator(".tools").first  # the thumbs are drawn, not emoji characters
        assert bar.locator("button svg").count() == 2 and not EMOJI.search(bar.inner_text())
        assert all((bar.locator(f".{b} svg").bounding_box() or {}).get("width", 0) > 0
                   for b in ("up", "down"))  # fmt: skip
        page.click(".tools .up")
        page.locator(".tools .note", has_text="rated good").wait_for(timeout=10_000)
        page.click(".tools .down")
        page.locator(".tools .note", has_text="rated bad").wait_for(timeout=10_000)
        page.fill(".tools .fix", "Hello!")
        page.click(".tools .save")
        page.locator(".tools .note", has_text="correction saved").wait_for(timeout=10_000)
        browser.close()
    episode = httpx.get(f"{api}/v1/episodes/{episode_id}").json()
    assert episode["id"] == episode_id
    with sqlite3.connect(api_home / "reflexa.db") as db:
        rated = db.execute("select rating from ratings where episode_id = ? order by id",
                           (episode_id,)).fetchall()  # fmt: skip
    assert rated == [("good",), ("bad",)]
    # the thumbs and the correction reach a KTO dataset: the last word on each answer counts
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFLEXA_")}
    out = api_home / "kto"
    export = subprocess.run(
        [sys.executable, "-m", "reflexa.agent", "failures", "export", "--format", "kto",
         "--out", str(out), "--json"], env=env | {"REFLEXA_HOME": str(api_home)},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert json.loads(export.stdout)["examples"] == 2
    from datasets import load_from_disk

    labels = {r["completion"][0]["content"]: r["label"] for r in load_from_disk(str(out))}
    assert labels.pop("Hello!") is True and list(labels.values()) == [False]
