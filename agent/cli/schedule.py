"""`reflexa schedule`: nightly cycles on a persisted cron schedule."""

from __future__ import annotations

import click

from reflexa.agent.cli.common import err, print_json, reflexa_command
from reflexa.agent.settings import Settings
from reflexa.agent.store.db import make_engine
from reflexa.trainers import schedule


def _schedules(settings: Settings) -> schedule.Schedules:
    return schedule.Schedules(make_engine(settings.database), settings.cycle.misfire_grace_s)


@click.group("schedule")
def schedule_group() -> None:
    """Nightly cycles: a persisted cron schedule and the scheduler that runs it."""


@schedule_group.command("add")
@click.option("--cron", "expr", required=True, help="Crontab expression, e.g. '0 2 * * *'.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def schedule_add(settings: Settings, expr: str, as_json: bool) -> None:
    """Add a cycle on a cron schedule (run by `reflexa schedule run`)."""
    job = schedule.add(_schedules(settings), expr)
    reflexa = reflexa_command()
    (settings.home_dir / "logs").mkdir(parents=True, exist_ok=True)  # the crontab line's log
    env = {"REFLEXA_HOME": str(settings.home_dir)}
    job |= {
        "crontab": schedule.crontab_line(expr, reflexa, env),
        "systemd": schedule.systemd_units(expr, reflexa, env),
    }
    if as_json:
        print_json(job)
        return
    click.echo(f"scheduled {job['id']}: '{expr}', next run {job['next_run']}")
    click.echo("runs while `reflexa schedule run` is running. Or, instead, this crontab line:")
    click.echo(f"  {job['crontab']}")
    click.echo("or these systemd units:\n" + job["systemd"])


@schedule_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def schedule_list(settings: Settings, as_json: bool) -> None:
    """The scheduled cycles and when each runs next."""
    rows = schedule.jobs(_schedules(settings))
    if as_json:
        print_json(rows)
    elif not rows:
        click.echo("nothing scheduled: `reflexa schedule add --cron '0 2 * * *'`")
    for r in [] if as_json else rows:
        click.echo(f"{r['id']}  '{r['cron']}'  next run {r['next_run']}")


@schedule_group.command("remove")
@click.argument("job_id")
@click.pass_obj
def schedule_remove(settings: Settings, job_id: str) -> None:
    """Remove a scheduled cycle."""
    schedule.remove(_schedules(settings), job_id)
    click.echo(f"removed {job_id}")


@schedule_group.command("run")
@click.pass_obj
def schedule_run(settings: Settings) -> None:
    """Run the scheduler in the foreground until stopped (SIGINT/SIGTERM)."""
    cycle = [*reflexa_command(), "cycle", "--json", "--trigger", "schedule"]
    schedule.run(_schedules(settings), cycle, log=err.print)
