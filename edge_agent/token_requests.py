"""Request/reply over the agent's uplink matched by ``clientToken``: how AWS's reserved-topic
APIs (Jobs, Device Shadow) answer on ``<request>/accepted`` and ``<request>/rejected``.

The channel owning the reply topics hands each reply to :meth:`TokenRequests.resolve`; a reply
nobody waits for (late, or another client's) is dropped.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from edge_agent.ports import Message, Uplink

__all__ = ["TokenRequests"]

Reply = tuple[bool, dict[str, Any]]  # (accepted, payload)


class TokenRequests:
    def __init__(self, uplink: Uplink, timeout_s: float) -> None:
        self._uplink = uplink
        self.timeout_s = timeout_s
        self._pending: dict[str, asyncio.Future[Reply]] = {}

    async def request(self, topic: str, body: dict[str, Any]) -> Reply:
        """Publish ``body`` with a fresh ``clientToken`` on ``topic`` and await its reply.

        Raises ``TimeoutError`` after :attr:`timeout_s` without one.
        """
        token = uuid.uuid4().hex
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[token] = future
        try:
            await self._uplink.publish(Message(topic, json.dumps(
                {**body, "clientToken": token}).encode()))
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a cancel that lands
            # as the reply does, and the agent's stop() then waits for a task that goes on.
            async with asyncio.timeout(self.timeout_s):
                return await future
        finally:
            self._pending.pop(token, None)

    def resolve(self, accepted: bool, data: dict[str, Any]) -> None:
        """A reply arrived: wake the request that carries its ``clientToken``, if any."""
        future = self._pending.get(str(data.get("clientToken")))
        if future is not None and not future.done():
            future.set_result((accepted, data))
