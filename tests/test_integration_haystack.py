"""The Haystack component against real Haystack pipelines (BM25 and embedding retrievers, YAML round trip)."""

import asyncio
import json

import pytest
from conftest import free_port
from haystack import Document, Pipeline
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever, InMemoryEmbeddingRetriever
from haystack.document_stores.in_memory import InMemoryDocumentStore
from haystack_integrations.components.embedders.sentence_transformers import (
    SentenceTransformersDocumentEmbedder,
    SentenceTransformersTextEmbedder,
)

from tongsearch_qr import GenerationParams
from tongsearch_qr import QRReasoner as CoreReasoner
from tongsearch_qr.integrations.haystack import CoreRetrieverComponent, QRQueryRewriter
from tongsearch_qr.retrieval import make_retriever
from tongsearch_qr.retrieval.dense import default_embedder_path

pytestmark = pytest.mark.haystack


@pytest.fixture(scope="module")
def scifact(scifact_collection):
    c = scifact_collection
    docs = [Document(id=doc_id, content=text) for doc_id, text in c.iter_documents()]
    return c, docs, [c.queries[q] for q in list(c.queries)[:6]]


@pytest.fixture(scope="module")
def cache_file(reasoning_cache_file, smol_backend):
    return str(reasoning_cache_file)


def _rewriter(cache_file, **kwargs):
    return QRQueryRewriter(generation={"max_new_tokens": 16, "do_sample": False}, cache=cache_file, **kwargs)


def test_pipeline_with_core_bm25_equals_the_core(scifact, cache_file):
    c, docs, queries = scifact
    p = Pipeline()
    p.add_component("reasoner", _rewriter(cache_file, mode="concat"))
    p.add_component("bm25", CoreRetrieverComponent(docs, "bm25", top_k=10))
    p.connect("reasoner.query", "bm25.query")
    p.connect("reasoner.term_weights", "bm25.term_weights")
    reasoner = CoreReasoner(generation=GenerationParams.greedy(16), cache=cache_file)
    core = make_retriever("bm25").index(c.iter_documents())
    expected = core.search(reasoner.rewrite(queries, mode="concat", as_terms=True), k=10)
    for query, ranking in zip(queries, expected):
        got = p.run({"reasoner": {"query": query}})["bm25"]["documents"]
        assert [d.id for d in got] == [d for d, _ in ranking]
        assert [d.score for d in got] == pytest.approx([s for _, s in ranking])


def test_in_memory_bm25_and_embedding_retrievers(scifact, cache_file):
    _, docs, queries = scifact
    store = InMemoryDocumentStore()
    embedder_path = default_embedder_path()
    doc_embedder = SentenceTransformersDocumentEmbedder(model=embedder_path, progress_bar=False)
    doc_embedder.warm_up()
    store.write_documents(doc_embedder.run(docs[:300])["documents"])
    p = Pipeline()
    p.add_component("reasoner", _rewriter(cache_file, mode="weighted:2"))
    p.add_component("bm25", InMemoryBM25Retriever(document_store=store, top_k=5))
    p.add_component("embed", SentenceTransformersTextEmbedder(model=embedder_path, progress_bar=False))
    p.add_component("dense", InMemoryEmbeddingRetriever(document_store=store, top_k=5))
    p.connect("reasoner.query", "bm25.query")
    p.connect("reasoner.text", "embed.text")
    p.connect("embed.embedding", "dense.query_embedding")
    out = p.run({"reasoner": {"query": queries[0]}}, include_outputs_from={"reasoner"})
    assert len(out["bm25"]["documents"]) == 5 and len(out["dense"]["documents"]) == 5
    reasoner = out["reasoner"]
    assert reasoner["original_query"] == queries[0]
    assert reasoner["text"].startswith(f"{queries[0]}\n{queries[0]}\n")
    # the in-memory store scores a query as a set of words: each of the strongest words once
    assert reasoner["query"] == " ".join(reasoner["term_weights"]) and len(reasoner["term_weights"]) <= 20


