"""Verifiers, suites, runner, metrics and reports. Imports neither `graphs` nor `agent`."""

from reflexa.evals.checks import Check, CheckSpecError, checks_for, parse_checks, run_checks
from reflexa.evals.judge import make_judge
from reflexa.evals.plugins import check
from reflexa.evals.sandbox import SandboxLimits, SandboxResult, run_python
from reflexa.evals.verdict import JudgeFn, JudgeResult, Verdict, VerifyContext

__all__ = [
    "Check",
    "CheckSpecError",
    "JudgeFn",
    "JudgeResult",
    "SandboxLimits",
    "SandboxResult",
    "Verdict",
    "VerifyContext",
    "check",
    "checks_for",
    "make_judge",
    "parse_checks",
    "run_checks",
    "run_python",
]
