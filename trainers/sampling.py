"""On-policy samples, judged without labels: for each training prompt, the current model's
greedy answer, then `cycle.sample_n` samples in one request (each at most twice as long as
the greedy answer, `sample_cap`), then a vote among them.

- The vote's answer (self-consistency: the greedy answer when enough agree with it, else a
  large enough majority; it must pass the visible checks) becomes a correction justified by
  `consistency`.
- Else an answer that passes the visible grounded checks and the tool checks that apply (a
  stated sum is computed) is kept, the greedy one first, justified by `checks` where one of
  them decides its value, else by `form` (`evals.signal.by_checks`).
Scoring, where the item has it, only records whether the kept answer was right (`correct`,
for precision); it never chooses. The greedy answer is asked afresh, so a later round
judges the model it samples from, not the one that answered when the episode was logged.
The prompts whose answers disagreed (some pass the checks, some fail) are returned too:
only there can GRPO learn, since answers that all earn the same reward have no advantage.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

import httpx

from reflexa.evals.arithmetic import stated_expression
from reflexa.evals.contamination import TRAIN_SPLIT, Guard, prompt_hash
from reflexa.evals.signal import by_checks, vote
from reflexa.evals.verdict import grounded
from reflexa.evals.verify import gold_answer, passes
from reflexa.trainers.errors import TrainerError
from reflexa.trainers.ports import CorrectionSource, ModelServer
from reflexa.trainers.records import EpisodeRecord
from reflexa.trainers.workspace import Workspace

# Corrections that already settle a prompt: sampling it again adds nothing stronger.
COVERING = ("user", "gold", "consistency")


def sampling_targets(
    store: CorrectionSource, protected: Guard, limit: int, covering: Collection[str] = COVERING
) -> list[EpisodeRecord]:
    """Training episodes, one per prompt (the newest), with grounded visible checks (or a
    stated expression a tool computes), that no correction justified by one of `covering`
    covers yet, nor gold where `gold` is among them (a wrong answer to an item whose gold
    may be learnt from and spells out an answer: the compile adds it); failed ones first."""
    covered = {
        c.prompt_hash for c in store.corrections() if c.verified and c.justification in covering
    }
    targets: dict[str, EpisodeRecord] = {}
    for e in store.training_episodes(TRAIN_SPLIT):
        key = prompt_hash(e.prompt)
        if key in covered or protected.protects(e.prompt):
            continue
        settled = e.gold_allowed and e.first_correct is False
        if "gold" in covering and settled and gold_answer(e.scoring) is not None:
            continue
        if grounded(e.checks) or stated_expression(e.prompt):  # what can verify
            targets[key] = e
    ordered = sorted(targets.values(), key=lambda e: bool(e.first_passed))
    return ordered[:limit]


def sample_cap(greedy_tokens: int, most: int) -> int:
    """Tokens a sample may take: twice the greedy answer's, at least 64, at most `most`. At
    temperature the model rambles, and a rambling answer is seldom one the checks pass or
    that agrees with another; the gate's draws are capped alike (graphs/nodes.py), measured
    in bench/results/gate-cost-*.json."""
    return min(most, max(64, 2 * greedy_tokens))


def _constraint(checks: list[dict[str, Any]]) -> dict[str, Any]:
    """vLLM structured outputs for the samples: a visible JSON Schema constrains them."""
    schema = next((c["schema"] for c in checks if c["type"] == "json" and c.get("schema")), None)
    return {"structured_outputs": {"json": schema}} if schema else {}


async def sample_corrections(
    ws: Workspace,
    store: CorrectionSource,
    client: ModelServer,
    model: str | None,
    targets: list[EpisodeRecord],
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, int], set[str]]:
    """Sample, vote and store corrections. Counts of what was kept, by justification, of
    the prompts whose answers disagreed (`mixed`), and of those the server did not answer
    (`unanswered`: a timeout or an error skips the prompt; all of them unanswered fails the
    stage); and the mixed prompts' hashes."""
    c = ws.cycle
    limit = asyncio.Semaphore(c.concurrency)
    counts = {"prompts": len(targets), "consistency": 0, "checks": 0, "form": 0}
    mixed: set[str] = set()

    async def answers(http: httpx.AsyncClient, body: dict[str, Any]) -> tuple[list[str], int]:
        """The answers, and the completion tokens of all of them."""
        async with limit:
            response = await http.post(f"{client.url}/v1/chat/completions", json=body)
        response.raise_for_status()
        reply = response.json()
        texts = [choice["message"]["content"] or "" for choice in reply["choices"]]
        return texts, int((reply.get("usage") or {}).get("completion_tokens") or 0)

    async def sample(http: httpx.AsyncClient, episode: EpisodeRecord) -> None:
        body = {
            "model": model or client.model,
            "messages": [{"role": "user", "content": episode.prompt}],  # as the row shows it
            "max_tokens": c.sample_max_tokens,
        } | _constraint(episode.checks)
        (greedy,), length = await answers(http, body | {"n": 1, "temperature": 0})
        cap = sample_cap(length, c.sample_max_tokens)
        samples, _ = await answers(http, body | {"n": c.sample_n, "max_tokens": cap,
                                                 "temperature": c.sample_temperature})  # fmt: skip
        ok = await _verdicts(episode, [greedy, *samples], ws.allow_unconfined)
        if any(ok) and not all(ok):
            mixed.add(prompt_hash(episode.prompt))
        kept = await _judge(
            episode, greedy, samples, c.agree_greedy, c.agree_majority, ws.allow_unconfined, ok
        )
        if kept is not None:
            store.add_correction(episode.id, **kept)
            counts[kept["justification"]] += 1

    counts["unanswered"] = await each_prompt(ws, client, targets, sample, "sampling", on_progress)
    return counts | {"mixed": len(mixed)}, mixed


