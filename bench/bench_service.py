"""`harness serve` figures: upload-to-verdict latency, leaderboard requests per second under
concurrent clients, and the server's memory while a 1 GB upload streams in.

    python bench/bench_service.py                      # 5 uploads, 200 clients for 10 s, 1 GB upload
    python bench/bench_service.py --clients 200 --seconds 10 --upload-mb 1024

A real server process (`harness serve`, 1 grading worker, the real sandboxed evaluation job on the
`dummy` dataset with the challenge preset) on 127.0.0.1; clients are httpx. Figures are wall-clock
on whatever else the machine runs: say so when you quote them.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_grading import write_encoder  # noqa: E402

CHALLENGE = """name = "bench-service"
[splits.public]
datasets = ["dummy"]
[metrics]
preset = "challenge"
[ranking]
values = ["factor_vae.eval_accuracy", "dci.disentanglement", "sap.sap_score", "mig.discrete_mig", "irs.irs"]
[limits]
threads = 1
memory_mb = 4096
[service]
max_upload_mb = {max_mb}
"""


def submission_zip(seed: int) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        write_encoder(Path(tmp) / "encoder.onnx", (16, 16, 1), 6, seed)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("submission.json", json.dumps({
                "name": f"bench-{seed}", "format": "onnx", "model": "encoder.onnx",
                "input": {"channels": 1, "height": 16, "width": 16}, "latent_dim": 6}))
            zf.write(Path(tmp) / "encoder.onnx", "encoder.onnx")
        return buf.getvalue()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def harness(*args):
    return subprocess.run([sys.executable, "-m", "harness", *map(str, args)], capture_output=True, text=True,
                          check=True).stdout.strip()


async def _client(host: str, port: int, path: str, stop: float, latencies: list, errors: list) -> None:
    """One keep-alive HTTP/1.1 connection sending GETs back to back: a load generator light enough
    (raw asyncio streams) that the server, not the client, is what gets measured."""
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(head.split(b"\r\n")[0])
            latencies.append(time.perf_counter() - t0)
    except (OSError, asyncio.IncompleteReadError) as exc:
        errors.append(repr(exc))
    finally:
        writer.close()


async def hammer(url: str, clients: int, seconds: float) -> tuple[int, list[float], int]:
    parts = httpx.URL(url)
    path = parts.raw_path.decode()
    latencies, errors = [], []
    stop = time.perf_counter() + seconds
    await asyncio.gather(*(_client(parts.host, parts.port, path, stop, latencies, errors) for _ in range(clients)))
    return len(latencies), latencies, len(errors)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--uploads", type=int, default=5)
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--upload-mb", type=int, default=1024)
    args = ap.parse_args(argv)
    print(f"bench_service: cpu cores={os.cpu_count()}, load average={os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        tmp = Path(tmp)
        (tmp / "c.toml").write_text(CHALLENGE.format(max_mb=args.upload_mb + 64))
        db = tmp / "s.db"
        token = harness("teams", "add", "bench", "--db", db)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen([sys.executable, "-m", "harness", "serve", "--challenge", tmp / "c.toml", "--db", db,
                                   "--port", str(port), "--workers", "1"],
                                  stdout=subprocess.DEVNULL, stderr=open(tmp / "server.log", "w"))
        try:
            for _ in range(300):
                try:
                    if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            headers = {"Authorization": f"Bearer {token}"}

            # 1. upload-to-verdict, one at a time (the queue is empty each time)
            latencies = []
            for i in range(args.uploads):
                data = submission_zip(i)
                t0 = time.perf_counter()
                r = httpx.post(url + "/api/v1/submissions", headers=headers, files={"file": ("s.zip", data)})
                r.raise_for_status()
                sub = r.json()["id"]
                while True:
                    state = httpx.get(f"{url}/api/v1/submissions/{sub}", headers=headers).json()["state"]
                    if state in ("scored", "failed"):
                        break
                    time.sleep(0.02)
                latencies.append(time.perf_counter() - t0)
                if state != "scored":
                    print(f"  upload {i} failed: {httpx.get(f'{url}/api/v1/submissions/{sub}', headers=headers).text}")
                    return 1
            print(f"upload-to-verdict ({args.uploads} uploads, 'dummy', challenge preset, 1 worker): median "
                  f"{statistics.median(latencies):.2f} s, min {min(latencies):.2f} s, max {max(latencies):.2f} s")

            # 2. the public leaderboard under concurrent clients
            n, lat, errors = asyncio.run(hammer(url + "/api/v1/leaderboard?split=public", args.clients, args.seconds))
            lat.sort()
            print(f"leaderboard ({args.uploads} ranked entries), {args.clients} concurrent clients for "
                  f"{args.seconds:.0f} s: {n / args.seconds:.0f} requests/s, latency p50 "
                  f"{lat[len(lat) // 2] * 1000:.0f} ms, p99 {lat[int(len(lat) * 0.99)] * 1000:.0f} ms, errors {errors}")

            # 3. memory while a large upload streams in (not a valid archive: refused after it is read)
            before = rss_mb(server.pid)
            peak = [before]
            done = threading.Event()

            def sample():
                while not done.is_set():
                    peak.append(rss_mb(server.pid))
                    time.sleep(0.05)

            sampler = threading.Thread(target=sample)
            sampler.start()
            chunk = os.urandom(1 << 20)

            def body():
                yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.zip"\r\n\r\n'
                for _ in range(args.upload_mb):
                    yield chunk
                yield b"\r\n--b--\r\n"

            t0 = time.perf_counter()
            r = httpx.post(url + "/api/v1/submissions", content=body(), timeout=600,
                           headers={**headers, "Content-Type": "multipart/form-data; boundary=b"})
            took = time.perf_counter() - t0
            done.set()
            sampler.join()
            print(f"{args.upload_mb} MB upload: HTTP {r.status_code} after {took:.1f} s "
                  f"({args.upload_mb / took:.0f} MB/s); server RSS {before:.0f} MB before, peak {max(peak):.0f} MB "
                  f"(+{max(peak) - before:.0f} MB)")
        finally:
            server.terminate()
            server.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
