"""MkDocs hooks: the reference pages are generated from the code, so they cannot drift.

- `<!-- reference:cli -->` becomes every command's `--help`, as click prints it.
- `<!-- reference:settings -->` becomes a table per settings group, from the pydantic
  models' fields (name, default, description).
- Every `bench/results/NAME` a page names becomes a link to that results file, which is
  copied into the site under `results/files/`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click
from mkdocs.structure.files import File, Files
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
RESULT_REF = re.compile(r"`bench/results/([\w.-]+)`")


def on_files(files: Files, config: Any) -> Files:
    for path in sorted(RESULTS.glob("*")):
        if path.is_file():
            files.append(
                File.generated(config, f"results/files/{path.name}", abs_src_path=str(path))
            )
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    markdown = markdown.replace("<!-- reference:cli -->", cli_reference())
    markdown = markdown.replace("<!-- reference:settings -->", settings_reference())
    depth = page.file.src_uri.count("/")

    def link(m: re.Match[str]) -> str:
        name = m.group(1)
        if not (RESULTS / name).is_file():
            return m.group(0)
        return f"[{m.group(0)}]({'../' * depth}results/files/{name})"

    return RESULT_REF.sub(link, markdown)


def cli_reference() -> str:
    from reflexa.agent.cli.main import cli

    out: list[str] = []

    def walk(command: click.Command, path: list[str], parent: click.Context | None) -> None:
        ctx = click.Context(command, info_name=path[-1], parent=parent, terminal_width=100)
        out.extend([f"## `{' '.join(path)}`", "", "```text", command.get_help(ctx), "```", ""])
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                if sub is not None and not sub.hidden:
                    walk(sub, [*path, name], ctx)

    walk(cli, ["reflexa"], None)
    return "\n".join(out)


def settings_reference() -> str:
    from reflexa.agent.settings import Settings

    out = ["## Top level", "", *_table(Settings, "", nested=False)]
    for name, field in Settings.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            doc = (kind.__doc__ or "").strip().splitlines()[0] if kind.__doc__ else ""
            out += [f"## `[{name}]`", "", doc, "", *_table(kind, f"{name}__")]
    return "\n".join(out)


def _table(model: type[BaseModel], prefix: str, nested: bool = True) -> list[str]:
    rows = ["| setting | environment | default | what it does |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        kind = field.annotation
        if not nested and isinstance(kind, type) and issubclass(kind, BaseModel):
            continue
        default = field.get_default(call_default_factory=True)
        shown = json.dumps(default, default=str) if default is not None else "unset"
        about = (field.description or "").replace("|", "\\|").replace("\n", " ")
        env = f"REFLEXA_{prefix}{name}".upper()
        rows.append(f"| `{name}` | `{env}` | `{shown}` | {about} |")
    return [*rows, ""]
