"""The answer as a list of blocks, built once: what the HTML and the Markdown report both say, in order.

Each writer walks the same blocks and only decides how they look (and how their text is escaped), so
the two outputs cannot drift apart in what they say.
"""

from __future__ import annotations

from dataclasses import dataclass

from reports.recommend import Recommendation
from reports.words import (
    ReportContext,
    answer_notes,
    bottom_line,
    pick_sentence,
    runner_up_text,
    tie_sentence,
    withheld_sentence,
)


@dataclass(frozen=True)
class PickBlock:
    """One objective's pick: its title, the sentence, the notes under it (a tie, withheld comparisons)
    and the runners-up, measured in ``unit``."""

    title: str
    sentence: str
    notes: tuple[str, ...]
    unit: str
    runners_up: tuple[str, ...]


@dataclass(frozen=True)
class WorkloadBlock:
    """One workload (model preset): the bottom line first, then a block per objective."""

    workload: str
    bottom_line: str
    picks: tuple[PickBlock, ...]


@dataclass(frozen=True)
class Answer:
    """The workloads in the order the recommendation picked them, and the notes that say how to read
    the answer; no workloads when no case passed."""

    workloads: tuple[WorkloadBlock, ...]
    notes: tuple[str, ...]

    @property
    def several_workloads(self) -> bool:
        """With several, each bottom line names its workload."""
        return len(self.workloads) > 1


def build_answer(recommendation: Recommendation, context: ReportContext) -> Answer:
    workloads = list(dict.fromkeys(pick.workload for pick in recommendation.picks))
    blocks = []
    for workload in workloads:
        picks = tuple(
            PickBlock(
                title=pick.objective.title,
                sentence=pick_sentence(pick, context),
                notes=tuple(note for note in (tie_sentence(pick), withheld_sentence(pick, context.currency)) if note),
                unit=pick.objective.unit,
                runners_up=tuple(runner_up_text(row, pick, context.currency) for row in pick.runners_up),
            )
            for pick in recommendation.picks if pick.workload == workload)
        blocks.append(WorkloadBlock(workload, bottom_line(recommendation, context, workload), picks))
    notes = tuple(answer_notes(recommendation, context)) if blocks else ()
    return Answer(tuple(blocks), notes)