async def each_prompt(
    ws: Workspace,
    client: ModelServer,
    episodes: Sequence[EpisodeRecord],
    work: Callable[[httpx.AsyncClient, EpisodeRecord], Awaitable[None]],
    stage: str,
    on_progress: Callable[[int, int], None] | None = None,
) -> int:
    """`work` on every episode at once, through one client of the model server; how many the
    server did not answer (a timeout or an error skips that prompt; none answered fails the
    `stage`)."""
    failures: list[str] = []
    done = 0

    async def one(http: httpx.AsyncClient, episode: EpisodeRecord) -> None:
        nonlocal done
        try:
            await work(http, episode)
        except httpx.HTTPError as e:  # one slow or refused prompt does not end the night
            failures.append(f"{type(e).__name__}: {e}".rstrip(": "))
        done += 1
        if on_progress:
            on_progress(done, len(episodes))

    headers = {"Authorization": f"Bearer {client.api_key}"}
    async with client.async_http(timeout=ws.request_timeout_s, headers=headers) as http:
        await asyncio.gather(*(one(http, e) for e in episodes))
    if episodes and len(failures) == len(episodes):
        raise TrainerError(f"{stage}: the model server answered none of {len(episodes)} "
                           f"prompts (the last: {failures[-1]})")  # fmt: skip
    return len(failures)


async def _verdicts(episode: EpisodeRecord, answers: list[str], unconfined: bool) -> list[bool]:
    """Whether each answer passes the episode's visible checks and the tool checks."""
    return list(
        await asyncio.gather(
            *(passes(episode.checks, episode.prompt, a, allow_unconfined=unconfined)
              for a in answers)
        )
    )  # fmt: skip


async def _judge(
    episode: EpisodeRecord,
    greedy: str,
    samples: list[str],
    min_greedy: int,
    min_majority: int,
    allow_unconfined: bool = False,
    ok: list[bool] | None = None,
) -> dict[str, Any] | None:
    """The correction the current model's `greedy` answer and `samples` justify for
    `episode`, or None. `ok`: each answer's checks, where already run. The episode's own
    first answer is the rejected one, where it differs (it failed, or it is another
    model's)."""
    prompt, checks = episode.prompt, episode.checks
    answers = [greedy, *samples]
    if ok is None:
        ok = await _verdicts(episode, answers, allow_unconfined)
    chosen = vote(greedy, samples, checks, ok, min_greedy, min_majority)
    if chosen is not None:
        answer, justification = chosen.answer, "consistency"
    elif any(ok):
        answer = answers[ok.index(True)]
        justification = by_checks(checks, prompt, answer)
    else:
        return None
    scoring = episode.scoring
    unconfined = {"allow_unconfined": allow_unconfined}
    correct = await passes(scoring, prompt, answer, **unconfined) if scoring else None
    is_greedy = answer == greedy
    first = episode.attempts[0].answer
    return {
        "prompt": prompt,
        "chosen": answer,
        "rejected": None if episode.first_passed or first == answer else first,
        "source": "self" if is_greedy else "sampled",
        "verified": True,
        "justification": justification,
        "correct": correct,
    }
