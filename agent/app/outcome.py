"""What an ended episode leaves behind, from what the loop saw: the correction its repair
makes, and (where it may learn from gold) the gold answer to remember."""

from __future__ import annotations

from typing import Any

from reflexa.evals.contamination import learnable
from reflexa.evals.signal import by_checks
from reflexa.evals.verdict import grounded_pass
from reflexa.evals.verify import gold_answer, passes


def corrections_from(state: dict[str, Any]) -> list[dict[str, Any]]:
    """From what the loop saw: a first answer its checks failed and the repair they passed,
    verified when grounded visible checks (not the judge alone) passed it, justified by
    those checks. Scoring does not choose here: whether gold may replace or add a row is
    decided when a candidate's dataset is compiled (trainers.dataset)."""
    if state["status"] != "repaired":
        return []
    attempts = state["attempts"]
    fix = attempts[state["final_index"]]
    prompt = state["messages"][-2]["content"]
    return [{"prompt": prompt, "rejected": attempts[0]["answer"],
             "chosen": fix["answer"], "source": "repair",
             "verified": grounded_pass(fix["verdicts"]),
             "justification": by_checks(state["checks"], prompt, fix["answer"])}]  # fmt: skip


async def gold_memory(
    episode: dict[str, Any], prompt: str, final_right: bool | None, allow_unconfined: bool
) -> str | None:
    """The answer the scoring spells out, to remember (justified by gold), where the episode
    is a training item whose gold may be learnt from and its answer was wrong; None
    otherwise, or where the scoring spells out no answer that its checks pass."""
    if final_right is not False or not (episode["gold_allowed"] and learnable(episode["split"])):
        return None
    gold = gold_answer(episode["scoring"])
    checks = [*episode["checks"], *episode["scoring"]]
    if gold is None or not await passes(checks, prompt, gold, allow_unconfined=allow_unconfined):
        return None
    return gold
