"""benchmarks/throughput.py's options: --weights-types names the extra llama.cpp weight types to measure, and one
given without any is an error, not a silent run without them."""

from __future__ import annotations

import sys

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

from throughput import build_parser  # noqa: E402


def test_weights_types_are_none_extra_by_default_and_checked_when_given(capsys):
    assert build_parser().parse_args([]).weights_types == []
    assert build_parser().parse_args(["--weights-types", "q8_0", "Q4_0", "bf16"]).weights_types == ["Q8_0", "Q4_0", "BF16"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--weights-types"])
    assert "expected at least one argument" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--weights-types", "Q3"])
    assert "unknown GGUF weights type 'Q3'" in capsys.readouterr().err
