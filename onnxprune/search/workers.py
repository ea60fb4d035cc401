"""Workers: where a search's evaluations run, in this process, on a local process pool or on a Ray cluster.

A search hands over a *job* and its *tasks*. The job is a picklable recipe (the model's bytes, the options,
the samples) whose ``build()`` makes the function that runs one task; a worker builds it once, when the
job first reaches it, then runs task after task. Tasks are pure (a plan in, numbers out), so where they run
cannot change what they return, and results come back in the order the tasks were given.

- one worker (``--workers 1``): in this process, no copies;
- ``--workers N``: a local pool of N spawned processes, the job sent to each once at start-up; a worker
  that dies (killed, out of memory) breaks the pool, which is started again with the tasks not yet done;
- ``--ray local|ADDRESS``: a Ray cluster (ray_cluster.py).

Every worker runs ONNX Runtime on one thread: N workers use N cores, and a result does not depend on how
many threads computed it.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Protocol

from onnxprune.errors import UsageError, WorkerError

# Where the workers are left at their default: tasks that would take longer than this here go to a pool.
# Starting one (spawned interpreters, imports, each building its job) costs a few seconds, which tasks
# this long repay on two cores.
POOL_PAYS_SECONDS = 10.0
# How often a pool may lose a worker in one run before the run gives up: a task that kills its worker
# every time (out of memory) fails instead of looping.
MAX_RESTARTS = 3


class Job(Protocol):
    """What every worker builds once: ``build()`` returns the function that runs one task."""

    def build(self) -> Callable[[Any], Any]: ...


def cores() -> int:
    """The cores this process may run on (a container's or ``taskset``'s share, not the machine's)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class WorkerOptions:
    """``workers``: processes (None: one per core); ``ray``: ``local`` (a cluster started here with
    ``workers`` CPUs) or the address of a running one (``host:port``, ``ray://host:port``, ``auto``)."""

    workers: int | None = None
    ray: str | None = None

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise UsageError(f"--workers must be at least 1, got {self.workers}")
        if self.ray is not None and not self.ray.strip():
            raise UsageError("--ray takes 'local' or a cluster's address, got nothing")

    @property
    def count(self) -> int:
        return self.workers if self.workers is not None else cores()


class Workers:
    """Runs jobs' tasks where the options say; open it before any work (a Ray address is reached then),
    close it when the command ends (pools and a local cluster stop)."""

    def __init__(self, options: WorkerOptions | None = None, on_result: Callable[[int], Any] | None = None):
        """``on_result(pid)``: told the process id of the worker that returned each result (a test's hook
        to kill one)."""
        self.options = options or WorkerOptions()
        self.on_result = on_result
        self.restarts = 0  # pools started again after a worker died
        self._backend: Any = None

    def __enter__(self) -> Workers:
        self.open()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def open(self) -> None:
        if self._backend is not None:
            return
        if self.options.ray is not None:
            from onnxprune.search.ray_cluster import RayCluster

            self._backend = RayCluster(self.options.ray, self.options.count)
        elif self.options.count > 1:
            self._backend = _LocalPool(self.options.count, self)
        else:
            self._backend = _InProcess()
        self._backend.connect()

    @property
    def in_process(self) -> bool:
        return isinstance(self._backend, _InProcess) or (self._backend is None and self.options.count == 1)

    def describe(self) -> str:
        """Where tasks run, for progress lines: '2 workers', '4 Ray CPUs (local)'."""
        self.open()
        return str(self._backend.describe())

    @property
    def adaptive(self) -> bool:
        """Workers left at their default (one per core): started only where the tasks are long enough to
        pay for starting them."""
        return self.options.workers is None and self.options.ray is None and self.options.count > 1

    def run(
        self,
        job: Job,
        tasks: Sequence[Any],
        done: Callable[[int], Any] | None = None,
        local: Callable[[], Callable[[Any], Any]] | None = None,
    ) -> list[Any]:
        """Every task's result, in the order of ``tasks``; ``done(index)`` is told each as it finishes.

        ``local()``: the job's function built in this process from what it already holds (no copy), for
        one worker; and, where the workers are ``adaptive``, for the first tasks, timed: once the tasks
        left would take longer here than ``POOL_PAYS_SECONDS``, the rest go to the workers."""
        self.open()
        told = done or (lambda _i: None)
        if local is None or not (self.in_process or self.adaptive):
            return list(self._backend.run(job, tasks, told))
        function, results, began = local(), [], time.perf_counter()
        for index, task in enumerate(tasks):
            results.append(function(task))
            told(index)
            left = len(tasks) - index - 1
            if left and not self.in_process:
                per_task = (time.perf_counter() - began) / (index + 1)
                if per_task * left > POOL_PAYS_SECONDS:
                    rest = self._backend.run(job, tasks[index + 1 :], lambda i, at=index + 1: told(at + i))
                    return results + list(rest)
        return results

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None


class _InProcess:
    """One worker: this process, each job built once."""

    def __init__(self) -> None:
        self._built: dict[int, tuple[Job, Callable[[Any], Any]]] = {}

    def connect(self) -> None:
        pass

    def describe(self) -> str:
        return "1 worker (this process)"

    def run(self, job: Job, tasks: Sequence[Any], done: Callable[[int], Any]) -> list[Any]:
        if id(job) not in self._built:
            self._built[id(job)] = (job, job.build())  # the job is kept so that its id is not reused
        function = self._built[id(job)][1]
        results = []
        for index, task in enumerate(tasks):
            results.append(function(task))
            done(index)
        return results

    def close(self) -> None:
        self._built.clear()


class _LocalPool:
    """A pool of spawned processes per job (spawned, not forked: ONNX Runtime's threads do not survive a
    fork), each built once by the pool's initializer."""

    def __init__(self, count: int, owner: Workers) -> None:
        self.count, self.owner = count, owner
        self._pools: dict[int, tuple[Job, ProcessPoolExecutor]] = {}

    def connect(self) -> None:
        pass

    def describe(self) -> str:
        return f"{self.count} workers"

    def run(self, job: Job, tasks: Sequence[Any], done: Callable[[int], Any]) -> list[Any]:
        results: dict[int, Any] = {}
        while len(results) < len(tasks):
            pool = self._pool(job)
            left = [i for i in range(len(tasks)) if i not in results]
            futures = {pool.submit(_run_task, tasks[i]): i for i in left}
            try:
                self._collect(futures, results, done)
            except BrokenProcessPool:
                self._harvest(futures, results, done)
                self._discard(job)
                self.owner.restarts += 1
                if self.owner.restarts > MAX_RESTARTS:
                    raise WorkerError(
                        f"workers died {self.owner.restarts} times during the search (out of memory? "
                        "try fewer --workers); nothing written"
                    ) from None
        return [results[i] for i in range(len(tasks))]

    def _collect(self, futures: dict[Future, int], results: dict[int, Any], done: Callable) -> None:
        waiting = set(futures)
        while waiting:
            finished, waiting = wait(waiting, return_when=FIRST_COMPLETED)
            for future in finished:
                pid, value = future.result()  # a task's own error is raised here, as it was raised there
                results[futures[future]] = value
                done(futures[future])
                if self.owner.on_result is not None:
                    self.owner.on_result(pid)

    @staticmethod
    def _harvest(futures: dict[Future, int], results: dict[int, Any], done: Callable) -> None:
        """Results that finished before the pool broke are kept; only the others run again."""
        for future, index in futures.items():
            if index in results or not future.done() or future.cancelled():
                continue
            if future.exception() is None:
                results[index] = future.result()[1]
                done(index)

    def _pool(self, job: Job) -> ProcessPoolExecutor:
        if id(job) not in self._pools:
            pool = ProcessPoolExecutor(
                self.count, mp_context=multiprocessing.get_context("spawn"), initializer=_start,
                initargs=(job,),
            )  # fmt: skip
            self._pools[id(job)] = (job, pool)
        return self._pools[id(job)][1]

    def _discard(self, job: Job) -> None:
        _, pool = self._pools.pop(id(job))
        pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        for _, pool in self._pools.values():
            pool.shutdown(wait=True, cancel_futures=True)
        self._pools.clear()


# A pool worker's state: the function its job built, or the error building it raised (raised again by
# every task, so that the search fails with it, not with a broken pool).
_built: Callable[[Any], Any] | None = None
_failed: BaseException | None = None


def _start(job: Job) -> None:
    global _built, _failed
    # Ctrl-C is the search's to handle (it reaches the whole process group): a worker stops with its pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _built = job.build()
    except Exception as err:  # raised by the first task this worker takes
        _failed = err


def _run_task(task: Any) -> tuple[int, Any]:
    if _failed is not None:
        raise _failed
    assert _built is not None
    return os.getpid(), _built(task)
