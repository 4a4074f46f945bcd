"""GRPO's reward: the loop's own verifiers, so evaluate is reward.

A completion is judged by the checks that apply to it (the row's visible checks, the
tool-grounded checks, and its scoring where gold is allowed), by the one rule
(`evals.verdict.outcome`: a check that errors is not passed). No judge: a model's opinion of
itself is not a reward.

- Where a check of the value applies (a tool, tests, scoring), passing earns 1, else 0.
- Where only form is checked (a schema, a regex, a number), form is not evidence of the
  values: passing earns 0.5, and 1 only when the answer is also the group's majority answer
  (test-time RL's pseudo-label: the prompt's completions, by a strict majority of the
  group); a majority that is also another prompt's majority in the batch says nothing
  about either prompt, and earns no agreement. So one constant valid object never earns
  the top reward.
A completion no check could judge, or whose checking raised, earns 0 and is counted
(`reward_errors`), never a crashed run. The reward hacks the checks refuse (exiting before
the tests, JSON-looking prose, a number among words) earn 0 for the same reason they fail in
the loop.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from reflexa.evals import VerifyContext, checks_for, parse_checks, run_checks
from reflexa.evals.checks import checks_values
from reflexa.evals.signal import normalise
from reflexa.evals.verdict import Outcome, outcome

RewardFn = Callable[..., Any]
FORM = 0.5  # what passing checks of form alone earns


def verifier_reward(allow_unconfined: bool = False) -> RewardFn:
    """A TRL reward function over conversational rows with `checks` and `scoring` columns
    (JSON lists of check specs). TRL hands it a batch of groups: each prompt's completions."""

    async def verifiers(
        prompts: list[Any], completions: list[Any], checks: list[str], scoring: list[str],
        **kwargs: Any,
    ) -> list[float]:  # fmt: skip
        texts = [_text(c) for c in completions]
        asked = [_text(p, role="user") for p in prompts]
        specs = [json.loads(c) + json.loads(s) for c, s in zip(checks, scoring, strict=True)]
        judged = await asyncio.gather(
            *(
                _judge(p, t, s, allow_unconfined)
                for p, t, s in zip(asked, texts, specs, strict=True)
            ),
            return_exceptions=True,
        )
        results = [j if isinstance(j, tuple) else ("unchecked", True) for j in judged]
        agreed = agreement(asked, [normalise(t, s) for t, s in zip(texts, specs, strict=True)],
                           [o == "passed" for o, _ in results])  # fmt: skip
        if (log := kwargs.get("log_metric")) is not None:
            log("reward_errors", sum(o == "unchecked" for o, _ in results))
        return [_reward(o, form_only, a) for (o, form_only), a in zip(results, agreed, strict=True)]

    return verifiers


def _reward(result: Outcome, form_only: bool, agrees: bool) -> float:
    if result != "passed":
        return 0.0
    return 1.0 if not form_only or agrees else FORM


async def _judge(
    prompt: str, answer: str, specs: list[dict[str, Any]], unconfined: bool
) -> tuple[Outcome, bool]:
    """The answer's outcome, and whether only its form was checked."""
    checks = checks_for(prompt, answer, parse_checks(specs), judge=False)
    verdicts = await run_checks(checks, answer, VerifyContext(prompt, None, unconfined))
    return outcome(verdicts), not checks_values(checks)


def agreement(prompts: Sequence[str], forms: Sequence[str], passed: Sequence[bool]) -> list[bool]:
    """Per completion: it passed and is its prompt's majority answer, where the majority is
    a strict one among the prompt's completions (more than half) and no other prompt in the
    batch has the same majority answer."""
    groups: dict[str, list[int]] = {}
    for i, prompt in enumerate(prompts):
        groups.setdefault(prompt, []).append(i)
    majority: dict[str, str] = {}
    for prompt, members in groups.items():
        counts = Counter(forms[i] for i in members if passed[i])
        if counts and 2 * (top := counts.most_common(1)[0])[1] > len(members):
            majority[prompt] = top[0]
    shared = {f for f, n in Counter(majority.values()).items() if n > 1}
    return [
        passed[i] and majority.get(p) == forms[i] and forms[i] not in shared
        for i, p in enumerate(prompts)
    ]


def _text(item: Any, role: str = "assistant") -> str:
    """A completion's (or prompt's last `role` message's) text: conversational or plain."""
    if isinstance(item, str):
        return item
    messages = [m for m in item if m.get("role") == role] or list(item)
    return str(messages[-1]["content"]) if messages else ""
