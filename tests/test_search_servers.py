"""The requests Haystack's Elasticsearch and OpenSearch BM25 retrievers send with the rewriter's query, against a
stand-in server that answers as those servers do (no Elasticsearch or OpenSearch runs here)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tongsearch_qr import QRReasoner
from tongsearch_qr.backends.precomputed import PrecomputedBackend

pytestmark = pytest.mark.haystack

QUESTION = "Why can't humans drink sea water?"
REASONING = "seawater, osmosis, kidneys, kidneys"


class SearchServer(BaseHTTPRequestHandler):
    """Answers like Elasticsearch 8 / OpenSearch 2 to an index check and a search; records each search body."""

    searches: list[dict] = []

    def _answer(self, body: dict | None = None, status: int = 200) -> None:
        data = json.dumps(body or {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Elastic-Product", "Elasticsearch")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._answer()

    def do_GET(self) -> None:  # noqa: N802
        index = self.path.strip("/").split("/")[0]
        if "/_mapping" in self.path:
            self._answer({index: {"mappings": {"properties": {"content": {"type": "text"}}}}})
        else:
            self._answer({"version": {"number": "8.15.0"}, "tagline": "You Know, for Search"})

    def do_PUT(self) -> None:  # noqa: N802
        self._answer({"acknowledged": True})

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path.split("?")[0].endswith("/_search"):
            type(self).searches.append(body)
            hit = {"_id": "d1", "_score": 2.5, "_source": {"id": "d1", "content": "Seawater is hypertonic."}}
            self._answer({"hits": {"total": {"value": 1, "relation": "eq"}, "max_score": 2.5, "hits": [hit]}})
        else:
            self._answer({})

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server():
    SearchServer.searches = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), SearchServer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", SearchServer.searches
    httpd.shutdown()


def _rewriter(query_format: str):
    from tongsearch_qr.integrations.haystack import QRQueryRewriter

    reasoner = QRReasoner(backend=PrecomputedBackend({QUESTION: REASONING}, source="test"), mode="concat")
    return QRQueryRewriter.from_reasoner(reasoner, query_format=query_format)


def _pipeline(rewriter, retriever):
    from haystack import Pipeline

    pipeline = Pipeline()
    pipeline.add_component("reasoner", rewriter)
    pipeline.add_component("bm25", retriever)
    pipeline.connect("reasoner.query", "bm25.query")
    return pipeline


def test_elasticsearch_gets_the_words_repeated_by_weight_in_its_match_query(server):
    pytest.importorskip("haystack_integrations.document_stores.elasticsearch")
    from haystack_integrations.components.retrievers.elasticsearch import ElasticsearchBM25Retriever
    from haystack_integrations.document_stores.elasticsearch import ElasticsearchDocumentStore

    url, searches = server
    store = ElasticsearchDocumentStore(hosts=url, index="docs")
    found = _pipeline(_rewriter("repeated"), ElasticsearchBM25Retriever(document_store=store, fuzziness=0)).run(
        {"reasoner": {"query": QUESTION}}
    )
    assert [d.id for d in found["bm25"]["documents"]] == ["d1"]
    [body] = searches
    match = body["query"]["bool"]["must"][0]["multi_match"]
    # concat: the question's words once, the reasoning's as often as it names them; 'kidneys' twice
    assert match["query"] == "kidneys kidneys humans drink sea water seawater osmosis"
    assert match["fuzziness"] == 0 and match["operator"] == "OR"


def test_opensearch_gets_boosted_words_in_a_query_string_custom_query(server):
    pytest.importorskip("haystack_integrations.document_stores.opensearch")
    from haystack_integrations.components.retrievers.opensearch import OpenSearchBM25Retriever
    from haystack_integrations.document_stores.opensearch import OpenSearchDocumentStore

    from tongsearch_qr.integrations.haystack import opensearch_query

    url, searches = server
    store = OpenSearchDocumentStore(hosts=url, index="docs")
    retriever = OpenSearchBM25Retriever(document_store=store, custom_query=opensearch_query())
    found = _pipeline(_rewriter("lucene"), retriever).run({"reasoner": {"query": QUESTION}})
    assert [d.id for d in found["bm25"]["documents"]] == ["d1"]
    [body] = searches
    query = body["query"]["query_string"]
    assert query["query"] == ("kidneys^1.000 humans^0.500 drink^0.500 sea^0.500 water^0.500 seawater^0.500 osmosis^0.500")
    assert query["default_field"] == "content"
