#!/usr/bin/env python3
"""permessage-deflate on real sockets, against a running node's veriops endpoint (/realtime).

`sb-load` speaks WebSocket through the client crate, whose library (tungstenite) has no
permessage-deflate; this tool uses Python's `websockets` (zlib, as browsers use) for the runs
that compare a node with and without compression, the same client on both sides:

  idle    N clients connect (offering deflate or not), subscribe, and stay: the server's
          memory growth per connection (does compression keep state per idle connection?)
  fanout  N subscribers of project.updated, RATE events/s of PAYLOAD bytes for SECONDS:
          deliveries, bytes on the wire per delivery, server CPU per delivery, latency

Loopback only. Example (server on core 0, this tool on core 1):
  taskset -c 0 ./target/release/switchboard serve &
  taskset -c 1 python3 loadtest/deflate_bench.py --pid $(pgrep -f 'switchboard serve') fanout --deflate
"""

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import random
import sys
import time
import urllib.request

import websockets

DEV_SECRET = b"switchboard-dev-secret-do-not-use-in-production"
DEV_ADMIN = "switchboard-dev-admin-key"
PATH = "/realtime"
CHANNEL = "project.updated"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(sub: str) -> str:
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = b64(json.dumps({"sub": sub, "exp": int(time.time()) + 3600}).encode())
    signature = hmac.new(DEV_SECRET, f"{header}.{claims}".encode(), hashlib.sha256).digest()
    return f"{header}.{claims}.{b64(signature)}"


def server_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Client:
    """One subscriber: counts deliveries, wire bytes and publish-to-receive latency."""

    def __init__(self) -> None:
        self.received = 0
        self.latencies_ms: list[float] = []
        self.ws = None
        self.compressed = False

    async def open(self, server: str, i: int, deflate: bool) -> None:
        url = f"ws://{server}{PATH}?token={token(f'deflate-{i}')}"
        self.ws = await websockets.connect(
            url, compression="deflate" if deflate else None, max_size=1 << 20, ping_interval=None
        )
        extensions = [type(e).__name__ for e in self.ws.protocol.extensions]
        self.compressed = any("Deflate" in e for e in extensions)
        await self.ws.send(json.dumps({"type": "subscribe", "request_id": "s", "payload": {"channel": CHANNEL}}))
        while True:
            ack = json.loads(await self.ws.recv())
            if ack.get("type") == "ack" and ack.get("request_id") == "s":
                assert ack["payload"]["status"] == "ok", ack
                return

    async def listen(self) -> None:
        async for raw in self.ws:
            m = json.loads(raw)
            if m.get("type") == "ping":
                await self.ws.send(json.dumps({"type": "pong", "request_id": m.get("request_id")}))
                continue
            if m.get("type") != "event":
                continue
            due = m["payload"]["data"]["t"]
            self.received += 1
            self.latencies_ms.append(time.time() * 1000 - due)


async def open_all(server: str, n: int, deflate: bool, concurrency: int = 200) -> list[Client]:
    clients = [Client() for _ in range(n)]
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            await clients[i].open(server, i, deflate)

    await asyncio.gather(*(one(i) for i in range(n)))
    return clients


def tasks(payload_bytes: int) -> list:
    """Task records with varied ids, states and numbers, about `payload_bytes` of JSON: data
    that compresses as real event payloads do (a few times), not a repeated string."""
    out, size = [], 0
    while size < payload_bytes:
        task = {
            "id": f"task_{random.randrange(10**8):08d}",
            "status": random.choice(["todo", "in_progress", "review", "done", "blocked"]),
            "assignee": f"usr_{random.randrange(10**6):06d}",
            "progress": round(random.random(), 3),
            "updated_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - random.randrange(86400))) + "Z",
        }
        out.append(task)
        size += len(json.dumps(task)) + 1
    return out


