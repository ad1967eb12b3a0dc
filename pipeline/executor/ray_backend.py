"""The Ray executor: items as Ray tasks (or calls to a pool of actors) on a local or remote Ray cluster.

Fault tolerance is Ray's own: tasks are retried when their worker dies (``max_retries``), actors are
restarted and their in-flight calls retried (``max_restarts=-1``, ``max_task_retries=-1``). Every item a
stage sends is a pure function of its inputs, or writes its output atomically under a fixed name, so a
retried item gives the same answer and leaves one copy of its output.

``ray.init``: with no address, a private Ray is started on this machine with ``num_cpus`` CPUs (the thread
budget when unset) and a small object store, and stopped by :meth:`RayExecutor.close`; with ``auto`` or
``HOST:PORT`` the driver joins that cluster and leaves it running. A Ray already initialised in this
process (a test's cluster) is used as it is.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Sequence, TypeVar

import ray
from ray.exceptions import RayTaskError
from ray.util import ActorPool

from ...kernels import threads
from ..errors import ChoralError
from .config import ExecutorConfig

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")

TASK_RETRIES = 3  # retries of a task whose worker died (a system failure, not an exception of ours)
FORWARDED = ("CHORAL_", "OMP_NUM_THREADS")  # environment the workers get from the driver


_SHARED: dict[str, Any] = {}  # this worker process's last shared value, by object id


def _resolve(shared: list) -> Any:
    """The value of ``shared[0]`` (an object reference, wrapped so that Ray hands the reference over), fetched
    and deserialised once per worker process: the tasks of a stage that land on one process share one copy (and
    whatever it caches, such as tune's priors), instead of each deserialising the stage's inputs again."""
    key = shared[0].hex()
    if key not in _SHARED:
        _SHARED.clear()  # one value at a time: a worker holds only the stage it is running
        _SHARED[key] = ray.get(shared[0])
    return _SHARED[key]


def _call(fn: Callable[[Any, Any], Any], shared: list, item: Any) -> Any:
    return fn(_resolve(shared), item)


@ray.remote(max_restarts=-1, max_task_retries=-1)
class _StatefulWorker:
    """An actor that builds its state (a teacher scorer) on its first item and keeps it for the others."""

    def __init__(self, make_state: Callable[[], Any]) -> None:
        self._make_state = make_state
        self._state: Any = None
        self._built = False
        self._shared_ref: Any = None
        self._shared: Any = None

    def run(self, fn: Callable[[Any, Any, Any], Any], shared: list, item: Any) -> Any:
        """``fn(state, shared, item)``; ``shared`` comes wrapped in a list (so Ray passes its reference, not its
        value) and is fetched once per actor, not once per call."""
        if not self._built:
            self._state = self._make_state()
            self._built = True
        if self._shared_ref != shared[0]:
            self._shared_ref, self._shared = shared[0], ray.get(shared[0])
        return fn(self._state, self._shared, item)


def unwrap(error: RayTaskError) -> BaseException:
    """The choral error inside a failed task (its one-line message, not Ray's traceback), else ``error``."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, ChoralError) else error


class RayExecutor:
    """Items of a stage as Ray tasks or actor calls; answers in item order."""

    name = "ray"

    def __init__(self, config: ExecutorConfig) -> None:
        self.config = config
        self._started = False  # this executor called ray.init (and so calls ray.shutdown)
        self._connected = False

    def connect(self) -> None:
        """Start or join Ray on first use: a run whose stages are all up to date never starts it."""
        if self._connected:
            return
        self._connected = True
        if ray.is_initialized():
            return
        config = self.config
        env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED)}
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                   "logging_level": logging.WARNING, "configure_logging": False,
                                   "runtime_env": {"env_vars": env} if env else None}
        if config.address is None:
            cpus = config.num_cpus or threads.budget()
            options.update(num_cpus=cpus, object_store_memory=config.object_store_mb * 1024 * 1024)
            log.info("starting a local Ray with %d CPUs and a %d MB object store", cpus, config.object_store_mb)
        else:
            options["address"] = config.address
            log.info("joining the Ray cluster at %s", config.address)
        try:
            ray.init(**options)
        except (ConnectionError, RuntimeError, ValueError) as error:
            text = str(error).strip()
            raise ChoralError(f"cannot start or reach Ray ({config.address or 'local'}): "
                              f"{text.splitlines()[0] if text else type(error).__name__}") from None
        self._started = True

    @property
    def workers(self) -> int:
        """Items in flight at once: ``workers`` of the config, else the cluster's CPUs."""
        if self.config.workers is not None:
            return self.config.workers
        self.connect()
        return max(1, int(ray.cluster_resources().get("CPU", 1)))

    def get(self, refs: list) -> list:
        """``ray.get`` with a failed task's choral error raised as itself."""
        try:
            return ray.get(refs)
        except RayTaskError as error:
            raise unwrap(error) from None

    def put(self, value: Any) -> ray.ObjectRef:
        """``value`` in the object store once; :meth:`map` and :meth:`map_stateful` pass the reference on."""
        self.connect()
        return ray.put(value)

    def _shared(self, shared: Any) -> ray.ObjectRef:
        return shared if isinstance(shared, ray.ObjectRef) else ray.put(shared)

    def map(self, fn: Callable[[Any, Item], Result], items: Sequence[Item], shared: Any = None) -> list[Result]:
        if not items:
            return []
        self.connect()
        task = ray.remote(num_cpus=1, max_retries=TASK_RETRIES)(_call)
        shared_ref = [self._shared(shared)]  # sent once; each worker process gets it from the object store once
        limit = self.config.workers  # tasks in flight at once (None: as many as the cluster runs)
        refs: list = []
        pending: list = []
        for item in items:
            if limit is not None and len(pending) >= limit:
                _, pending = ray.wait(pending, num_returns=1)
            refs.append(task.remote(fn, shared_ref, item))
            pending.append(refs[-1])
        return self.get(refs)

    def map_stateful(self, make_state: Callable[[], Any], fn: Callable[[Any, Any, Item], Result],
                     items: Sequence[Item], shared: Any = None) -> list[Result]:
        if not items:
            return []
        self.connect()
        shared_ref = [self._shared(shared)]
        actors = [_StatefulWorker.options(num_cpus=1).remote(make_state)  # type: ignore[attr-defined]
                  for _ in range(min(self.workers, len(items)))]
        try:
            pool = ActorPool(actors)
            try:
                return list(pool.map(lambda actor, item: actor.run.remote(fn, shared_ref, item), list(items)))
            except RayTaskError as error:
                raise unwrap(error) from None
        finally:
            for actor in actors:
                ray.kill(actor)

    def close(self) -> None:
        """Stop the Ray this executor started (a joined cluster keeps running)."""
        if self._started:  # a private Ray stops; a joined cluster only loses this driver
            ray.shutdown()
        self._started = self._connected = False
