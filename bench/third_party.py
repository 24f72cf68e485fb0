"""Side by side: python `scim2-client` versus scimsync, pushing the same N users
into the same third-party SCIM server (python-scim `scim2-server`), on the same
machine in one run.

Started by bench/third_party.sh, which makes the virtual environment. For each
server kind (the `scim2-server` command, a threaded wsgiref server speaking
HTTP/1.0; and the same library's ASGI application under uvicorn, HTTP/1.1 with
keep-alive) it starts ONE server with one isolated tenant (its own empty store)
per measurement, then, REPEATS times:

  * scim2-client, sequential: SyncSCIMClient over one httpx2.Client, one
    `create(User)` after the other;
  * scim2-client, concurrent: AsyncSCIMClient over one httpx2.AsyncClient,
    CONCURRENCY creates in flight (asyncio.gather + a semaphore);
  * scimsync: `scimsync sync` (release binary, scim2 connector, CONCURRENCY
    requests in flight, no rate limit) from a users.csv of the same N people.

Each measurement times the whole push (for scimsync: the whole process,
start-up, first full read of the target and SQLite writes included; for the
python client: discovery plus the creates, interpreter start-up excluded) and
checks afterwards, through the server's own API, that the tenant holds exactly
N users. Prints one line per measurement and the medians; `--json FILE` also
writes them.
"""

import argparse
import asyncio
import csv
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import httpx2
from scim2_client.engines.httpx2 import AsyncSCIMClient
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_models import Email
from scim2_models import Name
from scim2_models import User

TOKEN = "bench-token"
HERE = os.path.dirname(os.path.abspath(__file__))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def person(i: int) -> dict:
    return {
        "id": f"{100000 + i}",
        "user_name": f"user{i:06d}@example.com",
        "given_name": f"Given{i}",
        "family_name": f"Family{i}",
        "email": f"user{i:06d}@example.com",
        "title": "Engineer",
    }


def scim_user(p: dict) -> User:
    # The same attributes scimsync's scim2 profile sends for a users.csv row.
    return User(
        external_id=p["id"],
        user_name=p["user_name"],
        name=Name(given_name=p["given_name"], family_name=p["family_name"]),
        display_name=f"{p['given_name']} {p['family_name']}",
        emails=[Email(value=p["email"], type="work", primary=True)],
        active=True,
        title=p["title"],
    )


class Server:
    """One scim2-server with dynamic tenants, as a child process."""

    def __init__(self, kind: str, venv_bin: str, workdir: str):
        self.kind = kind
        self.port = free_port()
        self.log = open(os.path.join(workdir, f"server-{kind}.log"), "w")
        if kind == "wsgiref":
            cmd = [
                os.path.join(venv_bin, "scim2-server"),
                "--hostname", "127.0.0.1", "--port", str(self.port),
                "--bearer-token", TOKEN, "--dynamic-tenants",
            ]
        else:
            cmd = [
                os.path.join(venv_bin, "uvicorn"), "--factory", "scim2_uvicorn:app",
                "--app-dir", HERE, "--host", "127.0.0.1", "--port", str(self.port),
                "--no-access-log", "--log-level", "warning",
            ]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.count("probe")
                return
            except Exception:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"{kind} server did not start; see {self.log.name}")
                time.sleep(0.05)

    def base(self, tenant: str) -> str:
        return f"http://127.0.0.1:{self.port}/{tenant}/v2"

    def count(self, tenant: str) -> int:
        req = urllib.request.Request(
            f"{self.base(tenant)}/Users?count=1",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.load(r)["totalResults"]

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server process has used so far."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


def push_sequential(base: str, people: list) -> float:
    started = time.perf_counter()
    with httpx2.Client(
        base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
    ) as http:
        client = SyncSCIMClient(http)
        client.discover()
        for p in people:
            client.create(scim_user(p))
    return time.perf_counter() - started


async def _push_concurrent(base: str, people: list, concurrency: int) -> None:
    limits = httpx2.Limits(max_connections=concurrency)
    async with httpx2.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60,
        limits=limits,
    ) as http:
        client = AsyncSCIMClient(http)
        await client.discover()
        gate = asyncio.Semaphore(concurrency)

        async def one(p):
            async with gate:
                await client.create(scim_user(p))

        await asyncio.gather(*(one(p) for p in people))


def push_concurrent(base: str, people: list, concurrency: int) -> float:
    started = time.perf_counter()
    asyncio.run(_push_concurrent(base, people, concurrency))
    return time.perf_counter() - started


