"""Resuming a run by stage (issue 33): what a stage's fingerprint holds (the model's and data files' contents, the
mode the distil filter scores in, GRPO's rollout dtype; not how a run logs or checkpoints), a finished GRPO stage
without checkpoints is not redone, and a run killed after its final checkpoint finishes from it without a step
more. Tiny runs of the model and configs of test_training_stages.py."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from test_training_stages import QUIET, adapter_tensors, write_config

from tongsearch_qr.errors import InputFormatError
from tongsearch_qr.training import load_config


def finish(config) -> list:
    """Mark every stage of ``config``'s plan finished (as a run would, in a fresh output folder); the plan."""
    from tongsearch_qr.training.trainer import DONE, plan_stages

    shutil.rmtree(config.path(config.output_dir), ignore_errors=True)
    planned = plan_stages(config, config.path(config.output_dir))
    for stage in planned:
        stage.folder.mkdir(parents=True, exist_ok=True)
        (stage.folder / DONE).write_text(json.dumps({"fingerprint": stage.fingerprint, "steps": 2}))
    return planned


def done(config) -> list[bool]:
    from tongsearch_qr.training.trainer import plan_stages

    return [s.done for s in plan_stages(config, config.path(config.output_dir))]


def test_how_a_run_logs_and_checkpoints_is_no_part_of_any_stage(tiny_model_dir, tmp_path, shared_data):
    config = load_config(write_config(tmp_path, tiny_model_dir, shared_data, ["keyterms", "dpo", "grpo"]))
    finish(config)
    logging_settings = {
        "logging_steps": 7,
        "save_steps": 3,
        "report_to": "tensorboard",
        "save_total_limit": 5,
        "save_strategy": "no",
    }
    for options in (config.keyterms.sft, config.dpo.dpo, config.grpo):  # one rule for every stage
        options.update(logging_settings)
        assert done(config) == [True, True, True]
    config.keyterms.sft["learning_rate"] = 0.5  # what a stage trains still counts
    with pytest.raises(InputFormatError, match="holds stage 1-keyterms of a run with other settings"):
        done(config)


def test_a_stage_whose_inputs_changed_is_not_taken_as_finished(tiny_model_dir, tmp_path, shared_data):
    """The top-level mode (the distil filter scores in it), GRPO's rollout dtype, and the contents of the model,
    the Q/A and mapping files and the teacher files, each changed under finished stages: an error, not a skip."""
    model, site, teacher = tmp_path / "model", tmp_path / "data" / "coffee" / "qa_pairs.jsonl", tmp_path / "teacher.json"
    shutil.copytree(tiny_model_dir, model)
    site.parent.mkdir(parents=True)
    shutil.copy(shared_data / "stackexchange-qa" / "coffee" / "qa_pairs.jsonl", site)
    teacher.write_text(json.dumps({"How fine should espresso be ground?": "Fine, like table salt."}))
    mapping = tmp_path / "mapping.json"
    mapping.write_text(json.dumps({"Why does bread go stale?": "Starch retrogradation pulls water out."}))
    config = load_config(
        write_config(
            tmp_path,
            model,
            shared_data,
            ["distil", "grpo"],
            data=f"{{qa_jsonl: ['{site}'], mapping: '{mapping}', negatives: 5, validation_size: 4, limit: 12}}",
            distil=f"{{teachers: ['{teacher}'], max_new_tokens: 6}}",
        )
    )

    def changed(change, stage: str) -> None:
        finish(config)
        assert done(config) == [True, True]
        change()
        with pytest.raises(InputFormatError, match=f"holds stage {stage} of a run with other settings"):
            done(config)

    changed(lambda: setattr(config, "mode", "concat"), "1-distil")
    changed(lambda: setattr(config, "generation_dtype", "float32"), "2-grpo")
    changed(lambda: site.write_text(site.read_text() + site.read_text().splitlines()[0] + "\n"), "1-distil")
    changed(lambda: mapping.write_text(json.dumps({"Why does bread go stale?": "Starch sets."})), "1-distil")
    changed(lambda: teacher.write_text(json.dumps({"How fine should espresso be ground?": "Fine."})), "1-distil")
    settings = json.loads((model / "config.json").read_text())
    changed(lambda: (model / "config.json").write_text(json.dumps({**settings, "rope_theta": 12345.0})), "1-distil")
    config.distil.mode = config.mode
    finish(config)
    config.mode = "replace"  # the filter's own mode set: the top-level one no longer counts for distil
    assert done(config) == [True, True]


