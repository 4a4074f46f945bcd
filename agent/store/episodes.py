"""Episodes, their attempts, and corrections (which become memories)."""

from __future__ import annotations

import dataclasses
import functools
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from reflexa.agent.store.memories import MemoryRecords, Remembered
from reflexa.agent.store.records import columns
from reflexa.agent.store.tables import Attempt, Correction, Episode, Memory, Rating, utcnow
from reflexa.evals.contamination import TRAIN_SPLIT, learnable, prompt_hash
from reflexa.evals.signal import justification_of
from reflexa.evals.suite import DEV, HELDOUT
from reflexa.evals.verdict import grounded_ran
from reflexa.trainers.records import (
    AttemptRecord,
    CorrectionRecord,
    EpisodeRecord,
    ScoredAnswers,
)

R = TypeVar("R")


class EpisodeRecords(MemoryRecords):
    def start_episode(
        self,
        *,
        id: str,
        thread_id: str,
        prompt: str,
        messages: list[dict[str, Any]],
        checks: list[dict[str, Any]],
        model: str,
        scoring: list[dict[str, Any]] | None = None,
        gold_allowed: bool = False,
        adapter: str | None = None,
        suite: str | None = None,
        split: str | None = None,
        item_id: str | None = None,
        eval_run_id: str | None = None,
    ) -> None:
        """Record that an episode began (status `running`), so even a crash leaves a trace."""
        with self._session.begin() as s:
            s.add(
                Episode(
                    id=id, thread_id=thread_id, prompt=prompt, messages=messages, checks=checks,
                    scoring=scoring or [], gold_allowed=gold_allowed, status="running",
                    model=model, adapter=adapter, suite=suite, split=split,
                    item_id=item_id, eval_run_id=eval_run_id, judge_only=False, n_attempts=0,
                    prompt_tokens=0, completion_tokens=0, owner=_this_process(os.getpid()),
                )
            )  # fmt: skip

    def interrupt_orphans(self) -> int:
        """Mark the episodes that a process of this host left `running` and has since
        stopped (killed, crashed) as interrupted errors: they then count as failures of
        the system, not of the model, and a resumed eval run runs them again."""
        host = socket.gethostname()
        with self._session.begin() as s:
            running = s.scalars(
                select(Episode).where(Episode.status == "running", Episode.owner.like(f"{host}:%"))
            ).all()
            orphans = [e for e in running if e.owner and _stopped(e.owner)]
            for e in orphans:
                e.status, e.finished_at = "error", utcnow()
                e.error = f"interrupted: the process that ran it stopped ({e.owner})"
        return len(orphans)

    def finish_episode(
        self,
        id: str,
        *,
        status: str,
        answer: str | None,
        error: str | None,
        attempts: Sequence[dict[str, Any]],
        latency_s: float,
        final_index: int | None = None,
        scores: Sequence[bool | None] = (),
        corrections: Sequence[dict[str, Any]] = (),
        gold_memory: str | None = None,
        draws: list[dict[str, Any]] | None = None,
    ) -> None:
        """Write the outcome, its attempts, their scores and its corrections in one
        transaction, then remember the corrections (and `gold_memory`, the item's gold answer,
        justified by gold).

        `final_index` is the attempt whose answer was returned; `scores[i]` whether attempt
        i was right by the item's scoring (None: no scoring), scored after the loop ended."""
        with self._session.begin() as s:
            episode = s.get_one(Episode, id)
            episode.status, episode.answer, episode.error = status, answer, error
            episode.finished_at = utcnow()
            episode.latency_s = latency_s
            episode.n_attempts = len(attempts)
            episode.prompt_tokens = sum(a.get("prompt_tokens", 0) for a in attempts)
            episode.completion_tokens = sum(a.get("completion_tokens", 0) for a in attempts)
            if attempts:
                # An unchecked first answer (no check applied) neither passed nor failed.
                checked = status != "unchecked"
                episode.first_passed = bool(attempts[0]["passed"]) if checked else None
                episode.final_passed = status in ("passed", "repaired")
                episode.judge_only = not grounded_ran(v for a in attempts for v in a["verdicts"])
                first = scores[0] if scores else None
                final = scores[final_index if final_index is not None else -1] if scores else None
                if first is not None and final is not None:  # scored: the harm ledger
                    episode.first_correct, episode.final_correct = first, final
                    episode.right_to_wrong = first and not final
                    episode.wrong_to_right = final and not first
            episode.scores = list(scores)
            episode.draws = draws
            episode.attempts = [_attempt(i, a) for i, a in enumerate(attempts)]
            # Gold is kept only where it may be learnt from (a training item, gold allowed).
            gold_ok = learnable(episode.split) and episode.gold_allowed
            keep = [c for c in corrections if gold_ok or c["source"] != "gold"]
            rows = [_correction(id, c) for c in keep]
            s.add_all(rows)
            split, checks, suite = episode.split, episode.checks, episode.suite
            prompt = episode.prompt
        used = {m["id"] for a in attempts for m in (a.get("memory") or {}).get("used", [])}
        remembered = [Remembered.of(c) for c in rows]
        if gold_memory is not None and gold_ok:
            remembered.append(Remembered(prompt, gold_memory, "gold", "gold", None, id))
        self._remember(remembered if learnable(split) else [], checks, used, suite)

    def import_episodes(self, episodes: Sequence[dict[str, Any]]) -> None:
        """Record answered exchanges from a log (`agent.app.traffic`), each one attempt, all
        in one transaction: the whole file or nothing."""
        with self._session.begin() as s:
            for e in episodes:
                a = e["attempt"]
                checked = e["status"] != "unchecked"
                s.add(
                    Episode(
                        id=e["id"], thread_id=e["thread_id"], prompt=e["prompt"],
                        messages=e["messages"], checks=e["checks"], scoring=[],
                        gold_allowed=False, status=e["status"], answer=e["answer"],
                        model=a["model"], item_id=e["item_id"], finished_at=utcnow(),
                        first_passed=bool(a["passed"]) if checked else None,
                        final_passed=e["status"] == "passed", judge_only=False, n_attempts=1,
                        prompt_tokens=0, completion_tokens=0, attempts=[_attempt(0, a)],
                    )
                )  # fmt: skip

    def add_rating(
        self, episode_id: str, rating: str, by: str | None = None, comment: str | None = None
    ) -> int:
        """A thumbs up (`good`) or down (`bad`) on an episode's answer."""
        if rating not in ("good", "bad"):
            raise ValueError(f"a rating is good or bad, not {rating!r}")
        with self._session.begin() as s:
            row = Rating(episode_id=episode_id, rating=rating, by=by, comment=comment)
            s.add(row)
            s.flush()
            return row.id

    def ratings(self) -> list[dict[str, Any]]:
        """Every rating with its episode's prompt, conversation and answer, oldest first."""
        with self._session() as s:
            rows = s.execute(
                select(Rating, Episode.prompt, Episode.messages, Episode.answer)
                .join(Episode, Episode.id == Rating.episode_id)
                .order_by(Rating.id)
            )
            return [columns(r) | {"prompt": p, "messages": m, "answer": a} for r, p, m, a in rows]

    def add_correction(self, episode_id: str | None, **fields: Any) -> int:
        with self._session.begin() as s:
            row = _correction(episode_id, fields)
            s.add(row)
            episode = s.get(Episode, episode_id) if episode_id else None
            split, checks, suite = (
                (episode.split, episode.checks, episode.suite) if episode else (None, [], None)
            )
        self._remember([Remembered.of(row)] if learnable(split) else [], checks, suite=suite)
        return row.id

    def episode(self, id: str) -> dict[str, Any] | None:
        with self._session() as s:
            row = s.get(Episode, id)
            return None if row is None else episode_dict(row, with_attempts=True)

    def last_episode(self, thread_id: str) -> dict[str, Any] | None:
        with self._session() as s:
            row = s.scalars(
                select(Episode)
                .where(Episode.thread_id == thread_id)
                .order_by(Episode.created_at.desc())
                .limit(1)
            ).first()
            return None if row is None else episode_dict(row, with_attempts=True)

    def failures(self, limit: int = 20) -> list[dict[str, Any]]:
        """Episodes whose first answer failed, or that ended in an error, newest first."""
        with self._session() as s:
            rows = s.scalars(
                select(Episode)
                .where((Episode.first_passed.is_(False)) | (Episode.status == "error"))
                .order_by(Episode.created_at.desc())
                .limit(limit)
            )
            return [episode_dict(r) for r in rows]

    def repairs_by(self, model: str, limit: int = 5000) -> list[tuple[str | None, Any, str, bool]]:
        """The latest `limit` repairs `model` made: (suite, the episode's checks, strategy,
        passed its visible checks), for the routing table (`agent.app.routing`)."""
        with self._session() as s:
            rows = s.execute(
                select(Episode.suite, Episode.checks, Attempt.strategy, Attempt.passed)
                .join(Attempt, Attempt.episode_id == Episode.id)
                .where(Attempt.kind == "repair", Attempt.model == model)
                .order_by(Attempt.id.desc())
                .limit(limit)
            )
            return [(suite, checks, strategy or "feedback", bool(ok))
                    for suite, checks, strategy, ok in rows]  # fmt: skip

    def count(self, table: type[Episode] | type[Attempt] | type[Correction] | type[Memory]) -> int:
        with self._session() as s:
            return int(s.scalar(select(func.count()).select_from(table)) or 0)

    def training_episodes(self, split: str) -> list[EpisodeRecord]:
        """Answered episodes of `split` or of no split (chat, `ask`), with their attempts."""
        with self._session() as s:
            rows = s.scalars(
                select(Episode)
                .options(selectinload(Episode.attempts))
                .where(*_learnable(split))
                .order_by(Episode.created_at)
            )
            return [_episode_record(r) for r in rows if r.attempts]

    def chat_episodes(self) -> list[EpisodeRecord]:
        """Answered episodes of no suite and no split (chat, `ask`, imported traffic), checked
        or not, newest first: the prompts a night rehearses (trainers/rehearsal.py)."""
        with self._session() as s:
            rows = s.scalars(
                select(Episode)
                .options(selectinload(Episode.attempts))
                .where(Episode.suite.is_(None), Episode.split.is_(None),
                       Episode.status.in_(("passed", "repaired", "unresolved", "unchecked")))
                .order_by(Episode.created_at.desc())
            )  # fmt: skip
            return [_episode_record(r) for r in rows if r.attempts]

    def learning_counts(self) -> dict[str, int]:
        """How much there is to learn from: training episodes and corrections, counted."""
        with self._session() as s:
            episodes = s.scalar(select(func.count()).where(*_learnable(TRAIN_SPLIT)))
            corrections = s.scalar(select(func.count()).select_from(Correction))
        return {"episodes": int(episodes or 0), "corrections": int(corrections or 0)}

    def held_out_answers(self) -> dict[str, list[ScoredAnswers]]:
        """Per suite, its scored held-out answers (dev or heldout episodes' first answers,
        then a gate's draws), each with whether the visible checks passed it and whether
        scoring found it right: what a justification is worth there (`trainers.admission`)."""
        out: dict[str, list[ScoredAnswers]] = {}
        with self._session() as s:
            rows = s.execute(
                select(Episode.suite, Episode.prompt, Episode.answer, Episode.checks,
                       Episode.first_passed, Episode.first_correct, Episode.draws)
                .where(Episode.split.in_((DEV, HELDOUT)), Episode.suite.is_not(None),
                       Episode.first_correct.is_not(None), Episode.first_passed.is_not(None))
            )  # fmt: skip
            for suite, prompt, answer, checks, passed, correct, draws in rows:
                answers = [(answer or "", bool(passed), bool(correct))]
                answers += [(d.get("answer") or "", bool(d["checks_passed"]), bool(d["correct"]))
                            for d in draws or [] if d.get("correct") is not None]  # fmt: skip
                out.setdefault(suite, []).append(ScoredAnswers(prompt, checks, answers))
        return out

    def held_out_prompts(self) -> list[tuple[str, list[Any]]]:
        """(prompt, scoring) of the episodes recorded under any split but train (held-out,
        gate, test), one per prompt."""
        with self._session() as s:
            rows = s.execute(
                select(Episode.prompt, Episode.scoring).where(
                    Episode.split.is_not(None), Episode.split != TRAIN_SPLIT
                )
            )
            return list({prompt: (prompt, scoring) for prompt, scoring in rows}.values())

    def corrections(self) -> list[CorrectionRecord]:
        with self._session() as s:
            rows = s.scalars(select(Correction).order_by(Correction.id))
            return [_record(CorrectionRecord, r) for r in rows]