def test_yaml_round_trip_async_and_batch(cache_file, tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"q quartz": "kelp quartz", "q slate": "kelp slate"}))
    p = Pipeline()
    p.add_component(
        "reasoner",
        QRQueryRewriter(reasoning_file=str(path), mode="concat", include_original=True, query_format="repeated", terms=3),
    )
    loaded = Pipeline.loads(p.dumps())
    out = loaded.run({"reasoner": {"query": "q quartz"}})["reasoner"]
    assert out == {
        "query": "quartz quartz kelp",
        "text": "q quartz\nkelp quartz",
        "term_weights": {"quartz": 2.0, "kelp": 1.0},
        "queries": ["q quartz", "quartz quartz kelp"],
        "original_query": "q quartz",
        "reasoning": "kelp quartz",
    }
    component = loaded.get_component("reasoner")
    assert component.to_dict()["init_parameters"]["reasoning_file"] == str(path)
    assert asyncio.run(component.run_async(query="q slate"))["text"] == "q slate\nkelp slate"
    assert [r["reasoning"] for r in component.run_batch(["q slate", "q quartz"])] == ["kelp slate", "kelp quartz"]


def test_bad_inputs(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"q": "r"}))
    with pytest.raises(ValueError, match="unknown rewrite mode"):
        QRQueryRewriter(mode="sideways")
    with pytest.raises(TypeError):
        QRQueryRewriter(generation={"nonsense": 1})
    with pytest.raises(ValueError, match="query_format"):
        QRQueryRewriter(query_format="bag")
    with pytest.raises(ValueError, match="terms"):
        QRQueryRewriter(terms=0)
    rewriter = QRQueryRewriter(reasoning_file=str(path))
    with pytest.raises(RuntimeError, match="warm_up"):
        rewriter.run(query="q")
    rewriter.warm_up()
    for bad in ["", "  "]:
        with pytest.raises(ValueError, match="invalid quer"):
            rewriter.run(query=bad)


def test_run_async_in_an_async_pipeline_run_awaits_the_reasoner(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"why is kelp green?": "chlorophyll kelp", "why is the sea blue?": "light water"}))
    store = InMemoryDocumentStore()
    store.write_documents([Document(id="1", content="kelp has chlorophyll"), Document(id="2", content="light in water")])
    p = Pipeline()
    p.add_component("reasoner", QRQueryRewriter(reasoning_file=str(path), mode="concat"))
    p.add_component("bm25", InMemoryBM25Retriever(document_store=store, top_k=1))
    p.connect("reasoner.query", "bm25.query")
    awaited = []
    real = CoreReasoner.arewrites

    async def spy(self, *args, **kwargs):
        awaited.append(args[0])
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(CoreReasoner, "arewrites", spy)

    async def both():
        await p.warm_up_async()
        return await asyncio.gather(
            *(p.run_async({"reasoner": {"query": q}}) for q in ["why is kelp green?", "why is the sea blue?"])
        )

    answers = asyncio.run(both())
    assert [a["bm25"]["documents"][0].id for a in answers] == ["1", "2"]
    assert sorted(awaited) == [["why is kelp green?"], ["why is the sea blue?"]]
    assert answers[0] == p.run({"reasoner": {"query": "why is kelp green?"}})


def test_a_dead_server_leaves_the_question_and_the_setting_round_trips():
    dead = f"http://127.0.0.1:{free_port()}/v1"
    rewriter = QRQueryRewriter(model="served", backend_options={"backend": "openai", "base_url": dead}, timeout=5)
    rewriter.warm_up()
    out = rewriter.run(query="Why can't humans drink sea water?")
    assert out["original_query"] == "Why can't humans drink sea water?" and out["reasoning"] == ""
    assert out["query"] == "humans drink sea water" and rewriter._reasoner.stats["fallback_unavailable"] == 1
    assert asyncio.run(rewriter.run_async(query="Why do cats purr?"))["query"] == "cats purr"
    parameters = rewriter.to_dict()["init_parameters"]
    assert (parameters["on_error"], parameters["timeout"]) == ("question", 5)
    strict = QRQueryRewriter.from_dict({**rewriter.to_dict(), "init_parameters": {**parameters, "on_error": "raise"}})
    strict.warm_up()
    with pytest.raises(ConnectionError, match="no OpenAI-compatible server answers"):
        strict.run(query="Why do cats purr?")
