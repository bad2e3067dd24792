"""The LlamaIndex adapters against the real llama-index-core and its BM25 retriever."""

import pytest
from llama_index.core import Settings, get_response_synthesizer
from llama_index.core.llms.mock import MockLLM
from llama_index.core.prompts import PromptTemplate
from llama_index.core.query_engine import RetrieverQueryEngine, TransformQueryEngine
from llama_index.core.retrievers import TransformRetriever
from llama_index.core.schema import QueryBundle, TextNode
from llama_index.retrievers.bm25 import BM25Retriever

from tongsearch_qr import QRReasoner as CoreReasoner
from tongsearch_qr.integrations.llama_index import CoreLlamaRetriever, QRQueryTransform, QRTransformRetriever
from tongsearch_qr.retrieval import make_retriever

pytestmark = pytest.mark.llama_index


@pytest.fixture(scope="module")
def scifact(scifact_collection):
    c = scifact_collection
    nodes = [TextNode(text=text, id_=doc_id) for doc_id, text in c.iter_documents()]
    return c, nodes, [c.queries[q] for q in list(c.queries)[:8]]


@pytest.fixture(scope="module")
def reasoner(greedy_reasoner):
    return greedy_reasoner


def test_transform_retriever_equals_the_core_pipeline(scifact, reasoner):
    c, nodes, queries = scifact
    transform = QRQueryTransform(reasoner=reasoner, mode="concat")
    retriever = TransformRetriever(CoreLlamaRetriever.from_nodes(nodes, "bm25", similarity_top_k=10), transform)
    core = make_retriever("bm25").index(c.iter_documents())
    expected = core.search(reasoner.rewrite(queries, mode="concat", as_terms=True), k=10)
    for query, ranking in zip(queries, expected):
        got = retriever.retrieve(query)
        assert [n.node.node_id for n in got] == [d for d, _ in ranking]
        assert [n.score for n in got] == pytest.approx([s for _, s in ranking])


def test_with_llama_index_bm25_and_query_engine(scifact, reasoner):
    _, nodes, queries = scifact
    bm25 = BM25Retriever.from_defaults(nodes=nodes, similarity_top_k=5)
    transform = QRQueryTransform(reasoner=reasoner, mode="weighted:2")
    results = TransformRetriever(bm25, transform).retrieve(queries[0])
    assert len(results) == 5 and all(r.score > 0 for r in results)
    bundle = transform.run(queries[0])
    [terms] = reasoner.rewrite([queries[0]], mode="weighted:2", as_terms=True)
    assert bundle.query_str == terms.as_repeated() and bundle.embedding_strs == [queries[0]]
    # bm25s sums repeated words: the repeated words score as the weights say, each word once does not
    words = TransformRetriever(bm25, QRQueryTransform(reasoner=reasoner, mode="weighted:2", query_format="words"))
    assert words.retrieve(queries[0])[0].score < results[0].score
    Settings.llm = MockLLM()  # no_text synthesis calls no LLM, but llama-index resolves one anyway
    try:
        synthesizer = get_response_synthesizer(llm=MockLLM(), response_mode="no_text")
    finally:
        Settings._llm = None
    inner = RetrieverQueryEngine(bm25, response_synthesizer=synthesizer)
    engine = TransformQueryEngine(inner, query_transform=transform)
    response = engine.query(queries[0])
    assert [n.node.node_id for n in response.source_nodes] == [r.node.node_id for r in results]
    assert "query_transform:reasoning_prompt" in engine.get_prompts()


def test_embedding_target_and_include_original(reasoner):
    q = "Why is the sea salty?"
    only = QRQueryTransform(reasoner=reasoner, target="embedding").run(q)
    assert only.query_str == q and len(only.embedding_strs) == 1 and only.embedding_strs[0] != q
    both = QRQueryTransform(reasoner=reasoner, target="embedding", include_original=True, mode="concat").run(q)
    assert both.embedding_strs[1] == q and both.embedding_strs[0].startswith(q + "\n")
    many = QRQueryTransform(reasoner=reasoner, query_format="text").run_many([q, QueryBundle(query_str="Why do cats purr?")])
    assert len(many) == 2 and many[0].query_str == only.embedding_strs[0]


def test_prompts_through_the_prompt_mixin(reasoner):
    transform = QRQueryTransform(reasoner=reasoner)
    prompts = transform.get_prompts()
    assert "Identify the essential problem" in prompts["reasoning_prompt"].get_template()
    assert prompts["reasoning_prompt"].template_vars == ["question"]
    before = reasoner.config_hash
    transform.update_prompts({"reasoning_prompt": PromptTemplate("Explain: {question}")})
    assert transform.reasoner.template.user == "Explain: {question}" and transform.reasoner.config_hash != before
    assert transform.reasoner.backend is reasoner.backend  # the model is shared, not reloaded
    assert reasoner.config_hash == before  # the shared reasoner (other stacks' pipelines) is untouched
    transform.update_prompts({"reasoning_prompt": prompts["reasoning_prompt"]})
    assert transform.reasoner.config_hash == before


def test_bad_inputs(reasoner):
    transform = QRQueryTransform(reasoner=reasoner)
    for bad in ["", "   "]:
        with pytest.raises(ValueError, match="invalid quer"):
            transform.run(bad)
    with pytest.raises(ValueError, match="target"):
        QRQueryTransform(reasoner=reasoner, target="vector")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown rewrite mode"):
        QRQueryTransform(reasoner=reasoner, mode="sideways")
    with pytest.raises(ValueError, match="query_format"):
        QRQueryTransform(reasoner=reasoner, query_format="bag")
    assert QRQueryTransform(reasoner=reasoner, terms=3).reasoner.terms == 3


def test_aretrieve_awaits_the_reasoner_and_ranks_as_retrieve(scifact, reasoner, monkeypatch):
    import asyncio

    _, nodes, queries = scifact
    bm25 = BM25Retriever.from_defaults(nodes=nodes, similarity_top_k=5)
    retriever = QRTransformRetriever(bm25, QRQueryTransform(reasoner=reasoner, mode="concat"))
    awaited = []
    real = CoreReasoner.arewrites

    async def spy(self, *args, **kwargs):
        awaited.append(args[0])
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(CoreReasoner, "arewrites", spy)

    async def together():
        return await asyncio.gather(*(retriever.aretrieve(q) for q in queries[:3]))

    assert [[n.node.node_id for n in r] for r in asyncio.run(together())] == [
        [n.node.node_id for n in retriever.retrieve(q)] for q in queries[:3]
    ]
    assert sorted(awaited) == sorted([q] for q in queries[:3])


def test_a_reasoner_the_transform_builds_falls_back_to_the_question():
    from conftest import free_port

    transform = QRQueryTransform("served", backend="openai", base_url=f"http://127.0.0.1:{free_port()}/v1", query_format="text")
    assert transform.run("Why do cats purr?").query_str == "Why do cats purr?"
    assert transform.reasoner.on_error == "question" and transform.reasoner.stats["fallback_unavailable"] == 1
