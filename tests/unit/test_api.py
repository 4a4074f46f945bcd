"""The HTTP API with a scripted model, the real store and checkpointer (FastAPI TestClient)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given

from reflexa.agent.api.app import create_app
from reflexa.agent.app.agent import Agent
from reflexa.agent.app.checkpointer import open_checkpointer
from reflexa.agent.app.memory import Memory
from reflexa.agent.errors import ReflexaError
from reflexa.agent.model.client import ModelClient
from reflexa.agent.settings import Settings, load_settings
from reflexa.agent.store import Store, open_store
from reflexa.agent.store.tables import Episode
from reflexa.evals.contamination import Guard
from reflexa.graphs import ReflectionContext, build_reflection_graph
from reflexa.trainers.dataset import compile_examples
from tests.fakes import ScriptedChatModel

# A check the client chose to show the model; an `expected` value would only score.
CHECK = {"checks": [{"type": "regex", "pattern": "^[0-4]$", "description": "be a digit below 5"}]}
DIAGNOSIS = '{"cause": "wrong sum", "fix": "add again"}'


class NoAdapters(ModelClient):
    def adapters(self) -> list[str]:
        return []


def app_client(script: list[Any], settings: Settings | None = None) -> TestClient:
    settings = settings or load_settings()
    llm = ScriptedChatModel(script=script)

    store = open_store(settings)

    @asynccontextmanager
    async def opener(adapter: str | None) -> AsyncIterator[Agent]:
        memory = Memory(store, settings.memory, lambda s: len(s.split()))
        async with open_checkpointer(settings) as saver:
            context = ReflectionContext(llm=llm, model_name=adapter or "base",
                                        recall=memory.recall, strategies=("feedback",))  # fmt: skip
            yield Agent(build_reflection_graph(saver), store, context, settings.reflect, memory)

    client = NoAdapters("http://127.0.0.1:9", "base")
    return TestClient(create_app(settings, client, store, opener), base_url="http://127.0.0.1")


@pytest.fixture
def api() -> Iterator[TestClient]:
    with app_client(["5", DIAGNOSIS, "4", "hello", "world"]) as client:
        yield client


def ask(api: TestClient, prompt: str = "2+2?", **body: Any) -> Any:
    return api.post(
        "/v1/chat/completions", json={"messages": [{"role": "user", "content": prompt}]} | body
    )


def test_a_completion_carries_the_reflection_trace(api: TestClient) -> None:
    reply = ask(api, reflexa=CHECK)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "4"}
    trace = body["reflexa"]
    assert trace["status"] == "repaired"
    assert [a["kind"] for a in trace["attempts"]] == ["generate", "repair"]
    episode = api.get(f"/v1/episodes/{trace['episode_id']}").json()
    assert episode["status"] == "repaired" and len(episode["attempts"]) == 2


def test_a_verified_repair_is_recalled_next_time_and_named_in_the_trace() -> None:
    """A repair whose value a check decided (here the arithmetic tool: the prompt states a
    sum) is remembered; one that only a check of form passed is not (the next test)."""
    asked = "What is 2+2?"
    with app_client(["5", DIAGNOSIS, "4", "4", "4"]) as api:
        first = ask(api, asked, reflexa=CHECK).json()["reflexa"]
        assert first["status"] == "repaired"
        assert first["attempts"][0]["memory"]["note"].startswith("nothing recalled")
        again = ask(api, asked).json()["reflexa"]["attempts"][0]["memory"]
        assert [(m["source"], m["prompt"]) for m in again["used"]] == [("repair", asked)]
        off = ask(api, asked, reflexa={"memory": False}).json()["reflexa"]["attempts"][0]
    assert off["memory"]["used"] == [] and off["memory"]["note"] == "memory off"


def test_a_repair_only_a_check_of_form_passed_is_not_remembered() -> None:
    with app_client(["5", DIAGNOSIS, "4", "hello"]) as api:
        assert ask(api, reflexa=CHECK).json()["reflexa"]["status"] == "repaired"  # "2+2?"
        again = ask(api).json()["reflexa"]["attempts"][0]["memory"]
    assert again["used"] == [] and again["note"].startswith("nothing recalled")


def test_streaming_sends_openai_chunks_then_done(api: TestClient) -> None:
    with api.stream("POST", "/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "2+2?"}], "stream": True, "reflexa": CHECK,
    }) as reply:  # fmt: skip
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in reply.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == "4"  # with reflection on, only the verified final answer is sent
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["reflexa"]["status"] == "repaired"


def test_feedback_becomes_a_user_correction(api: TestClient) -> None:
    episode_id = ask(api, reflexa=CHECK).json()["reflexa"]["episode_id"]
    saved = api.post("/v1/feedback", json={"episode_id": episode_id, "correction": "four"})
    assert saved.status_code == 200 and saved.json()["recorded"] is True
    missing = api.post("/v1/feedback", json={"episode_id": "nope", "correction": "x"})
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "episode_id"
    with Store.open(load_settings().database) as store:
        [example] = [e for e in compile_examples(store, protected=Guard()).examples
                     if e.source == "user"]  # fmt: skip
    assert example.chosen == "four" and example.episode_ids == [episode_id]


def test_thumbs_are_recorded_with_who_gave_them(api: TestClient) -> None:
    episode_id = ask(api, reflexa=CHECK).json()["reflexa"]["episode_id"]
    up = api.post("/v1/feedback", json={"episode_id": episode_id, "rating": "good", "by": "ana"})
    assert up.status_code == 200 and "rating_id" in up.json() and "id" not in up.json()
    down = {"episode_id": episode_id, "rating": "bad", "correction": "four", "comment": "no"}
    assert set(api.post("/v1/feedback", json=down).json()) >= {"rating_id", "id"}
    for body, status, message in [
        ({"episode_id": "nope", "rating": "good"}, 404, "no episode 'nope'"),
        ({"episode_id": episode_id}, 400, "give a rating (good or bad), a correction, or both"),
        ({"episode_id": episode_id, "rating": "meh"}, 400, "rating"),
    ]:
        reply = api.post("/v1/feedback", json=body)
        assert reply.status_code == status and message in str(reply.json()["error"]), reply.text
    with Store.open(load_settings().database) as store:
        ratings = [(r["rating"], r["by"], r["comment"], r["answer"]) for r in store.ratings()]
    assert ratings == [("good", "ana", None, "4"), ("bad", None, "no", "4")]


def test_feedback_keeps_memory_within_the_configured_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The API's store used to be opened at the default bound (10,000), not memory.max_entries.
    monkeypatch.setenv("REFLEXA_MEMORY__MAX_ENTRIES", "2")
    with app_client(["a", "b", "c"]) as api:
        for n in range(3):
            reply = api.post("/v1/chat/completions", json={
                "messages": [{"role": "user", "content": f"Name a colour number {n}."}],
            }).json()  # fmt: skip
            feedback = {"episode_id": reply["reflexa"]["episode_id"], "correction": "red"}
            assert api.post("/v1/feedback", json=feedback).status_code == 200
    with Store.open(load_settings().database) as store:
        assert [m["prompt"] for m in store.memories()] == [
            "Name a colour number 1.",
            "Name a colour number 2.",
        ]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"messages": []}, 400, "messages"),
        ({"messages": [{"role": "user", "content": 5}]}, 400, "messages.0.content"),
        ({"messages": [{"role": "robot", "content": "x"}]}, 400, "messages.0.role"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, 400, "the last message"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 10**6}, 400, "max_tokens"),
        ({"messages": [{"role": "user", "content": "x"}], "temperature": 9}, 400, "temperature"),
        ({"messages": [{"role": "user", "content": "x"}] * 65}, 400, "at most 64"),
        ({"messages": [{"role": "user", "content": "x"}], "model": "v9"}, 404, "v9"),
        ({"messages": [{"role": "user", "content": "x"}],
          "reflexa": {"checks": [{"type": "nope"}]}}, 400, "unknown check type"),
        ({"messages": [{"role": "user", "content": "x"}],
          "reflexa": {"scoring": [{"type": "tests.check_plugins:even"}]}}, 400,
         "over the API a check plugin is named by its entry point"),
        ({"messages": [{"role": "user", "content": "2+2?"}],
          "reflexa": {"checks": [{"type": "regex", "pattern": "^4$"}]}}, 400,
         "checks.0: the regex check states the answer (its pattern '^4$' matches only the text "
         "'4'), which the model would see; put it under `scoring`"),
    ],
)  # fmt: skip
def test_bad_requests_get_4xx_in_openai_shape(
    api: TestClient, body: dict[str, Any], status: int, message: str
) -> None:
    reply = api.post("/v1/chat/completions", json=body)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert message in error["message"] + str(error["param"])
    assert error["type"] == ("not_found_error" if status == 404 else "invalid_request_error")


def test_malformed_json_and_oversized_bodies(api: TestClient) -> None:
    broken = api.post("/v1/chat/completions", content=b'{"messages": [', headers={
        "content-type": "application/json"})  # fmt: skip
    assert broken.status_code == 400 and "error" in broken.json()
    huge = "x" * 2_000_000
    big = ask(api, messages=[{"role": "user", "content": huge}])
    assert big.status_code == 413 and "over" in big.json()["error"]["message"]


def test_a_token_guards_the_api_but_not_health_or_the_page(monkeypatch) -> None:
    monkeypatch.setenv("REFLEXA_SERVE__API_TOKEN", "s3cret")
    with app_client(["4"]) as api:
        assert ask(api).status_code == 401
        assert ask(api).json()["error"]["type"] == "authentication_error"
        wrong = api.get("/v1/models", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = api.get("/v1/models", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["data"][0]["id"] == "base"
        assert api.get("/health").status_code == 200
        assert "<title>Reflexa chat</title>" in api.get("/").text
        for path in ("/metrics", "/docs", "/openapi.json"):  # not only /v1/: all but two
            assert api.get(path).status_code == 401, path
            assert api.get(path, headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_an_empty_token_is_refused_not_taken_for_no_auth(monkeypatch) -> None:
    monkeypatch.setenv("REFLEXA_SERVE__API_TOKEN", "")
    with pytest.raises(ReflexaError, match=r"serve\.api_token"):
        load_settings()


def test_a_content_length_that_is_not_a_number_is_a_400(api: TestClient) -> None:
    reply = api.post("/v1/feedback", content=b"{}", headers={"content-length": "abc"})
    assert reply.status_code == 400 and "Content-Length" in reply.json()["error"]["message"]
    huge = api.post("/v1/feedback", content=b"{}", headers={"content-length": "9" * 5000})
    assert huge.status_code == 413  # int() refuses 5,000 digits: never reached


def test_a_stream_ends_with_an_error_event_when_the_episode_fails() -> None:
    class Failing:
        async def run(self, request: Any, on_event: Any = None) -> Any:
            raise RuntimeError("the store is gone")

    @asynccontextmanager
    async def opener(adapter: str | None) -> AsyncIterator[Any]:
        yield Failing()

    settings = load_settings()
    app = create_app(settings, NoAdapters("http://127.0.0.1:9", "base"), open_store(settings),
                     opener)  # fmt: skip
    with TestClient(app, base_url="http://localhost:8080") as api, api.stream(
        "POST", "/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "2+2?"}], "stream": True,
    }) as reply:  # fmt: skip
        events = [line[6:] for line in reply.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["type"] == "server_error" and "the store is gone" in error["message"]


def test_metrics_count_requests_and_episodes(api: TestClient) -> None:
    ask(api, reflexa=CHECK)
    text = api.get("/metrics").text
    assert 'reflexa_episodes_total{status="repaired"} 1.0' in text
    assert "reflexa_repairs_total 1.0" in text
    assert 'reflexa_http_requests_total{path="/v1/chat/completions",status="200"} 1.0' in text


def test_no_input_from_the_openapi_schema_gets_a_5xx(monkeypatch: pytest.MonkeyPatch) -> None:
    """Schemathesis generates requests from the app's own OpenAPI schema."""
    import schemathesis
    from hypothesis import HealthCheck, settings

    monkeypatch.setenv("REFLEXA_SERVE__ALLOWED_HOSTS", '["testserver"]')  # its client's Host
    api = app_client(["4"] * 100_000)
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.app)
    failures, calls = [], []

    for operation in schema.get_all_operations():
        strategy = operation.ok().as_strategy()

        @settings(max_examples=40, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(case=strategy)
        def check(case: Any) -> None:
            response = case.call()
            calls.append(case.path)
            if response.status_code >= 500:
                failures.append((case.path, case.body, response.status_code, response.text))

        check()
    assert not failures, failures[:3]
    assert {"/v1/chat/completions", "/v1/feedback", "/v1/episodes/{episode_id}"} <= set(calls)


def test_serve_refuses_to_listen_beyond_loopback_without_a_token() -> None:
    from click.testing import CliRunner

    from reflexa.agent.cli import cli

    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--port", "18080"])
    assert result.exit_code == 1 and "needs a bearer token" in result.output


def test_expected_values_in_a_request_only_score_the_episode() -> None:
    gold = {"type": "numeric", "expected": 4}
    with app_client(["5", "6"]) as api:
        # The model saw only the form (a number), or nothing: then no check applied, which
        # is said, never counted as a pass.
        for reflexa, status in (({"checks": [gold | {"strict": True}]}, "passed"),
                                ({"scoring": [gold]}, "unchecked")):  # fmt: skip
            trace = ask(api, reflexa=reflexa).json()["reflexa"]
            assert trace["status"] == status
            assert trace["attempts"][0]["correct"] is False
            episode = api.get(f"/v1/episodes/{trace['episode_id']}").json()
            assert episode["first_correct"] is False and "expected" not in str(episode["checks"])
    with Store.open(load_settings().database) as store:
        assert store.corrections() == []  # never a verified correction


def test_checks_per_request_are_capped(api: TestClient) -> None:
    many = [{"type": "regex", "pattern": "4"}] * 17
    reply = ask(api, reflexa={"checks": many})
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "reflexa.checks"


def test_a_chunked_body_counts_against_the_limit(api: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(20):
            yield b"x" * 100_000
        yield b'"}]}'

    reply = api.post("/v1/chat/completions", content=chunks(),
                     headers={"content-type": "application/json"})  # fmt: skip
    assert reply.status_code == 413 and "over" in reply.json()["error"]["message"]
    parts = iter([b'{"episode_id": "nope", ', b'"correction": "x"}'])
    small = api.post("/v1/feedback", content=parts, headers={"content-type": "application/json"})
    assert small.status_code == 404  # read whole, then handled as usual


def test_checks_that_run_code_are_refused_unless_allowed(monkeypatch) -> None:
    code = {"checks": [{"type": "python_tests", "tests": "assert True"}]}
    with app_client(["4"]) as api:
        refused = ask(api, reflexa=code)
    assert refused.status_code == 400 and "allow_request_code" in refused.json()["error"]["message"]
    monkeypatch.setenv("REFLEXA_SERVE__ALLOW_REQUEST_CODE", "true")
    with pytest.raises(ReflexaError, match="allow_request_code needs api_token"):
        load_settings()
    monkeypatch.setenv("REFLEXA_SERVE__API_TOKEN", "s3cret")
    with app_client(["4"]) as api:
        allowed = api.post(
            "/v1/chat/completions", headers={"Authorization": "Bearer s3cret"},
            json={"messages": [{"role": "user", "content": "2+2?"}], "reflexa": code},
        )  # fmt: skip
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["reflexa"]["attempts"][0]["verdicts"][0]["verifier"] == "python_tests"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"host": "127.0.0.1:8080"}, 200),
        ({"host": "localhost"}, 200),
        ({"host": "[::1]:8080"}, 200),
        ({"host": "attacker.example:8080"}, 400),  # DNS rebinding: a name that resolves here
        ({"host": "127.0.0.1:8080", "origin": "http://127.0.0.1:8080"}, 200),
        ({"host": "127.0.0.1:8080", "origin": "https://attacker.example"}, 403),
    ],
)
def test_only_loopback_names_reach_the_api_unless_configured(
    api: TestClient, headers: dict[str, str], status: int
) -> None:
    assert api.get("/v1/models", headers=headers).status_code == status


