"""Training module, the parts that need no training run: rewards on hand-computed cases (nDCG against
pytrec_eval), data builders on the real StackExchange Q/A and BRIGHT data, validation, configs (the GPU recipes
dry-run here) and bad inputs. Runs of the stages are in test_training_stages.py."""

from __future__ import annotations

import json
import math
import platform
from pathlib import Path

import numpy as np
import pytest

from tongsearch_qr.errors import InputFormatError
from tongsearch_qr.training import CONFIG_DIR, config_path, dry_run, load_config
from tongsearch_qr.training import data as tdata
from tongsearch_qr.training.prepare import build_rewards
from tongsearch_qr.training.rewards import (
    BM25Rank,
    EmbeddingAdvantage,
    LengthPenalty,
    ThinkFormat,
    checked,
    make_reward,
    ndcg_at,
    reasoning_of,
    reciprocal_rank,
)
from tongsearch_qr.training.trl_configs import grpo_config


def msg(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


class TableEmbedder:
    """Fixed unit vectors per text, so the reward's arithmetic can be checked by hand."""

    def __init__(self, table: dict[str, list[float]]):
        self.table = {k: np.asarray(v, dtype=np.float32) / np.linalg.norm(v) for k, v in table.items()}
        self.calls: list[list[str]] = []

    def encode(self, texts, **_):
        self.calls.append(list(texts))
        return np.stack([self.table[t] for t in texts]) if texts else np.zeros((0, 2))


def test_embedding_advantage_by_hand():
    emb = TableEmbedder({"q": [1, 0], "doc a": [0, 1], "doc b": [1, 1], "good": [0, 1], "bad": [1, 0]})
    reward = EmbeddingAdvantage(emb)
    # good: cos(good,a)=1, cos(good,b)=1/sqrt2; question: cos(q,a)=0, cos(q,b)=1/sqrt2 -> 10*mean(1, 0) = 5
    # bad = the question's direction -> 0; empty -> -1
    out = reward([msg("good"), msg("bad"), msg("  ")], question=["q"] * 3, positives=[["doc a", "doc b"]] * 3)
    assert out == pytest.approx([5.0, 0.0, -1.0], abs=1e-6)
    # one encode call for the fixed texts and one for the whole group's completions; fixed texts remembered
    reward([msg("good")], question=["q"], positives=[["doc a", "doc b"]])
    assert emb.calls[-1] == ["good"]


def test_embedding_advantage_think_mode_needs_answer_tags():
    emb = TableEmbedder({"q": [1, 0], "d": [0, 1], "good": [0, 1]})
    reward = EmbeddingAdvantage(emb, think=True)
    out = reward([msg("<think>hm</think><answer>good</answer>"), msg("good")], question=["q", "q"], positives=[["d"], ["d"]])
    assert out == pytest.approx([10.0, -1.0])


@pytest.mark.slow
def test_embedding_advantage_with_the_real_default_embedder():
    reward = EmbeddingAdvantage()
    answer = "Sea water is hypertonic: the kidneys must excrete more water than was drunk to remove the salt."
    out = reward(
        [
            msg("Kidneys cannot excrete salt at sea-water concentration, so drinking it dehydrates."),
            msg("The football match ended in a draw after extra time."),
        ],
        question=["Why can't humans drink sea water?"] * 2,
        positives=[[answer]] * 2,
    )
    assert out[0] > 0 > out[1]


POOL = {
    "question": "how do I grind coffee beans",
    "positives": ["use a burr grinder for even coffee grounds"],
    "negatives": ["how do I grind coffee beans without noise at night", "tea leaves steep in hot water"],
}


def test_bm25_rank_by_hand():
    # BM25 over the pool: the question alone ranks the near-duplicate negative first -> RR 1/2;
    # "burr grinder even grounds" puts the positive first -> RR 1 -> gain 0.5; an unrelated text finds nothing.
    reward = BM25Rank(mode="replace", metric="rr", gain=True)
    columns = {k: [v] * 3 for k, v in POOL.items()}
    out = reward([msg("burr grinder even grounds"), msg("zebra"), msg("")], **columns)
    assert out == pytest.approx([0.5, -0.5, -1.0])
    plain = BM25Rank(mode="replace", metric="rr", gain=False)
    assert plain([msg("burr grinder even grounds")], **{k: [v] for k, v in POOL.items()}) == [1.0]
    ndcg = BM25Rank(mode="replace", metric="ndcg", gain=False)
    assert ndcg.score([POOL["question"]], **POOL) == pytest.approx([1 / math.log2(3)])


def test_keyword_rewards_count_each_term_once(tmp_path):
    # "night" (only in a negative) said four times outranks the positive's "grinder"; said once, it does not
    columns = {k: [v] * 2 for k, v in POOL.items()}
    completions = [msg("grinder, night, night, night, night"), msg("grinder, night")]
    plain, keywords = (BM25Rank(mode="replace", metric="rr", gain=False, keywords=k) for k in (False, True))
    assert plain(completions, **columns) == [0.5, 1.0]
    assert keywords(completions, **columns) == [1.0, 1.0]
    assert reasoning_of(completions[0], think=False, keywords=True) == "grinder, night"
    assert reasoning_of(msg("<think>x</think><answer>a, b, a</answer>"), think=True, keywords=True) == "a, b"
    assert reasoning_of(msg(" , \n"), think=False, keywords=True) is None
    cfg = tmp_path / "k.yaml"
    cfg.write_text(
        "data: {mapping: m.json}\nprompt: {user: 'Keywords: {question}', keywords: true}\nrewards: [{name: bm25_rank}]\n"
    )
    config = load_config(cfg)
    assert config.template().keywords and build_rewards(config)[0][0].inner.keywords


def test_rank_metrics_by_hand():
    assert reciprocal_rank([False, False, True]) == pytest.approx(1 / 3)
    assert reciprocal_rank([False]) == 0.0
    assert ndcg_at([False, True, True], 10) == pytest.approx((1 / math.log2(3) + 1 / math.log2(4)) / (1 + 1 / math.log2(3)))


@pytest.mark.parametrize(
    "ranked, relevant",
    [
        ([True], 2),
        ([False, True, False], 3),
        ([True, True], 2),
        ([False] * 12 + [True], 1),
        ([False, False, True, False, True], 4),
    ],
)
def test_ndcg_reward_agrees_with_pytrec_eval_when_positives_are_not_all_retrieved(ranked, relevant):
    import pytrec_eval

    run = {"q": {f"d{i}": float(100 - i) for i in range(len(ranked))}}
    qrels = {"q": {f"d{i}": 1 for i, rel in enumerate(ranked) if rel}}
    qrels["q"].update({f"missing{j}": 1 for j in range(relevant - sum(ranked))})
    expected = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run)["q"]["ndcg_cut_10"]
    assert ndcg_at(ranked, 10, relevant=relevant) == pytest.approx(expected)


