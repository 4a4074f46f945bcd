"""From the store to training data: SFT examples and DPO pairs as Hugging Face datasets.

One example per normalised prompt; among rows for the same prompt the best justification
wins (user > gold > consistency > checks; see `evals.signal`), then the best source:
  user     a user's correction
  repair   the model's own repair, passed by grounded visible checks
  gold     the answer the item's scoring spells out (verified by it), where gold is allowed
  sampled  a sample from the model (self-consistency, or the visible checks alone)
  self     the model's own first answer (passed the visible checks; or the vote's choice)
Only `gold` needs a label, and gold decides here only when the compile allows it (the
candidate's `allow_gold`): then a row that scoring found wrong is replaced by the scoring's
own answer. Without gold, the rows are what the loop saw and verified, nothing else: the
same whether or not the store holds scoring. Every example keeps its justification and,
where the item has scoring, whether scoring found it right: the precision of each
justification, reported, never used to select.
A `repair` example also becomes a repair turn (SFT, `repair_turns`): the request, the
model's own wrong first answer, the repair request it was shown (visible feedback only),
then the verified repair, the loss on that last turn alone; so the next adapter learns to
repair, not only to answer.
A prompt of any gate or held-out split, or a canonical duplicate of one, is never used.

Rows justified by checks of form alone (`form`) are admitted only for the suites where that
justification was measured precise (`trainers.admission`), or where the user admits `form`
outright; rows justified by self-consistency, except for the suites where it was measured
imprecise. Learning is weighted to the frontier: an example whose answer the model did not
give by itself (a repair, a sample that won over the greedy answer, gold, a user's) is
repeated `frontier_weight` times in SFT, and the trainer scales its epochs down to match,
so a night costs the same and the rows the model already answers (`self`) weigh less.
A night that goes on from the current adapter replays a capped share of the rows logged
before the last night that trained (`trainers.replay`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Collection, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from reflexa.evals.arithmetic import stated_expression
from reflexa.evals.contamination import TRAIN_SPLIT, Guard, prompt_hash, shared_entities
from reflexa.evals.held_out import held_out_guard
from reflexa.evals.signal import ADMITTED, JUSTIFICATIONS, by_checks
from reflexa.evals.verdict import grounded_pass
from reflexa.evals.verify import gold_answer, passes
from reflexa.graphs.prompts import repair_request
from reflexa.trainers.admission import consistency_admission, form_admission
from reflexa.trainers.errors import TrainerError
from reflexa.trainers.examples import SOURCES, Compiled, Example, Format
from reflexa.trainers.ports import CorrectionSource
from reflexa.trainers.ratings import rating_records
from reflexa.trainers.rehearsal import with_rehearsal
from reflexa.trainers.replay import with_replay


def compile_examples(
    store: CorrectionSource,
    *,
    allow_gold: bool = True,
    protected: Guard | None = None,
    justifications: Collection[str] = ADMITTED,
    allow_unconfined: bool = False,
    form_precision: float = 0.9,
    consistency_precision: float = 0.8,
    agree: tuple[int, int] = (3, 5),
) -> Compiled:
    """Every usable example in the store, deduplicated by normalised prompt.
    `allow_unconfined`: gold answers are checked even where code runs unisolated.
    `form_precision`: what a suite's measured precision of `form` rows must reach (lower
    bound) for them to be admitted, where `form` is not among `justifications` outright;
    `consistency_precision`: what a suite's measured precision of self-consistency must
    not fall below (upper bound), with `agree` (greedy, majority) the sampling's vote."""
    protected = held_out_guard(store.held_out_prompts()) if protected is None else protected
    evidence = store.held_out_answers()
    admission = form_admission(evidence, form_precision)
    consistency = consistency_admission(evidence, consistency_precision, *agree)
    form_suites = {s for s, a in admission.items() if a["admitted"]}
    refused = {s for s, a in consistency.items() if not a["admitted"]}
    kept: dict[str, Example] = {}
    skipped = merged = unjustified = 0
    rows, replaced = _rows(store, allow_gold, allow_unconfined)
    for row in rows:
        if protected.protects(row.prompt):
            skipped += 1
            continue
        admitted = row.justification in justifications or (
            row.justification == "form" and any(s in form_suites for s in row.suites)
        )
        if row.justification == "consistency" and row.suites and set(row.suites) <= refused:
            admitted = False  # measured: this model agrees with itself on wrong answers here
        if not admitted:
            unjustified += 1
            continue
        best = kept.get(row.prompt_hash)
        if best is None:
            kept[row.prompt_hash] = row
            continue
        merged += 1
        winner, other = (row, best) if _rank(row) < _rank(best) else (best, row)
        winner.episode_ids = sorted(set(winner.episode_ids) | set(other.episode_ids))
        winner.suites = sorted(set(winner.suites) | set(other.suites))
        winner.rejected = winner.rejected or other.rejected
        winner.logged_at = max(filter(None, (winner.logged_at, other.logged_at)), default=None)
        kept[row.prompt_hash] = winner
    examples = sorted(kept.values(), key=lambda e: (_rank(e), e.prompt_hash))
    sharing = shared_entities(protected.items, [e.prompt for e in examples])
    return Compiled(examples, skipped, merged, unjustified, sharing, gold_replaced=replaced,
                    admission=admission, consistency=consistency)  # fmt: skip


