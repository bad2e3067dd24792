"""The method bank: each prompt is the source's text (the official construction re-run where the source is
code), defaults apply and can be overridden, corpus feedback and RM3 work end to end, bad names fail clearly."""

import pytest

from tongsearch_qr import GenerationParams, PromptTemplate, QRReasoner
from tongsearch_qr.methods import METHODS, get_method
from tongsearch_qr.prompts import PAPER_USER_TEMPLATE

POST = "My cat drinks sea water.\nWhy can't humans drink it?\n\nThanks"


def _bright_reason_py(post: str) -> str:
    """xlang-ai/BRIGHT reason.py (commit 84af2f2a), verbatim apart from names."""
    cur_post = post.replace("\n", " ")
    prompt = (
        f"{cur_post}\n\n"
        f"Instructions:\n"
        f"1. Identify the essential problem.\n"
        f"2. Think step by step to reason and describe what information could be relevant and helpful to address the questions in detail.\n"  # noqa: E501
        f"3. Draft an answer with as many thoughts as you have.\n"
    )
    return prompt


#: texttron/hyde src/hyde/promptor.py, filled with .format(query)
HYDE_PROMPTOR = {
    "hyde": "Please write a passage to answer the question.\nQuestion: {}\nPassage:",
    "hyde-scifact": "Please write a scientific paper passage to support/refute the claim.\nClaim: {}\nPassage:",
}
#: the papers' printed prompts (Jagerman et al. 2023; Query2doc section 2 and figure 1 format; LameR Table 1)
PRINTED = {
    "cot": "Answer the following query:\n{}\nGive the rationale before answering",
    "keywords": "Write a list of keywords for the following query: {}",
    "query2doc": "Write a passage that answers the given query:\n\nQuery: {}\nPassage:",
}


def test_bright_reasoning_prompt_is_what_brights_code_builds():
    method = METHODS["bright-reasoning"]
    assert method.template.messages(POST) == [
        {"role": "system", "content": "You are a helpful assistant"},
        {"role": "user", "content": _bright_reason_py(POST)},
    ]
    assert (method.generation.temperature, method.generation.top_p, method.generation.max_new_tokens) == (0.8, 0.8, 2048)


@pytest.mark.parametrize("name", [*HYDE_PROMPTOR, *PRINTED])
def test_prompt_text_equals_the_source(name):
    source = {**HYDE_PROMPTOR, **PRINTED}[name]
    assert METHODS[name].template.messages(POST) == [{"role": "user", "content": source.format(POST)}]


def test_tongsearch_is_the_papers_prompt_and_the_default():
    assert METHODS["tongsearch"].template == PromptTemplate.paper()
    assert METHODS["tongsearch"].template.user == PAPER_USER_TEMPLATE


def test_lamer_shows_numbered_passages_cut_to_128_words():
    template = METHODS["lamer"].template
    long = " ".join(f"w{i}" for i in range(300))
    text = template.fill("why is the sea salty?", ["Rivers carry salt.", long])
    assert text == (
        "Give a question \u201cwhy is the sea salty?\u201d and its possible answering passages (most of these "
        "passages are wrong) enumerated as:\n1.Rivers carry salt.\n2."
        + " ".join(f"w{i}" for i in range(128))
        + "\nplease write a correct answering passage."
    )
    # a passage holding a placeholder is shown as it is
    assert "{question}" in template.fill("q", ["about {question} marks"])


class _Recording:
    cache_id = "recording"

    def __init__(self):
        self.prompts = []

    def generate(self, questions, template, params, on_result=None, samples=None):
        self.prompts += [template.messages(q)[-1]["content"] for q in questions]
        return [f"answer {i}" for i in range(len(questions))]


def test_method_defaults_apply_and_explicit_settings_win():
    hyde = QRReasoner(backend=_Recording(), method="hyde")
    assert (hyde.template, hyde.mode.name, hyde.samples) == (METHODS["hyde"].template, "concat", 8)
    greedy = QRReasoner(backend=_Recording(), method="hyde", generation=GenerationParams.greedy(32), mode="replace")
    assert (greedy.samples, greedy.mode.name, greedy.generation.max_new_tokens) == (1, "replace", 32)


def test_bad_methods_are_clear_errors():
    with pytest.raises(ValueError, match="unknown method 'hype'; choose one of: tongsearch, bright-reasoning"):
        get_method("hype")
    with pytest.raises(ValueError, match="uses no LLM"):
        QRReasoner(backend=_Recording(), method="rm3")
    with pytest.raises(ValueError, match="feedback="):
        QRReasoner(backend=_Recording(), method="lamer").reason(["q"])
    with pytest.raises(ValueError, match="'{passages}' placeholder"):
        PromptTemplate("{question}", passages=3)


