"""Where every benchmark writes its result: `bench/results/NAME-DATE.json` (`NAME-DATE-2.json`
for the day's second run, and so on: a file is never replaced), stamped with the date, the
commit it measured (and whether the tree had changes on top, as it started) and the machine."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, object]:
    cpuinfo = Path("/proc/cpuinfo").read_text()

    def first(field: str) -> str | None:  # the first CPU's
        lines = (line for line in cpuinfo.splitlines() if line.startswith(field))
        return next((line.split(":", 1)[1].strip() for line in lines), None)

    cpu = first("model name") or platform.processor()
    mhz = first("cpu MHz")
    return {  # a VM's model name can be as bare as "AMD EPYC": clock and bf16 tell them apart
        "cpu": cpu,
        "cores": os.cpu_count(),
        "mhz": round(float(mhz)) if mhz else None,
        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
        "avx512": "avx512f" in cpuinfo,
        "avx512_bf16": "avx512_bf16" in cpuinfo,
        "python": platform.python_version(),
    }


def commit() -> dict[str, object]:
    def git(*args: str) -> str:
        try:
            run = subprocess.run(["git", *args], capture_output=True, text=True, cwd=RESULTS.parent)
        except OSError:  # no git where it runs (the device machine): the caller names the commit
            return ""
        return run.stdout.strip()

    # The whole tree, from its top, except the results themselves.
    changes = git("status", "--porcelain", "--", ":(top)", ":(top,exclude)bench/results")
    return {"sha": git("rev-parse", "HEAD"), "dirty": bool(changes)}


# Taken when a benchmark starts (it imports this module): the code it measures, even if the
# tree changes while it runs.
STARTED_AT = commit()


def write_result(name: str, doc: dict[str, Any], out_dir: Path = RESULTS) -> Path:
    """Write `doc` with its stamp; returns the file's path."""
    now = datetime.now(UTC)
    stamped = {"date": now.isoformat(timespec="seconds"), "commit": STARTED_AT,
               "machine": machine()} | doc  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}-{now:%Y-%m-%d}.json"
    n = 1
    while path.exists():  # a second run the same day never replaces the first one's file
        n += 1
        path = out_dir / f"{name}-{now:%Y-%m-%d}-{n}.json"
    path.write_text(json.dumps(stamped, indent=2, default=str) + "\n")
    return path
