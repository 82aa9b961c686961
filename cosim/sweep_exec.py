"""Where sweep points run: in this process, a local process pool, or a Dask distributed cluster, in
batches, each worker reusing the traces and dense baselines it has made.

All three are ``concurrent.futures`` executors (Dask's through ``Client.get_executor``), so the code that
hands out points and records results is the same for each.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import signal
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any

from cosim.errors import InputError

RESOURCES = ("luts", "ffs", "dsps", "brams", "urams")
#: Quality estimates interpolated from the shipped model's measured captures (cosim/quality_model.py).
QUALITY = ("quality_psnr_db", "quality_ssim", "quality_forced_psnr_db", "quality_forced_ssim")

M_MMAP_THRESHOLD = -3  #: glibc's mallopt parameter (malloc.h)

#: Per worker process: traces and dense baselines already made, keyed by what determines them, so that
#: points that differ only in the hardware reuse the trace, and points that differ only in the policy
#: reuse the dense baseline.
_TRACES: OrderedDict[str, Any] = OrderedDict()
_DENSE: OrderedDict[str, Any] = OrderedDict()
#: Entries kept per cache (the most recently used): a paper-size trace is a few MB, a dense baseline's
#: result a few kB (analytic) to a few MB (event model with a timeline); a sweep hands out the points of
#: one trace together, each with its own hardware, so the baselines need the room.
TRACE_ENTRIES = 16
DENSE_ENTRIES = 512


def _key(w, sections: tuple[str, ...]) -> str:
    return json.dumps(w.model_dump(mode="json", include=set(sections)), sort_keys=True)


def _cached(cache: OrderedDict, key: str, make: Callable[[], Any], entries: int) -> Any:
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    value = cache[key] = make()
    if len(cache) > entries:
        cache.popitem(last=False)
    return value


def evaluate(base: dict, overrides: dict, metrics: list[str]) -> dict:
    """Run one point; the metrics it was asked for (summary keys, resource estimates, quality estimates)."""
    from accelerator.rtl.resources import estimate
    from cosim.api import load
    from cosim.simulate import dense_baseline, simulate
    from cosim.traces import load_trace

    w = load(base, overrides, check_memory=False)
    trace_key = _key(w, ("model", "video", "trace", "policy", "sparse_attention")) + str(w.simulation.seed)
    bundle = _cached(_TRACES, trace_key, lambda: load_trace(w), TRACE_ENTRIES)
    dense_key = _key(w, ("model", "video", "hardware", "scheduler", "sparse_attention", "simulation"))
    dense = _cached(_DENSE, dense_key, lambda: dense_baseline(w), DENSE_ENTRIES)
    summary = simulate(w, bundle, dense=dense, drs_comparison=False).summary  # unless the sweep sets it
    extra = {}
    if any(m in RESOURCES for m in metrics):
        extra.update(estimate(w.hardware))
    if any(m in QUALITY for m in metrics):
        from cosim.quality_model import estimate as quality

        extra.update(quality(w.policy.kind, summary["replay_ratio"]))
    out = {}
    for m in metrics:
        v = extra[m] if m in extra else summary.get(m)
        if v is None:
            raise InputError(
                f"{m}: not a metric of this run (summary.json keys, or {', '.join(RESOURCES + QUALITY)})"
            )
        out[m] = v if isinstance(v, bool | str) else float(v)
    return out


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _quiet_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)


def quiet_pool(jobs: int) -> ProcessPoolExecutor:
    """Worker processes that leave Ctrl-C and SIGTERM to their parent, which unwinds (staging
    directories, locks) and shuts the pool down: a worker with the CLI's handlers would print a
    traceback, or hang the pool. The workers start here, with both signals held back until they have
    their own handlers, so that a Ctrl-C during their start reaches the parent alone."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        pool = ProcessPoolExecutor(max_workers=jobs, initializer=_quiet_worker)
        pool.submit(int).result()  # a fork-started pool launches all its workers at the first task
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
    return pool


@functools.cache
def _untrimmed_heap() -> None:
    """Dask starts its workers with ``MALLOC_TRIM_THRESHOLD_`` set, which freezes glibc's mmap threshold
    at 128 KiB: every numpy temporary above it is then mapped and unmapped again, and points run 2.7 times
    slower. Raise the threshold once per worker process (glibc only; elsewhere nothing to do)."""
    if "MALLOC_TRIM_THRESHOLD_" in os.environ:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, 64 << 20)


def run_batch(base: dict, metrics: list[str], batch: list[tuple[str, dict]]) -> list[dict]:
    """Run points one after the other in this worker (so they share its caches); an error a user caused
    fails its point, not the batch."""
    _untrimmed_heap()
    out = []
    for key, overrides in batch:
        t0 = time.perf_counter()
        try:
            values, error = evaluate(base, overrides, metrics), ""
        except InputError as exc:
            values, error = None, str(exc)
        out.append({"key": key, "values": values, "error": error, "duration_s": time.perf_counter() - t0})
    return out


class _Inline(Executor):
    """Runs each task when it is submitted: one job, no process to start, the caller's caches."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        fut: Future = Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except Exception as exc:
            fut.set_exception(exc)
        return fut


class SchedulerError(InputError):
    """A ``--scheduler`` address with no Dask scheduler behind it."""


@contextmanager
def executor(jobs: int, scheduler: str | None = None):
    """The executor points run on, and the number of batches to keep in flight on it: two per worker, so
    that none waits while the results of its last batch are recorded."""
    if scheduler:
        from distributed import Client

        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError) as exc:
            raise SchedulerError(f"--scheduler: no Dask scheduler at {scheduler} ({exc})") from None
        try:
            workers = sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values())
            yield client.get_executor(pure=False), 2 * max(1, workers)
        finally:
            client.close()
    elif jobs > 1:
        with quiet_pool(jobs) as pool:
            yield pool, 2 * jobs
    else:
        yield _Inline(), 1