def test_bm25_rank_ndcg_counts_the_positives_it_did_not_retrieve():
    """One of two positives at rank 1 over a corpus, the other beyond the depth: 0.613 (pytrec_eval), not 1."""
    corpus = ["burr grinders give even grounds", "blade grinders chop unevenly", "milk frothing for lattes"]
    reward = BM25Rank(mode="replace", metric="ndcg", gain=False, corpus=corpus, depth=1)
    out = reward([msg("burr even")], question=["which grinder"], positives=[[corpus[0], corpus[2]]])
    assert out == pytest.approx([1 / (1 + 1 / math.log2(3))])


def test_bm25_rank_over_each_questions_source():
    pools = {
        "coffee": ["burr grinders give even grounds", "blade grinders chop unevenly"],
        "tea": ["green tea steeps at 80 degrees", "black tea takes boiling water"],
    }
    reward = BM25Rank(mode="replace", metric="rr", gain=False, corpus=pools)
    out = reward(
        [msg("even grounds"), msg("boiling water")],
        question=["grind?", "brew?"],
        positives=[[pools["coffee"][0]], [pools["tea"][1]]],
        source=["coffee", "tea"],
    )
    assert out == [1.0, 1.0]
    with pytest.raises(ValueError, match="needs the dataset's source column"):
        reward([msg("x")], question=["q"], positives=[["p"]])
    with pytest.raises(ValueError, match="no corpus for source 'wine'"):
        reward([msg("x")], question=["q"], positives=[[pools["tea"][0]]], source=["wine"])


