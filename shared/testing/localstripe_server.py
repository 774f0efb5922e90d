"""localstripe (a stateful fake Stripe server) bound to 127.0.0.1 only; its own CLI binds every
interface. Run as `python -m shared.testing.localstripe_server --port N`."""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import web


async def serve(port: int) -> None:
    from localstripe.server import app

    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"localstripe listening on http://127.0.0.1:{port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
