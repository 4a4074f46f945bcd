"""`capabilities`: the frozen general-instruction suite, never trained on, which the gate
holds every candidate to (non-inferiority). Its items are verifiable without a judge:
the hand-written ones kept as YAML beside this file, and instructions in the manner of
IFEval (case, length, keywords, bullet and numbered lists, JSON shape, punctuation), each
on ten topics, whose checks are the instruction itself."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

from reflexa.evals.suite import Suite, SuiteItem, load_suite

TOPICS = ("the ocean", "coffee", "winter", "bicycles", "the moon", "libraries", "gardening",
          "trains", "music", "rain")  # fmt: skip
KEYWORDS = ("blue", "morning", "cold", "wheel", "night", "quiet", "soil", "station", "song",
            "cloud")  # fmt: skip


def _regex(pattern: str, description: str, **flags: Any) -> dict[str, Any]:
    return {"type": "regex", "pattern": pattern, "description": description} | flags


def _lowercase(topic: str, k: int) -> tuple[str, list[dict[str, Any]]]:
    return f"Write one sentence about {topic}, using only lowercase letters.", [
        _regex("[A-Z]", "use no capital letters", must_match=False),
        _regex("[a-z]{3}", "be written in words"),
    ]


def _uppercase(topic: str, k: int) -> tuple[str, list[dict[str, Any]]]:
    return f"Write a short phrase about {topic} in capital letters only.", [
        _regex("[a-z]", "use capital letters only", must_match=False),
        _regex("[A-Z]{3}", "be written in words"),
    ]


def _at_most_words(topic: str, k: int) -> tuple[str, list[dict[str, Any]]]:
    n = 5 + k % 4 * 3  # 5, 8, 11, 14
    return f"Describe {topic} in at most {n} words.", [
        _regex(rf"\S+(\s+\S+){{0,{n - 1}}}", f"be at most {n} words", full=True)
    ]


def _keyword(topic: str, k: int) -> tuple[str, list[dict[str, Any]]]:
    word = KEYWORDS[k]
    return f"Write one sentence about {topic} that uses the word '{word}'.", [
        _regex(rf"(?is).*\b{word}\b.*", f"use the word '{word}'")
    ]


def _bullets(topic: str, k: int) -> tuple[str, list[dict[str, Any]]]:
    n = 2 + k % 3
    return (
        f"Give exactly {n} facts about {topic} as bullet points, each line starting with "
        "'- ', and nothing else.",
        [_regex(rf"- [^\n]+(\n- [^\n]+){{{n - 1}}}", f"be exactly {n} '- ' lines", full=True)],
    )


def _numbered(topic: str, k: int) -> tuple[str, list[dict[str, Any]]]:
    n = 3 + k % 2
    return (
        f"List {n} ideas about {topic} as a numbered list (1. 2. 3. ...), one per line, "
        "and nothing else.",
        [_regex(rf"1\. [^\n]+(\n\d+\. [^\n]+){{{n - 1}}}", f"be {n} numbered lines", full=True)],
    )


def _json_shape(topic: str, k: int) -> tuple[str, list[dict[str, Any]]]:
    schema = {"type": "object", "required": ["name", "fact"],
              "properties": {"name": {"type": "string"}, "fact": {"type": "string"}}}  # fmt: skip
    return (
        f'Return a JSON object about {topic} with the string keys "name" and "fact", '
        "and nothing else.",
        [{"type": "json", "schema": schema}],
    )


def _no_commas(topic: str, k: int) -> tuple[str, list[dict[str, Any]]]:
    return f"Write two sentences about {topic} without using any commas.", [
        _regex(",", "use no commas", must_match=False),
        _regex("[A-Za-z]{3}", "be written in words"),
    ]


def _question(topic: str, k: int) -> tuple[str, list[dict[str, Any]]]:
    return f"Ask one question about {topic}, and write nothing else.", [
        _regex(r"[^\n?]{5,}\?", "be one question ending in '?'", full=True)
    ]


def _quoted(topic: str, k: int) -> tuple[str, list[dict[str, Any]]]:
    return f"Write one sentence about {topic}, wrapped in double quotation marks.", [
        _regex(r'"[^"\n]{5,}"', "be one sentence inside double quotes", full=True)
    ]


def _starts_with(topic: str, k: int) -> tuple[str, list[dict[str, Any]]]:
    return f"Write one sentence about {topic} that begins with the word 'Today'.", [
        _regex(r"(?s)Today\b.*", "begin with the word 'Today'", full=True)
    ]


INSTRUCTIONS: dict[str, Callable[[str, int], tuple[str, list[dict[str, Any]]]]] = {
    "lowercase": _lowercase,
    "uppercase": _uppercase,
    "at-most-words": _at_most_words,
    "keyword": _keyword,
    "bullets": _bullets,
    "numbered": _numbered,
    "json-shape": _json_shape,
    "no-commas": _no_commas,
    "question": _question,
    "quoted": _quoted,
    "starts-with": _starts_with,
}


def instruction_items() -> list[SuiteItem]:
    """Each instruction on each topic: 110 items."""
    items = []
    for kind, make in INSTRUCTIONS.items():
        for k, topic in enumerate(TOPICS):
            prompt, checks = make(topic, k)
            spec = {"id": f"{kind}-{k}", "prompt": prompt, "checks": checks,
                    "tags": ["instruction", kind]}  # fmt: skip
            items.append(SuiteItem.model_validate(spec))
    return items


def capabilities() -> Suite:
    suite = load_suite(Path(__file__).with_name("capabilities.yaml"))
    items = [*suite.items, *instruction_items()]
    return Suite(suite.name, items, "built-in", suite.description)
