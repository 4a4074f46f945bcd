"""`reflexa train`: a LoRA adapter from the corrections. Torch and TRL are imported only
when it runs."""

from __future__ import annotations

import time
from pathlib import Path

import click

from reflexa.agent.cli.common import print_json, progress_bar
from reflexa.agent.settings import Settings
from reflexa.agent.store import Store, open_store
from reflexa.trainers.config import TrainConfig, train_config
from reflexa.trainers.dataset import build_dataset


@click.command()
@click.option(
    "--method", type=click.Choice(["sft", "dpo", "grpo", "kto"]), default=None,
    help="Default: sft. grpo: reinforcement from the loop's verifiers (trainers/rewards.py).",
)  # fmt: skip
@click.option(
    "--dataset",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="A folder from `failures export`. Default: compile the store's now.",
)
@click.option(
    "--train-config",
    "train_config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="YAML training config (default: cycle.train_config, else built-in).",
)
@click.option("--max-steps", type=click.IntRange(1), default=None, help="Stop after N steps.")
@click.option("--parent", default=None, hidden=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def train(
    settings: Settings,
    method: str | None,
    dataset: Path | None,
    train_config_file: Path | None,
    max_steps: int | None,
    parent: str | None,
    as_json: bool,
) -> None:
    """Train a LoRA adapter (TRL SFT by default; DPO; GRPO rewarded by the verifiers) and
    register it as a candidate."""
    from reflexa.trainers.train import train_adapter  # torch, TRL: only now

    config = (
        TrainConfig.from_yaml(train_config_file)
        if train_config_file
        else train_config(settings.cycle)
    )
    config = config.replace(method=method, max_steps=max_steps)
    with open_store(settings) as store:
        if parent is None and (promoted := store.promoted_adapter()):
            parent = promoted["version"]  # the default now (GRPO continues it)
        if dataset is None:
            dataset = _compile_now(settings, store, config)
        with progress_bar() as bar:
            task = bar.add_task(f"training ({config.method})", total=None)

            def step(done: int, total: int, loss: float | None) -> None:
                label = f"training ({config.method}), loss {loss:.3f}" if loss else None
                bar.update(task, completed=done, total=total, description=label or "training")

            row = train_adapter(
                settings.workspace(), store, dataset, config, parent=parent, on_step=step
            )
    if as_json:
        print_json(row)
        return
    losses = row["metrics"]["train"]["loss"]
    curve = f", loss {losses[0]['loss']:.3f} → {losses[-1]['loss']:.3f}" if losses else ""
    click.echo(
        f"adapter {row['version']} ({row['name']}): {row['examples']} examples, "
        f"{row['metrics']['train']['train_s']:.0f} s{curve}; status candidate"
    )
    click.echo(f"  {row['path']}")


def _compile_now(settings: Settings, store: Store, config: TrainConfig) -> Path:
    out = settings.home_dir / "datasets" / time.strftime("train-%Y%m%d-%H%M%S")
    build_dataset(
        store, out, config.method, allow_gold=settings.cycle.allow_gold,
        justifications=settings.cycle.justifications, min_examples=config.min_examples,
        allow_unconfined=settings.sandbox.allow_unconfined,
        repair_turns=settings.cycle.repair_turns,
    )  # fmt: skip
    return out
