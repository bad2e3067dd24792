"""Reasoning throughput of the embedded model: the seed's way (one query per generate call, float32)
against the project's default batched path (QRReasoner: auto dtype, length-sorted batches), in one run.

    python benchmarks/throughput.py [--queries 48] [--baseline-queries 6] [--max-new-tokens 256]

Both paths run the paper's sampling settings on real BRIGHT queries; tokens are counted the same way
for both (the generated text re-tokenised). Prints tokens/s of each and their ratio.
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import bright_queries
from transformers import AutoModelForCausalLM, AutoTokenizer

from tongsearch_qr import GenerationParams, PromptTemplate, QRReasoner
from tongsearch_qr.models import resolve_model


def count_tokens(tokenizer, texts: list[str]) -> int:
    return sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])


def sequential_fp32(queries: list[str], params: GenerationParams) -> tuple[list[str], float]:
    """One generate call per query, float32: how the seed scripts run a reasoner."""
    path = resolve_model(None).path
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    template = PromptTemplate.paper()
    texts = []
    start = time.perf_counter()
    for query in queries:
        enc = tokenizer.apply_chat_template(template.messages(query), add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=params.max_new_tokens, do_sample=True,
                                 temperature=params.temperature, top_p=params.top_p, top_k=params.top_k,
                                 repetition_penalty=params.repetition_penalty, pad_token_id=tokenizer.eos_token_id)
        texts.append(tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True))
    return texts, time.perf_counter() - start


def batched_default(queries: list[str], params: GenerationParams, batch_size: int | None) -> tuple[list[str], float, str]:
    """The project's default path: QRReasoner() with its default backend settings."""
    options = {} if batch_size is None else {"batch_size": batch_size}
    reasoner = QRReasoner(generation=params, **options)
    start = time.perf_counter()
    texts = reasoner.reason(queries)
    return texts, time.perf_counter() - start, reasoner.backend.cache_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=48, help="queries for the batched path")
    parser.add_argument("--baseline-queries", type=int, default=6, help="first N of them for the slow baseline")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=None, help="override the default batch size")
    parser.add_argument("--task", default="biology", help="BRIGHT task whose queries are used")
    args = parser.parse_args()

    queries = bright_queries(args.task, args.queries)
    params = GenerationParams(max_new_tokens=args.max_new_tokens, seed=0)
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(None).path)

    base_texts, base_time = sequential_fp32(queries[: args.baseline_queries], params)
    base_tps = count_tokens(tokenizer, base_texts) / base_time
    batch_texts, batch_time, backend = batched_default(queries, params, args.batch_size)
    batch_tps = count_tokens(tokenizer, batch_texts) / batch_time

    print(f"torch threads: {torch.get_num_threads()}; BRIGHT {args.task} queries; "
          f"max_new_tokens={args.max_new_tokens}; paper sampling")
    print(f"{'path':<44}{'queries':>8}{'seconds':>10}{'tokens/s':>10}{'queries/s':>11}")
    print(f"{'sequential batch-1 float32 (seed)':<44}{len(base_texts):>8}{base_time:>10.1f}{base_tps:>10.1f}"
          f"{len(base_texts) / base_time:>11.3f}")
    print(f"{'default batched (' + backend.rsplit(':', 1)[-1] + ')':<44}{len(batch_texts):>8}{batch_time:>10.1f}"
          f"{batch_tps:>10.1f}{len(batch_texts) / batch_time:>11.3f}")
    print(f"ratio (tokens/s, default / sequential): {batch_tps / base_tps:.1f}x")


if __name__ == "__main__":
    main()
