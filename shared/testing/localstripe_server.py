"""localstripe (a stateful fake Stripe server) bound to 127.0.0.1 only; its own CLI binds every
interface. Run as `python -m shared.testing.localstripe_server --port N [--state FILE]`.

localstripe pickles its whole store to the fixed /tmp/localstripe.pickle on every write and loads it
at start: two instances (a `make up` and a test run) would load each other's objects, or a half-written
file. Here the store lives in `--state` (kept across restarts of `make up`) or only in memory."""

from __future__ import annotations

import argparse
import asyncio
import pickle
import subprocess
import sys
from pathlib import Path

import httpx
from aiohttp import web

from shared.testing.waiting import free_port, port_open, stop, wait_until


def _keep_state_in(path: Path | None) -> None:
    from localstripe.resources import Store

    def load(store: Store) -> None:
        if path is not None and path.exists():
            with path.open("rb") as file:
                store.update(pickle.load(file))  # noqa: S301  # our own file, written below

    def dump(store: Store) -> None:
        if path is not None:
            partial = path.with_suffix(".partial")
            with partial.open("wb") as file:
                pickle.dump(dict(store), file, protocol=pickle.HIGHEST_PROTOCOL)
            partial.replace(path)

    Store.try_load_from_disk = load
    Store.dump_to_disk = dump


async def serve(port: int, state: Path | None) -> None:
    _keep_state_in(state)
    from localstripe.server import app

    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"localstripe listening on http://127.0.0.1:{port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def register_webhook(api_base: str, url: str, secret: str) -> None:
    """Have localstripe send every event it emits to `url`, signed with `secret` (Stripe's scheme)."""
    response = httpx.post(f"{api_base}/_config/webhooks/creditstream", data={"url": url, "secret": secret}, timeout=10)
    response.raise_for_status()


class LocalStripe:
    """localstripe as a subprocess on a free port, its store in memory (for tests and benchmarks)."""

    def __init__(self, port: int | None = None, state: Path | None = None) -> None:
        self.port = port or free_port()
        self.api_base = f"http://127.0.0.1:{self.port}"
        self._state = state
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, new_session: bool = False) -> LocalStripe:
        command = [sys.executable, "-m", "shared.testing.localstripe_server", "--port", str(self.port)]
        if self._state is not None:
            command += ["--state", str(self._state)]
        self.process = process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=new_session
        )
        wait_until(lambda: port_open(self.port) or process.poll() is not None, timeout=20, what="localstripe")
        if process.poll() is not None:
            raise RuntimeError(f"localstripe exited with {process.returncode}")
        return self

    def stop(self) -> None:
        if self.process:
            stop(self.process)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state", type=Path, default=None, help="where to keep the store (default: memory only)")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.state))


if __name__ == "__main__":
    main()
