"""The terminal chat: streamed replies, the reflection trace on demand, user corrections."""

from __future__ import annotations

import asyncio
import getpass
import uuid
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from reflexa.agent.app.agent import Agent, EpisodeRequest
from reflexa.evals.verdict import grounded_ran

HELP = (
    "/trace  show how the last answer was checked and repaired\n"
    "/good  mark the last answer good     /bad [correct answer]  mark it wrong (and give the "
    "right one)\n"
    "/new  start a new thread     /quit  leave (Ctrl-D too)"
)


class ChatView:
    """Renders one turn's events as they stream."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.node: str | None = None

    async def __call__(self, event: str, payload: dict[str, Any]) -> None:
        if event == "resumed":
            self.console.print("[dim](finished a turn of this thread that was interrupted)[/]")
        elif event == "token":
            if payload["node"] != self.node:
                self.node = payload["node"]
                if self.node == "repair":
                    self.console.print("\n[yellow]↻ repaired answer:[/]")
            self.console.out(payload["text"], end="", highlight=False)
        elif event == "node" and payload["node"] == "evaluate":
            attempt = payload["update"]["attempts"][-1]
            self.console.print()
            self.console.print(f"[dim]{verdict_line(attempt)}[/]")


def verdict_line(attempt: dict[str, Any]) -> str:
    verdicts = attempt["verdicts"]
    if not verdicts:
        return "· unchecked: no check applied (the task has none and the judge is off)"
    judge_only = not grounded_ran(verdicts)
    if attempt["passed"]:
        return "✓ passed " + ("the model's own review (judge only)" if judge_only else "its checks")
    failed = [v for v in verdicts if v["error"] is None and not v["passed"]]
    if not failed:  # a check that errored is not a pass (evals.verdict.outcome)
        errors = "; ".join(f"{v['verifier']}: {v['error']}" for v in verdicts if v["error"])
        return f"? not passed: a check could not judge it ({errors})"
    return "✗ " + "; ".join(f"{v['verifier']}: {v['feedback']}" for v in failed)


def recalled(memory: dict[str, Any] | None) -> str:
    """The memories an attempt was shown, or why none."""
    if not memory:
        return ""
    lines = [f"#{m['id']} {m['source']} ({m['similarity']:.2f}): {m['prompt'][:40]}"
             for m in memory.get("used", [])]  # fmt: skip
    return "\n".join(lines + ([memory["note"]] if memory.get("note") else []))


def trace_table(episode: dict[str, Any]) -> Table:
    table = Table(title=f"episode {episode['id']} · {episode['status']}", show_lines=True)
    for column in ("#", "attempt", "answer", "checks", "diagnosis", "recalled"):
        table.add_column(column, overflow="fold")
    for a in episode["attempts"]:
        how = a["kind"] + (f" · {a['strategy']}" if a.get("strategy") else "")
        cost = f"{a['completion_tokens']} tokens, {a['latency_s']:.1f} s"
        checks = "\n".join(
            f"{'✓' if v['passed'] else '✗'} {v['verifier']}"
            + (" (judge)" if v["kind"] == "judge" else "")
            + (f": {v['error'] or v['feedback']}" if not v["passed"] else "")
            for v in a["verdicts"]
        )
        diagnosis = a["diagnosis"] or {}
        lines = [diagnosis.get("cause") or diagnosis.get("error")]
        if diagnosis.get("why"):  # the route: the next strategy (none: a budget was spent)
            lines.append(f"→ {diagnosis.get('strategy') or 'stop'}: {diagnosis['why']}")
        table.add_row(
            str(a["index"]), "\n".join(filter(None, [how, cost, a.get("note")])),
            a["answer"][:400], checks, "\n".join(filter(None, lines)), recalled(a["memory"]),
        )  # fmt: skip
    return table


async def chat_loop(
    agent: Agent,
    console: Console,
    read_line: Callable[[], str | None],
    thread_id: str | None = None,
    memory: bool = True,
) -> None:
    """Read a line, answer it, repeat; `read_line` returns None at the end of input."""
    thread_id = thread_id or uuid.uuid4().hex[:16]
    console.print(f"[dim]thread {thread_id} (resume with `reflexa chat --thread {thread_id}`)[/]")
    last: dict[str, Any] | None = None
    while (line := await asyncio.to_thread(read_line)) is not None:
        text = line.strip()
        if not text:
            continue
        if text in ("/quit", "/exit"):
            break
        if text == "/help":
            console.print(HELP)
        elif text == "/new":
            thread_id, last = uuid.uuid4().hex[:16], None
            console.print(f"[dim]new thread {thread_id}[/]")
        elif text == "/trace":
            episode = agent.store.last_episode(thread_id)
            if episode is None:
                console.print("[dim]nothing answered yet in this thread[/]")
            else:
                console.print(trace_table(episode))
        elif text in ("/good", "/bad") or text.startswith("/bad "):
            if last is None:
                console.print("[dim]no answer to rate yet[/]")
                continue
            rating = "good" if text == "/good" else "bad"
            agent.store.add_rating(last["episode_id"], rating, by=getpass.getuser())
            if chosen := text[len("/bad") :].strip() if rating == "bad" else None:
                agent.store.add_correction(
                    last["episode_id"], prompt=last["prompt"], rejected=last["answer"],
                    chosen=chosen, source="user", verified=True,
                )  # fmt: skip
            console.print(f"[dim]recorded ({rating}): thank you[/]")
        elif text.startswith("/"):
            console.print(f"unknown command {text.split()[0]}; /help lists them")
        else:
            request = EpisodeRequest(text, thread_id=thread_id, memory=memory)
            result = await agent.run(request, ChatView(console))
            if result.error:
                console.print(f"[red]error:[/] {result.error}")
                continue
            if result.status == "unresolved":
                console.print("[dim]✗ no attempt passed; the best one is:[/]")
                console.print(result.answer, markup=False, highlight=False)
            last = {"episode_id": result.episode_id, "prompt": text, "answer": result.answer}
    console.print("[dim]bye[/]")
