"""Load time of the embedded default model: first load (GGUF dequantized, saved as safetensors) against
later loads (safetensors), in one run, in a fresh cache directory.

    python benchmarks/model_load.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def load_once() -> float:
    from tongsearch_qr.backends import make_backend

    start = time.perf_counter()
    make_backend("transformers", None)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="later loads to time")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        os.environ["TONGSEARCH_QR_CACHE"] = cache
        import transformers  # noqa: F401  (import cost paid before timing)

        first = load_once()
        later = [load_once() for _ in range(args.repeats)]
    best = min(later)
    print(f"first load (dequantize GGUF + save safetensors + load): {first:6.2f} s")
    print(f"later loads (safetensors), best of {args.repeats}:          {best:6.2f} s")
    print(f"ratio first / later: {first / best:.1f}x")


if __name__ == "__main__":
    main()