def test_hard_questions_are_judged_by_the_rewards_pool_and_metric(tmp_path):
    """With an nDCG gain in each question's source pool (cpu-distil's reward), a question its site alone already
    answers first is not hard even where another site's near-copy outranks it over every answer (reciprocal rank
    over the whole corpus called it hard), and a two-positive question with one positive first is."""
    from types import SimpleNamespace

    from tongsearch_qr.prompts import PromptTemplate
    from tongsearch_qr.training.prepare import Prepared
    from tongsearch_qr.training.sampled import hard_questions

    pools = {
        "coffee": ["a burr grinder grinds coffee beans evenly", "milk frothing makes lattes creamy"],
        "tea": [
            "burr grinder burr grinder grinds coffee beans grind grind",
            "green tea steeping temperature guide: 80 degrees",
            "oolong leaves unfurl slowly in water",
        ],
    }
    first_in_its_site = tdata.TrainingExample("how does a burr grinder grind coffee beans", [pools["coffee"][0]], source="coffee")
    one_of_two_first = tdata.TrainingExample("green tea steeping temperature", pools["tea"][1:], source="tea")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "data: {mapping: m.json}\nrewards: [{name: bm25_rank, options: {mode: weighted:3, metric: ndcg, pool: source}}]\n"
    )
    config = load_config(cfg)
    corpus = [doc for docs in pools.values() for doc in docs]
    prepared = Prepared(config, PromptTemplate.paper(), [first_in_its_site, one_of_two_first], [], corpus, corpus, pools)
    prepared.rewards, prepared.weights = build_rewards(config, prepared)
    assert hard_questions(SimpleNamespace(data=prepared, name="grpo")) == [one_of_two_first]
    cfg.write_text("data: {mapping: m.json}\nstages: [rft]\nrewards: [{name: length_penalty}]\n")
    with pytest.raises(InputFormatError, match="judged by the bm25_rank reward"):
        load_config(cfg)


