#!/usr/bin/env python3
"""A docker-registry reached through a throttle, as a fleet's registry is.

This machine's kernel has no netem, so the throttle is a TCP relay in front of the registry:
every byte waits half the round-trip time in each direction, and each direction of the link is
paced to the given rate, shared by every connection (as one network link is: parallel requests
divide it, they do not multiply it). Run it, then point clade at the address it prints:

    python3 scripts/throttled-registry.py --rate-mbit 100 --rtt-ms 20 --port 29600 &
    clade bench pull --registry 127.0.0.1:29600 --insecure -n 4

It stops the registry when it is stopped (SIGTERM or Ctrl-C).
"""
import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Direction:
    """One direction of the link: when it is next free to send, for every connection."""

    def __init__(self, rate_bytes):
        self.rate_bytes = rate_bytes
        self.next_free = time.monotonic()

    def reserve(self, size):
        """The time a piece of `size` bytes may go, given what is already queued on the link."""
        start = max(self.next_free, time.monotonic())
        self.next_free = start + size / self.rate_bytes
        return self.next_free


async def pump(reader, writer, delay, link):
    """Copies one direction of one connection: each piece is released `delay` seconds after it
    arrived, and not before the shared link direction has room for it."""
    queue: asyncio.Queue = asyncio.Queue()

    async def receive():
        while True:
            data = await reader.read(65536)
            await queue.put((time.monotonic() + delay, data))
            if not data:
                return

    async def send():
        while True:
            due, data = await queue.get()
            now = time.monotonic()
            if due > now:
                await asyncio.sleep(due - now)
            if not data:
                writer.close()
                return
            free = link.reserve(len(data))
            if free > time.monotonic():
                await asyncio.sleep(free - time.monotonic())
            writer.write(data)
            await writer.drain()

    await asyncio.gather(receive(), send(), return_exceptions=True)


async def relay(args, upstream_port):
    delay = args.rtt_ms / 2000.0
    rate_bytes = args.rate_mbit * 1_000_000 / 8
    towards_registry, towards_clients = Direction(rate_bytes), Direction(rate_bytes)

    async def handle(client_reader, client_writer):
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            pump(client_reader, upstream_writer, delay, towards_registry),
            pump(upstream_reader, client_writer, delay, towards_clients),
            return_exceptions=True,
        )

    server = await asyncio.start_server(handle, "127.0.0.1", args.port)
    print(f"127.0.0.1:{args.port}", flush=True)
    async with server:
        await server.serve_forever()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate-mbit", type=float, default=100)
    parser.add_argument("--rtt-ms", type=float, default=20)
    parser.add_argument("--port", type=int, default=29600)
    args = parser.parse_args()
    binary = shutil.which("docker-registry")
    if binary is None:
        sys.exit("docker-registry is not installed (apt-get install docker-registry)")
    storage = tempfile.mkdtemp(prefix="clade-throttled-registry-")
    upstream_port = free_port()
    config = os.path.join(storage, "config.yml")
    with open(config, "w") as handle:
        handle.write(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {storage}/data\nhttp:\n  addr: 127.0.0.1:{upstream_port}\n")
    registry = subprocess.Popen([binary, "serve", config], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", upstream_port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        asyncio.run(relay(args, upstream_port))
    finally:
        registry.terminate()
        registry.wait()
        shutil.rmtree(storage, ignore_errors=True)


if __name__ == "__main__":
    main()