def _rank(e: Example) -> tuple[int, int]:
    return JUSTIFICATIONS.index(e.justification), SOURCES.index(e.source)


def _rows(
    store: CorrectionSource, allow_gold: bool, allow_unconfined: bool
) -> tuple[list[Example], int]:
    """Every candidate row, and how many rows gold replaced. Without gold, rows come from what
    the loop saw alone: a repair or a first answer whose prompt showed a gold memory is left
    out (gold shaped it). With gold (`allow_gold`, on an item whose suite allows it), a row
    scoring found wrong is dropped, and the scoring's own answer is added where no row of
    the episode was right."""
    episodes = store.training_episodes(TRAIN_SPLIT)
    by_id = {e.id: e for e in episodes}
    shaped = {e.id for e in episodes if any(a.recalled_gold() for a in e.attempts)}
    rows, corrected, replaced = [], set(), 0
    for c in store.corrections():
        if not (c.verified and c.chosen) or (c.justification == "gold" and not allow_gold):
            continue
        episode = by_id.get(c.episode_id or "")
        if allow_gold and episode is not None and episode.gold_allowed and c.correct is False:
            replaced += 1
            continue
        if not allow_gold and c.source == "repair" and c.episode_id in shaped:
            continue
        first = episode.attempts[0] if episode else None
        asked = None
        if c.source == "repair" and first and first.answer == c.rejected:
            asked = repair_request(first.verdicts, first.diagnosis)
        suites = [episode.suite] if episode and episode.suite else []
        justification = c.justification
        if justification == "checks" and episode is not None:  # rows from before `form`
            justification = by_checks(episode.checks, c.prompt, c.chosen)
        rows.append(
            Example(
                c.prompt_hash, c.prompt, c.chosen, c.source, c.rejected,
                [c.episode_id] if c.episode_id else [], suites, justification, c.correct,
                asked, c.created_at,
            )
        )  # fmt: skip
        if c.correct is not False:  # right, or no scoring to say: gold not needed
            corrected.add(c.episode_id)
    golds = []
    for e in episodes:
        first = e.attempts[0]
        key, suites = prompt_hash(e.prompt), [e.suite] if e.suite else []
        gold_ok = allow_gold and e.gold_allowed
        passed = e.first_passed and grounded_pass(first.verdicts)
        if passed and gold_ok and e.first_correct is False:
            replaced += 1
        elif passed and (allow_gold or e.id not in shaped):
            justification = by_checks(e.checks, e.prompt, first.answer)
            rows.append(
                Example(key, e.prompt, first.answer, "self", None, [e.id], suites, justification,
                        e.first_correct, logged_at=e.created_at)
            )  # fmt: skip
        uncorrected = gold_ok and e.id not in corrected and e.first_correct is False
        if uncorrected and (gold := gold_answer(e.scoring)) is not None:
            row = Example(key, e.prompt, gold, "gold", first.answer, [e.id], suites, "gold", True,
                          logged_at=e.created_at)  # fmt: skip
            golds.append((row, [*e.checks, *e.scoring]))

    async def verify() -> list[bool]:
        return await asyncio.gather(
            *(passes(c, r.prompt, r.chosen, allow_unconfined=allow_unconfined) for r, c in golds)
        )

    verified = asyncio.run(verify()) if golds else []
    return rows + [r for (r, _), ok in zip(golds, verified, strict=True) if ok], replaced


