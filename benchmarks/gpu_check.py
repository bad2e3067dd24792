"""A check of what only a GPU shows, for a bare CUDA machine with no network.

    python benchmarks/gpu_check.py --output gpu-check/ [--tokenizer DIR] [--queries 512] [--grpo-steps 4]
    python benchmarks/gpu_check.py --cpu --tiny --output out/      # the same code paths at toy sizes (CI)

No weights are downloaded: it builds randomly initialised models of the embedded model's architecture
(SmolLM2-135M) and of Qwen2.5-1.5B from their configurations, with the embedded model's tokenizer (``--tokenizer``:
a folder holding tokenizer files, e.g. copied from ``tongsearch_qr.models.embedded_model_dir()``). Then:

1. the weight type the transformers backend picks on this device, and that BM25 (bm25s) left JAX uninitialised;
2. transformers backend throughput (tokens/s) and peak memory for ``--queries`` prompts, with the default batching
   (sized from free GPU memory) and with the CPU-sized batches of 64;
3. ``--grpo-steps`` GRPO steps of the ``qwen2.5-1.5b`` recipe (transformers generation, no vLLM server) on the
   Qwen-architecture model, with LoRA and with full fine-tuning: seconds per step, peak memory, and the master
   weights' dtype;
4. seeded sampling in the chosen dtype: the same query alone and in a batch.

Writes ``gpu_check.json`` and ``gpu_check.md`` to ``--output``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SMOLLM2_135M = {
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "vocab_size": 49152,
    "max_position_embeddings": 8192,
    "tie_word_embeddings": True,
    "rope_theta": 100000.0,
}
QWEN25_15B = {
    "hidden_size": 1536,
    "intermediate_size": 8960,
    "num_hidden_layers": 28,
    "num_attention_heads": 12,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
    "vocab_size": 151936,
    "hidden_act": "silu",
}
SHRINK = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
}
QUESTION = (
    "Why do insects gather around artificial lights at night, when LEDs give off almost no heat? "
    "Is it the light itself, some compass behaviour, or something else entirely? "
)


def build_model(kind: str, tokenizer_dir: Path, out: Path, tiny: bool) -> Path:
    """A randomly initialised model of ``kind`` (``smollm2`` or ``qwen2.5-1.5b``) saved with the tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, Qwen2Config

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    shrink = SHRINK if tiny else {}
    if kind == "smollm2" and (tokenizer_dir / "config.json").is_file():
        config = AutoConfig.from_pretrained(tokenizer_dir, **shrink)
    elif kind == "smollm2":
        from transformers import LlamaConfig

        config = LlamaConfig(**{**SMOLLM2_135M, **shrink})
    else:
        config = Qwen2Config(**{**QWEN25_15B, **shrink})
    config.vocab_size = max(config.vocab_size, len(tokenizer))
    torch.manual_seed(0)
    folder = out / kind
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def peak_memory(device: str) -> float | None:
    """GiB of peak allocated memory since the last reset (CUDA), else ``None``."""
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


def reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def gpu_memory_used() -> list[int] | None:
    """MiB used on each GPU as nvidia-smi reports it (catches other runtimes, such as JAX, taking memory)."""
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return [int(x) for x in done.stdout.split()] if done.returncode == 0 else None


def check_choices(device: str) -> dict[str, Any]:
    from tongsearch_qr.backends.transformers_backend import pick_dtype
    from tongsearch_qr.retrieval.bm25 import BM25Retriever

    BM25Retriever().index([("a", "sea water"), ("b", "moon tides")]).search(["sea"], k=1)
    return {
        "dtype_auto": str(pick_dtype("auto", device)).removeprefix("torch."),
        "jax_imported_by_bm25": "jax" in sys.modules,
        "nvidia_smi_mib_after_bm25": gpu_memory_used(),
    }


