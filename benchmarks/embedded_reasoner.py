"""The shipped (trained) reasoner against the original question and against the untrained model, side by side.

    python benchmarks/embedded_reasoner.py [--model default] [--datasets matheducators,scifact] [--seeds 1,2,3]
                                           [--limit N] [--cache FILE] [--output DIR]

For each dataset (the held-out StackExchange site ``matheducators``: 189 questions over all its answers;
SciFact test: 300 claims over 5,183 abstracts) BM25 (bm25s) ranks with the original question, then with the
reasoning of ``--model`` (default: the shipped trained reasoner) and of the untrained embedded model (``base``)
under the same prompt, rewrite mode and length (the trained reasoner's own), greedy and with the paper's
sampling for each of ``--seeds`` (per-query nDCG@10 averaged over the seeds). Each cell: nDCG@10, the mean
per-query difference from the question alone with ``eval``'s paired bootstrap 95% interval (``*``: it
excludes 0), and the trained - untrained difference with its interval. Writes ``embedded.md`` and
``embedded.json`` to ``--output``; completions go to a reasoning cache (``--cache``), so a stopped run resumes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _common import REPO, bm25_with_question, cell, result

from tongsearch_qr import GenerationParams, QRReasoner
from tongsearch_qr.evaluation import RunResult


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="the trained reasoner (default: the shipped one)")
    parser.add_argument("--datasets", default="matheducators,scifact")
    parser.add_argument("--seeds", default="1,2,3", help="sampling seeds, averaged per query")
    parser.add_argument("--limit", type=int, default=None, help="first N queries of each dataset")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--cache", default=str(REPO / "benchmarks" / "results" / "embedded-cache.sqlite"))
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "embedded"))
    args = parser.parse_args()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    trained = QRReasoner(args.model, cache=args.cache, batch_size=args.batch_size)
    untrained = QRReasoner("base", template=trained.template, generation=trained.generation, mode=trained.mode,
                           cache=args.cache, batch_size=args.batch_size)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    decodings = {"greedy": [GenerationParams.greedy(trained.generation.max_new_tokens,
                                                    trained.generation.repetition_penalty)],
                 f"sampled (mean of seeds {args.seeds})": [trained.generation.with_(seed=s) for s in seeds]}
    setup = {"model": args.model, "mode": trained.mode.name, "max_new_tokens": trained.generation.max_new_tokens,
             "prompt": trained.template.user}
    table: dict = {"setup": setup, "datasets": {}}
    print(json.dumps(setup), flush=True)
    for dataset in args.datasets.split(","):
        collection, qids, texts, index, original = bm25_with_question(dataset, args.limit)
        rows: dict = {}
        for decoding, params in decodings.items():
            runs = {}
            for name, reasoner in (("trained", trained), ("untrained", untrained)):
                seeded = [result(collection, qids, index.search(reasoner.with_(generation=p).rewrite(texts), k=1000))
                          for p in params]
                runs[name] = seeded[0] if len(seeded) == 1 else RunResult.averaged(seeded)
            rows[decoding] = {name: cell(run, original) for name, run in runs.items()}
            rows[decoding]["trained - untrained"] = cell(runs["trained"], runs["untrained"])
            print(f"{dataset} {decoding}: " + json.dumps(rows[decoding]), flush=True)
        table["datasets"][dataset] = {"queries": len(qids), "original": original.summary["ndcg_cut_10"], "rows": rows}
        (out / "embedded.json").write_text(json.dumps(table, indent=1))  # after each dataset: partial results kept
    write_markdown(out / "embedded.md", table)
    print((out / "embedded.md").read_text())


def write_markdown(path: Path, table: dict) -> None:
    setup = table["setup"]
    lines = [f"Reasoner {setup['model']!r} against the untrained embedded model (same prompt, mode "
             f"{setup['mode']}, at most {setup['max_new_tokens']} new tokens), BM25 (bm25s) over each collection; "
             "nDCG@10 (mean per-query difference from the original question, paired bootstrap 95% interval; "
             "* = it excludes 0).", ""]
    for dataset, found in table["datasets"].items():
        lines += [f"### {dataset}: {found['queries']} queries, original question {found['original']:.4f}", "",
                  "| decoding | trained | untrained | trained - untrained |", "|---|---|---|---|"]
        for decoding, row in found["rows"].items():
            lines.append(f"| {decoding} | " + " | ".join(_format(row[k]) for k in ("trained", "untrained")) +
                         f" | {_format(row['trained - untrained'], difference_only=True)} |")
        lines.append("")
    path.write_text("\n".join(lines))


def _format(c: dict, difference_only: bool = False) -> str:
    star = "*" if c["low"] > 0 or c["high"] < 0 else ""
    interval = f"{c['diff']:+.4f}{star} [{c['low']:+.4f}, {c['high']:+.4f}]"
    return interval if difference_only else f"{c['ndcg10']:.4f} ({interval})"


if __name__ == "__main__":
    main()