def test_a_configured_name_is_served(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFLEXA_SERVE__ALLOWED_HOSTS", '["Reflexa.LAN"]')
    with app_client(["4"]) as api:
        assert api.get("/health", headers={"host": "reflexa.lan:8080"}).status_code == 200
        assert api.get("/health", headers={"host": "other.lan"}).status_code == 400
        assert api.get("/health", headers={"origin": "null"}).status_code == 403


def test_32_concurrent_clients_lose_no_episode() -> None:
    # 32 requests at once into one real SQLite store (and checkpointer): every one answered,
    # recorded once and finished.
    import httpx

    app = app_client([str(n) for n in range(32)]).app

    async def clients() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            return list(await asyncio.gather(*(
                http.post("/v1/chat/completions",
                          json={"messages": [{"role": "user", "content": f"Say {n}."}]})
                for n in range(32)
            )))  # fmt: skip

    replies = asyncio.run(clients())
    assert [r.status_code for r in replies] == [200] * 32
    ids = {r.json()["reflexa"]["episode_id"] for r in replies}
    with Store.open(load_settings().database) as store:
        episodes = [store.episode(i) for i in ids]
        assert store.count(Episode) == 32
    # No check applies to "Say n." (no judge here): each answer is recorded as unchecked.
    assert len(ids) == 32 and all(e and e["status"] == "unchecked" for e in episodes)
