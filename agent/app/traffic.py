"""Traffic from logs: OpenAI chat-format JSONL, as vLLM, LiteLLM, LangSmith and most gateways
write it, recorded as episodes to learn from, or turned into a suite.

A line is one exchange: a `messages` list (at the top, or under `request` or `body`), the
answer (`response`: text, or a chat completion with `choices`, maybe under `body`; or a last
message of the assistant's) and optional `metadata` (an `id`, `tags`). Every line is read
and checked before anything is written: a bad line is refused with its number, and nothing
of the file is kept.

Recorded, each exchange is an episode of no split (like a chat turn): the logged answer is
its first attempt, judged by the checks the user gives (`--check`; never the judge: a
model's opinion is not evidence), so the nightly job learns from it as from its own
traffic: a passing answer can become a row, a failing prompt is sampled again. With no
check that applies, an exchange is recorded but nothing can learn from it, and the import
says so.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reflexa.agent.errors import ReflexaError
from reflexa.agent.store import Store
from reflexa.evals import VerifyContext, checks_for, parse_checks, run_checks
from reflexa.evals.suite import SuiteError, load_suite
from reflexa.evals.verdict import outcome

ROLES = ("system", "user", "assistant")
MODEL = "imported"  # the attempt's model: it was answered elsewhere
CONCURRENCY = 8  # answers checked at once


@dataclass(frozen=True)
class Exchange:
    line: int
    messages: list[dict[str, str]]  # the request, ending with the user's message
    answer: str | None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt(self) -> str:
        return self.messages[-1]["content"]


def read_log(path: Path, max_prompt_chars: int) -> list[Exchange]:
    """Every exchange in `path`, or a ReflexaError naming the first bad line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ReflexaError(f"{path}: cannot read ({e})") from None
    out = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            out.append(_exchange(number, json.loads(raw), max_prompt_chars))
        except json.JSONDecodeError as e:
            raise ReflexaError(
                f"{path}:{number}: not JSON ({e.msg}); nothing was imported"
            ) from None
        except ValueError as e:
            raise ReflexaError(f"{path}:{number}: {e}; nothing was imported") from None
    if not out:
        raise ReflexaError(f"{path}: no exchanges in it")
    return out


def _exchange(number: int, data: Any, max_prompt_chars: int) -> Exchange:
    if not isinstance(data, dict):
        raise ValueError("a line is a JSON object with `messages`")
    request = data.get("request") or data.get("body") or data
    raw = request.get("messages") if isinstance(request, dict) else None
    if not isinstance(raw, list) or not raw:
        raise ValueError("no `messages` list")
    messages = [_message(i, m) for i, m in enumerate(raw)]
    answer = _answer(data.get("response"))
    if messages[-1]["role"] == "assistant":
        if answer is not None:
            raise ValueError("two answers: a last assistant message and a `response`")
        answer = messages.pop()["content"]
    if not messages or messages[-1]["role"] != "user":
        raise ValueError("the conversation must end with the user's message (then the answer)")
    if len(messages[-1]["content"]) > max_prompt_chars:
        raise ValueError(f"the prompt is over {max_prompt_chars} characters (max_prompt_chars)")
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ValueError("`metadata` must be an object")
    return Exchange(number, messages, answer, metadata)


def _message(i: int, m: Any) -> dict[str, str]:
    if not isinstance(m, dict) or m.get("role") not in ROLES:
        raise ValueError(f"messages.{i}: a message is {{role: {'|'.join(ROLES)}, content}}")
    return {"role": m["role"], "content": _text(m.get("content"), f"messages.{i}.content")}


