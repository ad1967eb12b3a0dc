"""``executor:`` of the run config (``choral run --executor``): where the stages run and how widely."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import ConfigError

ExecutorKind = Literal["local", "ray"]


@dataclass(frozen=True)
class ExecutorConfig:
    """Which executor runs the stages, and the Ray settings (ignored by ``local``).

    ``address``: None starts a private Ray on this machine (``num_cpus`` CPUs, an object store of
    ``object_store_mb``) and stops it at the end; ``auto`` joins the cluster ``ray start`` runs here;
    ``HOST:PORT`` joins a remote head. ``decode_actors`` teachers decode ``shard_cuts`` cuts per shard, each
    actor holding ``cpus_per_actor`` CPUs and ``gpus_per_actor`` GPUs (0: CPU actors). ``workers`` is the
    number of tasks / actors of the other stages in parallel (None: the cluster's CPUs).
    """

    kind: ExecutorKind = "local"
    address: str | None = None
    num_cpus: int | None = None
    object_store_mb: int = 200
    decode_actors: int = 2
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    shard_cuts: int = 1000
    workers: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("local", "ray"):
            raise ConfigError("kind", f"must be local or ray, not {self.kind!r}")
        if self.address is not None and not self.address.strip():
            raise ConfigError("address", "must be auto or HOST:PORT (leave it out to start Ray here)")
        for name in ("num_cpus", "workers"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(name, f"must be at least 1, not {value}")
        for name in ("decode_actors", "shard_cuts"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be at least 1, not {getattr(self, name)}")
        if self.object_store_mb < 80:  # Ray refuses a smaller store
            raise ConfigError("object_store_mb", f"must be at least 80 (MB), not {self.object_store_mb}")
        if self.cpus_per_actor < 0 or self.gpus_per_actor < 0:
            raise ConfigError("gpus_per_actor" if self.gpus_per_actor < 0 else "cpus_per_actor",
                              "must not be negative")
        if self.cpus_per_actor == 0 and self.gpus_per_actor == 0:
            raise ConfigError("cpus_per_actor", "an actor needs some CPU or GPU", related=("gpus_per_actor",))
