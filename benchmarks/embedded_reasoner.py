"""Candidate reasoners against today's shipped one and the question alone on held-out collections: the ship rule.

    python benchmarks/embedded_reasoner.py [--reasoners today=default,NAME=SPEC,...] [--seeds 1,2,3]
        [--datasets bright-answers:earth_science,matheducators,scifact] [--dtype auto|float32|bfloat16]
        [--backend NAME] [--limit N] [--batch-size 64] [--cache FILE] [--output DIR]

``--reasoners``: ``NAME=SPEC`` pairs, ``today`` (the adapter shipped today, ``default``) among them; a SPEC is
anything ``QRReasoner(SPEC)`` loads (e.g. ``distilled=runs/cpu-distil/stages/1-distil/model,grpo=runs/cpu-distil/final``),
each with its own prompt, rewrite mode and length. Datasets (shared data, none used in training): the BRIGHT
StackExchange task earth_science's gold-answer pool (116 questions against their accepted answers), the
StackExchange site matheducators (189 questions over all its answers) and SciFact test (300 claims over 5,183
abstracts). BM25 (bm25s) ranks with the question alone, then with each reasoner's rewrite, greedy and with each
reasoner's sampling for each of ``--seeds`` (per-query nDCG@10 averaged over the seeds). Each cell: nDCG@10 and the
mean per-query difference from the question alone with ``eval``'s paired bootstrap 95% interval (``*``: it excludes
0); each candidate's difference from ``today`` likewise. The held-out StackExchange collections are also pooled
(their per-query differences together), and each candidate gets a verdict against the ship rule:

1. on the held-out StackExchange collections together it beats ``today``: pooled paired 95% interval above 0;
2. no collection falls below the question alone by more than 0.005 (mean nDCG@10 difference);
3. SciFact stays within 0.005 of the question alone (not below it by more);
4. ``make demo``'s pydoc table shows it at or above the question on both dtypes (not measured here: run it).

1-3 must hold greedy and sampled, on both CPU paths: run once with ``--dtype bfloat16`` (where the CPU has native
bf16: what ``auto`` picks there) and once with ``--dtype float32``. The dtype that ran and whether the CPU computes
bf16 natively are printed and written. Writes ``embedded-<dtype>.md`` and ``embedded-<dtype>.json`` to ``--output``;
completions go to a reasoning cache (``--cache``, keyed by model and dtype), so a stopped run resumes.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path

from _common import REPO, bm25_with_question, cell, result

from tongsearch_qr import GenerationParams, QRReasoner
from tongsearch_qr.evaluation import RunResult

#: the ship rule's tolerance: how far below the question alone a collection may fall
MARGIN = 0.005
#: the reference every candidate must beat
TODAY = "today"
#: the collection that checks a reasoner does no harm where questions need no reasoning
CONTROL = "scifact"


def parse_reasoners(text: str) -> dict[str, str]:
    """``today=default,grpo=runs/x/final`` -> ``{"today": "default", "grpo": "runs/x/final"}`` (``today`` required)."""
    reasoners: dict[str, str] = {}
    for part in text.split(","):
        name, sep, spec = (s.strip() for s in part.partition("="))
        if not sep or not name or not spec:
            raise argparse.ArgumentTypeError(f"expected NAME=SPEC, got {part!r}")
        if name in reasoners:
            raise argparse.ArgumentTypeError(f"reasoner name {name!r} given twice")
        reasoners[name] = spec
    if TODAY not in reasoners:
        raise argparse.ArgumentTypeError(
            f"name today's shipped reasoner {TODAY!r} (e.g. {TODAY}=default): every candidate is compared with it"
        )
    return reasoners


def short_name(dataset: str) -> str:
    """``bright-answers:earth_science`` -> ``earth_science``."""
    return dataset.rpartition(":")[2]


def pooled(results: Mapping[str, RunResult]) -> RunResult:
    """The per-query metrics of several collections' runs as one result (query ids prefixed by the collection), so
    that a paired interval treats every query of every collection alike."""
    return RunResult({}, {f"{dataset}/{qid}": metrics for dataset, r in results.items() for qid, metrics in r.per_query.items()})


def ship_verdict(
    candidate: str, rows: Mapping[str, Mapping[str, Mapping[str, dict]]], pooled_rows: Mapping[str, Mapping[str, dict]] | None
) -> dict:
    """Conditions 1-3 of the ship rule for ``candidate``, each over every decoding, and 4 left to ``make demo``.

    ``rows``: dataset -> decoding -> reasoner -> :func:`cell` against the question alone; ``pooled_rows``: decoding
    -> ``"<candidate> - today"`` -> cell over the held-out StackExchange collections together (``None`` without
    any). A condition that could not be measured has ``passed`` ``None``; the verdict is ``"fails"`` when one
    fails, ``"passes 1-3; check make demo"`` when all three pass, else ``"incomplete"``."""
    key = f"{candidate} - {TODAY}"
    if pooled_rows:
        beats = {d: row[key] for d, row in pooled_rows.items()}
        first = {
            "passed": all(c["low"] > 0 for c in beats.values()),
            "detail": "; ".join(f"{d} {_interval(c)}" for d, c in beats.items()),
        }
    else:
        first = {"passed": None, "detail": "no held-out StackExchange collection in this run"}
    drops = {f"{short_name(ds)} {d}": by_decoding[d][candidate]["diff"] for ds, by_decoding in rows.items() for d in by_decoding}
    worst = min(drops, key=drops.get)
    second = {"passed": all(v >= -MARGIN for v in drops.values()), "detail": f"lowest: {worst} {drops[worst]:+.4f}"}
    if CONTROL in rows:
        control = {d: c[candidate]["diff"] for d, c in rows[CONTROL].items()}
        third = {
            "passed": all(v >= -MARGIN for v in control.values()),
            "detail": "; ".join(f"{d} {v:+.4f}" for d, v in control.items()),
        }
    else:
        third = {"passed": None, "detail": f"{CONTROL} not in this run"}
    conditions = [
        {"condition": f"beats {TODAY} on held-out StackExchange together (pooled 95% interval above 0)", **first},
        {"condition": f"no collection below the question alone by more than {MARGIN}", **second},
        {"condition": f"{CONTROL} within {MARGIN} of the question alone", **third},
        {
            "condition": "make demo's pydoc table at or above the question on both dtypes",
            "passed": None,
            "detail": "check make demo",
        },
    ]
    measured = [c["passed"] for c in conditions[:3]]
    verdict = "fails" if False in measured else "passes 1-3; check make demo" if all(measured) else "incomplete"
    return {"conditions": conditions, "verdict": verdict}


def dtype_report(reasoner: QRReasoner, asked: str) -> dict:
    """The backend and dtype (llama.cpp: weight type) a reasoner runs with, and whether this CPU computes bf16
    natively."""
    from tongsearch_qr.backends.cpu import native_bf16
    from tongsearch_qr.demo import backend_description

    dtype = getattr(reasoner.backend, "dtype", None) or getattr(reasoner.backend, "weights_type", None)
    return {
        "asked": asked,
        "dtype": str(dtype).removeprefix("torch.") if dtype else "unreported",
        "backend": backend_description(reasoner),
        "cpu_native_bf16": native_bf16(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--reasoners",
        type=parse_reasoners,
        default=parse_reasoners(f"{TODAY}=default"),
        help="NAME=SPEC,... with today (default: today=default)",
    )
    parser.add_argument("--datasets", default="bright-answers:earth_science,matheducators,scifact")
    parser.add_argument("--seeds", default="1,2,3", help="sampling seeds, averaged per query")
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto")
    parser.add_argument("--backend", default=None, help="a local backend (default: QRReasoner's)")
    parser.add_argument("--limit", type=int, default=None, help="first N queries of each dataset")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads of llama.cpp (or torch with --backend transformers; default: all cores); fewer "
        "beside other work on the machine",
    )
    parser.add_argument("--cache", default=str(REPO / "benchmarks" / "results" / "embedded-cache.sqlite"))
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "embedded"))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s]
    datasets = [d for d in args.datasets.split(",") if d]
    chosen = {"backend": args.backend} if args.backend else {}
    if args.threads and args.backend == "transformers":
        import torch

        torch.set_num_threads(args.threads)
    elif args.threads:
        chosen["threads"] = args.threads
    reasoners = {
        name: QRReasoner(spec, **chosen, cache=args.cache, batch_size=args.batch_size, dtype=args.dtype, progress=True)
        for name, spec in args.reasoners.items()
    }
    candidates = [name for name in reasoners if name != TODAY]
    dtype = dtype_report(reasoners[TODAY], args.dtype)
    decodings = {
        "greedy": {
            name: [GenerationParams.greedy(r.generation.max_new_tokens, r.generation.repetition_penalty)]
            for name, r in reasoners.items()
        },
        "sampled": {name: [r.generation.with_(seed=s) for s in seeds] for name, r in reasoners.items()},
    }
    setup = {
        "reasoners": {
            name: {
                "spec": args.reasoners[name],
                "mode": r.mode.name,
                "max_new_tokens": r.generation.max_new_tokens,
                "prompt": r.template.user,
            }
            for name, r in reasoners.items()
        },
        "dtype": dtype,
        "seeds": seeds,
        "limit": args.limit,
    }
    print(json.dumps(setup), flush=True)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"embedded-{dtype['dtype']}"
    table: dict = {"setup": setup, "datasets": {}}
    runs: dict = {d: {name: {} for name in reasoners} for d in decodings}  # decoding -> reasoner -> dataset -> result
    questions: dict[str, RunResult] = {}  # dataset -> the question alone
    for dataset in datasets:
        collection, qids, texts, index, question = bm25_with_question(dataset, args.limit)
        rows: dict = {}
        for decoding, params in decodings.items():
            for name, reasoner in reasoners.items():
                seeded = [
                    result(collection, qids, index.search(reasoner.with_(generation=p).rewrite(texts), k=1000))
                    for p in params[name]
                ]
                runs[decoding][name][dataset] = seeded[0] if len(seeded) == 1 else RunResult.averaged(seeded)
            by_name = {name: by_dataset[dataset] for name, by_dataset in runs[decoding].items()}
            rows[decoding] = {name: cell(run, question) for name, run in by_name.items()}
            rows[decoding].update({f"{c} - {TODAY}": cell(by_name[c], by_name[TODAY]) for c in candidates})
            print(f"{dataset} {decoding}: " + json.dumps(rows[decoding]), flush=True)
        questions[dataset] = question
        table["datasets"][dataset] = {"queries": len(qids), "question": question.summary["ndcg_cut_10"], "rows": rows}
        stem.with_suffix(".json").write_text(json.dumps(table, indent=1))  # partial results kept
    stackexchange = [d for d in datasets if d != CONTROL]
    if stackexchange:
        question = pooled({d: questions[d] for d in stackexchange})
        rows = {}
        for decoding, by_name in runs.items():
            together = {name: pooled({d: by_dataset[d] for d in stackexchange}) for name, by_dataset in by_name.items()}
            rows[decoding] = {name: cell(run, question) for name, run in together.items()}
            rows[decoding].update({f"{c} - {TODAY}": cell(together[c], together[TODAY]) for c in candidates})
        table["pooled"] = {
            "name": f"held-out StackExchange ({' + '.join(map(short_name, stackexchange))})",
            "datasets": stackexchange,
            "queries": len(question.per_query),
            "question": question.summary["ndcg_cut_10"],
            "rows": rows,
        }
    dataset_rows = {d: found["rows"] for d, found in table["datasets"].items()}
    table["verdicts"] = {c: ship_verdict(c, dataset_rows, table.get("pooled", {}).get("rows")) for c in candidates}
    stem.with_suffix(".json").write_text(json.dumps(table, indent=1))
    stem.with_suffix(".md").write_text(markdown(table))
    print(stem.with_suffix(".md").read_text())


def markdown(table: dict) -> str:
    """The results as markdown: a table per collection and for the pooled StackExchange ones, then the verdicts."""
    setup, dtype = table["setup"], table["setup"]["dtype"]
    names = list(setup["reasoners"])
    candidates = [n for n in names if n != TODAY]
    described = "; ".join(
        f"{n} = {r['spec']} (mode {r['mode']}, at most {r['max_new_tokens']} new tokens)" for n, r in setup["reasoners"].items()
    )
    lines = [
        f"Reasoners: {described}.",
        "",
        f"dtype {dtype['dtype']}, backend {dtype['backend']} (asked: {dtype['asked']}; this CPU computes bf16 natively: "
        f"{'yes' if dtype['cpu_native_bf16'] else 'no'}). BM25 (bm25s) over each collection; sampled = mean of "
        f"seeds {','.join(map(str, setup['seeds']))}. nDCG@10 (mean per-query difference from the question "
        "alone, paired bootstrap 95% interval; * = it excludes 0); candidate - today likewise.",
        "",
    ]
    sections = [(f"{d}: {found['queries']} queries", found) for d, found in table["datasets"].items()]
    if "pooled" in table:
        sections.append((f"{table['pooled']['name']}: {table['pooled']['queries']} queries", table["pooled"]))
    header = names + [f"{c} - {TODAY}" for c in candidates]
    for title, found in sections:
        lines += [
            f"### {title}, question alone {found['question']:.4f}",
            "",
            "| decoding | " + " | ".join(header) + " |",
            "|---" * (len(header) + 1) + "|",
        ]
        for decoding, row in found["rows"].items():
            lines.append(f"| {decoding} | " + " | ".join(_format(row[k], difference_only=" - " in k) for k in header) + " |")
        lines.append("")
    if candidates:
        lines += [f"### Ship rule ({dtype['dtype']}; the other CPU path needs its own run)", ""]
        for name, found in table["verdicts"].items():
            lines.append(f"- **{name}: {found['verdict']}**")
            lines += [
                f"  {i}. {c['condition']}: {_passed(c['passed'])} ({c['detail']})" for i, c in enumerate(found["conditions"], 1)
            ]
        lines.append("")
    return "\n".join(lines)


def _passed(passed: bool | None) -> str:
    return "not measured" if passed is None else "pass" if passed else "FAIL"


def _interval(c: dict) -> str:
    star = "*" if c["low"] > 0 or c["high"] < 0 else ""
    return f"{c['diff']:+.4f}{star} [{c['low']:+.4f}, {c['high']:+.4f}]"


def _format(c: dict, difference_only: bool = False) -> str:
    return _interval(c) if difference_only else f"{c['ndcg10']:.4f} ({_interval(c)})"


if __name__ == "__main__":
    main()
