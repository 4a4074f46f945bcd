"""GRPO's reward: the loop's own verifiers, so evaluate is reward.

A completion earns 1 when every check that applies to it passes (the row's visible checks,
the tool-grounded checks, and its scoring where gold is allowed), else 0. No judge: a model's
opinion of itself is not a reward. A check that errors does not count; a completion no check
could judge, or whose checking raised, earns 0 and is counted (`reward_errors`), never a
crashed run. The reward hacks the checks refuse (exiting before the tests, JSON-looking
prose, a number among words) earn 0 for the same reason they fail in the loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from reflexa.evals import VerifyContext, checks_for, parse_checks, run_checks

RewardFn = Callable[..., Any]


def verifier_reward(allow_unconfined: bool = False) -> RewardFn:
    """A TRL reward function over conversational rows with `checks` and `scoring` columns
    (JSON lists of check specs)."""

    async def verifiers(
        prompts: list[Any], completions: list[Any], checks: list[str], scoring: list[str],
        **kwargs: Any,
    ) -> list[float]:  # fmt: skip
        texts = [_text(c) for c in completions]
        asked = [_text(p, role="user") for p in prompts]
        results = await asyncio.gather(
            *(
                _reward(p, t, json.loads(c) + json.loads(s), allow_unconfined)
                for p, t, c, s in zip(asked, texts, checks, scoring, strict=True)
            ),
            return_exceptions=True,
        )
        rewards = [r if isinstance(r, float) and r >= 0 else None for r in results]
        if (log := kwargs.get("log_metric")) is not None:
            log("reward_errors", sum(r is None for r in rewards))
        return [r or 0.0 for r in rewards]

    return verifiers


async def _reward(prompt: str, answer: str, specs: list[dict[str, Any]], unconfined: bool) -> float:
    """1.0 if every counted verdict passed, 0.0 if one failed, -1.0 if none counted
    (nothing could judge it)."""
    checks = checks_for(prompt, answer, parse_checks(specs), judge=False)
    verdicts = await run_checks(checks, answer, VerifyContext(prompt, None, unconfined))
    counted = [v.passed for v in verdicts if v.error is None]
    if not counted:
        return -1.0
    return 1.0 if all(counted) else 0.0


def _text(item: Any, role: str = "assistant") -> str:
    """A completion's (or prompt's last `role` message's) text: conversational or plain."""
    if isinstance(item, str):
        return item
    messages = [m for m in item if m.get("role") == role] or list(item)
    return str(messages[-1]["content"]) if messages else ""
