"""Fakes of the command ports (``CommandBus``, ``OutboxStore``) for unit tests and demos."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from cloud_sync.errors import BrokerUnavailable
from cloud_sync.ports import StoredCommand


@dataclass
class FakePublishHandle:
    acked: bool

    def wait(self, timeout_s: float) -> bool:
        return self.acked


class FakeCommandBus:
    """``handler(topic, payload)`` returns whether the broker PUBACKs (default: always);
    ``connected=False`` makes publishing raise ``BrokerUnavailable``."""

    def __init__(self, handler: Callable[[str, bytes], bool] | None = None) -> None:
        self.published: list[tuple[str, bytes]] = []
        self.connected = True
        self._handler = handler or (lambda _topic, _payload: True)

    def publish_tracked(self, topic: str, payload: bytes) -> FakePublishHandle:
        if not self.connected:
            raise BrokerUnavailable("fake broker down")
        self.published.append((topic, payload))
        return FakePublishHandle(self._handler(topic, payload))


class FakeOutboxStore:
    """An in-memory outbox of ``StoredCommand``s keyed by id, due at ``available_at``."""

    def __init__(self, commands: Sequence[StoredCommand] = ()) -> None:
        self.commands = {c.command_id: c for c in commands}
        self.available_at = {c.command_id: c.created_at for c in commands}

    def dispatch_due(self, now_ms: Callable[[], int], limit: int, redelivery_ms: int,
                     publish: Callable[[Sequence[StoredCommand]], list[str]],
                     ) -> tuple[int, int]:
        now = now_ms()
        due = sorted((c for c in self.commands.values()
                      if self.available_at.get(c.command_id, now + 1) <= now
                      and c.expires_at > now),
                     key=lambda c: (c.priority != "safety", self.available_at[c.command_id]))
        claimed = due[:limit]
        confirmed = publish(claimed) if claimed else []
        for command_id in confirmed:
            old = self.commands[command_id]
            self.commands[command_id] = replace(
                old, attempts=old.attempts + 1,
                status="sent" if old.status == "pending" else old.status,
                sent_at=old.sent_at if old.sent_at is not None else now)
            self.available_at[command_id] = now + redelivery_ms
        return len(claimed), len(confirmed)

    def next_due_ms(self) -> int | None:
        return min(self.available_at.values(), default=None)

    def expire_due(self, now: int, limit: int = 500) -> int:
        expired = [i for i in self.available_at if self.commands[i].expires_at <= now][:limit]
        for command_id in expired:
            del self.available_at[command_id]
            self.commands[command_id] = replace(self.commands[command_id], status="expired",
                                                completed_at=now)
        return len(expired)
