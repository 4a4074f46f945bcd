"""A run's report: JSON, a self-contained HTML page with plots, and a markdown summary."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt
from matplotlib.figure import Figure


def write_report(run: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write report.json, report.html and report.md for `run` (what `run_eval` returns)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {ext: out_dir / f"report.{ext}" for ext in ("json", "html", "md")}
    paths["json"].write_text(json.dumps(run, indent=2, default=str) + "\n")
    paths["md"].write_text(markdown(run))
    plots = [
        figure_png(f) for f in (pass_by_attempt(run), pass_by_tag(run), latency_histogram(run))
    ]
    paths["html"].write_text(page(run, plots))
    return paths


def cumulative_pass(items: list[dict[str, Any]], max_attempts: int) -> list[float]:
    """Share of items passed by attempt k (0 = the first answer), for k up to max_attempts."""
    n = len(items) or 1
    return [
        sum(i["final_passed"] and i["repairs"] <= k for i in items) / n
        for k in range(max_attempts + 1)
    ]


def pass_by_attempt(run: dict[str, Any]) -> Figure:
    items = run["items"]
    most = max((i["repairs"] for i in items), default=0)
    rates = cumulative_pass(items, most)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    labels = ["first" if k == 0 else f"repair {k}" for k in range(len(rates))]
    ax.bar(labels, rates, color="#4c72b0")
    ax.set_ylim(0, 1)
    ax.set_ylabel("passed (cumulative)")
    ax.set_title("Pass by attempt")
    return fig


def pass_by_tag(run: dict[str, Any]) -> Figure:
    tags = run["metrics"]["by_tag"] or {"all": run["metrics"]["overall"]}
    names = list(tags)
    first = [tags[t]["first_attempt_pass"]["rate"] for t in names]
    final = [tags[t]["final_pass"]["rate"] for t in names]
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(names) + 2), 3.2))
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], first, width=0.4, label="first attempt", color="#4c72b0")
    ax.bar([i + 0.2 for i in x], final, width=0.4, label="final", color="#55a868")
    ax.set_xticks(list(x), names, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_title("Pass by tag")
    ax.legend(fontsize=8)
    return fig


def latency_histogram(run: dict[str, Any]) -> Figure:
    latencies = [i["latency_s"] for i in run["items"] if i["error"] is None]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.hist(
        latencies or [0.0], bins=min(20, max(len(latencies), 1)), color="#8172b2", edgecolor="white"
    )
    ax.set_xlabel("seconds per item")
    ax.set_ylabel("items")
    ax.set_title("Latency")
    return fig


def figure_png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _rows(run: dict[str, Any]) -> list[tuple[str, str]]:
    m = run["metrics"]["overall"]

    def pct(r: dict[str, Any]) -> str:
        lo, hi = r["ci95"]
        return f"{r['rate']:.1%} (95% CI {lo:.1%} to {hi:.1%}, {r['k']}/{r['n']})"

    gain, harm = m["repair_gain"], m["harm"]
    return [
        ("items", str(m["items"])),
        ("first-attempt pass", pct(m["first_attempt_pass"])),
        ("final pass", pct(m["final_pass"])),
        ("first answer passed its visible checks", pct(m["checks_pass"])),
        (
            "repair gain",
            f"{gain['gain']:+.1%} (95% CI {gain['ci95'][0]:+.1%} to {gain['ci95'][1]:+.1%})",
        ),
        ("harm (right→wrong)", pct(m["harm_rate"])),
        (
            "harm ledger (by scoring)",
            f"{harm['right_to_wrong']} right→wrong, {harm['wrong_to_right']} wrong→right of "
            f"{harm['scored']} scored items (net {harm['net']:+.1%})",
        ),
        ("mean repairs", f"{m['mean_repairs']:.2f}"),
        ("tokens", str(m["tokens"])),
        ("latency p50 / p95", f"{m['latency_s']['p50']:.2f} s / {m['latency_s']['p95']:.2f} s"),
        ("errors", str(m["errors"])),
    ]


STRATEGY_COLUMNS = ("strategy", "repairs", "passed checks", "fixed", "broke", "skipped",
                    "tokens", "tokens per fix", "seconds", "seconds per fix")  # fmt: skip


def _strategy_rows(run: dict[str, Any]) -> list[tuple[str, ...]]:
    """Repairs by strategy: what each did, and what it cost per item it fixed (by scoring)."""
    keys = ("repairs", "passed", "fixed", "broke", "skipped", "tokens", "tokens_per_fix",
            "seconds", "seconds_per_fix")  # fmt: skip
    by = run["metrics"].get("by_strategy") or {}
    return [
        (name, *("-" if s.get(k) is None else str(s[k]) for k in keys)) for name, s in by.items()
    ]


def markdown(run: dict[str, Any]) -> str:
    options = json.dumps(run["config"])
    lines = [f"# {run['suite']}, run {run['run_id']}", "", f"Options: `{options}`", ""]
    if run.get("note"):
        lines += [f"Note: {run['note']}", ""]
    lines += ["| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in _rows(run)]
    if strategies := _strategy_rows(run):
        lines += ["", "Repairs by strategy:", "", "| " + " | ".join(STRATEGY_COLUMNS) + " |"]
        lines += ["|" + "---|" * len(STRATEGY_COLUMNS)]
        lines += ["| " + " | ".join(row) + " |" for row in strategies]
    return "\n".join(lines) + "\n"


def page(run: dict[str, Any], plots: list[str]) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in _rows(run)
    )
    failed = [i for i in run["items"] if not i["final_passed"]][:50]
    failures = "".join(
        f"<tr><td>{html.escape(i['item_id'])}</td><td>{html.escape(i['status'])}</td>"
        f"<td>{html.escape(i['error'] or '')}</td><td><code>{i['episode_id']}</code></td></tr>"
        for i in failed
    )
    images = "".join(f'<img alt="plot" src="data:image/png;base64,{p}">' for p in plots)
    head = "".join(f"<th>{c}</th>" for c in STRATEGY_COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>"
        for row in _strategy_rows(run)
    )
    strategies = f"<h2>Repairs by strategy</h2><table><tr>{head}</tr>{body}</table>" if body else ""
    title = html.escape(f"{run['suite']}, run {run['run_id']}")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse;margin:1em 0}}th,td{{border:1px solid #ddd;padding:.3em .7em;
text-align:left}}img{{max-width:100%;margin:.5em}}code{{font-size:.85em}}</style></head>
<body><h1>{title}</h1><p>Options: <code>{html.escape(json.dumps(run["config"]))}</code></p>
<p>{html.escape(run.get("note") or "")}</p>
<table>{rows}</table>{strategies}<div>{images}</div>
<h2>Items that did not pass ({len(failed)} shown)</h2>
<table><tr><th>item</th><th>status</th><th>error</th><th>episode</th></tr>{failures}</table>
</body></html>
"""


