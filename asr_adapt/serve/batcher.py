"""Dynamic batching: requests queue, one worker thread decodes them in batches.

A batch is closed when it holds ``max_batch`` requests or ``max_wait_ms`` after its first
request was taken, whichever comes first, so a lone request waits at most ``max_wait_ms``
and a burst is decoded ``max_batch`` at a time. The queue is bounded: :meth:`submit` raises
:class:`QueueFull` instead of letting latency grow without bound.

A batch that fails is decoded again one request at a time, so a bad request fails alone;
nothing a decode raises stops the worker.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


class QueueFull(RuntimeError):
    """The request queue is full; ``retry_after_s`` estimates when to try again."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"server busy: request queue is full, retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


@dataclass
class Job:
    """One queued request: its payload and the future its result is delivered to."""

    payload: Any
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.monotonic)


@dataclass
class BatcherStats:
    requests: int = 0
    batches: int = 0
    errors: int = 0
    rejected: int = 0
    batch_sizes: dict[int, int] = field(default_factory=dict)
    busy_s: float = 0.0


class DynamicBatcher:
    """Queue + worker thread around ``decode(payloads) -> results`` (one result per payload).

    Results are delivered to each job's :class:`~concurrent.futures.Future`; a job whose
    future was cancelled before its batch started (the client gave up) is skipped.
    """

    def __init__(self, decode: Callable[[Sequence[Any]], Sequence[Any]], max_batch: int = 8,
                 max_wait_ms: float = 30.0, max_queue: int = 64, name: str = "asr-batcher") -> None:
        self.decode = decode
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.queue: queue.Queue[Job | None] = queue.Queue(maxsize=max_queue)
        self.stats = BatcherStats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> DynamicBatcher:
        self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker after the batch in progress; queued jobs are failed, not dropped silently."""
        self._stop.set()
        try:
            self.queue.put_nowait(None)  # wake the worker
        except queue.Full:
            pass
        self._thread.join(timeout)
        while True:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                break
            if job is not None and job.future.set_running_or_notify_cancel():
                job.future.set_exception(RuntimeError("server shutting down"))

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # ------------------------------------------------------------------ producers
    def submit(self, payload: Any) -> Future:
        """Queue ``payload``; its future resolves to the decode result. Raises :class:`QueueFull`."""
        if self._stop.is_set():
            raise RuntimeError("server shutting down")
        job = Job(payload)
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            with self._lock:
                self.stats.rejected += 1
            raise QueueFull(self.retry_after_s()) from None
        return job.future

    def retry_after_s(self) -> int:
        """Seconds until the queue has likely drained: queued batches x mean batch time (>= 1)."""
        with self._lock:
            per_batch = self.stats.busy_s / self.stats.batches if self.stats.batches else 1.0
        batches = -(-self.queue.qsize() // self.max_batch)
        return max(1, round(batches * per_batch))

    # ------------------------------------------------------------------ worker
    def _collect(self) -> list[Job] | None:
        first = self.queue.get()
        if first is None:
            return None
        jobs = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(jobs) < self.max_batch:
            left = deadline - time.monotonic()
            try:
                job = self.queue.get(timeout=left) if left > 0 else self.queue.get_nowait()
            except queue.Empty:
                break
            if job is None:  # closing: finish this batch, then stop
                self._stop.set()
                break
            jobs.append(job)
        return jobs

    def _run(self) -> None:
        while not self._stop.is_set():
            jobs = self._collect()
            if jobs is None:
                break
            # A client that gave up (cancelled future) costs no decode.
            jobs = [j for j in jobs if j.future.set_running_or_notify_cancel()]
            if jobs:
                self._decode(jobs)

    def _decode(self, jobs: list[Job]) -> None:
        t0 = time.monotonic()
        try:
            results = list(self.decode([j.payload for j in jobs]))
            if len(results) != len(jobs):
                raise RuntimeError(f"decode returned {len(results)} results for {len(jobs)} requests")
            outcome = [(j, r, None) for j, r in zip(jobs, results)]
        except Exception as e:  # noqa: BLE001 - isolate the failing request, keep serving
            if len(jobs) == 1:
                log.warning("request failed: %s", e)
                outcome = [(jobs[0], None, e)]
            else:
                log.warning("batch of %d failed (%s); decoding its requests one at a time", len(jobs), e)
                outcome = [self._decode_one(j) for j in jobs]
        with self._lock:
            self.stats.batches += 1
            self.stats.requests += len(jobs)
            self.stats.batch_sizes[len(jobs)] = self.stats.batch_sizes.get(len(jobs), 0) + 1
            self.stats.busy_s += time.monotonic() - t0
            self.stats.errors += sum(e is not None for _, _, e in outcome)
        for job, result, err in outcome:
            if err is not None:
                job.future.set_exception(err)
            else:
                job.future.set_result(result)

    def _decode_one(self, job: Job):
        try:
            return job, self.decode([job.payload])[0], None
        except Exception as e:  # noqa: BLE001
            log.warning("request failed: %s", e)
            return job, None, e
