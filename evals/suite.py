"""Eval suites: items with a prompt (or messages), visible checks, scoring checks, tags and a
split, read from YAML or JSONL. Every error names the file and line.

`checks` are what the loop may see (form, a schema, a regex, tests, a rubric); `scoring`
checks (gold) only score an episode after it ends. Splits: `train` (the loop learns from
it), `dev` (the gate decides on it), `test` (reported, never used for a decision); a suite
with `heldout` instead of `dev` gates on it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from reflexa.evals.checks import Check, carries_gold, describe_validation_error, split_gold
from reflexa.evals.leaks import stated_answers

TRAIN, DEV, TEST, HELDOUT = "train", "dev", "test", "heldout"


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str


class SuiteItem(BaseModel):
    """One task. `prompt` is the user's message; `messages` a conversation ending with one."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1)
    prompt: str | None = None
    messages: list[Message] | None = None
    checks: list[Check] = Field(default_factory=list)
    scoring: list[Check] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    split: str = "test"

    @model_validator(mode="after")
    def _one_prompt(self) -> SuiteItem:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of `prompt` and `messages`")
        if self.messages is not None and (not self.messages or self.messages[-1].role != "user"):
            raise ValueError("`messages` must end with a user message")
        return self

    @property
    def user_prompt(self) -> str:
        return self.prompt if self.prompt is not None else self.messages[-1].content  # type: ignore[index]

    @property
    def history(self) -> list[dict[str, str]]:
        """The conversation before the final user message."""
        return [m.model_dump() for m in (self.messages or [])[:-1]]

    def check_specs(self) -> list[dict[str, Any]]:
        """The visible checks, as specs."""
        return [c.model_dump(by_alias=True, exclude_none=True) for c in self.checks]

    def scoring_specs(self) -> list[dict[str, Any]]:
        return [c.model_dump(by_alias=True, exclude_none=True) for c in self.scoring]