def _text(content: Any, where: str) -> str:
    """Text content, or its text parts joined (the multi-part form)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        parts = [p.get("text") for p in content if p.get("type") == "text"]
        if parts and all(isinstance(p, str) for p in parts):
            return "".join(parts)
    raise ValueError(f"{where}: text, or a list of text parts")


def _answer(response: Any) -> str | None:
    if response is None:
        return None
    if isinstance(response, str):
        return response
    body = response.get("body", response) if isinstance(response, dict) else None
    choices = body.get("choices") if isinstance(body, dict) else None
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        message = choices[0].get("message") or {}
        return _text(message.get("content") or "", "response.choices.0.message.content")
    raise ValueError("`response`: text, or a chat completion with `choices`")


async def judge_answers(
    exchanges: Sequence[Exchange], checks: list[dict[str, Any]], allow_unconfined: bool
) -> list[dict[str, Any]]:
    """Each logged answer as a first attempt, judged by `checks` and the tools that apply."""
    task = parse_checks(checks)
    limit = asyncio.Semaphore(CONCURRENCY)  # a python_tests check is a sandbox each

    async def one(x: Exchange) -> dict[str, Any]:
        answer = x.answer or ""
        applied = checks_for(x.prompt, answer, task, judge=False)
        async with limit:
            verdicts = await run_checks(
                applied, answer, VerifyContext(x.prompt, None, allow_unconfined)
            )
        passed = outcome(verdicts) == "passed"
        return {"kind": "generate", "strategy": None, "note": "imported from a log",
                "answer": answer, "verdicts": [v.to_dict() for v in verdicts], "passed": passed,
                "score": sum(v.score for v in verdicts) / len(verdicts) if verdicts else 0.0,
                "diagnosis": None, "model": MODEL, "memory": None}  # fmt: skip

    return list(await asyncio.gather(*(one(x) for x in exchanges)))


def record(
    store: Store, exchanges: Sequence[Exchange], checks: list[dict[str, Any]],
    allow_unconfined: bool = False,
) -> dict[str, int]:  # fmt: skip
    """Record each answered exchange as an episode, all in one transaction. Counts."""
    unanswered = [x.line for x in exchanges if x.answer is None]
    if unanswered:
        raise ReflexaError(
            f"line {unanswered[0]} has no answer (no `response`, no last assistant message): "
            "to learn from it, import it as a suite (--suite) and run it with `reflexa eval "
            "run`; nothing was imported"
        )
    attempts = asyncio.run(judge_answers(exchanges, checks, allow_unconfined))
    episodes = []
    for x, attempt in zip(exchanges, attempts, strict=True):
        status = "unchecked" if not attempt["verdicts"] else (
            "passed" if attempt["passed"] else "unresolved")  # fmt: skip
        thread = str(x.metadata.get("thread_id") or uuid.uuid4().hex)
        said = {"role": "assistant", "content": x.answer}
        episodes.append({
            "id": uuid.uuid4().hex, "thread_id": thread, "prompt": x.prompt,
            "messages": [*x.messages, said], "checks": checks, "status": status,
            "answer": x.answer, "attempt": attempt,
            "item_id": str(x.metadata["id"]) if "id" in x.metadata else None,
        })  # fmt: skip
    store.import_episodes(episodes)
    counts = {
        s: sum(e["status"] == s for e in episodes) for s in ("passed", "unresolved", "unchecked")
    }
    return {"episodes": len(episodes)} | counts


def as_suite(
    exchanges: Sequence[Exchange], checks: list[dict[str, Any]], split: str, out: Path
) -> int:
    """Write the exchanges' requests as a suite (JSONL) with the user's checks. Count."""
    if out.exists():
        raise ReflexaError(f"{out} exists; choose a new file")
    parse_checks(checks)
    lines, seen = [], set()
    for x in exchanges:
        name = str(x.metadata.get("id", f"line-{x.line}"))
        name = f"{name}-line-{x.line}" if name in seen else name
        seen.add(name)
        item: dict[str, Any] = {"id": name, "split": split, "checks": checks}
        if len(x.messages) == 1:
            item["prompt"] = x.prompt
        else:
            item["messages"] = x.messages
        tags = x.metadata.get("tags")
        if isinstance(tags, list) and all(isinstance(t, str) for t in tags):
            item["tags"] = tags
        lines.append(json.dumps(item, ensure_ascii=False))
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial.jsonl")
    partial.write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        load_suite(partial)  # what was written runs: `reflexa eval run` will read it so
    except SuiteError as e:
        partial.unlink()
        raise ReflexaError(f"the suite would not load: {e}; nothing was written") from None
    partial.replace(out)  # whole or not at all
    return len(lines)
