"""The interface a stage hands independent pieces of work to (an executor), kept free of Ray.

A stage cuts its work into items that need nothing from each other (chunks of hypothesis sets, batches of
whole groups) and asks for ``fn(shared, item)`` of each; the answers come back in the items' order, so the
stage assembles exactly what its serial loop would have.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Executor(Protocol):
    """Runs ``fn(shared, item)`` for every item and returns the results in item order."""

    name: str

    @property
    def workers(self) -> int:
        """How many items run at once (1 for the local executor)."""
        ...

    def put(self, value: Any) -> Any:
        """A handle of ``value`` that :meth:`map` and :meth:`map_stateful` take as ``shared`` without sending it
        again (several calls over the same inputs send them once); the local executor's handle is ``value``."""
        ...

    def map(self, fn: Callable[[Any, Item], Result], items: Sequence[Item], shared: Any = None) -> list[Result]:
        """``[fn(shared, item) for item in items]``; ``shared`` (a value or a :meth:`put` handle) is sent once,
        not once per item."""
        ...

    def map_stateful(self, make_state: Callable[[], Any], fn: Callable[[Any, Any, Item], Result],
                     items: Sequence[Item], shared: Any = None) -> list[Result]:
        """``[fn(state, shared, item) ...]`` where each worker builds ``state = make_state()`` once (a teacher)
        and gets ``shared`` once."""
        ...
