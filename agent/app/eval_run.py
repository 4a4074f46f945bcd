"""`reflexa eval run`: a suite's items as recorded episodes, then the run's metrics.

Every item is an episode tagged with its suite, split, item id and run, so eval failures feed
the training data. A run interrupted half-way is resumed by running the same command again:
the items it finished are not run twice, and those that ended in a model error (the server
went down, a timeout) are run again. When the server stops answering, the run stops at once
rather than record every remaining item as an error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from reflexa.agent.app.agent import UNREACHABLE, Agent, EpisodeRequest, open_agent
from reflexa.agent.errors import ReflexaError
from reflexa.agent.model.client import ModelClient
from reflexa.agent.settings import Settings
from reflexa.agent.store import Store
from reflexa.evals.compare import compare_runs
from reflexa.evals.metrics import by_strategy, summarize
from reflexa.evals.runner import ItemOutcome, run_items
from reflexa.evals.suite import TRAIN, Suite, SuiteItem
from reflexa.trainers.gate import FROZEN, Evaluate


@dataclass(frozen=True)
class EvalOptions:
    split: str | None = None
    limit: int | None = None
    reflect: bool = True
    max_repairs: int | None = None
    adapter: str | None = None
    concurrency: int = 8
    memory: bool = True  # recall past corrections (if the agent has a memory)
    # The run may learn from gold: a training item's gold may become a training row (if its
    # suite allows), and recall may show memories justified by gold. Off: neither.
    allow_gold: bool = True
    # More answers to each item's first prompt, sampled in one request at `draw_temperature`
    # (the gate's evidence per item; 0: the first answer alone).
    draws: int = 0
    draw_temperature: float = 1.0
    # The cycle whose gate this run is part of: its runs are kept apart from any other's,
    # and one taken up after a stop finds its own, finished or not.
    cycle: str | None = None
    # The answering model's max tokens an answer, where the caller records it (the agent
    # applies its own): a gate run reuses another night's answers only at the same length.
    answer_tokens: int | None = None

    def config(self) -> dict[str, Any]:
        """What makes two runs comparable (concurrency does not change results)."""
        return {
            k: v for k, v in asdict(self).items()
            if k != "concurrency" and (k not in ("cycle", "answer_tokens") or v is not None)
        }  # fmt: skip


# (done, total) after each item; first called with the items a resumed run already had.
ProgressFn = Callable[[int, int], None]


def scored(episode: dict[str, Any]) -> tuple[bool, bool]:
    """(first, final) pass of an episode: by its scoring where it has one, else its checks."""
    if episode["first_correct"] is not None:
        return bool(episode["first_correct"]), bool(episode["final_correct"])
    return bool(episode["first_passed"]), bool(episode["final_passed"])


def outcome(episode: dict[str, Any], item: SuiteItem) -> ItemOutcome:
    """An item's outcome, read from its recorded episode (with its attempts)."""
    first, final = scored(episode)
    attempts = episode.get("attempts") or []
    returned = [a for a in attempts if a["answer"] == episode["answer"]]
    repair_log = [
        {"strategy": a["strategy"] or "feedback",  # before routing, every repair was feedback
         "passed": a["passed"], "latency_s": a["latency_s"],
         "tokens": a["prompt_tokens"] + a["completion_tokens"]}
        for a in attempts if a["kind"] == "repair"
    ]  # fmt: skip
    return ItemOutcome(
        item_id=item.id,
        split=item.split,
        tags=item.tags,
        episode_id=episode["id"],
        status=episode["status"],
        first_passed=first,
        final_passed=final,
        right_to_wrong=bool(episode["right_to_wrong"]),
        wrong_to_right=bool(episode["wrong_to_right"]),
        scored=episode["first_correct"] is not None,
        checks_passed=bool(episode["first_passed"]),
        repairs=max(episode["n_attempts"] - 1, 0),
        tokens=episode["prompt_tokens"] + episode["completion_tokens"],
        latency_s=episode["latency_s"] or 0.0,
        error=episode["error"],
        repair_log=repair_log,
        final_strategy=returned[-1]["strategy"] if returned else None,
        skipped=[k for a in attempts for k in (a["diagnosis"] or {}).get("skipped", {})],
        recalled=recalled_ids(episode),
        draws=[bool(d["passed"]) for d in episode.get("draws") or []],
    )


