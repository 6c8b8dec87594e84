"""MkDocs hooks: the command-line reference is generated from the CLI's own parser, whose
search flags are made from ``SearchConfig``'s fields, so the page cannot drift from the code;
and the benchmarks' plots are served from where the benchmarks write them
(``benchmarks/results/X/Y.png`` as ``results/plots/X/Y.png``), never copied into docs/."""

from __future__ import annotations

import argparse
from pathlib import Path

from mkdocs.structure.files import File

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"

MARK = "<!-- cli-reference -->"


def _flags(parser: argparse.ArgumentParser) -> list[str]:
    lines = []
    for group in parser._action_groups:  # argparse has no public walk of its groups
        actions = [a for a in group._group_actions if not isinstance(a, argparse._HelpAction)]
        if not actions:
            continue
        title = group.title if group.title not in ("options", "optional arguments") else "options"
        lines += ["", f"**{title}**", "", "| flag | what it does |", "|---|---|"]
        for action in actions:
            name = ", ".join(f"`{o}`" for o in action.option_strings) or f"`{action.dest}`"
            if action.metavar and action.option_strings:
                name += f" `{action.metavar}`"
            text = (action.help or "").replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {name} | {text} |")
    return lines


def cli_reference() -> str:
    from autopeft.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help for choice in sub._choices_actions}
    out = []
    for name, command in sub.choices.items():
        out += [f"## autopeft {name}", "", helps.get(name) or "", *_flags(command), ""]
    return "\n".join(out)


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ANN001  (MkDocs' hook signature)
    return markdown.replace(MARK, cli_reference()) if MARK in markdown else markdown


def on_files(files, config):  # noqa: ANN001, ANN201  (MkDocs' hook signature)
    for path in sorted(RESULTS.rglob("*.png")):
        uri = f"results/plots/{path.relative_to(RESULTS).as_posix()}"
        files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files