def dev_result(gate: dict[str, Any]) -> dict[str, Any] | None:
    """A recorded gate result's pooled comparison on the gate splits (dev): current `a`,
    candidate `b`, `p_value`. Records from before it was named `dev` call it `heldout`."""
    return gate["dev"] if "dev" in gate else gate.get("heldout")


def cycles_page(cycles: list[dict[str, Any]]) -> str:
    """The learning curve over self-repair cycles (oldest first): each cycle's gate-split
    first-attempt pass, the model served before it and its candidate, and a table."""
    done = [c for c in cycles if (c.get("result") or {}).get("gate")]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    x = list(range(1, len(done) + 1))
    dev = [dev_result(c["result"]["gate"]) or {} for c in done]
    nan = float("nan")  # a gate with no gate split to measure: no point
    ax.plot(x, [d.get("a", nan) for d in dev], "o-", color="#4c72b0", label="served before")
    for n, c, h in zip(x, done, dev, strict=True):
        promoted = c["status"] == "promoted"
        mark, colour = ("o", "#55a868") if promoted else ("x", "#c44e52")
        ax.plot(n, h.get("b", nan), mark, color=colour)
    ax.plot([], [], "o", color="#55a868", label="candidate, promoted")
    ax.plot([], [], "x", color="#c44e52", label="candidate, rejected")
    ax.set_xlabel("cycle")
    ax.set_ylabel("gate split (dev), first attempt")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in _cycle_row(c)) + "</tr>"
        for c in cycles
    )
    head = "".join(f"<th>{h}</th>" for h in CYCLE_COLUMNS)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Reflexa: self-repair cycles</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse;margin:1em 0}}th,td{{border:1px solid #ddd;padding:.3em .7em;
text-align:left}}img{{max-width:100%}}</style></head>
<body><h1>Self-repair cycles</h1>
<img alt="gate-split pass by cycle" src="data:image/png;base64,{figure_png(fig)}">
<table><tr>{head}</tr>{rows}</table></body></html>
"""


CYCLE_COLUMNS = ("started", "round", "gold", "status", "adapter", "gate split", "minutes",
                 "rows by justification", "methods: decision, change by suite",
                 "reason")  # fmt: skip


def compile_stage(stages: list[dict[str, Any]]) -> dict[str, Any]:
    """A cycle's (first) compile stage record, or {} (with several methods each has one)."""
    return next((s for s in stages if s["stage"].startswith("compile")), {})


def rows_line(precision: dict[str, dict[str, Any]]) -> str:
    """Training rows by justification, from a compilation's precision: "gold 174, checks 22"."""
    return ", ".join(f"{j} {p['examples']}" for j, p in precision.items())


def _cycle_row(c: dict[str, Any]) -> list[str]:
    result = c.get("result") or {}
    dev = dev_result(result.get("gate") or {}) or {}
    seconds = sum(s["seconds"] for s in c["stages"])
    return [
        str(c["started_at"])[:16], result.get("round", ""), result.get("gold", ""), c["status"],
        c["adapter_version"] or "",
        f"{dev['a']:.0%} → {dev['b']:.0%}" if dev else "",
        f"{seconds / 60:.1f}",
        rows_line(compile_stage(c["stages"]).get("precision") or {}),
        methods_line(result),
        c["reason"] or "",
    ]  # fmt: skip


def methods_line(result: dict[str, Any]) -> str:
    """Each gated method's decision and pass change by gate suite, and the order they were
    tried in: "sft: reject (sums:dev +3.0 %, capabilities not measured); …"."""

    gate = result.get("gate") or {}
    methods = result.get("methods") or {}
    if not methods and gate:  # one method: its gate is the cycle's, as a method's summary
        method = result.get("method") or (result.get("adapter") or {}).get("method", "")
        change = {k: v["difference"] for k, v in (gate.get("suites") or {}).items()}
        methods = {method: {"decision": gate.get("decision"), "suites": change}}
    line = "; ".join(
        f"{m}: skipped ({s['skipped']})" if "skipped" in s
        else f"{m}: {s.get('decision')} ("
        + ", ".join(f"{k} {v:+.1%}" for k, v in (s.get("suites") or {}).items()) + ")"
        for m, s in methods.items()
    )  # fmt: skip
    return line + (f". {result['method_order']}" if result.get("method_order") else "")
