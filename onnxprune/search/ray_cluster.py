"""A search's tasks on a Ray cluster (``--ray local|ADDRESS``; the ``[ray]`` extra, imported only here).

Each job goes into Ray's object store once (``ray.put``: the model's bytes and the samples); its tasks
carry a reference to it, not a copy. A Ray worker process fetches the job the first time one of its tasks
names it and keeps what ``build()`` made for every later task. Ray runs each task on one CPU and retries a
task whose worker died (killed, out of memory) elsewhere.

An address that cannot be reached is one line before any work: a TCP connection to it is tried first,
since ``ray.init`` would wait for its own time-outs and print pages of log.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Sequence
from typing import Any

from onnxprune.errors import CapabilityError, OnnxPruneError, UsageError, WorkerError, first_line

RAY_MISSING = "--ray needs Ray: pip install 'onnxprune[ray]'"
PROBE_SECONDS = 5.0
# Ray's own retries of a task whose worker died.
MAX_RETRIES = 3
GCS_PORT, CLIENT_PORT = 6379, 10001


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise CapabilityError(RAY_MISSING) from None
    return ray


def endpoint(address: str) -> tuple[str, int] | None:
    """(host, port) of an address to try before connecting; None for ``local`` and ``auto``."""
    if address in ("local", "auto"):
        return None
    rest, port = address, GCS_PORT
    if address.startswith("ray://"):
        rest, port = address.removeprefix("ray://"), CLIENT_PORT
    host, _, given = rest.rpartition(":") if ":" in rest else (rest, "", "")
    if given:
        try:
            port = int(given)
        except ValueError:
            raise UsageError(f"--ray {address!r}: the port must be a number") from None
    if not host:
        raise UsageError(f"--ray {address!r}: give 'local' or HOST:PORT of a running cluster")
    return host.strip("[]"), port


def probe(address: str) -> None:
    """A TCP connection to the cluster's address, or a WorkerError saying why there is none."""
    found = endpoint(address)
    if found is None:
        return
    try:
        with socket.create_connection(found, timeout=PROBE_SECONDS):
            pass
    except OSError as err:
        reason = first_line(err) if str(err) else "timed out"
        raise WorkerError(f"cannot reach the Ray cluster at {address}: {reason}; nothing done") from None


class RayCluster:
    """Jobs' tasks on a Ray cluster: one started here (``local``, with ``count`` CPUs) or a running one."""

    def __init__(self, address: str, count: int) -> None:
        self.address, self.count = address, count
        self._started = False
        self._jobs: dict[int, tuple[Any, Any]] = {}  # id(job) -> (job, its object reference)
        self._remote: Any = None

    def connect(self) -> None:
        ray = import_ray()
        probe(self.address)
        if ray.is_initialized():
            return
        quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
        try:
            if self.address == "local":
                ray.init(num_cpus=self.count, include_dashboard=False, **quiet)
            else:
                ray.init(address=self.address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as err:
            reason = first_line(err)
            raise WorkerError(f"cannot connect to the Ray cluster at {self.address}: {reason}") from None
        self._started = True

    def describe(self) -> str:
        cpus = int(import_ray().cluster_resources().get("CPU", 0))
        return f"{cpus} Ray CPUs ({self.address})"

    def run(self, job: Any, tasks: Sequence[Any], done: Callable[[int], Any]) -> list[Any]:
        ray = import_ray()
        if id(job) not in self._jobs:
            self._jobs[id(job)] = (job, ray.put(job))
        reference = self._jobs[id(job)][1]
        if self._remote is None:
            self._remote = ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(run_task)
        remote = self._remote
        # The reference goes in a list so that Ray does not fetch the job for every task: the worker
        # fetches it once (run_task).
        pending = {remote.remote([reference], task): i for i, task in enumerate(tasks)}
        results: dict[int, Any] = {}
        while pending:
            finished, _ = ray.wait(list(pending), num_returns=1)
            for ref in finished:
                index = pending.pop(ref)
                results[index] = _result(ray, ref)
                done(index)
        return [results[i] for i in range(len(tasks))]

    def close(self) -> None:
        self._jobs.clear()
        if self._started:
            import_ray().shutdown()
            self._started = False


def _result(ray: Any, ref: Any) -> Any:
    """A task's result; its own error as it was raised there, a lost worker as one line."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        if isinstance(err.cause, OnnxPruneError):
            raise err.cause from None
        raise
    except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as err:
        raise WorkerError(
            f"a Ray worker died {MAX_RETRIES + 1} times running one task ({first_line(err)}); nothing written"
        ) from None


# In a Ray worker: the function each job built, by the job's object id; only the latest few, since each
# holds a model and a session (a sweep alternates between one job per compensation mode).
_built: dict[str, Callable[[Any], Any]] = {}
KEEP_BUILT = 2


def run_task(boxed: list[Any], task: Any) -> Any:
    (reference,) = boxed
    key = reference.hex()
    if key not in _built:
        while len(_built) >= KEEP_BUILT:
            _built.pop(next(iter(_built)))
        _built[key] = import_ray().get(reference).build()
    return _built[key](task)