def _attempt(index: int, a: dict[str, Any]) -> Attempt:
    return Attempt(
        index=index, kind=a["kind"], strategy=a.get("strategy"), note=a.get("note"),
        answer=a["answer"], verdicts=a["verdicts"], passed=a["passed"], score=a["score"],
        diagnosis=a.get("diagnosis"), prompt_tokens=a.get("prompt_tokens", 0),
        completion_tokens=a.get("completion_tokens", 0), latency_s=a.get("latency_s", 0.0),
        model=a["model"], memory=a.get("memory"),
    )  # fmt: skip


def _correction(episode_id: str | None, c: dict[str, Any]) -> Correction:
    return Correction(
        episode_id=episode_id, prompt=c["prompt"], prompt_hash=prompt_hash(c["prompt"]),
        messages=c.get("messages") or [{"role": "user", "content": c["prompt"]}],
        rejected=c.get("rejected"), chosen=c.get("chosen"), source=c["source"],
        verified=c["verified"],
        justification=c.get("justification") or justification_of(c["source"]),
        correct=c.get("correct"),
    )  # fmt: skip


def _episode_record(row: Episode) -> EpisodeRecord:
    attempts = [_record(AttemptRecord, a) for a in row.attempts]
    return _record(EpisodeRecord, row, attempts=attempts)


