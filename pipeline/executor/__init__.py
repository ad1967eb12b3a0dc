"""Where the stages' work runs: on this process (``local``, the default) or on a Ray cluster (``ray``).

:mod:`.config` holds the run config's ``executor:`` section; :mod:`.base` the small interface a stage
hands its independent pieces of work to; :mod:`.local` runs them in order here. The Ray modules
(:mod:`.ray_backend`, :mod:`.ray_decode`) import Ray and are imported only when
``executor.kind`` is ``ray``, so a local run never loads it.
"""

from .base import Executor
from .config import ExecutorConfig
from .local import LocalExecutor

__all__ = ["Executor", "ExecutorConfig", "LocalExecutor"]