def publish(server: str, payload_bytes: int) -> None:
    body = json.dumps({
        "channel": CHANNEL,
        "type": CHANNEL,
        "payload": {"t": time.time() * 1000, "project_id": "prj_load", "tasks": tasks(payload_bytes)},
    }).encode()
    request = urllib.request.Request(
        f"http://{server}/v1/publish", data=body, method="POST",
        headers={"Authorization": f"Bearer {DEV_ADMIN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def wire_bytes(_pid: int) -> int:
    """Bytes sent over loopback (every socket on it: the deliveries, and the little else this
    run sends), from /proc/net/dev. (/proc/PID/io misses socket `send` calls.)"""
    with open("/proc/net/dev") as f:
        for line in f:
            name, _, counters = line.partition(":")
            if name.strip() == "lo":
                return int(counters.split()[8])
    return 0


async def fanout(args) -> dict:
    clients = await open_all(args.server, args.subscribers, args.deflate)
    listeners = [asyncio.create_task(c.listen()) for c in clients]
    loop = asyncio.get_running_loop()
    events = int(args.rate * args.seconds)
    cpu0, wire0, t0 = server_cpu(args.pid), wire_bytes(args.pid), time.time()
    for k in range(events):
        due = t0 + k / args.rate
        await asyncio.sleep(max(0.0, due - time.time()))
        await loop.run_in_executor(None, publish, args.server, args.payload_bytes)
    expected = events * len(clients)
    deadline = time.time() + 30
    while sum(c.received for c in clients) < expected and time.time() < deadline:
        await asyncio.sleep(0.1)
    cpu, wire, elapsed = server_cpu(args.pid) - cpu0, wire_bytes(args.pid) - wire0, time.time() - t0
    got = sum(c.received for c in clients)
    latencies = sorted(x for c in clients for x in c.latencies_ms)
    for t in listeners:
        t.cancel()
    return {
        "scenario": "fanout",
        "deflate_agreed": sum(c.compressed for c in clients),
        "subscribers": len(clients),
        "deliveries": got,
        "deliveries_expected": expected,
        "server_cpu_seconds": round(cpu, 3),
        "deliveries_per_server_cpu_second": round(got / cpu) if cpu > 0 else None,
        "loopback_bytes_per_delivery": round(wire / got) if got else None,
        "p50_ms": round(latencies[len(latencies) // 2], 1) if latencies else None,
        "p99_ms": round(latencies[int(len(latencies) * 0.99)], 1) if latencies else None,
        "seconds": round(elapsed, 1),
    }


async def idle(args) -> dict:
    before = server_rss(args.pid)
    clients = await open_all(args.server, args.connections, args.deflate)
    await asyncio.sleep(3)
    after = server_rss(args.pid)
    result = {
        "scenario": "idle",
        "connections": len(clients),
        "deflate_agreed": sum(c.compressed for c in clients),
        "server_rss_before": before,
        "server_rss_after": after,
        "bytes_per_connection": round((after - before) / len(clients)),
    }
    await asyncio.gather(*(c.ws.close() for c in clients), return_exceptions=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default="127.0.0.1:8080")
    parser.add_argument("--pid", type=int, required=True, help="the server's process id (CPU, memory)")
    sub = parser.add_subparsers(dest="scenario", required=True)
    f = sub.add_parser("fanout")
    f.add_argument("--subscribers", type=int, default=1000)
    f.add_argument("--rate", type=float, default=5.0)
    f.add_argument("--seconds", type=float, default=12.0)
    f.add_argument("--payload-bytes", type=int, default=2048)
    f.add_argument("--deflate", action="store_true", help="offer permessage-deflate")
    i = sub.add_parser("idle")
    i.add_argument("--connections", type=int, default=5000)
    i.add_argument("--deflate", action="store_true", help="offer permessage-deflate")
    args = parser.parse_args()
    host = args.server.rsplit(":", 1)[0]
    if not host.startswith("127.") and host != "localhost":
        sys.exit("deflate_bench.py only targets loopback addresses (127.0.0.0/8)")
    if args.scenario == "fanout" and (args.seconds > 600 or args.subscribers > 15000):
        sys.exit("fanout is bounded to 600 s and 15,000 subscribers")
    if args.scenario == "idle" and args.connections > 15000:
        sys.exit("idle is bounded to 15,000 connections")
    run = fanout if args.scenario == "fanout" else idle
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
