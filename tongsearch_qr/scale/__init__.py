"""Reasoning over many machines: a Ray Data job with an actor pool of reasoners (``pip install 'tongsearch-qr[ray]'``).

>>> from tongsearch_qr import GenerationParams
>>> from tongsearch_qr.scale import ReasonerSpec, reason_dataset
>>> spec = ReasonerSpec(backend="transformers", dtype="float32", generation=GenerationParams(seed=0))
>>> rows = reason_dataset("queries.jsonl", spec, output="reasoned.parquet", cache="reasoning.sqlite", address="auto")

Importing this package does not import Ray; running a job does.
"""

from .ray_job import ActorPool, RayPoolBackend, connect, plan_pool, ray_reasoner, read_query_source, reason_dataset
from .spec import ReasonerSpec, ResolvedSettings
from .tables import read_query_file, reasoning_rows, write_reasoning

__all__ = [
    "ActorPool",
    "RayPoolBackend",
    "ReasonerSpec",
    "ResolvedSettings",
    "connect",
    "plan_pool",
    "ray_reasoner",
    "read_query_file",
    "read_query_source",
    "reason_dataset",
    "reasoning_rows",
    "write_reasoning",
]
