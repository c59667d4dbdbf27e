"""The one process pool of facepipe: run a function over many items, with per-process state built once.

dlib's HOG detector uses one core, so throughput over many photos comes from processes. Each worker builds
its state (models) once from a picklable factory; results come back in input order, or as they finish.
Processes are spawned, not forked: a fork would copy onnxruntime's thread pools in a broken state.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from typing import Callable, Iterable, Iterator, TypeVar

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")

_state = None  # this worker process's state (only ever set inside pool workers)


def threads_per_worker(workers: int) -> int:
    """Split the cores between worker processes so they do not fight over the same ones."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def _init(make_state: Callable[[], object]) -> None:
    global _state
    _state = make_state()


def _call(work: Callable[[object, object], object], item: object) -> object:
    return work(_state, item)


def process_map(make_state: Callable[[], S], work: Callable[[S, T], R], items: Iterable[T], workers: int = 1,
                state: S | None = None, ordered: bool = True) -> Iterator[R]:
    """Yield work(state, item) for every item.

    workers=1 runs here, on `state` when given (models the caller already built) or on make_state().
    More workers run in a spawn pool; make_state and work must then be picklable (module-level functions or
    functools.partial of them).
    """
    items = list(items)
    workers = max(1, min(workers, len(items)))
    if workers == 1:
        local = state if state is not None else make_state()
        for item in items:
            yield work(local, item)
        return
    from functools import partial

    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=_init, initargs=(make_state,)) as pool:
        run = pool.imap if ordered else pool.imap_unordered
        yield from run(partial(_call, work), items, chunksize=1)