def push_scimsync(binary: str, base: str, people: list, concurrency: int, workdir: str) -> float:
    d = tempfile.mkdtemp(dir=workdir)
    with open(os.path.join(d, "users.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "user_name", "given_name", "family_name", "email", "active", "title"])
        for p in people:
            w.writerow([p["id"], p["user_name"], p["given_name"], p["family_name"],
                        p["email"], "true", p["title"]])
    with open(os.path.join(d, "key"), "w") as f:
        f.write(TOKEN + "\n")
    with open(os.path.join(d, "scimsync.toml"), "w") as f:
        f.write(
            '[source]\nusers = "users.csv"\n\n[target]\nname = "bench"\n'
            f'connector = "scim2"\nbase_url = "{base}"\napi_key_file = "key"\n'
            f"requests_per_second = 100000.0\nburst = 100000\nconcurrency = {concurrency}\n"
        )
    started = time.perf_counter()
    out = subprocess.run(
        [binary, "-q", "-c", "scimsync.toml", "sync"], cwd=d,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    elapsed = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"scimsync sync exited {out.returncode}: {out.stderr}")
    return elapsed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scimsync", required=True)
    ap.add_argument("--venv-bin", required=True)
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--servers", default="wsgiref,uvicorn")
    ap.add_argument("--json")
    args = ap.parse_args()

    args.scimsync = os.path.abspath(args.scimsync)
    people = [person(i) for i in range(args.n)]
    workdir = tempfile.mkdtemp(prefix="scimsync-bench-")
    results = []
    for kind in args.servers.split(","):
        server = Server(kind, args.venv_bin, workdir)
        try:
            for rep in range(1, args.repeats + 1):
                runs = [
                    ("scim2-client sequential", lambda b: push_sequential(b, people)),
                    (f"scim2-client concurrent ({args.concurrency})",
                     lambda b: push_concurrent(b, people, args.concurrency)),
                    (f"scimsync ({args.concurrency} in flight)",
                     lambda b: push_scimsync(args.scimsync, b, people, args.concurrency, workdir)),
                ]
                for ci, (name, push) in enumerate(runs):
                    tenant = f"r{rep}c{ci}"
                    server_cpu = server.cpu_seconds()
                    own_cpu = time.process_time()
                    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
                    seconds = push(server.base(tenant))
                    kids_after = resource.getrusage(resource.RUSAGE_CHILDREN)
                    # The client's CPU: this process for scim2-client, the
                    # scimsync child for scimsync.
                    client_cpu = (time.process_time() - own_cpu) + (
                        kids_after.ru_utime + kids_after.ru_stime - kids.ru_utime - kids.ru_stime
                    )
                    server_cpu = server.cpu_seconds() - server_cpu
                    stored = server.count(tenant)
                    if stored != args.n:
                        raise SystemExit(f"{name}: the server holds {stored} users, not {args.n}")
                    rate = args.n / seconds
                    results.append({"server": kind, "client": name, "repeat": rep,
                                    "seconds": seconds, "creates_per_s": rate,
                                    "client_cpu_s": client_cpu, "server_cpu_s": server_cpu})
                    print(f"{kind:8} {name:28} run {rep}: {args.n} users in {seconds:7.2f} s = {rate:7.1f} creates/s"
                          f"; CPU: client {client_cpu:6.2f} s, server {server_cpu:6.2f} s"
                          f" ({100 * server_cpu / seconds:3.0f} % of one core)",
                          flush=True)
        finally:
            server.stop()

    print()
    print(f"medians of {args.repeats} runs, N = {args.n}:")
    for kind in args.servers.split(","):
        rows = {}
        for r in results:
            if r["server"] == kind:
                rows.setdefault(r["client"], []).append(r)
        med = {k: statistics.median(x["creates_per_s"] for x in v) for k, v in rows.items()}
        cpu = {k: statistics.median(1000 * x["client_cpu_s"] / args.n for x in v) for k, v in rows.items()}
        load = {k: statistics.median(100 * x["server_cpu_s"] / x["seconds"] for x in v) for k, v in rows.items()}
        ours = next(k for k in med if k.startswith("scimsync"))
        for k, v in med.items():
            ratio = "" if k == ours else f"   scimsync / this = {med[ours] / v:5.2f}x"
            print(f"  {kind:8} {k:28} {v:7.1f} creates/s; client CPU {cpu[k]:5.2f} ms/create;"
                  f" server busy {load[k]:3.0f} % of one core{ratio}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
