"""Work per call measured as Python lines executed, not as time: a bound on it
holds on any machine and fails at once when a loop starts to grow with the input.

Only the lines of the modules named are counted (C-level bisects and memmoves are
not: they are what the modules rely on to stay O(log n))."""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import FrameType, ModuleType
from typing import Any


class LineCounter:
    """`counter(fn, *args)` calls fn and returns its result; `counter.last` is the
    number of lines it executed in `modules`."""

    def __init__(self, *modules: ModuleType) -> None:
        self._files = {m.__file__ for m in modules}
        self.last = 0

    def __call__(self, fn: Callable[..., Any], *args: Any) -> Any:
        count = 0

        def local(frame: FrameType, event: str, arg: object) -> Any:
            nonlocal count
            if event == "line":
                count += 1
            return local

        def scope(frame: FrameType, event: str, arg: object) -> Any:
            return local if frame.f_code.co_filename in self._files else None

        previous = sys.gettrace()
        sys.settrace(scope)
        try:
            return fn(*args)
        finally:
            sys.settrace(previous)
            self.last = count
