"""Runs of the training stages on a tiny randomly initialised model of the embedded architecture (seconds per
stage): distillation targets, precision, resume by stage (SIGKILL and rerun), DPO's reference, GRPO continued,
paths, and several processes under ``accelerate launch``."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tongsearch_qr.errors import InputFormatError
from tongsearch_qr.training import data as tdata
from tongsearch_qr.training import load_config

TEACHER_7B = "tongsearch-qr/TongSearch-QR-7B_reasoned_BRIGHT_queries.json"
TEACHER_15B = "tongsearch-qr/TongSearch-QR-1.5B_reasoned_BRIGHT_queries.json"
QUIET = "{every_steps: 0, max_new_tokens: 2, modes: [weighted:3], pool: source}"  # validation at start and end
SFT = "{max_steps: 2, per_device_train_batch_size: 4, learning_rate: 1.0e-3, save_steps: 1, logging_steps: 1}"


def write_config(folder: Path, model: Path, shared_data: Path, stages: list[str], **sections: str) -> Path:
    """A tiny run: coffee Q/A (+ BRIGHT biology), LoRA, weighted:3, every stage a step or two."""
    text = {
        "model": str(model),
        "output_dir": "run",
        "stages": f"[{', '.join(stages)}]",
        "mode": "weighted:3",
        "prompt": '{user: "Write a list of keywords for the following query: {question}", system: null}',
        "lora": "{r: 4, lora_alpha: 8, lora_dropout: 0.0, target_modules: all-linear}",
        "data": f"{{qa_jsonl: ['{shared_data}/stackexchange-qa/coffee/qa_pairs.jsonl'], negatives: 5, "
        f"validation_size: 4, max_question_tokens: 48, limit: 12, "
        f"bright: {{tasks: [biology], source: '{shared_data}/bright', validation_size: 2}}}}",
        "rewards": "[{name: bm25_rank, options: {mode: weighted:3, metric: ndcg, pool: source}}]",
        "validation": "{every_steps: 2, max_new_tokens: 6, modes: [weighted:3], pool: source, sampling_seeds: [1]}",
        "keyterms": f"{{max_new_tokens: 6, sft: {SFT}}}",
        "distil": f"{{teachers: ['{shared_data}/{TEACHER_7B}', '{shared_data}/{TEACHER_15B}'], max_new_tokens: 6, sft: {SFT}}}",
        "rft": "{rounds: 1, samples: 2, questions: 4, max_new_tokens: 6, margin: -1.0, "
        "sft: {max_steps: 2, per_device_train_batch_size: 2, learning_rate: 1.0e-3}}",
        "dpo": "{rounds: 2, samples: 2, questions: 4, max_new_tokens: 6, margin: -1.0, "
        "dpo: {max_steps: 1, per_device_train_batch_size: 2, learning_rate: 1.0e-3, logging_steps: 1}}",
        "grpo": "{max_steps: 2, learning_rate: 1.0e-4, per_device_train_batch_size: 4, gradient_accumulation_steps: 1, "
        "num_generations: 2, max_completion_length: 6, beta: 0.0, loss_type: dapo, gradient_checkpointing: false, "
        "bf16: false, logging_steps: 1, save_strategy: steps, save_steps: 1, report_to: none, seed: 0}",
    }
    text.update(sections)
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "tiny.yaml"
    config.write_text("".join(f"{key}: {value}\n" for key, value in text.items() if value is not None))
    return config


def log_rows(run: Path) -> list[dict[str, str]]:
    with (run / "log.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def adapter_tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "adapter_model.safetensors")


# --- distillation targets ------------------------------------------------------------------------------------

ANSWERS = {
    "bio": [
        "Phototaxis: insects steer by the Moon, and a lamp breaks their compass heading.",
        "Osmosis: sea water is hypertonic, so kidneys lose water to excrete the salt.",
        "Leaves lose chlorophyll in autumn, revealing carotenoids.",
    ]
}


def test_terms_targets_add_the_teachers_answer_vocabulary_to_the_key_terms():
    from tongsearch_qr.training.teachers import TargetMaker

    ex = tdata.TrainingExample("Why are insects drawn to a lamp at night?", [ANSWERS["bio"][0]], source="bio")
    maker = TargetMaker("terms", corpus=ANSWERS["bio"], pools=ANSWERS, mode="weighted:3", question_terms=5, teacher_terms=3)
    teacher = "Many insects use the Moon as a compass (transverse orientation); phototaxis near lamps breaks it."
    # key terms of the question found in the answer, then the teacher's answer words the question lacks, rarest first
    assert maker.of(ex, ex.question, teacher) == "insects, lamp, Moon, compass, phototaxis"
    assert maker.of(ex, ex.question, None) == "insects, lamp"
    assert maker.gain(ex, ex.question, "Moon, compass, phototaxis") >= 0


def test_text_targets_keep_the_teachers_most_useful_sentences_in_order_within_the_budget():
    from tongsearch_qr.training.teachers import TargetMaker, sentences

    teacher = (
        "### Essential problem\nThe question is about **drinking** sea water.\n\n1. **Osmosis**: sea water "
        "is hypertonic. Kidneys must excrete the salt.\n- Autumn leaves are unrelated here."
    )
    assert sentences(teacher) == [
        "Essential problem",
        "The question is about drinking sea water.",
        "Osmosis: sea water is hypertonic.",
        "Kidneys must excrete the salt.",
        "Autumn leaves are unrelated here.",
    ]
    ex = tdata.TrainingExample("Can people drink sea water?", [ANSWERS["bio"][1]], source="bio")
    maker = TargetMaker("text", corpus=ANSWERS["bio"], pools=ANSWERS, mode="replace", max_words=10)
    assert maker.of(ex, ex.question, teacher) == "Osmosis: sea water is hypertonic. Kidneys must excrete the salt."


def test_distil_rows_filter_teachers_that_lower_the_rank_and_fall_back_to_key_terms(tmp_path):
    from tongsearch_qr import PromptTemplate
    from tongsearch_qr.training.teachers import TargetMaker, distil_rows

    examples = [
        tdata.TrainingExample("Can people drink sea water?", [ANSWERS["bio"][1]], source="bio"),
        tdata.TrainingExample("Why do leaves change colour?", [ANSWERS["bio"][2]], source="bio"),
    ]
    helpful, harmful = tmp_path / "a.json", tmp_path / "b.json"
    helpful.write_text(json.dumps({examples[0].question: "Kidneys and osmosis decide it."}))
    harmful.write_text(json.dumps({examples[0].question: "Insects, the Moon, a lamp, phototaxis, compass, insects."}))
    template = PromptTemplate(user="Keywords: {question}", system=None)
    maker = TargetMaker("text", corpus=ANSWERS["bio"], pools=ANSWERS, mode="replace")
    rows, stats = distil_rows(examples, [ex.question for ex in examples], [helpful, harmful], maker, template, filter_gain=True)
    assert [r["completion"][0]["content"] for r in rows] == ["Kidneys and osmosis decide it."]
    assert stats["distil/teacher_texts"] == 2 and stats["distil/dropped_by_gain"] == 1
    kept, _ = distil_rows(examples, [ex.question for ex in examples], [helpful, harmful], maker, template, filter_gain=False)
    assert len(kept) == 2
    terms = TargetMaker("terms", corpus=ANSWERS["bio"], pools=ANSWERS, mode="weighted:3")
    rows, stats = distil_rows(examples, [ex.question for ex in examples], [helpful], terms, template, filter_gain=True)
    assert stats["distil/key_terms_only"] == 1 and rows[1]["completion"][0]["content"] == "leaves"
    unrelated = tmp_path / "c.json"
    unrelated.write_text(json.dumps({"another question": "text"}))
    with pytest.raises(InputFormatError, match="no training question has a teacher text"):
        distil_rows(examples, [ex.question for ex in examples], [unrelated], maker, template, filter_gain=True)
    unrelated.write_text("[1, 2]")
    with pytest.raises(InputFormatError, match="maps each question text"):
        distil_rows(examples, [ex.question for ex in examples], [unrelated], maker, template, filter_gain=True)


# --- configs, paths and stage planning ---------------------------------------------------------------------------


def test_model_paths_are_read_from_the_config_file_and_hub_ids_left_alone(tmp_path, monkeypatch):
    from tongsearch_qr.training.trainer import save_reasoner_settings

    (tmp_path / "cfg" / "models" / "mine").mkdir(parents=True)
    cfg = tmp_path / "cfg" / "c.yaml"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for model, spec in (
        ("models/mine", str(tmp_path / "cfg" / "models" / "mine")),
        ("Qwen/Qwen2.5-1.5B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct"),
        ("base", "base"),
        ("./not-yet", str(tmp_path / "cfg" / "not-yet")),
    ):
        cfg.write_text(f"model: {model}\ndata: {{mapping: m.json}}\nlora: {{r: 4}}\n")
        config = load_config(cfg)
        assert config.model_spec() == spec
        final = tmp_path / "final"
        final.mkdir(exist_ok=True)
        (final / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "models/mine"}))
        save_reasoner_settings(final, config)  # the adapter's base resolves from anywhere
        assert json.loads((final / "adapter_config.json").read_text())["base_model_name_or_path"] == spec


def test_changed_settings_under_a_finished_stage_are_an_error_not_a_silent_retrain(tiny_model_dir, tmp_path, shared_data):
    from tongsearch_qr.training.trainer import DONE, plan_stages

    cfg = write_config(tmp_path, tiny_model_dir, shared_data, ["keyterms", "grpo"])
    config = load_config(cfg)
    output = config.path(config.output_dir)
    planned = plan_stages(config, output)
    assert [(s.name, s.done) for s in planned] == [("1-keyterms", False), ("2-grpo", False)]
    for stage, steps in zip(planned, (2, 2)):
        stage.folder.mkdir(parents=True)
        (stage.folder / DONE).write_text(json.dumps({"fingerprint": stage.fingerprint, "steps": steps}))
    assert [s.done for s in plan_stages(config, output)] == [True, True]
    assert [s.done for s in plan_stages(config, output, max_steps=5)] == [True, False]  # GRPO continues
    config.validation.every_steps = 7  # validation does not change what a stage trains
    assert [s.done for s in plan_stages(config, output)] == [True, True]
    config.keyterms.terms = 3
    with pytest.raises(InputFormatError, match="holds stage 1-keyterms of a run with other settings"):
        plan_stages(config, output)


# --- precision -----------------------------------------------------------------------------------------------------


def _one_small_step(tiny_model_dir: Path, tmp_path: Path, shared_data: Path, weights: str, bf16: bool) -> float:
    """The fraction of weights one SFT step at lr 1e-6 changes (full fine-tuning)."""
    from tongsearch_qr.training.fine_tuning import fine_tune
    from tongsearch_qr.training.policy import load_policy

    cfg = write_config(
        tmp_path / f"{weights}-{bf16}", tiny_model_dir, shared_data, ["keyterms"], lora=None, weights_dtype=weights
    )
    config = load_config(cfg)
    model, tokenizer = load_policy(config)
    before = {n: p.detach().float().clone() for n, p in model.named_parameters()}
    rows = [
        {
            "prompt": [{"role": "user", "content": f"question {i}"}],
            "completion": [{"role": "assistant", "content": "some key terms"}],
        }
        for i in range(4)
    ]
    options = {
        "max_steps": 1,
        "learning_rate": 1e-6,
        "per_device_train_batch_size": 4,
        "bf16": bf16,
        "use_cpu": True,
        "save_strategy": "no",
        "lr_scheduler_type": "constant",
    }
    model, _ = fine_tune(model, tokenizer, rows, "sft", options, tmp_path / f"sft-{weights}-{bf16}", None, where="t")
    changed = total = 0
    for name, param in model.named_parameters():
        if "layers" in name:  # the transformer blocks' weights (magnitude ~0.02)
            changed += int((param.detach().float() != before[name]).sum())
            total += param.numel()
    return changed / total


def test_bf16_training_keeps_float32_master_weights_so_a_tiny_step_moves_them(tiny_model_dir, tmp_path, shared_data, monkeypatch):
    import torch

    from tongsearch_qr.training import trl_configs
    from tongsearch_qr.training.policy import load_policy

    monkeypatch.setattr(trl_configs, "machine_precision", lambda options: options)  # autocast even where bf16 is emulated

    cfg = write_config(
        tmp_path,
        tiny_model_dir,
        shared_data,
        ["grpo"],
        lora=None,
        grpo="{bf16: true, use_cpu: true, max_steps: 1, num_generations: 2, per_device_train_batch_size: 2}",
    )
    assert {p.dtype for p in load_policy(load_config(cfg))[0].parameters()} == {torch.float32}
    fp32 = _one_small_step(tiny_model_dir, tmp_path, shared_data, "float32", bf16=False)
    autocast = _one_small_step(tiny_model_dir, tmp_path, shared_data, "float32", bf16=True)
    pure = _one_small_step(tiny_model_dir, tmp_path, shared_data, "bfloat16", bf16=True)
    assert fp32 > 0.9 and autocast > 0.9  # a 1e-6 Adam step moves (nearly) every weight
    assert pure < 0.2  # bf16 weights round most of the step away: why it is opt-in only


def test_generation_runs_in_the_dtype_inference_would_use_here(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from tongsearch_qr.backends.transformers_backend import pick_dtype
    from tongsearch_qr.training.generation import generation_model

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with generation_model(model, "float32") as same:
        assert same is model
    with generation_model(model, "auto") as generator:
        assert next(generator.parameters()).dtype == pick_dtype("auto", "cpu")
    with generation_model(model, "bfloat16") as generator:
        assert generator is not model and next(generator.parameters()).dtype == torch.bfloat16
    assert next(model.parameters()).dtype == torch.float32  # the trained weights are untouched


# --- runs ---------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_grpo_run_logs_each_point_once_continues_to_more_steps_and_runs_through_eval(
    tiny_model_dir, tmp_path, shared_data, caplog
):
    import re

    from tongsearch_qr import GenerationParams, QRReasoner
    from tongsearch_qr.cli import main
    from tongsearch_qr.training import train

    config = load_config(write_config(tmp_path, tiny_model_dir, shared_data, ["grpo"], lora=None, grpo_questions="hard"))
    with caplog.at_level(logging.INFO, logger="tongsearch_qr.training"):
        final = train(config)
    hard, total = map(int, re.search(r"1-grpo: (\d+) of (\d+) training questions are hard", caplog.text).groups())
    assert 0 < hard < total  # trained only on questions the question alone does not already answer best
    run = tmp_path / "run"
    stage = run / "stages" / "1-grpo"
    assert (stage / "checkpoint-2" / "trainer_state.json").is_file() and (run / "log.png").is_file()
    logged = [(r["stage"], r["step"], r["name"]) for r in log_rows(run)]
    assert len(logged) == len(set(logged))
    for step in ("0", "2"):  # validation before and after training
        for name in ("val/reward", "val/ndcg@10/weighted:3", "val/ndcg@10/weighted:3/sampled", "val/ndcg@10/original"):
            assert ("1-grpo", step, name) in logged
    assert ("1-grpo", "1", "loss") in logged and ("1-grpo", "2", "reward") in logged

    assert train(config, max_steps=3) == final  # a finished GRPO stage continues from its last checkpoint
    assert json.loads((stage / "checkpoint-3" / "trainer_state.json").read_text())["global_step"] == 3
    logged = [(r["stage"], r["step"], r["name"]) for r in log_rows(run)]
    assert len(logged) == len(set(logged)) and ("1-grpo", "3", "val/reward") in logged

    reasoner = QRReasoner(final, generation=GenerationParams.greedy(4))
    assert reasoner.mode.name == "weighted:3" and len(reasoner.reason(["How fine should espresso be ground?"])) == 1
    out = tmp_path / "eval"
    assert (
        main(
            [
                "eval",
                "--dataset",
                f"beir:{run / 'validation'}",
                "--model",
                str(final),
                "--greedy",
                "--max-new-tokens",
                "4",
                "--baseline",
                "--output",
                str(out),
                "--no-cache",
            ]
        )
        == 0
    )
    assert 0 <= next(iter(json.loads((out / "metrics.json").read_text()).values()))["NDCG@10"] <= 1


def test_resume_errors_come_before_any_model_loading(tmp_path, shared_data):
    from tongsearch_qr.training import train

    config = load_config(write_config(tmp_path, tmp_path / "no-model-here", shared_data, ["grpo"]))
    with pytest.raises(InputFormatError, match="no checkpoint"):
        train(config, resume="latest")
    with pytest.raises(InputFormatError, match="does not exist"):
        train(config, resume=str(tmp_path / "nowhere"))
    config.stages = ["keyterms"]
    with pytest.raises(InputFormatError, match="resumes the grpo stage"):
        train(config, resume=str(tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("full", [False, True], ids=["lora", "full"])
def test_dpo_rounds_prefer_against_the_policy_as_each_round_starts(tiny_model_dir, tmp_path, shared_data, full):
    """With the reference equal to the policy, a round's first DPO loss is exactly ln 2: in round 2 too, after
    round 1 moved the policy (a reference left at the untrained model would not give ln 2 there)."""
    from tongsearch_qr import GenerationParams, QRReasoner
    from tongsearch_qr.training import train

    final = train(
        load_config(
            write_config(
                tmp_path,
                tiny_model_dir,
                shared_data,
                ["dpo"],
                lora=None if full else "{r: 4, lora_alpha: 8, target_modules: all-linear}",
            )
        )
    )
    losses = {r["step"]: float(r["value"]) for r in log_rows(tmp_path / "run") if r["name"] == "dpo/train_loss"}
    assert set(losses) == {"1", "2"}
    assert losses["1"] == pytest.approx(math.log(2), abs=1e-4) and losses["2"] == pytest.approx(math.log(2), abs=1e-4)
    adapter = final / "adapter_config.json"
    assert full != adapter.is_file() and not (final / "ref").exists()  # TRL's frozen reference is not saved
    reasoner = QRReasoner(final, generation=GenerationParams.greedy(4))
    assert len(reasoner.reason(["How fine should espresso be ground?"])) == 1


@pytest.mark.slow
@pytest.mark.parametrize("full", [False, True], ids=["lora", "full"])
def test_grpo_kl_is_to_the_model_the_stage_starts_from(tiny_model_dir, tmp_path, shared_data, full):
    """With beta > 0, GRPO's reference is the policy as the stage starts (here after a key-term stage that moved
    it): the first step's KL is 0. A reference left at the untrained model would give a KL above 0."""
    from tongsearch_qr import QRReasoner
    from tongsearch_qr.training import train

    grpo = (
        "{max_steps: 1, learning_rate: 1.0e-4, per_device_train_batch_size: 4, gradient_accumulation_steps: 1, "
        "num_generations: 2, max_completion_length: 6, beta: 0.1, loss_type: dapo, gradient_checkpointing: false, "
        "bf16: false, logging_steps: 1, save_strategy: 'no', report_to: none, seed: 0}"
    )
    final = train(
        load_config(
            write_config(
                tmp_path,
                tiny_model_dir,
                shared_data,
                ["keyterms", "grpo"],
                grpo=grpo,
                validation=QUIET,
                lora=None if full else "{r: 4, lora_alpha: 8, lora_dropout: 0.0, target_modules: all-linear}",
            )
        )
    )
    kl = [float(r["value"]) for r in log_rows(tmp_path / "run") if r["stage"] == "2-grpo" and r["name"] == "kl"]
    assert kl == [pytest.approx(0.0, abs=1e-6)]
    assert not (final / "ref").exists() and QRReasoner(final).mode.name == "weighted:3"