def _record(cls: type[R], row: Any, **given: Any) -> R:
    """A typed record of `row`'s columns of the same names (`given`: the others)."""
    names = {f.name for f in dataclasses.fields(cls)} - set(given)  # type: ignore[arg-type]
    return cls(**{n: getattr(row, n) for n in names} | given)


def _learnable(split: str) -> tuple[Any, ...]:
    """The answered episodes of `split` or of no split: what training may learn from."""
    return (
        Episode.status.in_(("passed", "repaired", "unresolved")),
        Episode.split.is_(None) | (Episode.split == split),
    )


def episode_dict(row: Episode, with_attempts: bool = False) -> dict[str, Any]:
    out = columns(row)
    if with_attempts:
        out["attempts"] = [columns(a) for a in row.attempts]
    return out


def process_name(pid: int) -> str | None:
    """`host:pid:start` for a live process of this host (its start time, in clock ticks
    since boot, tells a reused pid apart); None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    start = stat.rsplit(")", 1)[1].split()[19]  # field 22 of the whole line
    return f"{socket.gethostname()}:{pid}:{start}"


@functools.cache
def _this_process(pid: int) -> str | None:
    """This process's name, read once per pid (a forked child has its own) rather than from
    /proc on every episode."""
    return process_name(pid)


def _stopped(owner: str) -> bool:
    return process_name(int(owner.rsplit(":", 2)[1])) != owner