def recalled_ids(episode: dict[str, Any]) -> list[int]:
    """The ids of the memories in an episode's first prompt."""
    attempts = episode.get("attempts") or []
    return [m["id"] for m in (attempts[0]["memory"] or {}).get("used", [])] if attempts else []


def breakdown(outcomes: list[ItemOutcome]) -> dict[str, Any]:
    by_split: dict[str, list[ItemOutcome]] = {}
    by_tag: dict[str, list[ItemOutcome]] = {}
    for o in outcomes:
        by_split.setdefault(o.split, []).append(o)
        for tag in o.tags:
            by_tag.setdefault(tag, []).append(o)
    return {
        "overall": summarize(outcomes),
        "by_split": {k: summarize(v) for k, v in sorted(by_split.items())},
        "by_tag": {k: summarize(v) for k, v in sorted(by_tag.items())},
        "by_strategy": by_strategy(outcomes),
    }


async def run_eval(
    agent: Agent,
    suite: Suite,
    options: EvalOptions,
    on_progress: ProgressFn | None = None,
    reuse: bool = False,
) -> dict[str, Any]:
    """Run `suite` on `agent` (opened with `options.adapter`, if any). `reuse`: an item
    another cycle's gate asked exactly so is not asked again (`answered_before`)."""
    items = suite.select(options.split, options.limit)
    by_id = {i.id: i for i in items}
    store = agent.store
    run_id, resumed = store.open_eval_run(
        suite.name, suite.source, options.config(), finished=options.cycle is not None
    )
    done = {e["item_id"] for e in store.run_episodes(run_id) if e["status"] != "error"}
    todo = [i for i in items if i.id not in done]
    if reuse and todo:
        earlier = answered_before(agent, suite, options, todo)
        for episode_id in earlier.values():
            store.copy_episode(episode_id, run_id)
        todo = [i for i in todo if i.id not in earlier]
    done_count = len(items) - len(todo)
    if on_progress:
        on_progress(done_count, len(items))

    async def solve(item: SuiteItem) -> ItemOutcome:
        result = await agent.run(
            EpisodeRequest(
                item.user_prompt, item.check_specs(), item.scoring_specs(),
                allow_gold=options.allow_gold and suite.allow_gold and item.split == TRAIN,
                history=item.history,
                max_repairs=options.max_repairs if options.reflect else 0,
                suite=suite.name, split=item.split, item_id=item.id, eval_run_id=run_id,
                memory=options.memory, gold_memories=options.allow_gold,
                draws=options.draws, draw_temperature=options.draw_temperature,
            )
        )  # fmt: skip
        if result.status == "error" and (result.error or "").startswith(UNREACHABLE):
            raise ReflexaError(
                f"the model server stopped answering ({result.error}); {done_count} of "
                f"{len(items)} items are recorded. Start it again and run the same command: "
                "the run resumes where it stopped."
            )
        episode = store.episode(result.episode_id)
        assert episode is not None, "agent.run records every episode"
        return outcome(episode, item)

    def tick(_: ItemOutcome) -> None:
        nonlocal done_count
        done_count += 1
        if on_progress:
            on_progress(done_count, len(items))

    await run_items(todo, solve, options.concurrency, tick)
    episodes = store.run_episodes(run_id)
    outcomes = [outcome(e, by_id[e["item_id"]]) for e in episodes if e["item_id"] in by_id]
    metrics = breakdown(outcomes)
    store.finish_eval_run(run_id, metrics)
    note = None
    if not suite.has_test_split:
        note = (
            f"{suite.name} has no untouched test split (train / dev / test): "
            "a number from a split the gate decides on is not an unbiased estimate"
        )
    return {
        "run_id": run_id,
        "suite": suite.name,
        "note": note,
        "resumed": resumed,
        "config": options.config(),
        "metrics": metrics,
        "items": [o.to_dict() for o in outcomes],
    }


