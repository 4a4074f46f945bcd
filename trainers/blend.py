"""A candidate that learnt but forgot, pulled back toward the adapter it would replace.

A night's candidate can win on dev and still lose on the frozen suite by more than the
gate's margin: what it learnt cost it some of what it knew (night 2 of the nights run begun
2026-12-07: dev +3.2 points, p = 0.008; frozen -1.9, lower bound -5.3 against a 5-point
margin). Interpolating fine-tuned weights back toward the model they started from keeps
much of the gain and gives back much of what was lost (WiSE-FT: Wortsman et al., 2022).
For LoRA adapters on one base model the interpolation is of their weight updates: `weight`
of the candidate's plus the rest of the current adapter's (of none, for the base model).
PEFT's `add_weighted_adapter` brings the sum back to the adapters' rank by SVD, so the
server loads it as it loads any adapter: on that night's two adapters, rank 16 keeps all
but 1.7 % of the blend (the Frobenius norm of what is cut, the mean over 120 modules).

The blend is one more candidate of the night, gated like the others (Holm counts it). It
is tried only where the candidate's own dev test already passed, so a night whose
candidates are no better than the current adapter promotes a blend no more often than it
would have promoted the candidate: the false-promotion rate stays within `alpha`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from reflexa.trainers.cycle_config import CycleConfig
from reflexa.trainers.errors import TrainerError
from reflexa.trainers.gate import GateResult, dropped
from reflexa.trainers.ports import AdapterRegistry
from reflexa.trainers.registry import ADAPTER_FILES, METADATA, Built, check_adapter, register
from reflexa.trainers.workspace import Workspace

BLENDED = "blend"  # PEFT's name for the new adapter while it is built


def forgot(gate: GateResult, cycle: CycleConfig) -> bool:
    """Rejected for the frozen suite alone: the dev splits would have promoted it."""
    dev = gate.dev
    if gate.promotes or dev is None or dev["difference"] <= 0:
        return False
    if dev.get("p_holm", dev["p_value"]) >= cycle.alpha:  # Holm-adjusted, with several
        return False
    suites = gate.suites
    if dropped({k: v for k, v in suites.items() if not v["frozen"]}, cycle):
        return False
    return any(v["lower_95"] < -cycle.frozen_margin for v in suites.values() if v["frozen"])


def blend_adapter(
    ws: Workspace,
    registry: AdapterRegistry,
    candidate: dict[str, Any],
    current: dict[str, Any] | None,
    weight: float,
) -> dict[str, Any]:
    """`weight` of `candidate`'s update and the rest of `current`'s (None: the base model),
    built in a child process (the base model's weights go back when it is done) and
    registered as a candidate whose parent is `current`."""
    start = [str(check_adapter(candidate, ws))]
    start += [str(check_adapter(current, ws))] if current else []
    partial = ws.adapters_dir / f".partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    run = subprocess.run(
        [sys.executable, "-m", __name__, str(ws.model_dir), str(partial), str(weight), *start],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if run.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        tail = " ".join(run.stderr.strip().splitlines()[-1:])[:300]
        raise TrainerError(f"blending {candidate['version']} failed: {tail or run.returncode}")
    meta = json.loads((Path(start[0]) / METADATA).read_text())
    meta |= {"parent": current and current["version"], "method": candidate["method"],
             "blend": {"of": candidate["version"], "weight": weight,
                       "with": current["version"] if current else "base"}}  # fmt: skip
    (partial / METADATA).write_text(json.dumps(meta, indent=2) + "\n")
    row = register(ws, registry, Built(partial, meta))
    registry.update_adapter(row["version"], metrics={"blend": meta["blend"]})
    return row


def _blend(model_dir: Path, out: Path, weight: float, candidate: Path, *current: Path) -> None:
    import torch
    from peft import LoraConfig, PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, candidate, adapter_name="candidate")
    names, weights = ["candidate"], [weight]
    for path in current:
        model.load_adapter(path, adapter_name="current")
        names, weights = [*names, "current"], [*weights, 1 - weight]
    config = model.peft_config["candidate"]
    assert isinstance(config, LoraConfig)
    model.add_weighted_adapter(names, weights, BLENDED, combination_type="svd", svd_rank=config.r)
    model.save_pretrained(str(out), selected_adapters=[BLENDED])
    for name in ADAPTER_FILES:  # PEFT saves an adapter not named "default" in its own folder
        shutil.move(out / BLENDED / name, out / name)
    shutil.rmtree(out / BLENDED)


if __name__ == "__main__":
    model_dir, out, weight, *adapters = sys.argv[1:]
    _blend(Path(model_dir), Path(out), float(weight), *map(Path, adapters))