class StepCounter:
    """A ``TrainerCallback`` that records every training step and every end of training, by stage folder."""

    def __init__(self):
        from transformers import TrainerCallback

        counter = self
        self.steps: list[tuple[str, int]] = []
        self.ends: list[tuple[str, int]] = []

        class _Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                counter.steps.append((Path(args.output_dir).name, state.global_step))

            def on_train_end(self, args, state, control, **kwargs):
                counter.ends.append((Path(args.output_dir).name, state.global_step))

        self.callback = _Callback()


def test_rerunning_a_finished_run_without_checkpoints_trains_nothing(tiny_model_dir, tmp_path, shared_data, caplog):
    from tongsearch_qr.training import train

    grpo = (
        "{max_steps: 2, learning_rate: 1.0e-4, per_device_train_batch_size: 4, num_generations: 2, "
        "max_completion_length: 6, beta: 0.0, gradient_checkpointing: false, bf16: false, logging_steps: 1, "
        "save_strategy: 'no', report_to: none, seed: 0}"
    )
    config = load_config(write_config(tmp_path, tiny_model_dir, shared_data, ["grpo"], grpo=grpo, validation=QUIET))
    first = StepCounter()
    train(config, callbacks=[first.callback])
    assert first.steps == [("1-grpo", 1), ("1-grpo", 2)]
    marker = tmp_path / "run" / "stages" / "1-grpo" / "done.json"
    assert json.loads(marker.read_text())["steps"] == 2 and not list(marker.parent.glob("checkpoint-*"))
    written, mtime = marker.read_text(), marker.stat().st_mtime_ns
    again = StepCounter()
    with caplog.at_level(logging.INFO, logger="tongsearch_qr.training"):
        train(config, callbacks=[again.callback])
    assert again.steps == [] and again.ends == []
    assert "stage 1-grpo: finished by an earlier run, skipped" in caplog.text
    assert marker.read_text() == written and marker.stat().st_mtime_ns == mtime


def test_a_run_killed_after_its_final_checkpoint_finishes_from_it_without_another_step(tiny_model_dir, tmp_path, shared_data):
    """The state a kill between a stage's final checkpoint and its ``done.json`` leaves (no model, no marker) is
    finished from that checkpoint: the same weights, the closing validation, no step N+1; for GRPO and SFT."""
    from tongsearch_qr.training import train

    config = load_config(write_config(tmp_path, tiny_model_dir, shared_data, ["keyterms", "grpo"], validation=QUIET))
    train(config)
    run = tmp_path / "run"
    trained = adapter_tensors(run / "final")
    keyterms, grpo = run / "stages" / "1-keyterms", run / "stages" / "2-grpo"
    for stage in (grpo, keyterms):  # GRPO killed after its checkpoint-2, then the key-term stage after its own
        (stage / "done.json").unlink()
        shutil.rmtree(stage / "model")
        counter = StepCounter()
        train(config, callbacks=[counter.callback])
        assert (stage.name, 3) not in counter.steps and not (stage / "checkpoint-3").exists()
        assert (stage.name, 2) in counter.ends  # the stage's callbacks saw its end: the closing validation ran
        assert json.loads((stage / "done.json").read_text())["steps"] == 2 and (stage / "model").is_dir()
        if stage == grpo:
            assert counter.steps == []
            found = adapter_tensors(run / "final")
            assert all((found[name] - trained[name]).abs().max() == 0 for name in trained)  # checkpoint-2's weights
        else:
            assert counter.steps == [("2-grpo", 1), ("2-grpo", 2)]  # the stage after it runs again
    steps = [r for r in (run / "log.csv").read_text().splitlines() if r.startswith("2-grpo,2,val/reward,")]
    assert len(steps) == 1