def test_generation_while_training_restores_the_tokenizer_and_mode_and_counts_cached_cuda_memory(monkeypatch):
    """On CUDA a generation batch is sized from the memory the driver reports free plus what PyTorch's allocator
    holds reserved but unused (mid-training most of it: ``mem_get_info`` alone gave tiny batches or MemoryError)."""
    from types import SimpleNamespace

    import torch

    from tongsearch_qr.training.generation import generation_backend

    gib = 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1 * gib, 80 * gib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 30 * gib)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 10 * gib)

    class OnCuda(torch.nn.Linear):  # a model that says it is on a GPU
        config = SimpleNamespace(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8)
        device = torch.device("cuda:0")
        dtype = torch.float16

    model = OnCuda(2, 2).float().train()
    tokenizer = SimpleNamespace(padding_side="right", pad_token="<pad>", chat_template="{{ messages }}")
    with (
        pytest.raises(RuntimeError, match="generation failed"),
        generation_backend(model, tokenizer, "float32", batch_size=3) as backend,
    ):
        assert backend.batch_size == 3 and tokenizer.padding_side == "left" and not model.training
        per_token = 2 * 2 * 2 * 8 * 2  # keys and values, layers, KV heads, head size, float16 bytes
        assert backend.max_batch_tokens == (21 * gib // 2) // per_token  # half of 1 + 30 - 10 GiB
        raise RuntimeError("generation failed")
    assert tokenizer.padding_side == "right" and model.training


def test_the_training_modules_import_no_circle():
    """Each module of the training package imports (also inside functions) only modules that never import it."""
    import re

    folder = Path(__file__).resolve().parent.parent / "training"
    imports = {}
    for file in folder.glob("*.py"):
        found = set()
        for module, names in re.findall(r"^\s*from \.(\w*) import ([\w, ]+)", file.read_text(), re.MULTILINE):
            found |= {module} if module else {n.strip() for n in names.split(",")}
        imports[file.stem] = found

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        return any(m == target or (m not in seen and reaches(m, target, seen | {m})) for m in imports.get(start, ()))

    assert [m for m in imports if reaches(m, m, {m})] == []


def test_dry_run_checks_the_data_as_training_prepares_it(monkeypatch):
    from tongsearch_qr.training import trainer

    prepared, real = [], trainer.prepare
    monkeypatch.setattr(trainer, "prepare", lambda config, *args: prepared.append(real(config, *args)) or prepared[-1])
    report = dry_run(load_config(config_path("cpu-tiny")))
    assert len(prepared) == 1 and report["examples"] == len(prepared[0].train) + len(prepared[0].validation) == 1305
    assert report["reward_weights"] == prepared[0].weights


def test_shaping_rewards():
    assert LengthPenalty(max_words=4)([msg("a b c"), msg("a b c d e f"), msg("a " * 20), msg("")]) == [0.0, -0.5, -1.0, -1.0]
    assert ThinkFormat()([msg("<think>x</think><answer>y</answer>"), msg("y"), "<think>x</think><answer> </answer>"]) == [1, 0, 0]


def test_a_nan_reward_is_a_clear_error():
    def broken(completions, **_):
        return [float("nan")] * len(completions)

    with pytest.raises(ValueError, match=r"reward 'broken' returned a non-finite value \(nan\) for completion #0"):
        checked(broken)([msg("x")], question=["why?"])
    with pytest.raises(ValueError, match="returned 0 values for 1"):
        checked(lambda completions, **_: [])([msg("x")])
    with pytest.raises(ValueError, match="unknown reward"):
        make_reward("magic")


def test_qa_jsonl_builder_on_the_shared_stackexchange_data(shared_data):
    files = sorted((shared_data / "stackexchange-qa").glob("*/qa_pairs.jsonl"))
    examples = tdata.from_qa_jsonl(files)
    assert len(examples) == 1305 and {ex.source for ex in examples} == {
        "ai",
        "beer",
        "coffee",
        "matheducators",
        "quantumcomputing",
    }
    first = json.loads(files[0].read_text().splitlines()[0])
    assert examples[0].question == f"{first['title'].strip()}\n\n{first['question_body'].strip()}"
    assert examples[0].positives == [first["answer_body"]]
    train, validation = tdata.split(examples, validation_size=50)
    again = tdata.split(list(reversed(examples)), validation_size=50)
    assert [e.question for e in validation] == [e.question for e in again[1]] and len(train) == 1255
    tdata.mine_negatives(validation, 5)
    assert all(len(e.negatives) == 5 and not set(e.negatives) & set(e.positives) for e in validation)


def test_bright_examples_only_train_and_leave_validation_as_it_was(tmp_path, shared_data, smol_backend):
    from tongsearch_qr.training.prepare import prepare

    cfg = tmp_path / "c.yaml"
    site = shared_data / "stackexchange-qa" / "coffee" / "qa_pairs.jsonl"
    cfg.write_text(
        f"stages: [keyterms]\nkeyterms: {{sft: {{use_cpu: true}}}}\n"
        f"data: {{qa_jsonl: ['{site}'], validation_size: 10, negatives: 5}}\n"
    )
    config = load_config(cfg)
    tokenizer = smol_backend.tokenizer
    plain = prepare(config, tokenizer)
    config.data.bright = {"source": str(shared_data / "bright"), "tasks": ["biology", "economics"]}
    mixed = prepare(config, tokenizer)
    bright = tdata.from_bright(["biology", "economics"], shared_data / "bright")
    assert len(bright) == 206 and {ex.source for ex in bright} == {"biology", "economics"}
    assert [(e.question, e.negatives) for e in mixed.validation] == [(e.question, e.negatives) for e in plain.validation]
    assert mixed.validation_corpus == plain.validation_corpus == plain.corpus and len(plain.corpus) == 105
    assert len(mixed.corpus) == 105 + 206 and len(mixed.train) == 95 + 206
    assert {s: len(docs) for s, docs in mixed.pools.items()} == {"coffee": 105, "biology": 103, "economics": 103}
    plain_train = {e.question: e.negatives for e in plain.train}
    for ex in mixed.train:  # the split data keeps its negatives; BRIGHT questions get theirs from every positive
        if ex.source == "coffee":
            assert ex.negatives == plain_train[ex.question]
        else:
            assert len(ex.negatives) == 5 and set(ex.negatives) <= set(mixed.corpus) - set(ex.positives)
    assert dry_run(config)["examples"] == 105 + 206
    config.data.bright["validation_size"] = 6  # BRIGHT validation questions: ranked in their task's answers
    held = prepare(config, tokenizer)
    assert len(held.validation) == 10 + 6 and len(held.train) == 95 + 200
    assert {ex.source for ex in held.validation[10:]} <= {"biology", "economics"}
    assert not {ex.question for ex in held.validation} & {ex.question for ex in held.train}


def test_bright_evaluation_only_tasks_are_refused_for_training(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {mapping: m.json, bright: {tasks: [biology, theoremqa_questions]}}\n")
    with pytest.raises(InputFormatError, match="evaluation-only"):
        load_config(cfg)


def test_prompt_dataset_is_conversational_with_truncated_prompts(smol_backend):
    from tongsearch_qr.prompts import PromptTemplate

    examples = [tdata.TrainingExample("word " * 1000, ["an answer"], ["a negative"], source="coffee")]
    ds = tdata.prompt_dataset(examples, PromptTemplate.paper(), smol_backend.tokenizer, max_question_tokens=32)
    row = ds[0]
    assert [m["role"] for m in row["prompt"]] == ["system", "user"]
    assert len(smol_backend.tokenizer(row["prompt"][1]["content"])["input_ids"]) < 32 + 120  # template + 32
    assert row["question"] == "word " * 1000 and row["positives"] == ["an answer"] and row["negatives"] == ["a negative"]
    assert row["source"] == "coffee"


def test_validation_with_sampling_seeds_averages_them_and_leaves_the_training_rng_alone(smol_backend, tmp_path):
    import torch

    from tongsearch_qr.prompts import PromptTemplate
    from tongsearch_qr.training.prepare import Prepared
    from tongsearch_qr.training.validation import Validator

    examples = [
        tdata.TrainingExample(
            "How fine should espresso be ground?",
            ["Fine, like table salt."],
            ["Boil pasta in salted water.", "Grind coarse for a French press."],
        ),
        tdata.TrainingExample(
            "Why does bread go stale?",
            ["Starch retrogradation pulls water out."],
            ["Espresso needs fine grounds.", "Bread rises because of yeast."],
        ),
    ]
    cfg = tmp_path / "c.yaml"

    def validator(seeds):
        cfg.write_text(
            f"data: {{mapping: m.json}}\nvalidation: {{max_new_tokens: 8, modes: [concat], sampling_seeds: {seeds}}}\n"
        )
        prepared = Prepared(
            load_config(cfg),
            PromptTemplate.paper(),
            [],
            examples,
            [],
            [],
            {},
            [make_reward("length_penalty", max_words=3)],
            [1.0],
        )
        return Validator(prepared, smol_backend.tokenizer)

    model = smol_backend.model
    state = torch.random.get_rng_state()
    both = validator([1, 2])(model)
    assert torch.equal(torch.random.get_rng_state(), state)  # training's sampling is not reseeded
    one, two = validator([1])(model), validator([2])(model)
    assert validator([])(model).keys() == {k for k in both if not k.endswith("/sampled")}
    for key in ("val/reward/sampled", "val/ndcg@10/concat/sampled", "val/reward/length_penalty/sampled"):
        assert both[key] == pytest.approx((one[key] + two[key]) / 2)
    assert both["val/ndcg@10/concat"] == one["val/ndcg@10/concat"]  # greedy does not depend on the seeds
    cfg.write_text("data: {mapping: m.json}\nvalidation: {sampling_seeds: 3}\n")
    with pytest.raises(InputFormatError, match="sampling_seeds must be a list of integers"):
        load_config(cfg)


def test_stack_exchange_domain_parsing_fixes_the_seed_bug():
    assert "https://superuser.com".strip("https://") == "uperuser.com"  # the seed's bug
    assert tdata.site_of("https://superuser.com") == "superuser"
    assert tdata.site_of("https://coffee.stackexchange.com") == "coffee"
    assert tdata.site_of("https://stackoverflow.com/questions/1") == "stackoverflow"


def test_bad_training_data_is_rejected(tmp_path):
    with pytest.raises(InputFormatError, match="no training examples"):
        tdata.from_mapping({})
    with pytest.raises(InputFormatError, match="has no positive"):
        tdata.from_mapping({"why is the sky blue?": []})
    with pytest.raises(InputFormatError, match="has no positive"):
        tdata.from_mapping({"why is the sky blue?": ["   "]})
    bad = tmp_path / "qa.jsonl"
    bad.write_text('{"title": "t", "question_body": "b"}\n')
    with pytest.raises(InputFormatError, match=r"qa.jsonl:1: missing field\(s\) \['answer_body'\]"):
        tdata.from_qa_jsonl([bad])
    with pytest.raises(InputFormatError, match="does not exist"):
        tdata.from_qa_jsonl([tmp_path / "nope.jsonl"])


def test_bad_configs_are_rejected(tmp_path):
    with pytest.raises(InputFormatError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: default\ndata: {qa_jsonl: ['*.jsonl']}\nsurprise: 1\n")
    with pytest.raises(InputFormatError, match="surprise"):
        load_config(cfg)
    cfg.write_text("model: default\n")
    with pytest.raises(InputFormatError, match="qa_jsonl, mapping or preferences"):
        load_config(cfg)
    cfg.write_text(
        "data: {mapping: m.json}\ngrpo: {num_generations: 3, per_device_train_batch_size: 4, gradient_accumulation_steps: 1}\n"
    )
    with pytest.raises(InputFormatError, match="GRPOConfig"):
        grpo_config(load_config(cfg))
    for bad, match in (
        ("stages: [rft]\nrft: {objective: dpo}", "rft.objective is gone: .* stage dpo"),
        ("stages: [rft]\nrft: {questions_from: easy}", "rft.questions_from must be hard or all"),
        ("grpo_questions: easy", "grpo_questions must be hard or all"),
        ("stages: [grpo, grpo]", "each stage may appear once"),
        ("stages: [ppo]", "stages must be"),
        ("weights_dtype: int8", "weights_dtype must be float32"),
        ("stages: [distil]", "distil.teachers must list"),
        ("stages: [distil]\ndistil: {teachers: [t.json], target: prose}", "distil.target must be"),
        ("validation: {pool: everything}", "validation.pool must be"),
        ("distil: {teacher: [t.json]}", "unknown distil settings"),
        ("mode: weighted:0", "weighted:K"),
        ("stages: [dpo]\ndpo: {samples: 1}", "dpo.samples must be"),
    ):
        cfg.write_text(f"data: {{mapping: m.json}}\n{bad}\n")
        with pytest.raises(InputFormatError, match=match):
            load_config(cfg)
    cfg.write_text("data: {mapping: m.json}\nstages: [distil]\ndistil: {teachers: [nowhere.json]}\n")
    with pytest.raises(InputFormatError, match="distil.teachers: no such file"):
        dry_run(load_config(cfg))
    for bad in ("{user: 'q {question}', keyword: true}", "{user: 'q {question}', keywords: 'yes'}"):
        cfg.write_text(f"data: {{mapping: m.json}}\nprompt: {bad}\n")
        with pytest.raises(InputFormatError, match="prompt takes user, system and keywords"):
            load_config(cfg)
    for bad in ("tasks: biology", "tasks: [], source: hub", "tasks: [biology], dir: x"):
        cfg.write_text(f"data: {{mapping: m.json, bright: {{{bad}}}}}\n")
        with pytest.raises(InputFormatError, match="data.bright takes tasks"):
            load_config(cfg)
    cfg.write_text("data: {mapping: m.json}\nstages: [dpo]\ndpo: {dpo: {no_such_option: 1}}\n")
    with pytest.raises(InputFormatError, match="dpo.dpo: settings rejected by TRL's DPOConfig"):
        dry_run(load_config(cfg))


@pytest.mark.parametrize(
    "name", ["cpu-tiny", "cpu-rft", "cpu-dpo", "cpu-keyterms", "cpu-distil", "cpu-grpo", "qwen2.5-1.5b", "qwen2.5-7b"]
)
def test_bundled_configs_pass_the_dry_run(name):
    report = dry_run(load_config(config_path(name)))
    if name in ("cpu-rft", "cpu-dpo", "cpu-keyterms", "cpu-grpo"):  # LoRA on four sites (matheducators held out)
        assert (
            report["stages"]
            == {"cpu-rft": ["rft"], "cpu-dpo": ["dpo"], "cpu-keyterms": ["keyterms", "rft"], "cpu-grpo": ["grpo"]}[name]
        )
        assert report["lora"] and report["examples"] == 1305 - 189
        assert report["grpo_config"] == ("GRPOConfig" if name == "cpu-grpo" else None)
        return
    if name == "cpu-distil":  # + BRIGHT's training tasks (earth_science and the evaluation-only tasks held out)
        assert report["stages"] == ["distil", "grpo"] and report["examples"] == 1305 - 189 + 525
        assert "distil: 525 of 1641 questions have a teacher text" in report["notes"]
        return
    assert report["grpo_config"] == "GRPOConfig" and report["examples"] == 1305
    values = next(iter(report["rewards"].values()))
    assert len(values) == 5 and values[-1] == -1.0  # the empty sample completion
    if name != "cpu-tiny":
        import torch

        recipe = load_config(CONFIG_DIR / f"{name}.yaml")
        config = grpo_config(recipe, use_cpu=not torch.cuda.is_available())  # bf16 kept on a GPU (dropped on a CPU
        assert any("use_cpu" in note for note in report["notes"]) or torch.cuda.is_available()  # that emulates it)
        assert recipe.grpo["bf16"] and (config.bf16 or not torch.cuda.is_available())
        assert config.use_vllm and config.vllm_mode == "server" and config.beta == 0.008
        assert config.num_generations == 16 and config.max_steps == 150 and config.learning_rate == 1e-6


def test_resume_from_missing_or_corrupt_checkpoints_is_a_clear_error(tmp_path):
    from tongsearch_qr.training.checkpoints import check_checkpoint, last_checkpoint

    with pytest.raises(InputFormatError, match="does not exist"):
        check_checkpoint(tmp_path / "checkpoint-9")
    broken = tmp_path / "checkpoint-3"
    broken.mkdir()
    (broken / "trainer_state.json").write_text("{not json")
    with pytest.raises(InputFormatError, match="not a usable checkpoint"):
        check_checkpoint(broken)
    (broken / "trainer_state.json").write_text("{}")
    with pytest.raises(InputFormatError, match="no model weights"):
        check_checkpoint(broken)
    assert last_checkpoint(tmp_path / "empty") is None
    good = tmp_path / "checkpoint-2"  # the newest usable one; checkpoint-3 was cut short
    good.mkdir()
    (good / "trainer_state.json").write_text("{}")
    (good / "adapter_model.safetensors").write_bytes(b"")
    assert last_checkpoint(tmp_path) == str(good)


def test_bm25_rank_over_the_whole_corpus_by_hand():
    corpus = [
        "burr grinders give even grounds",
        "blade grinders chop unevenly",
        "milk frothing for lattes",
        "espresso needs fine grounds",
    ]
    reward = BM25Rank(mode="replace", metric="rr", gain=True, corpus=corpus)
    columns = {"question": ["which grinder chops"], "positives": [["burr grinders give even grounds"]], "negatives": [[]]}
    # the question alone ranks "blade grinders chop unevenly" first, the positive second (RR 1/2);
    # "burr even" puts the positive first (RR 1): a gain of 0.5; "lattes" never finds it: -0.5
    assert reward([msg("burr even"), msg("lattes")], **{k: v * 2 for k, v in columns.items()}) == pytest.approx([0.5, -0.5])


def test_key_terms_are_the_question_words_its_answer_matches_rarest_first():
    from tongsearch_qr import PromptTemplate
    from tongsearch_qr.training.key_terms import KeyTerms, key_term_rows

    corpus = ["Grind the beans finer for espresso.", "Store beans in an airtight container.", "Beans go stale.", "coffee coffee"]
    terms = KeyTerms(corpus)
    question = "How should I store my coffee Beans airtight?"
    # store and airtight occur in one answer, beans in three; coffee is not in this answer
    assert terms.of(question, [corpus[1]], 10) == "store, airtight, Beans"
    assert terms.of(question, [corpus[1]], 2) == "store, airtight"
    assert terms.of("Why is the sky blue?", [corpus[1]], 10) == ""
    template = PromptTemplate(user="Keywords for: {question}", system=None)
    examples = [tdata.TrainingExample(question, [corpus[1]]), tdata.TrainingExample("Why is the sky blue?", [corpus[1]])]
    rows = key_term_rows(examples, [ex.question for ex in examples], template, corpus, 10)
    assert rows == [
        {"prompt": template.messages(question), "completion": [{"role": "assistant", "content": "store, airtight, Beans"}]}
    ]


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 CPU features")
def test_bf16_autocast_is_dropped_on_a_cpu_that_only_emulates_bf16(monkeypatch, caplog):
    """A Cascade Lake (AVX512_CORE, where oneDNN emulates bf16) and a Sapphire Rapids (AVX512_BF16 and AMX), by
    their feature probes; and a Sapphire Rapids held to AVX512_CORE by ONEDNN_MAX_CPU_ISA."""
    import torch

    from tongsearch_qr.training.precision import machine_precision
    from tongsearch_qr.training.trl_configs import trainer_options

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY"):
        monkeypatch.delenv(name, raising=False)
    for instructions, limit, native in ((False, None, False), (True, None, True), (True, "AVX512_CORE", False)):
        for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
            monkeypatch.setattr(torch.cpu, probe, lambda instructions=instructions: instructions)
        if limit:
            monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", limit)
        caplog.clear()
        assert machine_precision({"bf16": True, "use_cpu": True})["bf16"] is native
        assert ("only by emulation" in caplog.text) is not native
        assert trainer_options({"bf16": True, "use_cpu": True}, Path("out"))["bf16"] is native  # SFT / DPO stages
        assert grpo_config(load_config(config_path("cpu-grpo"))).bf16 is native  # the GRPO stage
    assert machine_precision({"bf16": False, "use_cpu": True})["bf16"] is False
