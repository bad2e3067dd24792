"""MkDocs hooks (``hooks:`` in mkdocs.yml): what the site takes from outside ``docs/``, made at build time so it
never drifts from the code.

- The model card (``tongsearch_qr/embedded/README.md``) becomes ``benchmarks/model-card.md``, and every file under
  ``benchmarks/results/`` is served at ``benchmarks/results/...`` (each result folder's README is a page, listed in
  the navigation under Benchmarks; tables, logs and plots are files the pages link to).
- ``<!-- generated: cli -->`` in a page becomes the reference of ``tongsearch_qr.cli.build_parser()``.
- ``<!-- generated: training-config -->`` becomes the keys of a training YAML, read from the dataclasses of
  ``tongsearch_qr.training.config`` (types, defaults, and the comments beside each field) and the reward registry.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import html
import inspect
import io
import json
import os
import re
import shutil
import tempfile
import tokenize
from pathlib import Path
from typing import Any

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
MODEL_CARD = REPO / "tongsearch_qr" / "embedded" / "README.md"
MARKER = re.compile(r"<!-- generated: ([\w-]+) -->")


# ---------------------------------------------------------------------------------------------- files from outside


def result_readmes() -> list[Path]:
    """Every result folder's README, in name order."""
    return sorted(RESULTS.glob("*/README.md"))


_API_TREES: list[Path] = []


def api_tree() -> Path:
    """A folder whose ``tongsearch_qr`` is the package as installed: the core's files, with ``integrations/`` and
    ``training/`` linked in as subpackages (setup.py maps them there; griffe reads the source tree, not the mapping)."""
    tree = Path(tempfile.mkdtemp(prefix="tongsearch-qr-api-"))
    _API_TREES.append(tree)
    package = tree / "tongsearch_qr"
    package.mkdir()
    for entry in (REPO / "tongsearch_qr").iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    for name in ("integrations", "training"):
        (package / name).symlink_to(REPO / name)
    return tree


@event_priority(100)  # before mkdocstrings' own on_config, which creates its handler
def on_config(config: Any) -> Any:
    """Point mkdocstrings at the package as installed and snippets at the repository root, and list each result
    folder's README under Benchmarks in the navigation (found on disk, so a new one is never left out)."""
    handlers = config["plugins"]["mkdocstrings"].config["handlers"]
    handlers.setdefault("python", {})["paths"] = [str(api_tree())]
    snippets = config["mdx_configs"].get("pymdownx.snippets")
    if snippets is not None:  # files included with --8<-- are named from the repository root, wherever mkdocs runs
        snippets["base_path"] = [str(REPO)]
    for entry in config["nav"] or []:
        if isinstance(entry, dict) and "Benchmarks" in entry:
            section = entry["Benchmarks"]
            listed = {next(iter(item.values())) if isinstance(item, dict) else item for item in section}
            for readme in result_readmes():
                uri = f"benchmarks/results/{readme.parent.name}/README.md"
                if uri not in listed:
                    section.append({readme.parent.name: uri})
    return config


def on_shutdown() -> None:
    while _API_TREES:
        shutil.rmtree(_API_TREES.pop(), ignore_errors=True)


def on_files(files: Files, config: Any) -> Files:
    files.append(File.generated(config, "benchmarks/model-card.md", abs_src_path=str(MODEL_CARD)))
    for path in sorted(RESULTS.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            uri = "benchmarks/results/" + path.relative_to(RESULTS).as_posix()
            files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    return MARKER.sub(lambda match: GENERATORS[match.group(1)](), markdown)


# ------------------------------------------------------------------------------------------------ markdown helpers


def escape(text: str) -> str:
    """Text for a Markdown table cell: HTML and Markdown specials (pipes too) escaped outside `code spans`."""
    parts = text.replace("\n", " ").split("`")
    for i in range(0, len(parts), 2):
        parts[i] = re.sub(r"([*_\[\]|])", r"\\\1", html.escape(parts[i], quote=False))
    return "`".join(parts)


def code(text: str) -> str:
    """An inline code span that holds ``text`` whatever backticks it has."""
    ticks = "``" if "`" in text else "`"
    return f"{ticks}{text}{ticks}"


# ----------------------------------------------------------------------------------------------------------- CLI


def cli_reference() -> str:
    """Every subcommand of ``tongsearch-qr``: its usage and a table per option group, from the parser itself."""
    from tongsearch_qr.cli import build_parser

    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        parser = build_parser()
        out = [f"```text\n{parser.format_usage().strip()}\n```", ""]
        out += option_tables(parser, level=0)
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        helps = {choice.dest: choice.help for choice in commands._choices_actions}
        for name, sub in commands.choices.items():
            out += [f"## `tongsearch-qr {name}`", "", escape(helps.get(name) or ""), ""]
            out += [f"```text\n{sub.format_usage().strip()}\n```", ""]
            out += option_tables(sub, level=3)
    finally:
        if columns is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = columns
    return "\n".join(out)


def option_tables(parser: argparse.ArgumentParser, level: int) -> list[str]:
    formatter = parser._get_formatter()
    out: list[str] = []
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]
        if not actions:
            continue
        if level:
            title = "options" if group.title in ("options", "optional arguments") else group.title
            out += [f"{'#' * level} {escape(title or '')}", ""]
        out += ["| option | default | description |", "|---|---|---|"]
        for action in actions:
            names = ", ".join(action.option_strings) or (action.metavar or action.dest)
            if action.nargs == argparse.REMAINDER:
                names = "-- ..."
            default = "" if action.default in (None, False, argparse.SUPPRESS) or action.nargs == 0 else code(str(action.default))
            if isinstance(action, argparse.BooleanOptionalAction):
                default = code(str(action.default))
            help_text = formatter._expand_help(action) if action.help else ""
            if action.choices and not isinstance(action.choices, dict):
                help_text = f"one of {', '.join(map(str, action.choices))} {help_text}".strip()
            out.append(f"| {code(names)} | {default} | {escape(help_text)} |")
        out.append("")
    return out