def throughput(model_dir: Path, device: str, queries: int, tokens: int) -> list[dict[str, Any]]:
    """Tokens/s of the transformers backend, default batching against batches of 64."""
    from tongsearch_qr import GenerationParams, PromptTemplate
    from tongsearch_qr.backends.transformers_backend import TransformersBackend

    rows = []
    questions = [f"{QUESTION}(variant {i})" for i in range(queries)]
    params = GenerationParams(max_new_tokens=tokens, seed=0)
    for label, batch in (("default batching", None), ("batches of 64", 64)):
        backend = TransformersBackend(str(model_dir), device=device, batch_size=batch)
        backend.generate(questions[:2], PromptTemplate.paper(), params.with_(max_new_tokens=2))  # warm-up
        reset_peak(device)
        started = time.perf_counter()
        texts = backend.generate(questions, PromptTemplate.paper(), params)
        seconds = time.perf_counter() - started
        generated = sum(len(backend.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
        rows.append(
            {
                "batching": label,
                "batch_size": backend.batch_size,
                "max_batch_tokens": backend.max_batch_tokens,
                "dtype": str(backend.dtype).removeprefix("torch."),
                "seconds": round(seconds, 2),
                "tokens_per_second": round(generated / seconds, 1),
                "peak_gib": peak_memory(device),
            }
        )
        del backend
    return rows


def seeded_batching(model_dir: Path, device: str) -> dict[str, Any]:
    """Whether a seeded query's completion is the same alone and in a batch, in the dtype ``auto`` picks."""
    from tongsearch_qr import GenerationParams, PromptTemplate
    from tongsearch_qr.backends.transformers_backend import TransformersBackend

    backend = TransformersBackend(str(model_dir), device=device)
    params = GenerationParams(max_new_tokens=16, seed=7)
    others = [f"{QUESTION}(other {i})" for i in range(7)]
    alone = backend.generate([QUESTION], PromptTemplate.paper(), params)[0]
    batched = backend.generate([*others, QUESTION], PromptTemplate.paper(), params)[-1]
    again = backend.generate([QUESTION], PromptTemplate.paper(), params)[0]
    return {
        "dtype": str(backend.dtype).removeprefix("torch."),
        "repeats": alone == again,
        "alone_equals_batched": alone == batched,
    }


def grpo_steps(model_dir: Path, work: Path, steps: int, tiny: bool, device: str) -> list[dict[str, Any]]:
    """Seconds per GRPO step of the qwen2.5-1.5b recipe (no vLLM), LoRA and full, in a child process each."""
    import yaml

    recipe = yaml.safe_load((REPO / "training" / "configs" / "qwen2.5-1.5b.yaml").read_text())
    rows = []
    for label, lora in (("LoRA r=16", {"r": 16, "lora_alpha": 32, "target_modules": "all-linear"}), ("full fine-tuning", None)):
        grpo = {
            **recipe["grpo"],
            "use_vllm": False,
            "max_steps": steps,
            "save_strategy": "no",
            "report_to": "none",
            "logging_steps": 1,
            "max_completion_length": 32 if tiny else 256,
            "num_generations": 4 if tiny else 8,
            "per_device_train_batch_size": 4 if tiny else 8,
            "gradient_accumulation_steps": 1 if tiny else 4,
        }
        for key in ("vllm_mode", "vllm_server_host", "vllm_server_port"):
            grpo.pop(key, None)
        if device == "cpu":
            grpo.update({"bf16": False, "use_cpu": True})
        config = {
            **recipe,
            "model": str(model_dir),
            "output_dir": str(work / label.split()[0]),
            "lora": lora,
            "grpo": grpo,
            "rewards": [{"name": "bm25_rank", "options": {"mode": "concat"}}],
            "validation": {"every_steps": 0, "max_new_tokens": 8},
            "data": {
                **recipe["data"],
                "qa_jsonl": [
                    str(p) for p in sorted((REPO.parent / "shared" / "data" / "stackexchange-qa").glob("*/qa_pairs.jsonl"))
                ],
                "validation_size": 0,
                "limit": 64,
                **({"max_question_tokens": 64} if tiny else {}),
            },
        }
        path = work / f"{label.split()[0]}.yaml"
        path.write_text(yaml.safe_dump(config))
        child = REPO / "benchmarks" / "gpu_check.py"
        done = subprocess.run(
            [sys.executable, str(child), "--grpo-child", str(path), "--device", device],
            capture_output=True,
            text=True,
            timeout=3600,
        )
        if done.returncode != 0:
            rows.append({"run": label, "error": done.stderr[-1500:]})
            continue
        rows.append({"run": label, **json.loads(done.stdout.strip().splitlines()[-1])})
    return rows


def grpo_child(config_path: Path, device: str) -> None:
    """One GRPO run (in its own process, so memory figures are its own); prints one JSON line."""
    from transformers import TrainerCallback

    from tongsearch_qr.training import load_config, train

    times: list[float] = []
    dtypes: set[str] = set()

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()
            dtypes.update(str(p.dtype).removeprefix("torch.") for p in kwargs["model"].parameters() if p.requires_grad)

        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter() - self.started)

    reset_peak(device)
    train(load_config(config_path), callbacks=[Clock()])
    print(
        json.dumps(
            {
                "seconds_per_step": [round(t, 2) for t in times],
                "trained_weights_dtype": sorted(dtypes),
                "peak_gib": peak_memory(device),
                "nvidia_smi_mib": gpu_memory_used(),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=None, help="folder for gpu_check.json and gpu_check.md (required)")
    parser.add_argument("--tokenizer", default=None, help="folder with the tokenizer (default: the embedded model's)")
    parser.add_argument("--queries", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--grpo-steps", type=int, default=4)
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even if CUDA is available")
    parser.add_argument("--tiny", action="store_true", help="toy model sizes (the CPU test of this script)")
    parser.add_argument("--grpo-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--device", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.grpo_child:
        grpo_child(Path(args.grpo_child), args.device)
        return
    if not args.output:
        parser.error("--output is required")
    import torch

    device = "cpu" if args.cpu or not torch.cuda.is_available() else "cuda"
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    if args.tokenizer:
        tokenizer_dir = Path(args.tokenizer)
    else:
        from tongsearch_qr.models import embedded_model_dir

        tokenizer_dir = embedded_model_dir()
    report: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "device": device,
            "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
            "tiny": args.tiny,
        },
        "choices": check_choices(device),
    }
    print(json.dumps(report), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models = {kind: build_model(kind, tokenizer_dir, work, args.tiny) for kind in ("smollm2", "qwen2.5-1.5b")}
        report["throughput"] = {
            kind: throughput(folder, device, args.queries, args.new_tokens) for kind, folder in models.items()
        }
        print(json.dumps(report["throughput"]), flush=True)
        report["seeded_batching"] = seeded_batching(models["smollm2"], device)
        report["grpo"] = grpo_steps(models["qwen2.5-1.5b"], work, args.grpo_steps, args.tiny, device)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    (out / "gpu_check.md").write_text(markdown(report))
    print(markdown(report))


def markdown(report: dict[str, Any]) -> str:
    machine, choices = report["machine"], report["choices"]
    lines = [
        f"# GPU check: {machine['gpu'] or machine['device']} (torch {machine['torch']}"
        f"{', toy sizes' if machine['tiny'] else ''})",
        "",
        f"- dtype auto: {choices['dtype_auto']}; JAX imported by BM25: {choices['jax_imported_by_bm25']}; "
        f"nvidia-smi MiB after BM25: {choices['nvidia_smi_mib_after_bm25']}",
        f"- seeded sampling ({report['seeded_batching']['dtype']}): repeats "
        f"{report['seeded_batching']['repeats']}, alone = in a batch {report['seeded_batching']['alone_equals_batched']}",
        "",
        "| model | batching | batch size | tokens/batch | dtype | s | tokens/s | peak GiB |",
        "|---|---|---:|---:|---|---:|---:|---:|",
    ]
    for kind, rows in report["throughput"].items():
        for r in rows:
            lines.append(
                f"| {kind} | {r['batching']} | {r['batch_size']} | {r['max_batch_tokens']} | {r['dtype']} | "
                f"{r['seconds']} | {r['tokens_per_second']} | {r['peak_gib'] if r['peak_gib'] is not None else '-'} |"
            )
    lines += [
        "",
        "| GRPO (qwen2.5-1.5b recipe, no vLLM) | s per step | trained weights | peak GiB | nvidia-smi MiB |",
        "|---|---|---|---:|---|",
    ]
    for r in report["grpo"]:
        if "error" in r:
            lines.append(f"| {r['run']} | failed: {r['error'][-200:]!r} | | | |")
        else:
            lines.append(
                f"| {r['run']} | {r['seconds_per_step']} | {r['trained_weights_dtype']} | {r['peak_gib']} | "
                f"{r['nvidia_smi_mib']} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
