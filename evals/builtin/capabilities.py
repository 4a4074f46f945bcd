"""`capabilities`: the frozen general-instruction suite, kept as YAML beside this file."""

from pathlib import Path

from reflexa.evals.suite import Suite, load_suite


def capabilities() -> Suite:
    suite = load_suite(Path(__file__).with_name("capabilities.yaml"))
    return Suite(suite.name, suite.items, "built-in", suite.description)