def to_records(
    examples: Sequence[Example], fmt: Format, repair_turns: bool = True, frontier_weight: int = 1
) -> list[dict[str, Any]]:
    """Rows in TRL's conversational formats: `messages` for SFT (and, with `repair_turns`,
    a repair's conversation, source `repair_turn`), prompt/chosen/rejected for DPO (only
    examples with a rejected answer), each with its provenance. In SFT a frontier example's
    rows come `frontier_weight` times."""
    records: list[dict[str, Any]] = []
    for e in examples:
        copies = frontier_weight if fmt == "sft" and e.frontier else 1
        before = len(records)
        user = [{"role": "user", "content": e.prompt}]
        meta = {
            "source": e.source,
            "justification": e.justification,
            "prompt_hash": e.prompt_hash,
            "episode_ids": e.episode_ids,
        }
        if fmt == "sft":
            records.append({"messages": [*user, {"role": "assistant", "content": e.chosen}]} | meta)
            if repair_turns and e.repair_request and e.rejected is not None:
                turn = [*user, {"role": "assistant", "content": e.rejected},
                        {"role": "user", "content": e.repair_request},
                        {"role": "assistant", "content": e.chosen}]  # fmt: skip
                records.append({"messages": turn} | meta | {"source": "repair_turn"})
            records += records[before:] * (copies - 1)
        elif e.rejected is not None and e.rejected.strip() != e.chosen.strip():
            records.append(
                {
                    "prompt": user,
                    "chosen": [{"role": "assistant", "content": e.chosen}],
                    "rejected": [{"role": "assistant", "content": e.rejected}],
                }
                | meta
            )
    return records


def prompt_records(
    store: CorrectionSource,
    *,
    allow_gold: bool,
    protected: Guard | None = None,
    justifications: Collection[str] = ADMITTED,
    mixed: Collection[str] | None = None,
) -> tuple[list[dict[str, Any]], Compiled]:
    """GRPO rows: each training prompt once (not a protected one), with the checks its
    completions are rewarded by: the visible ones (where `checks` may justify a row), and
    the scoring where gold is allowed (and may). A prompt nothing could check is left out;
    given `mixed` (the hashes of the prompts whose sampled answers disagreed), so is every
    other: its group of completions would all earn the same reward, so teach nothing.
    The rows, and what was skipped, in a Compiled with no examples."""
    allow_gold = allow_gold and "gold" in justifications
    by_checks = "checks" in justifications
    protected = held_out_guard(store.held_out_prompts()) if protected is None else protected
    rows: dict[str, dict[str, Any]] = {}
    suites: set[str] = set()
    skipped = 0
    alike: set[str] = set()
    for e in store.training_episodes(TRAIN_SPLIT):
        key = prompt_hash(e.prompt)
        if protected.protects(e.prompt):
            skipped += 1
            continue
        scoring = e.scoring if allow_gold and e.gold_allowed else []
        checked = by_checks and (e.checks or stated_expression(e.prompt))
        if not (checked or scoring) or key in rows:
            continue
        if mixed is not None and key not in mixed:
            alike.add(key)
            continue
        rows[key] = {
            "prompt": [{"role": "user", "content": e.prompt}],
            "checks": json.dumps(e.checks if by_checks else []),
            "scoring": json.dumps(scoring),
            "source": "prompt",
            "justification": "gold" if scoring else "checks",
            "prompt_hash": key,
            "episode_ids": [e.id],
        }
        if e.suite:
            suites.add(e.suite)
    compiled = Compiled([], skipped, 0, prompt_suites=tuple(sorted(suites)), alike=len(alike))
    return list(rows.values()), compiled


