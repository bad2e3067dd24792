"""The documentation: the site builds with ``mkdocs build --strict`` (a broken link, anchor, snippet or API reference
fails it), and every ```python block of ``docs/**/*.md`` and ``README.md`` runs.

Snippet runner: each page's blocks run in order in one namespace (a later block may use an earlier one's names),
from a working directory of the page's own whose ``../shared/data`` holds small fixtures in the shared data's layout
(a 3-document SciFact, 3-pair StackExchange sites, a 3-question BRIGHT task, a published-reasoning file). A block
is one test, ``docs/PAGE.md:LINE``; running one alone runs the page's earlier blocks first. A block preceded by
``<!-- skip: REASON -->`` (or whose fence says ``skip="REASON"``) is a pytest skip with that reason: for blocks that
need a GPU, the hub, a server, a trained model or a long run. Blocks that run the embedded model must stay tiny
(3 documents, 1-2 queries, few new tokens). A block that uses a stack (PyTerrier, LlamaIndex, Haystack), and every
later block of its page, carries that stack's marker; a block that builds a reasoner (and every later block of its
page) is marked ``slow``, as it runs the embedded model. Bash blocks are not run.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
PAGES = [*sorted(DOCS.rglob("*.md")), REPO / "README.md"]

OPENING = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\n]*)$")
SKIP_COMMENT = re.compile(r"^\s*<!--\s*skip:\s*(?P<reason>.+?)\s*-->\s*$")
SKIP_INFO = re.compile(r"""skip\s*=\s*["'](?P<reason>[^"']+)["']""")
#: stack -> (pytest marker, what in a block's code means it uses the stack)
STACKS = {
    "pyterrier": ("pyterrier", re.compile(r"\bpyterrier\b")),
    "llama_index": ("llama_index", re.compile(r"\bllama_index\b")),
    "haystack": ("haystack", re.compile(r"\bhaystack\b")),
    "a reasoner": ("slow", re.compile(r"\b(QRReasoner|QRQueryTransform|QRQueryRewriter|PTReasoner)\s*[(.]")),
}


@dataclass
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    code: str
    skip: str | None = None

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(REPO).as_posix()}:{self.line}"


def python_blocks(page: Path) -> list[Block]:
    """The ```python blocks of a Markdown page, dedented, each with its skip reason (if marked)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = OPENING.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, info = match["indent"], match["fence"], match["info"].strip()
        end = i + 1
        while end < len(lines) and not (lines[end].strip().startswith(fence) and lines[end].strip().strip(fence[0]) == ""):
            end += 1
        language = info.split()[0].lstrip("{.").rstrip("}") if info else ""
        if language in ("python", "py"):
            body = [line[len(indent) :] if line.startswith(indent) else line for line in lines[i + 1 : end]]
            previous = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            skip = SKIP_COMMENT.match(previous)
            in_info = SKIP_INFO.search(info)
            reason = (skip["reason"] if skip else None) or (in_info["reason"] if in_info else None)
            blocks.append(Block(page, i + 1, textwrap.dedent("\n".join(body)) + "\n", reason))
        i = end + 1
    return blocks


def test_the_block_reader_finds_blocks_fences_and_skip_reasons(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        textwrap.dedent('''\
        # A page
        ```python
        x = 1
        ```
        <!-- skip: needs a GPU -->
        ```python
        gpu()
        ```
        ```bash
        echo not python
        ```
        !!! note
            ```python
            y = x + 1
            ```
        ```python skip="needs a hub model"
        hub()
        ```
        ````python
        s = """```"""
        ````
        '''),
        encoding="utf-8",
    )
    blocks = python_blocks(page)
    assert [(b.line, b.code, b.skip) for b in blocks] == [
        (2, "x = 1\n", None),
        (6, "gpu()\n", "needs a GPU"),
        (13, "y = x + 1\n", None),
        (16, "hub()\n", "needs a hub model"),
        (19, 's = """```"""\n', None),
    ]


# ---------------------------------------------------------------------------------------------------- fixtures


def write_fixtures(data: Path) -> None:
    """Small copies of the shared data's layouts under ``data`` (what ``../shared/data`` holds beside the repo)."""
    documents = [
        ("d1", "Osmosis", "Seawater is hypertonic: drinking it dehydrates cells by osmosis."),
        ("d2", "Kidneys", "Kidneys cannot make urine saltier than seawater, so drinking it costs water."),
        ("d3", "Tides", "Tides are caused by the Moon's gravity pulling on the oceans."),
    ]
    queries = [("q1", "Why can't humans drink sea water?"), ("q2", "What causes the tides?")]
    scifact = data / "scifact"
    (scifact / "qrels").mkdir(parents=True)
    (scifact / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": d, "title": t, "text": x}) + "\n" for d, t, x in documents), encoding="utf-8"
    )
    (scifact / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": x, "metadata": {}}) + "\n" for q, x in queries), encoding="utf-8"
    )
    (scifact / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t1\nq2\td3\t1\n", encoding="utf-8")
    pairs = [
        ("1", "Drinking sea water", "Why can't humans drink sea water?", "a1", "Its salt draws water out of cells."),
        ("2", "Tides", "What makes the tides rise and fall?", "a2", "The Moon's gravity pulls the oceans."),
        ("3", "Ice", "Why does ice float?", "a3", "Ice is less dense than liquid water."),
    ]
    for site in ("matheducators", "ai", "beer", "coffee", "quantumcomputing"):
        folder = data / "stackexchange-qa" / site
        folder.mkdir(parents=True)
        (folder / "qa_pairs.jsonl").write_text(
            "".join(
                json.dumps({"question_id": q, "title": t, "question_body": b, "answer_id": a, "answer_body": x}) + "\n"
                for q, t, b, a, x in pairs
            ),
            encoding="utf-8",
        )
    examples = data / "bright" / "examples"
    examples.mkdir(parents=True)
    with gzip.open(examples / "sustainable_living.jsonl.gz", "wt", encoding="utf-8") as handle:
        for q, title, body, _, answer in pairs:
            handle.write(
                json.dumps(
                    {
                        "id": q,
                        "query": f"{title}: {body}",
                        "reasoning": "",
                        "excluded_ids": ["N/A"],
                        "gold_ids": [f"doc{q}"],
                        "gold_ids_long": [f"doc{q}"],
                        "gold_answer": answer,
                    }
                )
                + "\n"
            )
    published = data / "tongsearch-qr"
    published.mkdir()
    (published / "TongSearch-QR-7B_reasoned_BRIGHT_queries.json").write_text(
        json.dumps(
            {
                "Why can't humans drink sea water?": "Sea water holds about 3.5% salt; the kidneys cannot excrete it ...",
                "What causes the tides?": "The Moon's gravity raises a bulge of water on the near and far side ...",
            }
        ),
        encoding="utf-8",
    )


@pytest.fixture(scope="module")
def docs_root(tmp_path_factory) -> Path:
    """A folder with ``shared/data`` (the fixtures) and one working directory per page beside it."""
    root = tmp_path_factory.mktemp("docs")
    write_fixtures(root / "shared" / "data")
    return root


# ------------------------------------------------------------------------------------------------- the runner


@dataclass
class PageRun:
    """One page's blocks run in order in one namespace, from the page's own working directory."""

    blocks: list[Block]
    workdir: Path
    namespace: dict[str, Any] = field(default_factory=lambda: {"__name__": "__docs__"})
    done: int = 0  # blocks run (or passed over) so far
    failed: Block | None = None

    def run_through(self, index: int) -> None:
        while self.done <= index:
            block = self.blocks[self.done]
            self.done += 1
            if self.failed is not None:
                pytest.skip(f"an earlier block of this page failed: {self.failed.name}")
            if block.skip:
                if self.done - 1 == index:
                    pytest.skip(f"{block.name}: {block.skip}")
                continue
            try:
                self.execute(block)
            except BaseException:
                self.failed = block
                if self.done - 1 == index:
                    raise
                pytest.skip(f"an earlier block of this page failed: {block.name}")

    def execute(self, block: Block) -> None:
        code = compile("\n" * (block.line) + block.code, str(block.page), "exec")  # tracebacks give the page's lines
        here = os.getcwd()
        os.chdir(self.workdir)
        try:
            exec(code, self.namespace)
        finally:
            os.chdir(here)


def _marks(blocks: list[Block]) -> list[list[Any]]:
    """Each block's markers: a stack's (or ``slow``) from the first block that uses it to the page's end."""
    used: set[str] = set()
    marks = []
    for block in blocks:
        used |= {stack for stack, (_, pattern) in STACKS.items() if pattern.search(block.code)}
        marks.append([getattr(pytest.mark, name) for name in sorted({STACKS[stack][0] for stack in used})])
    return marks


def _block_params() -> list[Any]:
    params = []
    for page in PAGES:
        blocks = python_blocks(page) if page.is_file() else []
        for index, (block, marks) in enumerate(zip(blocks, _marks(blocks))):
            params.append(pytest.param(page, index, id=block.name, marks=marks))
    return params


_RUNS: dict[Path, PageRun] = {}


@pytest.fixture(scope="module")
def shared_backends():
    """Pages build many reasoners on the same embedded model: each local engine and model loads once for the
    whole module (the reasoners keep their own prompt, decoding and mode; only the loaded model is shared)."""
    from tongsearch_qr import reasoner

    real = reasoner.make_backend
    loaded: dict[tuple, Any] = {}

    def make_backend(name: str, model: Any = None, **options: Any) -> Any:
        if name not in ("auto", "transformers", "llamacpp") or model not in (None, "default", "base", "smollm2-base"):
            return real(name, model, **options)
        key = (name, model, tuple(sorted((k, repr(v)) for k, v in options.items())))
        if key not in loaded:
            loaded[key] = real(name, model, **options)
        return loaded[key]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(reasoner, "make_backend", make_backend)
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield
    _RUNS.clear()


@pytest.mark.parametrize(("page", "index"), _block_params())
def test_docs_python_block_runs(page: Path, index: int, docs_root: Path, shared_backends: None) -> None:
    if page not in _RUNS:
        workdir = docs_root / re.sub(r"\W+", "-", page.relative_to(REPO).as_posix())
        workdir.mkdir()
        _RUNS[page] = PageRun(python_blocks(page), workdir)
    _RUNS[page].run_through(index)


# ---------------------------------------------------------------------------------------------------- the site


def mkdocs_build(config_dir: Path, site: Path) -> subprocess.CompletedProcess:
    pytest.importorskip("mkdocs", reason="the docs extra (pip install -e '.[docs]'; make setup installs it)")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=config_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_site_builds_strict_with_the_generated_references(tmp_path):
    done = mkdocs_build(REPO, tmp_path / "site")
    assert done.returncode == 0, done.stdout + done.stderr
    site = tmp_path / "site"
    cli = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    from tongsearch_qr.cli import build_parser

    commands = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction").choices
    for name, sub in commands.items():
        assert f"tongsearch-qr {name}" in cli
        for action in sub._actions:
            for option in action.option_strings:
                assert option in cli, f"{name} {option} missing from the CLI reference"
    config = (site / "reference" / "training-config" / "index.html").read_text(encoding="utf-8")
    from tongsearch_qr.training.config import TrainConfig

    for name in TrainConfig.__dataclass_fields__:
        assert name == "base_dir" or f"<code>{name}</code>" in config, name
    home = (site / "index.html").read_text(encoding="utf-8")
    for readme in sorted((REPO / "benchmarks" / "results").glob("*/README.md")):
        assert (site / "benchmarks" / "results" / readme.parent.name / "index.html").is_file()
        assert f"benchmarks/results/{readme.parent.name}/" in home, f"{readme.parent.name} is not in the navigation"
    assert (site / "benchmarks" / "model-card" / "index.html").is_file()
    benchmarks = (DOCS / "benchmarks" / "index.md").read_text(encoding="utf-8")
    for readme in sorted((REPO / "benchmarks" / "results").glob("*/README.md")):
        assert f"(results/{readme.parent.name}/README.md)" in benchmarks, f"the Benchmarks page does not link {readme}"
    assert "(model-card.md)" in benchmarks


def test_a_broken_link_fails_the_build(tmp_path):
    """A copy of the site's sources beside the same code, with one link to a page that does not exist."""
    for name in ("mkdocs.yml", "docs"):
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, tmp_path / name)
    for name in ("tongsearch_qr", "integrations", "training", "benchmarks", "CHANGELOG.md"):
        (tmp_path / name).symlink_to(REPO / name)
    index = tmp_path / "docs" / "index.md"
    index.write_text(index.read_text(encoding="utf-8") + "\nSee [the missing page](missing.md).\n", encoding="utf-8")
    done = mkdocs_build(tmp_path, tmp_path / "site")
    assert done.returncode != 0
    assert "missing.md" in done.stdout + done.stderr


# ------------------------------------------------------------------------------------------------ project files


def test_the_version_is_written_once_and_the_package_reports_it():
    import tongsearch_qr

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "tongsearch_qr.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+([.-]?\w+)?", tongsearch_qr.__version__)
    assert importlib.metadata.version("tongsearch-qr") == tongsearch_qr.__version__, (
        "the installed metadata is older than tongsearch_qr.__version__: reinstall (pip install -e .)"
    )
    assert not re.search(r"version\s*=", (REPO / "setup.py").read_text(encoding="utf-8"))


def test_license_and_changelog():
    license_text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert license_text.startswith("MIT License") and "the tongsearch-qr authors" in license_text
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["license"] == "MIT"
    changelog = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    versions = re.findall(r"^## \[([^\]]+)\]", changelog, re.MULTILINE)
    assert versions and versions[0] == "Unreleased", "CHANGELOG.md: newest first, starting with Unreleased"
    import tongsearch_qr

    assert tongsearch_qr.__version__ in versions, "CHANGELOG.md has no section for the package's version"