def _run(config: Path, cwd: Path, *, processes: int = 1, kill_when: Path | None = None) -> subprocess.CompletedProcess:
    """``tongsearch-qr train`` in one process, or in ``processes`` CPU processes through ``torchrun`` (accelerate's
    own CPU launcher starts one process unless given an MPI hostfile)."""
    launcher = (
        [sys.executable]
        if processes == 1
        else [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node", str(processes)]
    )
    command = [*launcher, "-m", "tongsearch_qr.cli", "train", "--config", str(config)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if kill_when is None:
        return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=1200, env=env)
    process = subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
    )
    deadline = time.monotonic() + 1200
    while not kill_when.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    output = process.communicate()[0]
    assert kill_when.exists(), output[-3000:]
    return subprocess.CompletedProcess(command, -9, output, "")


@pytest.mark.slow
@pytest.mark.parametrize("kill_in", ["1-distil/checkpoint-1", "3-grpo/checkpoint-1"])
def test_sigkill_mid_stage_then_rerun_skips_finished_stages_and_ends_with_the_same_weights(
    tiny_model_dir, tmp_path, shared_data, kill_in
):
    stages = ["distil", "rft", "grpo"]
    whole = write_config(tmp_path / "whole", tiny_model_dir, shared_data, stages, validation=QUIET)
    done = _run(whole, whole.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    cut = write_config(tmp_path / "cut", tiny_model_dir, shared_data, stages, validation=QUIET)
    run = cut.parent / "run"
    stage, checkpoint = kill_in.split("/")
    _run(cut, cut.parent, kill_when=run / "stages" / stage / checkpoint / "trainer_state.json")
    markers = {p: p.stat().st_mtime_ns for p in (run / "stages").glob("*/done.json")}
    again = _run(cut, cut.parent)
    assert again.returncode == 0, again.stderr[-3000:]
    assert all(p.stat().st_mtime_ns == mtime for p, mtime in markers.items())  # finished stages not redone
    for p in markers:
        assert f"stage {p.parent.name}: finished by an earlier run, skipped" in again.stderr
    assert f"resuming from {run / 'stages' / stage}" in again.stderr
    expected, found = adapter_tensors(whole.parent / "run" / "final"), adapter_tensors(run / "final")
    assert expected.keys() == found.keys()
    for name in expected:
        assert (expected[name] - found[name]).abs().max() <= 1e-6, name
    logged = [(r["stage"], r["step"], r["name"]) for r in log_rows(run)]
    assert len(logged) == len(set(logged))


@pytest.mark.slow
def test_two_processes_run_every_stage_log_each_point_once_and_save_a_loadable_model(tiny_model_dir, tmp_path, shared_data):
    from tongsearch_qr import GenerationParams, QRReasoner

    config = write_config(tmp_path, tiny_model_dir, shared_data, ["keyterms", "distil", "rft", "dpo", "grpo"])
    done = _run(config, tmp_path, processes=2)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "training in 2 processes" in done.stderr
    run = tmp_path / "run"
    logged = [(r["stage"], r["step"], r["name"]) for r in log_rows(run)]
    assert len(logged) == len(set(logged))
    for stage, step in (("1-keyterms", "0"), ("1-keyterms", "2"), ("3-rft", "1"), ("4-dpo", "2"), ("5-grpo", "2")):
        assert (stage, step, "val/ndcg@10/weighted:3") in logged, (stage, step)
    assert done.stdout.count("[5-grpo step 2]") == 1  # validated once per point, by every process, printed once
    reasoner = QRReasoner(run / "final", generation=GenerationParams.greedy(4))
    assert len(reasoner.reason(["How fine should espresso be ground?"])) == 1


@pytest.mark.slow
def test_accelerate_launch_on_cpus_finishes_and_says_it_ran_one_process(tiny_model_dir, tmp_path, shared_data):
    """``accelerate launch --cpu --num_processes 2`` (accelerate's CPU launcher without an MPI hostfile) starts
    one process: the run finishes, logs each point once, and the log says how to get two."""
    from tongsearch_qr import QRReasoner

    config = write_config(tmp_path, tiny_model_dir, shared_data, ["keyterms", "distil", "rft", "dpo", "grpo"], validation=QUIET)
    command = [
        str(Path(sys.executable).parent / "accelerate"),
        "launch",
        "--cpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "tongsearch_qr.cli",
        "train",
        "--config",
        str(config),
    ]
    done = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=1200, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "this is the only process" in done.stderr and "torchrun --nproc_per_node N" in done.stderr
    logged = [(r["stage"], r["step"], r["name"]) for r in log_rows(tmp_path / "run")]
    assert len(logged) == len(set(logged)) and ("5-grpo", "2", "val/reward") in logged
    assert QRReasoner(tmp_path / "run" / "final").mode.name == "weighted:3"


@pytest.mark.slow
def test_two_processes_save_what_one_process_saves(tiny_model_dir, tmp_path, shared_data):
    """Supervised and rejection-sampling stages in two processes with half the batch per process: the same
    batches, the same samples (seeded per row, split across the processes; float32 generation, which does not
    depend on batching), the same weights as one process."""
    sections = {
        "validation": QUIET,
        "keyterms": "{max_new_tokens: 6, sft: {max_steps: 2, per_device_train_batch_size: "
        "PER, learning_rate: 1.0e-3, save_strategy: 'no', seed: 0}}",
        "rft": "{rounds: 1, samples: 2, questions: 4, max_new_tokens: 6, margin: -1.0, "
        "sft: {max_steps: 1, per_device_train_batch_size: PER, learning_rate: 1.0e-3, seed: 0}}",
    }
    finals = []
    for processes, per in ((1, 4), (2, 2)):
        folder = tmp_path / f"p{processes}"
        config = write_config(
            folder,
            tiny_model_dir,
            shared_data,
            ["keyterms", "rft"],
            generation_dtype="float32",
            **{k: v.replace("PER", str(per)) if v else v for k, v in sections.items()},
        )
        done = _run(config, folder, processes=processes)
        assert done.returncode == 0, done.stderr[-4000:]
        finals.append(adapter_tensors(folder / "run" / "final"))
    rows = [
        (tmp_path / f"p{n}" / "run" / "stages" / "2-rft" / "round-1" / "rows.jsonl").read_text().splitlines()[1:] for n in (1, 2)
    ]  # (after the line of statistics, which holds timings)
    assert rows[0] == rows[1] and rows[0]
    for name in finals[0]:
        assert (finals[0][name] - finals[1][name]).abs().max() <= 1e-5, name
