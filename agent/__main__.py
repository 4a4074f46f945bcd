"""`python -m agent …` is `reflexa …` (used for child processes: training, scheduled cycles)."""

from agent.cli import main

main()
