"""The method bank: query reformulation methods users compare TongSearch QR against, each a named prompt
with its citation, the source of its exact prompt text, and its default settings.

``QRReasoner(method=NAME)``, ``--method NAME`` and every adapter (``method=`` among the reasoner options)
take these names; TongSearch QR (``tongsearch``) stays the default. Explicit ``template``, ``generation``,
``mode`` or ``samples`` arguments override a method's defaults. ``rm3`` needs no LLM: it is pyserini's RM3
pseudo-relevance feedback on the retriever (``make_retriever("pyserini", rm3=True)``, ``--method rm3``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .generation import GenerationParams
from .prompts import PAPER_USER_TEMPLATE, PromptTemplate


@dataclass(frozen=True)
class Method:
    """A reformulation method: ``template`` (``None`` for a retrieval-only method such as RM3), how its
    output joins the query (``mode``), how many outputs per query (``samples``) and its decoding settings;
    ``retriever_options`` go to the retriever (RM3's settings)."""

    name: str
    citation: str
    source: str
    template: PromptTemplate | None
    mode: str = "replace"
    generation: GenerationParams = field(default_factory=GenerationParams)
    samples: int = 1
    retriever: str | None = None
    retriever_options: dict[str, Any] = field(default_factory=dict)
    notes: str = ""


#: BRIGHT's prompt for its LLM "reasoning query" baseline (reason.py); the post's newlines become spaces
BRIGHT_REASONING_USER = (
    "{question}\n\n"
    "Instructions:\n"
    "1. Identify the essential problem.\n"
    "2. Think step by step to reason and describe what information could be relevant and helpful to address the "
    "questions in detail.\n"
    "3. Draft an answer with as many thoughts as you have.\n"
)
#: HyDE's prompts (src/hyde/promptor.py): web search, and SciFact's claim-verification variant
HYDE_WEB_SEARCH = "Please write a passage to answer the question.\nQuestion: {question}\nPassage:"
HYDE_SCIFACT = "Please write a scientific paper passage to support/refute the claim.\nClaim: {question}\nPassage:"
#: Query2doc's instruction in its "Query: ... Passage:" format, with no examples (the paper shows 4)
QUERY2DOC_USER = "Write a passage that answers the given query:\n\nQuery: {question}\nPassage:"
#: Jagerman et al. (2023), zero-shot chain-of-thought and keyword (Q2E) prompts
COT_USER = "Answer the following query:\n{question}\nGive the rationale before answering"
KEYWORDS_USER = "Write a list of keywords for the following query: {question}"
#: LameR (Table 1): the question with its top retrieved passages, "most of these passages are wrong"
LAMER_USER = (
    "Give a question \u201c{question}\u201d and its possible answering passages (most of these passages are "
    "wrong) enumerated as:\n{passages}\nplease write a correct answering passage."
)

METHODS: dict[str, Method] = {
    m.name: m
    for m in [
        Method(
            "tongsearch",
            "Qin et al. 2025, TongSearch QR: Reinforced Query Reasoning for Retrieval (arXiv 2506.11603)",
            "the paper's evaluation code (tongsearch_qr.prompts.PAPER_USER_TEMPLATE)",
            PromptTemplate(PAPER_USER_TEMPLATE, system=""),
            mode="replace",
        ),
        Method(
            "bright-reasoning",
            "Su et al. 2024, BRIGHT: A Realistic and Challenging Benchmark for Reasoning-Intensive "
            "Retrieval (arXiv 2407.12883): the LLM reasoning-query baseline",
            "xlang-ai/BRIGHT reason.py (system 'You are a helpful assistant', temperature 0.8, top_p 0.8, max_tokens 2048)",
            PromptTemplate(BRIGHT_REASONING_USER, system="You are a helpful assistant", one_line=True),
            mode="replace",
            generation=GenerationParams(max_new_tokens=2048, temperature=0.8, top_p=0.8, top_k=0, repetition_penalty=1.0),
        ),
        Method(
            "query2doc",
            "Wang, Yang & Wei 2023, Query2doc: Query Expansion with Large Language Models (EMNLP)",
            "the paper, section 2: its instruction and Query/Passage format; zero-shot here (the paper adds 4 "
            "MS MARCO examples); sparse retrieval repeats the query 5 times",
            PromptTemplate(QUERY2DOC_USER, system=None),
            mode="weighted:5",
            generation=GenerationParams(max_new_tokens=128),
        ),
        Method(
            "hyde",
            "Gao et al. 2023, Precise Zero-Shot Dense Retrieval without Relevance Labels (ACL)",
            "texttron/hyde src/hyde/promptor.py WEB_SEARCH (generator: n=8, max_tokens 512, temperature 0.7)",
            PromptTemplate(HYDE_WEB_SEARCH, system=None),
            mode="concat",
            generation=GenerationParams(max_new_tokens=512, temperature=0.7, top_p=1.0, top_k=0, repetition_penalty=1.0),
            samples=8,
            notes="HyDE averages the embeddings of the query and 8 passages; for BM25 they are joined",
        ),
        Method(
            "hyde-scifact",
            "Gao et al. 2023, HyDE, SciFact prompt",
            "texttron/hyde src/hyde/promptor.py SCIFACT",
            PromptTemplate(HYDE_SCIFACT, system=None),
            mode="concat",
            generation=GenerationParams(max_new_tokens=512, temperature=0.7, top_p=1.0, top_k=0, repetition_penalty=1.0),
            samples=8,
        ),
        Method(
            "cot",
            "Jagerman et al. 2023, Query Expansion by Prompting Large Language Models (arXiv 2305.03653)",
            "the paper's zero-shot chain-of-thought prompt; the query is repeated 5 times before the output",
            PromptTemplate(COT_USER, system=None),
            mode="weighted:5",
            generation=GenerationParams(max_new_tokens=256),
        ),
        Method(
            "keywords",
            "Jagerman et al. 2023, Query Expansion by Prompting Large Language Models (arXiv 2305.03653)",
            "the paper's zero-shot keyword prompt (Q2E/ZS); the query is repeated 5 times before the output",
            PromptTemplate(KEYWORDS_USER, system=None),
            mode="weighted:5",
            generation=GenerationParams(max_new_tokens=64),
        ),
        Method(
            "lamer",
            "Shen et al. 2023, Large Language Models are Strong Zero-Shot Retriever (arXiv 2304.14233)",
            "the paper's Table 1 prompt over the top 10 BM25 passages, each cut to 128 words (the paper: 128 tokens); "
            "5 answers, each after a copy of the query (weighted:5 with 5 samples is the same bag of words)",
            PromptTemplate(LAMER_USER, system=None, passages=10, passage_words=128),
            mode="weighted:5",
            generation=GenerationParams(max_new_tokens=128),
            samples=5,
        ),
        Method(
            "rm3",
            "Lavrenko & Croft 2001; Abdul-Jaleel et al. 2004 (RM3), as in pyserini",
            "pyserini LuceneSearcher.set_rm3 defaults: fb_terms 10, fb_docs 10, original_query_weight 0.5",
            None,
            mode="original",
            retriever="pyserini",
            retriever_options={"rm3": True},
        ),
    ]
}


def get_method(name: str | Method) -> Method:
    """The method called ``name``; a clear error naming the bank otherwise."""
    if isinstance(name, Method):
        return name
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")
    return METHODS[name]