def answered_before(
    agent: Agent, suite: Suite, options: EvalOptions, items: list[SuiteItem]
) -> dict[str, str]:
    """Item id → an episode of another cycle's gate run that made the same request: the
    same model (an adapter's name is its weights' hash), options and item prompt, and the
    same memories recalled as would be now (memory stays as it is while a gate runs). Its
    answers are a sample of the same distribution a new request would draw from, so the
    frozen suite, whose items never change, is measured once per adapter, not once per
    night (the current side tonight was last night's candidate)."""
    wanted = {i.id: i for i in items}
    found: dict[str, str] = {}
    now: dict[str, list[int] | None] = {}  # what each item's recall shows now
    # Gold changes a gate request only through the memories recall shows: compared below.
    for run_id in agent.store.earlier_runs(suite.name, options.config(), ("allow_gold",)):
        for e in agent.store.run_episodes(run_id):
            item = wanted.get(e["item_id"])
            if item is None or item.id in found or e["status"] == "error" or not e["attempts"]:
                continue
            if e["prompt"] != item.user_prompt or e["model"] != agent.context.model_name:
                continue
            if item.id not in now:
                now[item.id] = agent.recalled(
                    item.user_prompt, suite.name, options.memory, options.allow_gold
                )
            if recalled_ids(e) == now[item.id]:
                found[item.id] = e["id"]
        if len(found) == len(wanted):
            break
    return found


def compare_eval_runs(store: Store, run_a: str, run_b: str) -> dict[str, Any]:
    """`reflexa eval compare`: two recorded runs, paired on the items they share."""
    runs = []
    for run_id in (run_a, run_b):
        run = store.eval_run(run_id)
        if run is None:
            raise ReflexaError(f"no eval run {run_id!r} (see the run id printed by `eval run`)")
        per_item = {
            e["item_id"]: dict(zip(("first_attempt", "final"), scored(e), strict=True))
            for e in store.run_episodes(run_id)
        }
        runs.append((run, per_item))
    (a, items_a), (b, items_b) = runs
    result = compare_runs(items_a, items_b)
    if result["items"] == 0:
        raise ReflexaError(f"runs {run_a} ({a['suite']}) and {run_b} ({b['suite']}) share no items")
    return {"a": _run_summary(a), "b": _run_summary(b), "suite": a["suite"]} | result


def _run_summary(run: dict[str, Any]) -> dict[str, Any]:
    return {k: run[k] for k in ("id", "suite", "created_at", "status", "config")}


def gate_evaluator(settings: Settings, store: Store) -> Callable[[ModelClient, str], Evaluate]:
    """The gate's `evaluate` on a model server for one cycle: first attempts, recorded in
    `store`, each run resumed (or, finished, reused) when the cycle is taken up again."""

    def on(client: ModelClient, cycle_id: str) -> Evaluate:
        async def evaluate(
            adapter: str | None,
            suite: Suite,
            split: str,
            memory: bool,
            gold: bool,
            draws: int,
            on_progress: ProgressFn | None,
        ) -> dict[str, Any]:
            c = settings.cycle
            options = EvalOptions(
                split=split, reflect=False, adapter=adapter, memory=memory, allow_gold=gold,
                concurrency=c.concurrency, draws=draws, draw_temperature=c.gate_temperature,
                cycle=cycle_id, answer_tokens=settings.reflect.max_tokens,
            )  # fmt: skip
            # Recall is measured whatever the current policy says, or a suite whose recall
            # was turned off would measure no difference and be turned back on.
            async with open_agent(settings, client, store, adapter, recall_policy=False) as agent:
                # The frozen suite's items never change: what an adapter answered there on
                # another night is reused. (Not dev: the current side was promoted on its dev
                # answers, which would make it a baseline biased upward.)
                reuse = suite.name == FROZEN
                return await run_eval(agent, suite, options, on_progress, reuse=reuse)

        return evaluate

    return on
