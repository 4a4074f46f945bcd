"""The self-repair cycle's settings: the `[cycle]` table of `reflexa.toml` (and
`REFLEXA_CYCLE__*`), kept beside the cycle it configures, as TRL keeps `GRPOConfig` beside
`GRPOTrainer`; the application's settings include it."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from reflexa.trainers.methods import parse_method


class CycleConfig(BaseModel):
    """The self-repair cycle: what it trains on and when the gate promotes."""

    train_config: Path | None = Field(
        default=None, description="YAML training config (trainers/config.py); unset: defaults."
    )
    allow_gold: bool = Field(
        default=True, description="Train on gold answers where the model's own repair failed."
    )
    justifications: list[Literal["user", "gold", "consistency", "checks", "form"]] = Field(
        default=["user", "gold", "consistency", "checks"],
        description="What may admit a training row: a user's answer, gold (where allowed), "
        "self-consistency of samples, visible checks that decide the value (a tool, tests), "
        "checks of form alone (`form`: add it to admit such rows everywhere; left out, they "
        "are admitted only for suites where their precision was measured, form_precision).",
    )
    form_precision: float = Field(
        default=0.9, ge=0, le=1,
        description="A suite's rows justified by checks of form alone are admitted where, "
        "on its scored dev answers, the 95 % lower bound of their precision reaches this.",
    )  # fmt: skip
    consistency_precision: float = Field(
        default=0.8, ge=0, le=1,
        description="A suite's rows justified by self-consistency are refused where, on its "
        "scored dev answers, the same vote was right less often than this (95 % upper "
        "bound, 10 votes at least): a model can agree with itself on a wrong answer.",
    )  # fmt: skip
    frontier_weight: int = Field(
        default=2, ge=1, le=8,
        description="In SFT, each example the model did not answer by itself (a repair, a "
        "sample that beat its greedy answer, gold, a user's) comes this many times; epochs "
        "shrink to keep the steps the same, so the answers it already gives weigh less.",
    )  # fmt: skip
    rehearsal: float = Field(
        default=0.25, ge=0, lt=1,
        description="In SFT, this share of the examples at most is rehearsal: the current "
        "model's own greedy answers to chat prompts (no suite), asked afresh, so a night "
        "does not unlearn what it was not taught (trainers/rehearsal.py); nothing without "
        "chat in the store. 0: none.",
    )  # fmt: skip
    blend: float = Field(
        default=0.5, ge=0, lt=1,
        description="A candidate the dev splits would promote but the frozen suite rejects is "
        "pulled back toward the current adapter and gated once more: this share of its weight "
        "update, the rest the current one's (trainers/blend.py). 0: never.",
    )  # fmt: skip
    rehearsal_limit: int = Field(
        default=200, ge=0, description="Chat prompts the current model answers for rehearsal."
    )
    replay: float = Field(
        default=0.5, ge=0,
        description="SFT or DPO that goes on from the current adapter learns every row logged "
        "since the last night that trained, and of the earlier rows at most this many times as "
        "many, drawn at random (trainers/replay.py); a new adapter learns all. Large: all.",
    )  # fmt: skip
    rounds: int = Field(
        default=1, ge=1, le=10,
        description="Cycles in a row per `reflexa cycle` (and per scheduled run); each samples "
        "from the adapter the last one promoted; the chain stops at the first that does not.",
    )  # fmt: skip
    gold_rounds: int = Field(
        default=1, ge=0, le=10,
        description="In a chain of rounds, gold may justify rows in the first this many only; "
        "later rounds learn from the model's own verified samples (0: never).",
    )  # fmt: skip
    methods: list[str] | None = Field(
        default=None, min_length=1,
        description="Candidates per round, each trained on the same training prompts and "
        "gated against the promoted adapter; of those that pass, the largest dev plus frozen "
        "gain is promoted. A recipe (sft, "
        "sft-label-free: SFT without gold, sft-continue: SFT that goes on from the promoted "
        "adapter's LoRA where sft starts a new one, dpo, grpo), optionally with settings of "
        "its own: `sft@learning_rate=1e-4,epochs=2`. The record orders them each night; "
        "those that would train alike are tried once. Unset: the training config's method "
        "(for SFT both starts, sft and sft-continue, so the record can tell which wins).",
    )  # fmt: skip

    @field_validator("methods")
    @classmethod
    def _methods(cls, methods: list[str] | None) -> list[str] | None:
        for spec in methods or []:
            parse_method(spec)  # a ValueError names what is wrong
        return methods

    repair_turns: bool = Field(
        default=True,
        description="Also train each of the model's own verified repairs as a repair turn "
        "(its wrong first answer and the feedback it was shown, then the repair).",
    )
    sample_n: int = Field(
        default=8, ge=0, le=16,
        description="Samples per training prompt, for self-consistency (0: none).",
    )  # fmt: skip
    sample_temperature: float = Field(default=1.0, gt=0, le=2)
    sample_max_tokens: int = Field(
        default=256, ge=1,
        description="Tokens per answer when sampling, at most; a sample may also take no more "
        "than twice the greedy answer's tokens (at least 64): rambling seldom passes.",
    )  # fmt: skip
    sample_limit: int = Field(default=200, ge=0, description="Prompts sampled per cycle, at most.")
    agree_greedy: int = Field(
        default=3, ge=1,
        description="Self-consistency: the first answer, if this many answers agree with it.",
    )  # fmt: skip
    agree_majority: int = Field(
        default=5, ge=1, description="Self-consistency: else a group of at least this many."
    )
    alpha: float = Field(
        default=0.05, gt=0, lt=1,
        description="The dev gain's paired sign-flip p-value, Holm-adjusted across the "
        "night's candidates, must be below this.",
    )  # fmt: skip
    max_drop: float = Field(
        default=0.02, ge=0, le=1,
        description="No dev suite's mean pass fraction may drop by more than this, where the "
        "drop is significant (one-sided, Holm over the dev suites at alpha); recall is turned "
        "off for a suite where it cost more than this.",
    )  # fmt: skip
    futility: bool = Field(
        default=True,
        description="Measure a candidate on a random half of the dev items first, and reject "
        "it there if it is not ahead: a rejection at half the cost. It never promotes more "
        "often, and replays found no measurable loss of power "
        "(bench/results/gate-null-2026-12-06-4.json).",
    )  # fmt: skip
    gate_weights: Literal["auto", "merged", "adapter"] = Field(
        default="auto",
        description="How the gate serves each adapter it measures: merged (the adapter "
        "merged into the base model's weights, on a temporary vLLM server of its own beside "
        "the application's, one side at a time: on a CPU 2.6 times the requests per second "
        "of a runtime adapter for about a minute's merge and start per side, "
        "bench/results/serve-gate-*.json), adapter (loaded into the application's server), "
        "auto (merged on a CPU with managed servers; adapter on a GPU, where a second server "
        "needs memory the first holds, or with external servers).",
    )  # fmt: skip
    gate_draws: int = Field(
        default=4, ge=0, le=16,
        description="Answers per gate item besides the greedy one, sampled in one request; "
        "each item is judged by the share of its answers that pass (0: greedy alone).",
    )  # fmt: skip
    frozen_draws: int = Field(
        default=8, ge=0, le=16,
        description="The same for the frozen suite, whose non-inferiority test needs more "
        "answers not to fail a candidate that is no worse there: with 4 it failed one in "
        "11-22 % of nights replayed from real answers, with 8 in 1-4 % "
        "(bench/results/gate-null-2026-12-06-4.json).",
    )  # fmt: skip
    gate_temperature: float = Field(default=0.7, gt=0, le=2, description="For those draws.")
    frozen_margin: float = Field(
        default=0.05, ge=0, le=1,
        description="Non-inferiority on the frozen suite: the one-sided 95 % lower bound of "
        "the candidate's pass-fraction difference must stay above minus this.",
    )  # fmt: skip
    concurrency: int = Field(default=8, ge=1, le=256, description="Gate requests in flight.")
    budget_minutes: float = Field(
        default=30, gt=0,
        description="A night's time: past it, no further candidate method is started (the "
        "likeliest winner by the record goes first; the first always runs).",
    )  # fmt: skip
    resume_hours: float = Field(
        default=24, ge=0,
        description="A cycle stopped before it ended (killed, rebooted) is taken up by the "
        "next one begun within this many hours: its finished sampling, its trained "
        "candidates and its gate's finished eval runs are kept (0: always start afresh).",
    )  # fmt: skip
    misfire_grace_s: int = Field(
        default=6 * 3600, ge=1,
        description="A scheduled cycle missed (scheduler down) still runs if this late.",
    )  # fmt: skip
