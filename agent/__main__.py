"""`python -m reflexa.agent …` is `reflexa …`."""

from reflexa.agent.cli import main

main()