def dataset_hash(records: Sequence[dict[str, Any]]) -> str:
    """Hash of the training content (not the provenance): same data, same hash."""
    provenance = ("episode_ids", "source", "justification")  # weighting repeats rows: kept
    content = [{k: v for k, v in r.items() if k not in provenance} for r in records]
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def write_dataset(records: list[dict[str, Any]], out: Path, fmt: Format, **manifest: Any) -> Path:
    """Save as a Hugging Face dataset folder with a `manifest.json` beside the data."""
    from datasets import Dataset, disable_progress_bars  # heavy: only when writing

    disable_progress_bars()

    if not records:
        raise TrainerError(f"no {fmt} examples to write")
    out.mkdir(parents=True, exist_ok=True)
    Dataset.from_list(records).save_to_disk(str(out))
    by_source: dict[str, int] = {}
    for r in records:
        by_source[r["source"]] = by_source.get(r["source"], 0) + 1
    doc = {
        "format": fmt,
        "examples": len(records),
        "by_source": by_source,
        "dataset_hash": dataset_hash(records),
    } | manifest
    (out / "manifest.json").write_text(json.dumps(doc, indent=2) + "\n")
    return out


class TooFewExamples(TrainerError):
    """Fewer examples than training needs: collect more corrections first."""

    def __init__(self, message: str, summary: dict[str, Any]) -> None:
        super().__init__(message)
        self.summary = summary  # what was compiled (Compiled.summary)


def build_dataset(
    store: CorrectionSource,
    out: Path,
    fmt: Format,
    *,
    allow_gold: bool,
    justifications: Collection[str] = ADMITTED,
    protected: Guard | None = None,
    min_examples: int = 1,
    allow_unconfined: bool = False,
    repair_turns: bool = True,
    mixed: Collection[str] | None = None,
    form_precision: float = 0.9,
    consistency_precision: float = 0.8,
    agree: tuple[int, int] = (3, 5),
    frontier_weight: int = 1,
    rehearsal: Sequence[Example] = (),
    rehearsal_share: float = 0.0,
    replay: tuple[datetime, float] | None = None,
    **manifest: Any,
) -> tuple[Compiled, int]:
    """Compile the store's corrections into `fmt` rows and write them to `out`; the
    compilation and the number of rows. Fewer than `min_examples`: TooFewExamples.
    `mixed`: GRPO's prompts, where sampling found some. `rehearsal`: SFT only, added as
    `rehearsal_share` of the examples once they are enough by themselves. `replay` (since,
    share): SFT and DPO rows logged before `since`, at most `share` times those since, the
    rows that count towards `min_examples`."""
    if fmt == "grpo":  # prompts and their verifiers, not answers
        records, compiled = prompt_records(
            store, allow_gold=allow_gold, protected=protected, justifications=justifications,
            mixed=mixed,
        )  # fmt: skip
    elif fmt == "kto":  # what people said of answers: good or bad
        records, compiled = rating_records(store, protected)
    else:
        compiled = compile_examples(
            store, allow_gold=allow_gold, protected=protected, justifications=justifications,
            allow_unconfined=allow_unconfined, form_precision=form_precision,
            consistency_precision=consistency_precision, agree=agree,
        )  # fmt: skip
        if replay is not None:  # enough is what tonight would train on
            compiled = with_replay(compiled, *replay)
        records = to_records(compiled.examples, fmt, repair_turns)
    unique = len(records)
    if unique < max(min_examples, 1):
        why = (
            f"; {compiled.alike} prompts left out, their sampled answers all earned the same reward"
            if compiled.alike
            else ""
        )
        more = (
            "rate more answers (the chat page's thumbs, /good and /bad in `reflexa chat`, or "
            "POST /v1/feedback)"
            if fmt == "kto"
            else "collect more with `reflexa eval run SUITE --split train` (or chat with checks)"
        )
        raise TooFewExamples(
            f"{unique} {fmt} examples, fewer than the {max(min_examples, 1)} needed "
            f"(min_examples): {more}{why}",
            compiled.summary(unique),
        )
    if fmt == "sft" and rehearsal and rehearsal_share > 0:
        compiled = with_rehearsal(compiled, rehearsal, rehearsal_share)
        records = to_records(compiled.examples, fmt, repair_turns)
        unique = len(records)
    if frontier_weight > 1 and fmt == "sft":  # the trainer scales its epochs by unique_rows
        records = to_records(compiled.examples, fmt, repair_turns, frontier_weight)
        manifest["unique_rows"] = unique
    write_dataset(records, out, fmt, suites=compiled.suites(), **manifest)
    return compiled, unique
