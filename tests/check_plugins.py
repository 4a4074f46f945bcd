"""Check plugins for the tests, named by import path (`tests.check_plugins:even`)."""

from __future__ import annotations

import asyncio

from reflexa.evals import Verdict, VerifyContext, check


@check(decides="value")
def even(answer: str, ctx: VerifyContext, *, at_least: int = 0) -> tuple[bool, str]:
    """The answer is an even integer, at least `at_least`."""
    try:
        n = int(answer.strip())
    except ValueError:
        return False, "Reply with only a whole number."
    return n % 2 == 0 and n >= at_least, f"Give an even number of at least {at_least}."


@check(decides="form")
async def shouty(answer: str, ctx: VerifyContext) -> Verdict:
    await asyncio.sleep(0)
    return Verdict("ignored: the spec's type names it", answer.isupper(), 1.0, "Use capitals.")


@check()
class Mentions:
    """The answer mentions every one of `words`."""

    def __init__(self, words: list[str]) -> None:
        self.words = words

    async def verify(self, answer: str, ctx: VerifyContext) -> bool:
        return all(w in answer for w in self.words)


@check()
def crashes(answer: str, ctx: VerifyContext) -> bool:
    raise RuntimeError("the database is down")


@check()
def rambles(answer: str, ctx: VerifyContext) -> str:
    return "looks fine to me"


def unmarked(answer: str, ctx: VerifyContext) -> bool:
    return True
