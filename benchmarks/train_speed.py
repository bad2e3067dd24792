"""GRPO training speed on CPU with the embedded model, and reward throughput, in one run:

- seconds per GRPO step: 4 prompts x 8 generations x 128 new tokens (TRL GRPOTrainer, float32, bm25_rank reward);
- completions/s of each reward on the same real StackExchange completions (the answers themselves, cut).

    python benchmarks/train_speed.py [--steps 3] [--max-completion-length 128] [--reward-completions 512]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import SHARED_DATA

from tongsearch_qr.training import data as tdata
from tongsearch_qr.training import load_config, train
from tongsearch_qr.training.rewards import make_reward


def write_config(folder: Path, steps: int, tokens: int) -> Path:
    path = folder / "speed.yaml"
    path.write_text(f"""
model: default
output_dir: {folder / "run"}
data:
  qa_jsonl: ["{SHARED_DATA}/stackexchange-qa/*/qa_pairs.jsonl"]
  negatives: 30
  validation_size: 0
  max_question_tokens: 256
rewards: [{{name: bm25_rank, options: {{mode: concat}}}}]
validation: {{every_steps: 0}}
grpo:
  max_steps: {steps}
  learning_rate: 1.0e-5
  per_device_train_batch_size: 8
  gradient_accumulation_steps: 4
  num_generations: 8
  max_completion_length: {tokens}
  temperature: 0.7
  top_p: 0.8
  top_k: 20
  repetition_penalty: 1.05
  beta: 0.0
  loss_type: dapo
  gradient_checkpointing: false
  bf16: false
  logging_steps: 1
  save_strategy: "no"
  report_to: none
  seed: 0
""")
    return path


def step_times(folder: Path, steps: int, tokens: int) -> list[float]:
    from transformers import TrainerCallback

    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter() - self.start)

    train(load_config(write_config(folder, steps, tokens)), callbacks=[Clock()])
    return times


def reward_rates(n: int) -> dict[str, float]:
    examples = tdata.from_qa_jsonl(sorted((SHARED_DATA / "stackexchange-qa").glob("*/qa_pairs.jsonl")))
    tdata.mine_negatives(examples, 30)
    group = 8
    picked = [examples[i // group % len(examples)] for i in range(n)]  # groups of 8 completions per question
    completions = [
        [{"role": "assistant", "content": " ".join(ex.positives[0].split()[: 60 + i % 40])}] for i, ex in enumerate(picked)
    ]
    columns = {
        "question": [ex.question for ex in picked],
        "positives": [ex.positives for ex in picked],
        "negatives": [ex.negatives for ex in picked],
    }
    rates = {}
    for name in ("embedding_advantage", "bm25_rank", "length_penalty", "think_format"):
        reward = make_reward(name)
        reward(completions[:group], **{k: v[:group] for k, v in columns.items()})  # load models, warm caches
        start = time.perf_counter()
        for s in range(0, n, 32):  # one TRL generation batch (4 questions x 8) per call
            reward(completions[s : s + 32], **{k: v[s : s + 32] for k, v in columns.items()})
        rates[name] = n / (time.perf_counter() - start)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--max-completion-length", type=int, default=128)
    parser.add_argument("--reward-completions", type=int, default=512)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        times = step_times(Path(tmp), args.steps, args.max_completion_length)
    rates = reward_rates(args.reward_completions)
    print(f"GRPO step, 4 prompts x 8 generations x {args.max_completion_length} tokens, SmolLM2-135M fp32 on CPU:")
    print("  " + ", ".join(f"step {i + 1}: {t:.1f} s" for i, t in enumerate(times)))
    later = times[1:] or times
    print(f"  mean after the first: {sum(later) / len(later):.1f} s/step")
    print(f"reward throughput ({args.reward_completions} completions in batches of 32):")
    for name, rate in rates.items():
        print(f"  {name:<22}{rate:>10.1f} completions/s")


if __name__ == "__main__":
    main()
