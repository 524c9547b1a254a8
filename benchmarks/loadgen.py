"""A bounded closed-loop HTTP/1.1 load generator, for machines without ``wrk``.

``python -m benchmarks.loadgen --port 8000 --path /users/42 --seconds 3 --connections 16
[--header 'Authorization: Bearer …']`` keeps *connections* keep-alive connections busy, one
request in flight on each, for *seconds*, and prints one JSON line: requests completed,
elapsed seconds, requests per second, p50 and p99 latency in milliseconds, and how many
answers were not 200. Run it in its own process, so that it does not share the server's
interpreter.

It is slower than ``wrk`` (Python parses every response), so on a 2-core machine it can
saturate before the server does: compare servers by their CPU time per request, which the
benchmark also reports, more than by requests per second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time


async def _connection(
    host: str, port: int, request: bytes, deadline: float, latencies: list[float]
) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    failures = 0
    clock = time.perf_counter
    try:
        while clock() < deadline:
            started = clock()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
            latencies.append(clock() - started)
            if head[9:12] != b"200":
                failures += 1
    finally:
        writer.close()
    return failures


async def run(
    host: str, port: int, path: str, headers: list[str], seconds: float, connections: int
) -> dict[str, float]:
    """Load ``GET path`` for *seconds*; return the measurements."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", *headers, "", ""]
    request = "\r\n".join(lines).encode("latin-1")
    latencies: list[float] = []
    started = time.perf_counter()
    deadline = started + seconds
    failures = await asyncio.gather(
        *(_connection(host, port, request, deadline, latencies) for _ in range(connections))
    )
    elapsed = time.perf_counter() - started
    latencies.sort()

    def quantile(q: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else 0.0
        )

    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "rps": len(latencies) / elapsed,
        "p50_ms": quantile(0.50),
        "p99_ms": quantile(0.99),
        "non_200": sum(failures),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loadgen", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/")
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args(argv)
    result = asyncio.run(
        run(args.host, args.port, args.path, args.header, args.seconds, args.connections)
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
