"""``ShadowSync``: each actuator's named shadow kept in step with the device, through the
agent's command pipeline.

- On every connect, for each shadow: ``get``; send what is pending locally (reported state:
  local wins; desired keys handled: cleared, guarded by the version); apply the delta that
  remains (cloud wins for desired). Then every ``/update/delta`` is applied as it comes.
- Applying a delta submits one :class:`~protocols.commands.Command` per desired key through
  :meth:`CommandService.submit_local <edge_agent.commands.CommandService.submit_local>`: the
  same queue, interlocks and dedup window as the cloud's commands. Command ids are
  deterministic per request (:mod:`edge_agent.shadow_local`), so a delta seen again after a
  crash or reconnect is deduplicated, never re-executed.
- Every ack on a shadowed device (shadow commands, cloud commands, Home Assistant) updates
  reported; a shadow command's ack also clears its desired key. A 409 (desired changed
  meanwhile) makes it ``get`` again and apply the new delta.
- Offline, everything is kept in the :class:`~edge_agent.shadow_store.SqliteShadowStore` and
  sent on the next connect; a request that found no answer is retried after 1 s, doubling up
  to ``retry_s``.

Decisions are pure (:mod:`edge_agent.shadow_local`); this module does the I/O and ordering.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping

from edge_agent.backoff import Backoff
from edge_agent.commands import CommandService
from edge_agent.errors import EdgeAgentError
from edge_agent.ports import ActuatorResult, Clock, Connectivity, ShadowChannel, ShadowDelta
from edge_agent.shadow_channel import ShadowRejected, ShadowUnavailable
from edge_agent.shadow_local import (
    LocalShadow,
    Planned,
    after_report,
    expected_delta,
    observe_ack,
    observe_read_back,
    plan,
    report_request,
    take_delta,
    take_snapshot,
    unfinished,
)
from edge_agent.shadow_store import SqliteShadowStore
from protocols.commands import Command, CommandAck

__all__ = ["ShadowSync"]

log = logging.getLogger(__name__)

CONFLICT_RETRIES = 3


class ShadowSync:
    """Syncs the named shadows ``names`` (actuator ids) of ``gateway_id``.

    Call :meth:`start` after the command service started (it loads the store, reads each
    device back and subscribes to acks), then run :meth:`run` as a supervised task.
    """

    def __init__(self, gateway_id: str, names: Iterable[str], *, channel: ShadowChannel,
                 link: Connectivity, commands: CommandService, store: SqliteShadowStore,
                 clock: Clock, command_ttl_s: float = 300.0, retry_s: float = 30.0) -> None:
        self.gateway_id = gateway_id
        self.names = sorted(set(names))
        self._channel = channel
        self._link = link
        self._commands = commands
        self._store = store
        self._clock = clock
        self._ttl_ms = round(command_ttl_s * 1000)
        self._retry_s = retry_s
        # After a broker restart the first get can beat the cloud's re-subscription and be
        # lost: retry soon (1 s, doubling), not a whole retry_s later.
        self._backoff = Backoff(min(1.0, retry_s), retry_s)
        self.shadows: dict[str, LocalShadow] = {n: LocalShadow(n) for n in self.names}
        self._stale: set[str] = set(self.names)  # to get() before anything else is sent
        self._disconnects = 0  # counted by _watch_link
        self._inflight: set[str] = set()
        self._lock = asyncio.Lock()  # one shadow conversation at a time: versions stay right
        self._save_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self.submitted = 0
        self.conflicts = 0
        self.failures = 0  # requests unanswered in a row
        self.storage_errors = 0

    @property
    def synced(self) -> bool:
        """Every shadow was fetched and reconciled since the last connect (for probes)."""
        return not self._stale and self._link.is_connected

    async def start(self) -> None:
        """Raises ``EdgeAgentError`` when the store cannot be opened or read."""
        await asyncio.to_thread(self._store.open)
        stored = await asyncio.to_thread(self._store.load)
        self.shadows.update({n: s for n, s in stored.items() if n in self.shadows})
        for name in self.names:
            state = await self._read_back(name)
            if state:
                await self._set(observe_read_back(self.shadows[name], state))
        self._commands.on_ack(self._on_ack)

    async def stop(self) -> None:
        await asyncio.to_thread(self._store.close)

    async def run(self) -> None:
        """The loops until cancelled; one failing cancels the others (the supervisor then
        restarts them together)."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._sync_loop())
            group.create_task(self._delta_loop())
            group.create_task(self._watch_link())

    # -- loops -----------------------------------------------------------------------------

    async def _sync_loop(self) -> None:
        while True:
            await self._link.wait_connected()
            self._stale = set(self.names)  # desired may have changed while we were away
            ok = await self._sync_all()
            while self._link.is_connected:
                await self._wait_for_work(None if ok else self._retry_delay())
                if self._link.is_connected:
                    ok = await self._sync_all()

    async def _watch_link(self) -> None:
        """Every disconnect makes every shadow stale, as it happens: the sync loop can be busy
        (a slow fsync) through a whole disconnect and reconnect, and would then miss the
        ``get`` that finds desired changes made while we were away."""
        while True:
            await self._link.wait_disconnected()
            self._disconnects += 1
            self._stale = set(self.names)
            self._wake.set()
            await self._link.wait_connected()

    def _retry_delay(self) -> float:
        """Unanswered requests back off from 1 s to ``retry_s``; a reconcile that ran out of
        409 retries waits the whole ``retry_s``."""
        return self._backoff.delay(self.failures) if self.failures else self._retry_s

    async def _wait_for_work(self, timeout_s: float | None) -> None:
        """Until an ack or a disconnect (or ``timeout_s``, to retry after no answer)."""
        wake = asyncio.ensure_future(self._wake.wait())
        down = asyncio.ensure_future(self._link.wait_disconnected())
        try:
            await asyncio.wait({wake, down}, timeout=timeout_s,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Cancelled, not awaited: awaiting them under suppress(CancelledError) would also
            # swallow a cancel of this task that lands meanwhile, and the agent's stop() hangs.
            wake.cancel()
            down.cancel()
        self._wake.clear()

    async def _delta_loop(self) -> None:
        while True:
            delta = await self._channel.next_delta()
            if delta.name not in self.shadows:
                continue
            async with self._lock:
                try:
                    await self._on_delta(delta)
                except (ShadowUnavailable, ShadowRejected) as exc:
                    self._unanswered(delta.name, exc)
                    self._stale.add(delta.name)
                    self._wake.set()

    async def _sync_all(self) -> bool:
        """Reconcile stale shadows and flush pending ones; False when the service did not
        answer (the rest waits for the retry)."""
        ok = True
        async with self._lock:
            for name in self.names:
                try:
                    if name in self._stale:
                        ok = await self._reconcile(name) and ok
                    else:
                        ok = await self._flush(name) and ok
                except (ShadowUnavailable, ShadowRejected) as exc:  # rejected: a get refused
                    self._unanswered(name, exc)
                    return False
        self.failures = 0
        return ok

    def _unanswered(self, name: str, exc: EdgeAgentError) -> None:
        """A service that is down is logged once, then at debug until it answers again."""
        self.failures += 1
        level = logging.WARNING if self.failures == 1 else logging.DEBUG
        log.log(level, "shadow %s: %s; retrying, at most every %.0fs (%d failures so far)",
                name, exc, self._retry_s, self.failures)

    # -- one shadow (called with the lock held) --------------------------------------------

    async def _reconcile(self, name: str) -> bool:
        """``get``, send what is pending, apply what remains of the delta (and requests
        taken on before a crash whose ack was never seen: their ids dedup them)."""
        for _ in range(CONFLICT_RETRIES):
            disconnects = self._disconnects
            snapshot = await self._channel.get(name)
            shadow = await self._set(take_snapshot(self.shadows[name], snapshot))
            remaining = dict(snapshot.delta) if snapshot is not None else {}
            pending = report_request(shadow)
            if pending is not None:
                state, guard = pending
                if not await self._send(shadow, state, guard):
                    continue  # 409: someone changed it meanwhile; look again
                remaining = expected_delta(snapshot, state)
            remaining = {**unfinished(self.shadows[name]), **remaining}
            if self._disconnects == disconnects:  # else: a disconnect since the get
                self._stale.discard(name)
            if snapshot is not None and remaining:
                await self._apply(name, remaining, snapshot.desired_ts, snapshot.version)
            return True
        log.warning("shadow %s kept changing under %d updates; trying again later", name,
                    CONFLICT_RETRIES)
        return False

    async def _flush(self, name: str) -> bool:
        """Send what is pending; on 409 reconcile. False: still not in step."""
        pending = report_request(self.shadows[name])
        if pending is None:
            return True
        state, guard = pending
        if await self._send(self.shadows[name], state, guard):
            return True
        self._stale.add(name)
        return await self._reconcile(name)

    async def _send(self, shadow: LocalShadow, state: dict[str, object],
                    guard: int | None) -> bool:
        """One update; False on 409. Other refusals are logged and dropped (retrying a
        400 or 413 could only fail the same way)."""
        try:
            version = await self._channel.update(shadow.name, state, version=guard)
        except ShadowRejected as exc:
            if exc.code == 409:
                self.conflicts += 1
                return False
            log.error("shadow %s refused our update (%s); dropped: %s", shadow.name, exc,
                      state)
            version = shadow.version if shadow.version is not None else 0
        await self._set(after_report(self.shadows[shadow.name], shadow, state, version))
        return True

    async def _on_delta(self, delta: ShadowDelta) -> None:
        shadow = take_delta(self.shadows[delta.name], delta)
        if shadow is None:
            log.debug("stale delta v%d for shadow %s ignored", delta.version, delta.name)
            return
        await self._set(shadow)
        await self._apply(delta.name, delta.state, delta.desired_ts, delta.version)
        if delta.name not in self._stale and not await self._flush(delta.name):
            self._wake.set()  # the sync loop retries it (then on its timer)

    async def _apply(self, name: str, state: Mapping[str, object],
                     desired_ts: Mapping[str, int], version: int) -> None:
        """Submit the commands of ``state``; the requests are durable before any runs."""
        shadow, planned = plan(self.shadows[name], self.gateway_id, dict(state), desired_ts,
                               version)
        if not await self._save(shadow) and planned:
            log.error("shadow %s: desired %s not applied (its command ids could not be "
                      "stored)", name, ", ".join(p.key for p in planned))
            return
        now = self._clock.now_ms()
        for item in planned:
            if item.command_id in self._inflight or not self._still_wanted(name, item):
                continue
            command = Command(command_id=item.command_id, gateway_id=self.gateway_id,
                              device_id=name, action=item.action.action,
                              params=item.action.params, issued_at=now,
                              expires_at=now + self._ttl_ms)
            if self._commands.submit_local(command, self._on_reply):
                self._inflight.add(item.command_id)
                self.submitted += 1
            else:
                log.warning("command queue full: desired %s of %s waits for the next sync",
                            item.key, name)
        if shadow.report_pending:
            self._wake.set()  # an invalid key was refused: report (and clear) it

    def _still_wanted(self, name: str, item: Planned) -> bool:
        """The request ``item`` was planned for is still open: its ack can land while the plan
        is saved, and then its id has already left ``_inflight`` (a resubmission would only
        be deduplicated, but it is a second trip through the executor)."""
        request = self.shadows[name].requests.get(item.key)
        return (request is not None and not request.handled
                and self.shadows[name].command_id(self.gateway_id, item.key) == item.command_id)

    # -- acks (on the command worker: quick, no shadow I/O) --------------------------------

    async def _on_reply(self, ack: CommandAck) -> None:
        log.info("shadow command %s on %s: %s%s", ack.command_id, ack.device_id,
                 ack.outcome.value, f" ({ack.reason})" if ack.reason else "")

    async def _on_ack(self, ack: CommandAck) -> None:
        if ack.device_id not in self.shadows:
            return
        self._inflight.discard(ack.command_id)
        # A repeat's stored result may be old, an unknown/refused one is empty: ask the device.
        state = ack.result if ack.result and not ack.duplicate else \
            await self._read_back(ack.device_id)
        await self._set(observe_ack(self.shadows[ack.device_id], self.gateway_id, ack,
                                    state or None))
        self._wake.set()

    async def _read_back(self, name: str) -> ActuatorResult | None:
        device = self._commands.executor.actuators.get(name)
        if device is None:
            return None
        try:
            return await device.read_back()
        except EdgeAgentError as exc:
            log.warning("cannot read %s for its shadow: %s", name, exc)
            return None

    async def _set(self, shadow: LocalShadow) -> LocalShadow:
        await self._save(shadow)
        return shadow

    async def _save(self, shadow: LocalShadow) -> bool:
        """Keep ``shadow`` in memory and on disk (saves are serialised and each writes the
        latest state, so the disk never goes back to an older one). False: not on disk."""
        self.shadows[shadow.name] = shadow
        async with self._save_lock:
            try:
                await asyncio.to_thread(self._store.save, self.shadows[shadow.name])
            except EdgeAgentError as exc:
                self.storage_errors += 1
                log.error("shadow %s not saved: %s", shadow.name, exc)
                return False
        return True