@dataclass(frozen=True)
class Suite:
    name: str
    items: list[SuiteItem]
    source: str  # a file path, or "built-in"
    description: str = ""
    allow_gold: bool = False  # its training items' scoring may become training rows
    note: str | None = None  # said once when loading (an old file converted)

    def splits(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for item in self.items:
            counts[item.split] = counts.get(item.split, 0) + 1
        return counts

    def select(self, split: str | None = None, limit: int | None = None) -> list[SuiteItem]:
        items = [i for i in self.items if split is None or i.split == split]
        return items[:limit] if limit is not None else items

    @property
    def gate_split(self) -> str | None:
        """The split promotion decisions are made on: `dev`, else `heldout`, else none."""
        splits = self.splits()
        return next((s for s in (DEV, HELDOUT) if s in splits), None)

    @property
    def has_test_split(self) -> bool:
        """An untouched split to report on: `test` beside a separate gate split."""
        return TEST in self.splits() and self.gate_split is not None


class SuiteError(ValueError):
    """A suite file that cannot be used; the message starts with `file:line:`."""


def load_suite(path: Path) -> Suite:
    if not path.is_file():
        raise SuiteError(f"{path}: suite file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SuiteError(f"{path}: cannot read ({e})") from None
    allow_gold = False
    if path.suffix == ".jsonl":
        raw, name, description = _jsonl(path, text), path.stem, ""
    elif path.suffix in (".yaml", ".yml"):
        raw, name, description, allow_gold = _yaml(path, text)
    else:
        raise SuiteError(f"{path}: a suite is a .yaml, .yml or .jsonl file")
    items: list[SuiteItem] = []
    seen: dict[str, int] = {}
    converted = 0
    for line, data in raw:
        data, moved = _legacy_gold(path, line, data)
        converted += moved
        try:
            item = SuiteItem.model_validate(data)
        except ValidationError as e:
            raise SuiteError(f"{path}:{line}: {describe_validation_error(e)}") from None
        if stated := stated_answers(item.checks):
            raise SuiteError(f"{path}:{line}: item {item.id!r}: {stated[0]}")
        if item.id in seen:
            raise SuiteError(
                f"{path}:{line}: duplicate id {item.id!r} (first at line {seen[item.id]})"
            )
        if item.split == TRAIN and item.scoring and not (allow_gold or moved):
            raise SuiteError(
                f"{path}:{line}: item {item.id!r} is on the train split and has `scoring` "
                "checks, but the suite does not allow gold: add `allow_gold: true` at the "
                f"top, or move the item to a split the loop does not learn from ({DEV}, {TEST})"
            )
        seen[item.id] = line
        items.append(item)
    if not items:
        raise SuiteError(f"{path}: the suite has no items")
    note = None
    if converted:
        allow_gold = True  # its expected values were visible, hence learnt from, until now
        note = (
            f"{path}: {converted} item(s) carry expected values in `checks`; they now only "
            "score (moved to `scoring`), and gold stays allowed as before (say it yourself "
            "with `scoring:` and `allow_gold: true`)"
        )
    return Suite(name, items, str(path.resolve()), description, allow_gold, note)


def _legacy_gold(path: Path, line: int, data: Any) -> tuple[Any, bool]:
    """An old item whose `checks` carry `expected` values: those become `scoring` checks and
    only their form stays visible. An item with `scoring` too contradicts itself."""
    if not isinstance(data, dict):
        return data, False
    if data.get("scoring") == []:
        raise SuiteError(
            f"{path}:{line}: `scoring` is empty: give the checks that score the item, or "
            "leave the key out"
        )
    checks = data.get("checks")
    if not isinstance(checks, list) or not all(isinstance(c, dict) for c in checks):
        return data, False
    if not carries_gold(checks):
        return data, False
    if "scoring" in data:
        raise SuiteError(
            f"{path}:{line}: `checks` carry expected values, which the model would see; "
            "with `scoring` beside them, expected values belong in `scoring`"
        )
    visible, scoring = split_gold(checks)
    return data | {"checks": visible, "scoring": scoring}, True


def _jsonl(path: Path, text: str) -> list[tuple[int, Any]]:
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((n, json.loads(line)))
        except ValueError as e:
            raise SuiteError(f"{path}:{n}: not valid JSON ({e})") from None
    return rows


def _yaml(path: Path, text: str) -> tuple[list[tuple[int, Any]], str, str, bool]:
    """Items with their line numbers. The file is a list of items, or a mapping with `items`
    (and optionally `name`, `description` and `allow_gold`)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        # Where an unclosed construct began beats where the parser gave up (often the end).
        mark = getattr(e, "context_mark", None) or getattr(e, "problem_mark", None)
        line = f"{mark.line + 1}:" if mark is not None else ""
        raise SuiteError(f"{path}:{line} not valid YAML ({getattr(e, 'problem', e)})") from None
    name, description, allow_gold = path.stem, "", False
    if isinstance(data, dict):
        if "items" not in data:
            raise SuiteError(f"{path}:1: a suite mapping needs an `items` list")
        unknown = set(data) - {"name", "description", "items", "allow_gold"}
        if unknown:
            raise SuiteError(f"{path}:1: unknown top-level keys {sorted(unknown)}")
        if not isinstance(data.get("allow_gold", False), bool):
            raise SuiteError(f"{path}:1: `allow_gold` is true or false")
        name, description = str(data.get("name", name)), str(data.get("description", ""))
        allow_gold = data.get("allow_gold", False)
        nodes = next(v for k, v in root.value if k.value == "items")
        data = data["items"]
    else:
        nodes = root
    if not isinstance(data, list):
        raise SuiteError(f"{path}:1: a suite is a list of items (or a mapping with `items`)")
    lines = [node.start_mark.line + 1 for node in nodes.value]
    return list(zip(lines, data, strict=True)), name, description, allow_gold


def resolve_suite(name_or_path: str) -> Suite:
    """A built-in suite by name, or a suite file by path."""
    from reflexa.evals.builtin import BUILTIN

    if name_or_path in BUILTIN:
        return BUILTIN[name_or_path]()
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml", ".jsonl") or path.exists():
        return load_suite(path)
    known = ", ".join(sorted(BUILTIN))
    raise SuiteError(
        f"{name_or_path}: no such suite (built-in: {known}; or give a .yaml/.jsonl file)"
    )
