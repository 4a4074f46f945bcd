"""`reflexa traffic import`: logs in OpenAI's chat format, as episodes or as a suite."""

from __future__ import annotations

from pathlib import Path

import click

from reflexa.agent.app.traffic import as_suite, read_log, record
from reflexa.agent.cli.common import parse_check_option, print_json
from reflexa.agent.errors import ReflexaError
from reflexa.agent.settings import Settings
from reflexa.agent.store import open_store
from reflexa.evals import CheckSpecError, parse_checks


@click.group("traffic")
def traffic() -> None:
    """Traffic from elsewhere: logs your gateway or server wrote."""


@traffic.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--check", "checks", multiple=True, callback=parse_check_option,
    help="A check each answer must pass, as JSON (give it again for more). The answers are "
    "judged by these (and the tools that apply), never by a model.",
)  # fmt: skip
@click.option(
    "--suite", "suite_out", type=click.Path(path_type=Path, dir_okay=False), default=None,
    help="Write the requests as a suite (JSONL) instead of recording.",
)  # fmt: skip
@click.option("--split", default="train", show_default=True, help="The suite's split.")
@click.option("--where", "where", multiple=True, metavar="KEY=VALUE",
              help="Only the lines whose metadata has KEY equal to VALUE.")  # fmt: skip
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N lines.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def traffic_import(
    settings: Settings, file: Path, checks: list[dict], suite_out: Path | None, split: str,
    where: tuple[str, ...], limit: int | None, as_json: bool,
) -> None:  # fmt: skip
    """Read FILE, OpenAI chat-format JSONL (a `messages` list, a `response` or a last
    assistant message, `metadata`), and record each exchange as an episode the nightly job
    learns from, or write the chosen requests as a suite (--suite). A bad line is refused
    with its number, and nothing is imported."""
    try:
        parse_checks(checks)
    except CheckSpecError as e:
        raise ReflexaError(f"--check: {e}") from None
    wanted = []
    for pair in where:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise ReflexaError(f"--where {pair!r}: give KEY=VALUE")
        wanted.append((key, value))
    exchanges = read_log(file, settings.reflect.max_prompt_chars)
    chosen = [x for x in exchanges if all(str(x.metadata.get(k)) == v for k, v in wanted)]
    chosen = chosen[:limit] if limit else chosen
    if not chosen:
        raise ReflexaError(f"{file}: no line matches --where {' '.join(where)}")
    if suite_out is not None:
        written = as_suite(chosen, checks, split, suite_out)
        doc: dict[str, object] = {"suite": str(suite_out), "items": written}
        summary = f"wrote {written} items to {suite_out}: `reflexa eval run {suite_out}`"
    else:
        with open_store(settings) as store:
            counts = record(store, chosen, checks, settings.sandbox.allow_unconfined)
        doc = dict(counts)
        summary = (f"recorded {counts['episodes']} episodes: {counts['passed']} passed the "
                   f"checks, {counts['unresolved']} failed them")  # fmt: skip
        if counts["unchecked"]:
            summary += (f"; {counts['unchecked']} had no check that applies, so nothing can "
                        "learn from them (give --check)")  # fmt: skip
    if as_json:
        print_json(doc)
    else:
        click.echo(summary, err=True)
