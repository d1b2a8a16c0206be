"""The liveness rule both deployables apply: a process whose readiness has failed without a
break for longer than a window reports itself dead, so its supervisor (systemd, Kubernetes)
restarts it instead of leaving it wedged (reliability review finding 4)."""

from __future__ import annotations

import time
from collections.abc import Callable


class LivenessWindow:
    """Pure: remembers since when readiness has been failing (monotonic seconds)."""

    def __init__(self, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._failing_since: float | None = None

    def record(self, ready: bool) -> None:
        if ready:
            self._failing_since = None
        elif self._failing_since is None:
            self._failing_since = self._clock()

    def failing_for_s(self) -> float:
        """How long readiness has failed without a success in between (0 when ready)."""
        if self._failing_since is None:
            return 0.0
        return self._clock() - self._failing_since

    def alive(self) -> bool:
        return self.failing_for_s() <= self.window_s
