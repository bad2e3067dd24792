import math
import multiprocessing
import threading

import pytest

from tongsearch_qr import InvalidQueryError, ReasoningCache
from tongsearch_qr.cache import config_key
from tongsearch_qr.errors import CacheError
from tongsearch_qr.queries import validate_queries


def test_validate_queries_names_every_bad_one():
    with pytest.raises(InvalidQueryError) as info:
        validate_queries(["fine", "", "   \n", None, math.nan, 7, "also fine"])
    assert info.value.positions == [1, 2, 3, 4, 5]
    message = str(info.value)
    for fragment in ("#1: empty", "#3: None", "#4: NaN", "#5: not a string (int)"):
        assert fragment in message


def test_validate_queries_rejects_a_bare_string():
    with pytest.raises(TypeError, match="list of queries"):
        validate_queries("a single query")


def test_cache_roundtrip_and_persistence(tmp_path):
    path = tmp_path / "sub" / "cache.sqlite"
    cache = ReasoningCache(path)
    a, b = config_key({"model": "a"}), config_key({"model": "b"})
    cache.put_many(a, [("q1", "r1"), ("q2", "r2")])
    cache.put_many(b, [("q1", "other")])
    cache.close()
    reopened = ReasoningCache(path)
    assert reopened.get_many(a, ["q1", "q2", "q3"]) == {"q1": "r1", "q2": "r2"}
    assert reopened.get_many(b, ["q1"]) == {"q1": "other"}
    assert len(reopened) == 3


def test_cache_many_keys_in_one_lookup(tmp_path):
    cache = ReasoningCache(tmp_path / "c.sqlite")
    key = config_key({"m": 1})
    items = [(f"q{i}", f"r{i}") for i in range(1234)]
    cache.put_many(key, items)
    assert cache.get_many(key, [q for q, _ in items]) == dict(items)


def test_cache_shared_by_threads(tmp_path):
    cache = ReasoningCache(tmp_path / "c.sqlite")
    key = config_key({"m": "threads"})

    def work(t: int) -> None:
        for i in range(40):
            cache.put_many(key, [(f"t{t}-{i}", f"r{t}-{i}")])

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    found = cache.get_many(key, [f"t{t}-{i}" for t in range(6) for i in range(40)])
    assert len(found) == 240 and found["t5-39"] == "r5-39"


def _process_writer(path: str, worker: int) -> None:
    cache = ReasoningCache(path)
    key = config_key({"m": "procs"})
    for i in range(30):
        cache.put_many(key, [(f"p{worker}-{i}", f"r{worker}-{i}")])


def test_cache_shared_by_processes(tmp_path):
    path = str(tmp_path / "c.sqlite")
    ReasoningCache(path)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_process_writer, args=(path, w)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    found = ReasoningCache(path).get_many(config_key({"m": "procs"}), [f"p{w}-{i}" for w in range(3) for i in range(30)])
    assert len(found) == 90


def test_cache_rejects_directory_and_corrupt_file(tmp_path):
    with pytest.raises(IsADirectoryError):
        ReasoningCache(tmp_path)
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(CacheError, match="not a usable reasoning cache"):
        ReasoningCache(bad)


def test_first_writer_wins_across_connections(tmp_path):
    path = tmp_path / "c.sqlite"
    key = config_key({"m": "race"})
    first, second = ReasoningCache(path), ReasoningCache(path)
    assert first.put_many(key, [("q", "first")]) == {"q": "first"}
    assert second.put_many(key, [("q", "second"), ("other", "x")]) == {"q": "first", "other": "x"}
    assert first.get_many(key, ["q"]) == {"q": "first"}


def _use_after_fork(cache: ReasoningCache, parent_connection_id: int, queue) -> None:
    key = config_key({"m": "fork"})
    cache.put_many(key, [("child", "c")])
    queue.put((id(cache._connection()) != parent_connection_id, cache.get_many(key, ["parent", "child"])))


def test_connections_do_not_cross_fork(tmp_path):
    cache = ReasoningCache(tmp_path / "c.sqlite")
    key = config_key({"m": "fork"})
    cache.put_many(key, [("parent", "p")])
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_use_after_fork, args=(cache, id(cache._connection()), queue))
    child.start()
    own_connection, seen = queue.get(timeout=60)
    child.join(60)
    assert child.exitcode == 0 and own_connection
    assert seen == {"parent": "p", "child": "c"}
    assert cache.get_many(key, ["parent", "child"]) == {"parent": "p", "child": "c"}
