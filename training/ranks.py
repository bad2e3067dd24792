"""Work shared across the processes of a distributed launch (``accelerate launch`` on GPUs, ``torchrun`` or
MPI on CPUs; one process without): every process takes its slice of a list, does its part, and all processes
get every result back in input order. Every process must make the same calls in the same order (each call here
is a collective)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)


def _state() -> Any:
    import torch
    from accelerate import PartialState

    cpu = not torch.cuda.is_available()
    if cpu:  # so that every TrainingArguments' own accelerate state is multi-CPU too (gloo), not one process each
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")
    return PartialState(cpu=cpu)


def check_launch() -> None:
    """Warn when a launcher asked for several processes but started one: ``accelerate launch --cpu
    --num_processes N`` without an MPI hostfile runs a single process (it sets only the rendezvous address)."""
    launched = any(os.environ.get(v) for v in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"))
    size = world()[1]
    if size > 1 and is_main():
        log.info("training in %d processes", size)
    if os.environ.get("MASTER_ADDR") and not launched and size == 1:
        log.warning(
            "a distributed launch was asked for, but this is the only process (accelerate launch --cpu "
            "--num_processes N starts one process unless given --mpirun_hostfile); for N CPU processes "
            "use: torchrun --nproc_per_node N -m tongsearch_qr.cli train ..."
        )


def is_main() -> bool:
    """Whether this is the process that writes files and logs."""
    return _state().is_main_process


def world() -> tuple[int, int]:
    """(this process's index, number of processes)."""
    state = _state()
    return state.process_index, state.num_processes


def barrier() -> None:
    """Wait until every process gets here."""
    _state().wait_for_everyone()


def map_sharded(items: Sequence[T], work: Callable[[list[T]], list[R]]) -> list[R]:
    """``work`` over ``items`` split across the processes (process r takes items r, r + n, ...); every process
    gets all results in input order. Each process calls ``work`` exactly once (with an empty list if it has no
    items), so collectives inside ``work`` stay matched."""
    rank, size = world()
    if size == 1:
        return list(work(list(items)))
    mine = list(work(list(items[rank::size])))
    from accelerate.utils import gather_object

    parts = gather_object([mine])
    results: list[Any] = [None] * len(items)
    for r, part in enumerate(parts):
        results[r::size] = part
    return results
