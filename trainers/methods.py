"""Candidate methods (`[cycle] methods`): a recipe, optionally with training settings of its
own, as in `sft-continue@learning_rate=1e-4,epochs=1` or `sft@rehearsal=0.25` (its share of
rehearsal rows); each spelling is a method of its own in the record (trainers/history.py),
so the nights' gates tell which start, learning rate, epochs and rehearsal win."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from reflexa.trainers.examples import Format

# What each recipe trains: sft-label-free is SFT without gold, sft-continue SFT that goes on
# from the promoted adapter's LoRA (sft starts a new one, unless gold is off: trainers/cycle.py).
FORMAT: dict[str, Format] = {"sft": "sft", "sft-label-free": "sft", "sft-continue": "sft",
                             "dpo": "dpo", "grpo": "grpo", "kto": "kto"}  # fmt: skip
# The training settings a method may set for itself, and their type.
TUNABLE: dict[str, type] = {"learning_rate": float, "epochs": float, "grpo_epochs": float,
                            "batch_size": int, "rehearsal": float}  # fmt: skip


@dataclass(frozen=True)
class Method:
    spec: str  # as configured: its name in the record
    recipe: str
    settings: tuple[tuple[str, Any], ...] = ()

    @property
    def format(self) -> Format:
        return FORMAT[self.recipe]

    def rehearsal(self, default: float) -> float:
        """The share of its SFT rows that are rehearsal (trainers/rehearsal.py)."""
        return float(dict(self.settings).get("rehearsal", default))

    def training(self) -> dict[str, Any]:
        """Its settings that are the trainer's (trainers/config.py)."""
        return {k: v for k, v in self.settings if k != "rehearsal"}


def default_methods(method: str) -> list[str]:
    """The candidates when none are configured: the training config's method; for SFT both
    starts (from the promoted adapter or afresh), which the record then orders."""
    return ["sft", "sft-continue"] if method == "sft" else [method]


def parse_method(spec: str) -> Method:
    """`RECIPE[@SETTING=VALUE,...]`, or ValueError saying what is wrong."""
    recipe, at, rest = spec.partition("@")
    if recipe not in FORMAT:
        raise ValueError(f"method {spec!r}: unknown recipe {recipe!r} (known: {', '.join(FORMAT)})")
    settings = []
    for part in rest.split(",") if at else []:
        key, eq, value = part.strip().partition("=")
        if key not in TUNABLE or not eq:
            raise ValueError(
                f"method {spec!r}: {part.strip()!r} is not SETTING=VALUE with a setting of "
                f"{', '.join(TUNABLE)}"
            )
        try:
            number = TUNABLE[key](value)
        except ValueError:
            raise ValueError(f"method {spec!r}: {key} must be a number, not {value!r}") from None
        if not number > 0:
            raise ValueError(f"method {spec!r}: {key} must be positive")
        if key == "rehearsal" and not number < 1:
            raise ValueError(f"method {spec!r}: rehearsal is a share of the rows, below 1")
        settings.append((key, number))
    return Method(spec, recipe, tuple(settings))


def distinct(
    methods: Sequence[str], allow_gold: bool, continue_parent: bool, parent: bool
) -> list[str]:
    """The methods that train differently: without gold, sft-label-free is sft; where every
    SFT goes on from the promoted adapter, or there is none (`parent`), sft-continue is sft."""
    recipes: dict[tuple[Any, ...], str] = {}
    for spec in methods:
        m = parse_method(spec)
        go_on = parent and continues(m, continue_parent)
        gold = allow_gold and m.recipe != "sft-label-free"
        recipes.setdefault((m.format, gold, go_on, m.settings), spec)
    return list(recipes.values())


def continues(method: Method, continue_parent: bool) -> bool:
    """Whether `method` trains on from the promoted adapter's LoRA (else a new one on the
    base model): GRPO and sft-continue always, the others where `continue_parent`."""
    return method.format == "grpo" or method.recipe == "sft-continue" or continue_parent


def holds_gold(adapter: dict[str, Any] | None) -> bool:
    """Whether a cycle's adapter learnt from gold: trained where gold was allowed, or went
    on from one that had."""
    made = ((adapter or {}).get("metrics") or {}).get("cycle") or {}
    return bool(made.get("gold") or made.get("holds_gold"))
