"""The Markdown report: the answer and the warnings, for a CI log or a pull-request comment.

It walks the same blocks as the HTML report (reports/answer.py); strings from result files are escaped
so that they cannot become Markdown or HTML.
"""

from __future__ import annotations

import html

from reports.answer import Answer
from reports.recommend import Recommendation
from reports.words import ReportContext, counted, finding_text, grouped_findings

MARKDOWN_LIST_LIMIT = 10  # per warning kind; the HTML lists them all


def md(text: str) -> str:
    """Strings from result files must not become Markdown or HTML."""
    return html.escape(text, quote=False).replace("|", "\\|").replace("*", "\\*").replace("_", "\\_")


def render_markdown(recommendation: Recommendation, answer: Answer, context: ReportContext, html_name: str) -> str:
    lines = ["# gpusizer report: which GPU and setup to choose", "",
             (f"From {counted(context.files, 'result file')}, {counted(context.machines, 'machine')}, "
              f"{counted(context.cases, 'measured case')}. "
             f"Target: {context.target_samples:,.0f} samples. Prices: "
             f"{md(context.prices_path) if context.prices_path else 'none (cost not judged)'}. "
             f"Full report with charts: {md(html_name)}"), ""]
    for block in answer.workloads:
        prefix = f"Model preset {md(block.workload)}: " if answer.several_workloads else ""
        lines.append(f"**{prefix}{md(block.bottom_line)}**")
        lines.append("")
    if answer.workloads:
        lines += [f"- {md(note)}" for note in answer.notes] + [""]
    for block in answer.workloads:
        lines += [f"## Workload: {md(block.workload)}", ""]
        for pick in block.picks:
            lines.append(f"- **{pick.title}:** {md(pick.sentence)}")
            lines += [f"  - {md(note)}" for note in pick.notes]
            lines += [f"  - runner-up {md(text)}" for text in pick.runners_up]
        lines.append("")
    if not answer.workloads:
        lines += ["No case passed in these files, so there is nothing to recommend.", ""]
    lines += ["## Warnings", ""]
    for title, group in grouped_findings(recommendation.findings):
        lines.append(f"- **{md(title)}** ({len(group)})")
        for finding in group[:MARKDOWN_LIST_LIMIT]:
            lines.append(f"  - {md(finding_text(finding))}")
        if len(group) > MARKDOWN_LIST_LIMIT:
            lines.append(f"  - ... and {len(group) - MARKDOWN_LIST_LIMIT} more (see the HTML report)")
    if not recommendation.findings:
        lines.append("None.")
    return "\n".join(lines) + "\n"