def test_corpus_feedback_is_part_of_the_cache_key(tmp_path):
    backend = _Recording()
    passages = {"q": ["first passage"]}
    reasoner = QRReasoner(
        backend=backend,
        method="lamer",
        samples=1,
        cache=tmp_path / "c.sqlite",
        feedback=lambda queries: [passages[q] for q in queries],
    )
    assert reasoner.reason(["q"]) == ["answer 0"] and "1.first passage" in backend.prompts[0]
    reasoner.reason(["q"])
    assert len(backend.prompts) == 1  # cached
    passages["q"] = ["another passage"]
    reasoner.reason(["q"])
    assert len(backend.prompts) == 2 and "1.another passage" in backend.prompts[1]  # other passages: regenerated


def test_eval_gives_lamer_the_top_bm25_passages(scifact_collection):
    from tongsearch_qr.evaluation import run_collection
    from tongsearch_qr.retrieval import make_retriever

    backend = _Recording()
    reasoner = QRReasoner(backend=backend, method="lamer", samples=1)
    kept = list(scifact_collection.queries)[:3]
    subset = type(scifact_collection)(
        **{
            **scifact_collection.__dict__,
            "queries": {q: scifact_collection.queries[q] for q in kept},
            "qrels": {q: scifact_collection.qrels[q] for q in kept},
        }
    )
    results = run_collection(subset, "bm25", reasoner=reasoner, k=10)
    assert set(results) == {"reasoning"} and len(backend.prompts) == 3
    index = make_retriever("bm25").index(scifact_collection.iter_documents())
    texts = dict(scifact_collection.iter_documents())
    for query, prompt in zip(subset.queries.values(), backend.prompts):
        top = index.search([query], k=10)[0]
        assert prompt.startswith(f"Give a question \u201c{query}\u201d")
        assert f"\n10.{' '.join(texts[top[9][0]].split()[:128])}\nplease write" in prompt


@pytest.mark.pyserini
def test_eval_method_rm3_expands_with_pyserini(shared_data, tmp_path):
    import json

    from tongsearch_qr.cli import main

    out = tmp_path / "rm3"
    assert (
        main(
            [
                "eval",
                "--dataset",
                f"beir:{shared_data / 'scifact'}",
                "--method",
                "rm3",
                "--baseline",
                "--output",
                str(out),
                "--k",
                "100",
            ]
        )
        == 0
    )
    rm3 = json.loads((out / "metrics.json").read_text())["beir:scifact"]["ndcg_cut_10"]
    plain = json.loads((out / "metrics.baseline.json").read_text())["beir:scifact"]["ndcg_cut_10"]
    assert rm3 != plain and min(rm3, plain) > 0.55
    assert (
        main(
            [
                "eval",
                "--dataset",
                f"beir:{shared_data / 'scifact'}",
                "--method",
                "rm3",
                "--retriever",
                "bm25",
                "--output",
                str(out),
            ]
        )
        == 2
    )


@pytest.mark.pyterrier
def test_pyterrier_lamer_reads_the_first_stage_passages(scifact_collection):
    import pandas as pd
    import pyterrier as pt

    from tongsearch_qr.integrations.pyterrier import CoreRetriever
    from tongsearch_qr.integrations.pyterrier import QRReasoner as PtReasoner

    bm25 = CoreRetriever.from_corpus(({"docno": d, "text": t} for d, t in scifact_collection.iter_documents()), num_results=20)
    backend = _Recording()
    lamer = PtReasoner(reasoner=QRReasoner(backend=backend, method="lamer", samples=1))
    assert lamer.mode.name == "weighted:5"  # the method's mode
    topics = pd.DataFrame({"qid": ["1", "3"], "query": [scifact_collection.queries["1"], scifact_collection.queries["3"]]})
    res = (bm25 >> pt.text.get_text(bm25) >> lamer >> bm25).transform(topics)
    assert set(res["qid"]) == {"1", "3"} and len(backend.prompts) == 2
    texts = dict(scifact_collection.iter_documents())
    top = bm25.transform(topics[:1]).sort_values("rank")["docno"].tolist()[:10]
    assert backend.prompts[0].startswith(f"Give a question \u201c{topics['query'][0]}\u201d")
    assert "\n".join(f"{i}.{' '.join(texts[d].split()[:128])}" for i, d in enumerate(top, 1)) in backend.prompts[0]
    assert set(res["query_0"]) == set(topics["query"])  # rewritten; the question kept in query_0


@pytest.mark.haystack
def test_haystack_rewriter_takes_a_method():
    from tongsearch_qr.integrations.haystack import QRQueryRewriter

    rewriter = QRQueryRewriter(method="keywords")
    assert QRQueryRewriter.from_dict(rewriter.to_dict()).method == "keywords"
    with pytest.raises(ValueError, match="corpus-feedback"):
        QRQueryRewriter(method="lamer")
    with pytest.raises(ValueError, match="unknown method"):
        QRQueryRewriter(method="nope")
