"""`reflexa schedule`: nightly cycles from a persisted cron schedule.

Jobs live in APScheduler's SQLAlchemy job store, in the same database as everything else, so
a schedule survives restarts. `reflexa schedule run` is the long-lived scheduler; each run
starts `reflexa cycle` as a child process. A run missed while the scheduler was down still
happens once when it comes back, if no later than `cycle.misfire_grace_s`; several missed
runs are coalesced into one. For cron or systemd instead, `schedule add` prints both forms.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED, JobEvent
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy.engine import Engine

from reflexa.trainers.errors import TrainerError

JOB = "reflexa.trainers.schedule:scheduled_cycle"
DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun"]  # cron: 0 and 7 are Sunday


def parse_cron(expr: str) -> CronTrigger:
    """A standard 5-field crontab expression (minute hour day month weekday, 0 = Sunday)."""
    fields = expr.split()
    if len(fields) != 5:
        raise TrainerError(
            f"cron expression {expr!r}: expected 5 fields "
            "(minute hour day month weekday), e.g. '0 2 * * *'"
        )
    names = ("minute", "hour", "day", "month", "day_of_week")
    values = dict(zip(names, [*fields[:4], _weekday_names(fields[4])], strict=True))
    for (name, value), given in zip(values.items(), fields, strict=True):
        try:
            CronTrigger(**{name: value})
        except ValueError as e:
            raise TrainerError(f"cron expression {expr!r}: {name} field {given!r}: {e}") from None
    return CronTrigger(**values)


def _weekday_names(field: str) -> str:
    """Cron numbers weekdays from Sunday = 0; APScheduler from Monday = 0: use names."""
    return re.sub(r"(?<![*/])\b([0-7])\b", lambda m: DAYS[int(m.group(1))], field)


@dataclass(frozen=True)
class Schedules:
    """Where the schedule lives: the store's database (the application's engine), and how
    late a missed run may still start (`cycle.misfire_grace_s`)."""

    engine: Engine
    misfire_grace_s: int = 6 * 3600


@contextmanager
def _scheduler(at: Schedules, cls: type[BaseScheduler] = BackgroundScheduler) -> Iterator[Any]:
    """A scheduler on the store's database; started paused, so jobs can be read and written
    without running any."""
    store = SQLAlchemyJobStore(engine=at.engine, tablename="schedule_jobs")
    scheduler = cls(
        jobstores={"default": store},
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": at.misfire_grace_s,
        },
    )
    yield scheduler
    if scheduler.running:
        scheduler.shutdown(wait=False)


def add(at: Schedules, expr: str) -> dict[str, Any]:
    trigger = parse_cron(expr)
    with _scheduler(at) as scheduler:
        scheduler.start(paused=True)
        job = scheduler.add_job(JOB, trigger, id=uuid.uuid4().hex[:8], name=expr)
        return _job(job)


def jobs(at: Schedules) -> list[dict[str, Any]]:
    with _scheduler(at) as scheduler:
        scheduler.start(paused=True)
        return [_job(j) for j in scheduler.get_jobs()]


def remove(at: Schedules, job_id: str) -> None:
    with _scheduler(at) as scheduler:
        scheduler.start(paused=True)
        if scheduler.get_job(job_id) is None:
            raise TrainerError(f"no scheduled job {job_id!r} (see `reflexa schedule list`)")
        scheduler.remove_job(job_id)


def run(at: Schedules, command: list[str], log: Callable[[str], None]) -> None:
    """Run the scheduler until interrupted; each due job runs `command` (the application's
    cycle) in a child process."""

    def report(event: JobEvent) -> None:
        if event.code == EVENT_JOB_MISSED:
            log(
                f"job {event.job_id}: run due {event.scheduled_run_time} was missed by more "
                f"than cycle.misfire_grace_s; waiting for the next one"
            )
        elif event.code == EVENT_JOB_ERROR:
            log(f"job {event.job_id}: {event.exception}")
        else:
            log(f"job {event.job_id}: cycle finished: {event.retval}")

    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    with _scheduler(at) as jobs_now:  # each job runs this scheduler's command
        jobs_now.start(paused=True)
        for job in jobs_now.get_jobs():
            jobs_now.modify_job(job.id, args=[command])
    with _scheduler(at, BlockingScheduler) as scheduler:
        scheduler.add_listener(report, EVENT_JOB_MISSED | EVENT_JOB_ERROR | EVENT_JOB_EXECUTED)
        listed = jobs(at)
        log(f"scheduler running with {len(listed)} job(s); Ctrl-C stops it")
        for j in listed:
            log(f"  {j['id']}: '{j['cron']}', next run {j['next_run']}")
        with suppress(KeyboardInterrupt, SystemExit):
            scheduler.start()


def scheduled_cycle(command: list[str] | None = None) -> str:
    """The job: one cycle, `command`, in a child process (the scheduler stays small)."""
    if not command:
        return "no command: the job was not started by `reflexa schedule run`"
    child = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
    try:
        result = json.loads(child.stdout)
        said = f"{result['status']}: {result['reason']}, "
    except (ValueError, TypeError, KeyError):
        said = ""  # not the JSON of `cycle --json`: its exit status says what there is
    return f"{said}exit status {child.returncode}"


def _job(job: Any) -> dict[str, Any]:
    next_run = job.next_run_time.isoformat() if job.next_run_time else None
    return {"id": job.id, "cron": job.name, "next_run": next_run}


def crontab_line(expr: str, reflexa: list[str], env: dict[str, str]) -> str:
    """`reflexa` is the command as argv (the script, else python -m reflexa.agent; with
    --config, if given)."""
    words = [f"{k}={shlex.quote(v)}" for k, v in env.items()] + [shlex.join(reflexa)]
    log = shlex.quote(env.get("REFLEXA_HOME", "~/.reflexa") + "/logs/cycle.log")
    return f"{expr} {' '.join(words)} cycle --json >> {log} 2>&1"


def systemd_units(expr: str, reflexa: list[str], env: dict[str, str]) -> str:
    """A service and a timer; the cron expression becomes an OnCalendar= line."""
    minute, hour, day, month, weekday = expr.split()

    def part(field: str) -> str:
        if field.isdigit():
            return f"{int(field):02d}"
        return field.replace("-", "..").replace("*/", "0/") if field != "*" else "*"

    days = "" if weekday == "*" else _weekday_names(weekday).replace("-", "..").title() + " "
    calendar = f"{days}*-{part(month)}-{part(day)} {part(hour)}:{part(minute)}:00"
    environment = "".join(f"Environment={k}={v}\n" for k, v in env.items())
    return (
        "# ~/.config/systemd/user/reflexa-cycle.service\n"
        f"[Unit]\nDescription=Reflexa self-repair cycle\n\n[Service]\nType=oneshot\n"
        f"{environment}ExecStart={shlex.join(reflexa)} cycle --json\n\n"
        "# ~/.config/systemd/user/reflexa-cycle.timer\n"
        f"[Unit]\nDescription=Reflexa self-repair cycle ({expr})\n\n"
        f"[Timer]\nOnCalendar={calendar}\nPersistent=true\n\n[Install]\nWantedBy=timers.target\n"
        "# then: systemctl --user enable --now reflexa-cycle.timer\n"
    )