# ------------------------------------------------------------------------------------------- training YAML keys


def field_comments(cls: type) -> dict[str, str]:
    """The comment on each field's line (``x: int = 1  # what``) or the ``#:`` lines above it, from the source."""
    source = inspect.getsource(cls)
    lines = source.splitlines()
    comments: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#:").strip()
    found: dict[str, str] = {}
    for node in ast.parse(source).body[0].body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            text = [comments[n] for n in range(node.lineno, node.end_lineno + 1) if n in comments]
            above = node.lineno - 1
            leading: list[str] = []
            while above >= 1 and lines[above - 1].strip().startswith("#:"):
                leading.insert(0, comments.get(above, ""))
                above -= 1
            found[node.target.id] = " ".join(leading + text)
    return found


def default_of(item: dataclasses.Field) -> str:
    if item.default is not dataclasses.MISSING:
        value = item.default
    elif item.default_factory is not dataclasses.MISSING:
        value = item.default_factory()
    else:
        return ""
    if dataclasses.is_dataclass(value):
        return "(section)"
    return code(json.dumps(value))


def docstring(cls: type) -> str:
    text = inspect.getdoc(cls) or ""
    return " ".join(text.split())


def config_section(cls: type, key: str | None, level: int) -> list[str]:
    out = [f"{'#' * level} {code(key) if key else 'Top level'}", ""]
    out += [escape(docstring(cls)), ""]
    notes = field_comments(cls)
    for base in cls.__mro__[1:]:
        if dataclasses.is_dataclass(base):
            notes = {**field_comments(base), **notes}
    out += ["| key | type | default | notes |", "|---|---|---|---|"]
    nested: list[tuple[type, str]] = []
    for item in dataclasses.fields(cls):
        if item.name == "base_dir":  # set from the config file's folder, not a YAML key
            continue
        default = default_of(item)
        if default == "(section)":
            nested.append((type(item.default_factory()), item.name))
            default = f"see [`{item.name}`](#{item.name})"
        out.append(f"| {code(item.name)} | {code(str(item.type))} | {default} | {escape(notes.get(item.name, ''))} |")
    out.append("")
    for sub, name in nested:
        out += config_section(sub, name, level + 1)
    return out


def training_config_reference() -> str:
    from tongsearch_qr.training import config
    from tongsearch_qr.training.rewards import REWARDS

    out = config_section(config.TrainConfig, None, 2)
    out += [
        "## Rewards",
        "",
        "Each entry of `rewards:` is `{name, weight, options}` (`weight` 1.0 unless given); `options` are the "
        "keyword arguments below. `think` and `keywords` default to the config's. `bm25_rank` also takes "
        "`pool: question | corpus | source` (each question's pool, every positive of the data, or those of the "
        "question's own source), which sets its `corpus`.",
        "",
        "| name | class | options |",
        "|---|---|---|",
    ]
    for name, cls in REWARDS.items():
        options = [
            option_text(p)
            for p in inspect.signature(cls.__init__).parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        ref = f"[`{cls.__qualname__}`][tongsearch_qr.training.rewards.{cls.__qualname__}]"
        out.append(f"| {code(name)} | {ref} | {', '.join(code(o) for o in options) or 'none'} |")
    out.append("")
    return "\n".join(out)


def option_text(parameter: inspect.Parameter) -> str:
    """``name: type = default`` of a keyword argument, as the source writes it."""
    text = parameter.name
    if parameter.annotation is not parameter.empty:
        annotation = parameter.annotation
        text += f": {annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)}"
    if parameter.default is not parameter.empty:
        text += f" = {parameter.default!r}"
    return text


GENERATORS = {"cli": cli_reference, "training-config": training_config_reference}
