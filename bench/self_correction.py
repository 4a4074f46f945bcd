"""Net self-correction: what reflection does to answers, by scoring (gold only scores).

    .venv/bin/python -m bench.self_correction [--suites sums json-extract …] [--limit 50]
        [--best-of 4 8] [--adapter sums | --adapter-dir DIR] [--before] [--no-feedback-only]
        [--warm N]

In a fresh home on the bench's own vLLM server, for each suite's `test` split (the first
`--limit` items), no memory: one run with reflection off and one with it on (`--max-repairs
2`, every repair strategy allowed). The first attempt is greedy in both, so the "on" run's
harm ledger is the paired comparison: net self-correction = (wrong → right minus right →
wrong) / n. Also per strategy (repairs, fixes, harm, tokens and seconds per fix) and wall
time per episode with reflection on against off. `--best-of N`: verifier-selected best of N
against greedy (N = 1): one repair, sampling only, N candidates chosen by the visible checks
(`reflect.strategies = ["sample"]`). And the feedback repair alone (one repair): what
training on repair turns should move. `--adapter SUITE`: then the same for the adapter that
`make demo --suite SUITE` trains and promotes (one cycle; gold allowed); `--adapter-dir DIR`:
the same for an adapter trained elsewhere (a nights run's promoted one). `--warm N`: then
reflection on the suite's first N `train` items (`test` where it has no other), and on
`test` again: the steady state of a home whose routing record has seen the suite (the
first "on" run starts from an empty one). Writes bench/results/self-correction-DATE.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.home import fresh_home, register
from bench.record import write_result

SUITES = ["sums", "arithmetic", "json-extract", "humaneval"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suites", nargs="+", default=SUITES, choices=SUITES)
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--best-of", nargs="*", type=int, default=[4, 8], metavar="N")
    parser.add_argument(
        "--adapter",
        choices=["sums", "arithmetic", "json-extract"],
        help="Also measure the adapter one demo cycle on this suite promotes.",
    )
    parser.add_argument(
        "--adapter-dir", type=Path,
        help="Also measure this adapter, trained elsewhere (a PEFT folder, e.g. a nights run's "
        "promoted one), answering through it as LoRA.",
    )  # fmt: skip
    parser.add_argument("--port", type=int, default=8012, help="The bench's own vLLM port.")
    parser.add_argument(
        "--before", action="store_true",
        help="Also reflection on as before escalation and the routing record (reflect.escalate "
        "and reflect.route_by_record off); the default run then routes by the record it left.",
    )  # fmt: skip
    parser.add_argument(
        "--no-feedback-only",
        dest="feedback_only",
        action="store_false",
        help="Skip the run with the feedback repair alone.",
    )
    parser.add_argument(
        "--warm", type=int, default=0, metavar="N",
        help="Then N train items with reflection on (the record grows), and test again.",
    )  # fmt: skip
    args = parser.parse_args()  # fmt: skip
    home, env = fresh_home("self-correction", args.port)
    results: dict[str, Any] = {}
    try:
        reflexa(env, "model", "prepare")
        reflexa(env, "model", "serve")
        results["base"] = measure(env, args, "base")
        if args.adapter:
            demo = [sys.executable, "-m", "reflexa.agent.demo", "--suite", args.adapter]
            subprocess.run(demo, env=env, check=True, stdout=sys.stderr)
            cycle = json.loads((home / "reports" / "demo.json").read_text())["cycle"]
            if cycle["status"] != "promoted":
                sys.exit(f"the demo cycle promoted nothing: {cycle['reason']}")
            (adapter,) = [a["name"] for a in reflexa(env, "adapters", "list")
                          if a["status"] == "promoted"]  # fmt: skip
            compiled = next(s for s in cycle["stages"] if s["stage"] == "compile")
            trained = {k: compiled.get(k) for k in ("by_source", "precision", "repairs_with_turns")}
            results["adapter"] = measure(env, args, adapter) | {
                "cycle": cycle["reason"],
                "trained_on": trained,
            }
        if args.adapter_dir:
            register(home, Path(shutil.copytree(args.adapter_dir, home / "imported")), "v99")
            results["adapter_dir"] = measure(env, args, "v99") | {"from": str(args.adapter_dir)}
    finally:
        subprocess.run([sys.executable, "-m", "reflexa.agent", "model", "stop"], env=env)
        shutil.rmtree(home, ignore_errors=True)
    doc = {"limit": args.limit, "max_repairs": 2, "trained_on": args.adapter, "warm": args.warm,
           "adapter_dir": args.adapter_dir and str(args.adapter_dir),
           "models": results}  # fmt: skip
    print(f"written to {write_result('self-correction', doc)}")


def measure(env: dict[str, str], args: argparse.Namespace, adapter: str) -> dict[str, Any]:
    """Each suite: reflection off, on, and best of N, through `adapter`."""
    out: dict[str, Any] = {}
    splits = {s["name"]: s["splits"] for s in reflexa(env, "eval", "list")}
    for suite in args.suites:
        common = _eval(suite, "test", args.limit, adapter)
        off = reflexa(env, *common, "--no-reflect")
        before = None
        if args.before:  # the earlier rule: 8 samples at once, routing by rule alone
            rule = env | {"REFLEXA_REFLECT__ESCALATE": "false",
                          "REFLEXA_REFLECT__ROUTE_BY_RECORD": "false"}  # fmt: skip
            before = reflexa(rule, *common, "--max-repairs", "2")
        on = reflexa(env, *common, "--max-repairs", "2")  # with the record `before` left
        out[suite] = summary(off["metrics"]["overall"], on["metrics"])
        if before is not None:
            out[suite]["before"] = summary(off["metrics"]["overall"], before["metrics"])
        if args.warm:  # the record as a home that has served this suite for a while has it
            split = "train" if "train" in splits[suite] else "test"  # humaneval: test alone
            reflexa(env, *_eval(suite, split, args.warm, adapter), "--max-repairs", "2")
            warm = reflexa(env, *common, "--max-repairs", "2")
            out[suite]["warm"] = summary(off["metrics"]["overall"], warm["metrics"])
            out[suite]["warm"]["record_from"] = f"{split}, first {args.warm}"
        best = {"1": off["metrics"]["overall"]["first_attempt_pass"]["rate"]}
        for n in args.best_of:
            sampling = env | {"REFLEXA_REFLECT__STRATEGIES": '["sample"]',
                              "REFLEXA_REFLECT__SAMPLES": str(n)}  # fmt: skip
            run = reflexa(sampling, *common, "--max-repairs", "1")["metrics"]["overall"]
            best[str(n)] = run["final_pass"]["rate"]
        out[suite]["best_of"] = best
        if args.feedback_only:
            feedback = env | {"REFLEXA_REFLECT__STRATEGIES": '["feedback"]'}
            fed = reflexa(feedback, *common, "--max-repairs", "1")["metrics"]["overall"]["harm"]
            keys = ("wrong_to_right", "right_to_wrong", "net")
            out[suite]["feedback_only"] = {k: fed[k] for k in keys}
        print(f"{adapter} {suite}: {json.dumps(out[suite]['net'])} best of {best}", file=sys.stderr)
    return out


def _eval(suite: str, split: str, limit: int, adapter: str) -> list[str]:
    return ["eval", "run", suite, "--split", split, "--limit", str(limit), "--no-memory",
            "--adapter", adapter]  # fmt: skip


def reflexa(env: dict[str, str], *args: str) -> Any:
    command = [sys.executable, "-m", "reflexa.agent", *args, "--json"]
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(done.stdout)


def summary(off: dict[str, Any], on: dict[str, Any]) -> dict[str, Any]:
    overall, harm = on["overall"], on["overall"]["harm"]
    p50_off, p50_on = off["latency_s"]["p50"], overall["latency_s"]["p50"]
    latency = {"off": off["latency_s"], "on": overall["latency_s"]}
    latency["p50_ratio"] = round(p50_on / p50_off, 2) if p50_off else None
    return {
        "items": overall["items"],
        "first": overall["first_attempt_pass"]["rate"],
        "final": overall["final_pass"]["rate"],
        "net": {k: harm[k] for k in ("scored", "wrong_to_right", "right_to_wrong", "net")},
        "by_strategy": on["by_strategy"],
        "latency_s": latency,
        "tokens": {"off": off["tokens"], "on": overall["tokens"]},
        "first_off": off["first_attempt_pass"]["rate"],  # the same greedy answers: a check
    }


if __name__ == "__main__":
    main()
