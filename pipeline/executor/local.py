"""The local executor: every item in order, in this process (what the stages do without an executor)."""

from __future__ import annotations

from typing import Any, Callable, Sequence, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class LocalExecutor:
    """Runs items one after the other here; the reference the Ray executor's answers are checked against."""

    name = "local"
    workers = 1

    def put(self, value: Any) -> Any:
        return value

    def map(self, fn: Callable[[Any, Item], Result], items: Sequence[Item], shared: Any = None) -> list[Result]:
        return [fn(shared, item) for item in items]

    def map_stateful(self, make_state: Callable[[], Any], fn: Callable[[Any, Any, Item], Result],
                     items: Sequence[Item], shared: Any = None) -> list[Result]:
        state = make_state() if items else None
        return [fn(state, shared, item) for item in items]
