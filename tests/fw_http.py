"""Real HTTP for the firmware tests: a uvicorn server in a thread, and a TCP proxy that cuts
each connection after a chosen number of response bytes (a Wi-Fi drop mid-download)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from tests.services import free_port, wait_port


@contextlib.contextmanager
def run_asgi(app: object, port: int | None = None) -> Iterator[int]:
    """Serve ``app`` on ``port`` (default: a free one) until the block ends; yields the port."""
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",  # type: ignore[arg-type]
                            lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_port(port)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


def file_app(directory: Path) -> Starlette:
    """Serves ``directory/<name>`` with Starlette's FileResponse (ETag, Range, If-Range)."""
    async def serve(request: Request) -> Response:
        path = directory / request.path_params["name"]
        if not path.is_file():
            return Response(status_code=404)
        return FileResponse(path)
    return Starlette(routes=[Route("/files/{name}", serve)])


class CuttingProxy:
    """Forwards 127.0.0.1:port to a target; connection ``i`` is reset after ``budgets[i]``
    response bytes (``None``: never). Runs its own loop in a thread."""

    def __init__(self, target_port: int, budgets: list[int | None]) -> None:
        self.target_port = target_port
        self.budgets = list(budgets)
        self.port = free_port()
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server

    def __enter__(self) -> CuttingProxy:
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *_exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(5)
        self._thread.join(5)

    async def _shutdown(self) -> None:
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()
        self._loop.call_soon(self._loop.stop)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = self.connections
        self.connections += 1
        budget = self.budgets[index] if index < len(self.budgets) else None
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_w]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                       limit: int | None) -> None:
            sent = 0
            while data := await src.read(16384):
                if limit is not None and sent + len(data) >= limit:
                    dst.write(data[: limit - sent])
                    await dst.drain()
                    raise ConnectionResetError("cut")
                dst.write(data)
                await dst.drain()
                sent += len(data)
        tasks = [asyncio.ensure_future(pump(reader, up_w, None)),
                 asyncio.ensure_future(pump(up_r, writer, budget))]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for w in (writer, up_w):
            w.transport.abort()  # RST, like a dropped link
            self._writers.remove(w)


def random_budgets(seed: int, cuts: int, total: int) -> list[int | None]:
    rng = random.Random(seed)
    return [rng.randint(1, max(2, total // (cuts // 2 + 1))) for _ in range(cuts)]
