"""sandboxd benchmark harness.

Measures, for a busybox image on this machine:
  - create -> exec `true` -> delete through the HTTP API (p50/p90/p99)
  - exec round trip of `true` on a live sandbox (p50/p99)
and, in alternation with them so machine drift cancels out, the peers that exist here:
  - bubblewrap one-shot `true` over the same rootfs (`bwrap --unshare-all ... true`)
  - a plain fork+exec of `true` on the host (the process floor)
plus streaming (SSE first byte, exec throughput, stdout MB/s) and the raw file routes (write
and read MB/s for 1 MiB and 256 MiB files, 4 KiB write + read round trip), and OCI image
pulls: pull + unpack of a ~200 MB, 3-layer image from a loopback docker-registry against
`skopeo copy` + `umoci unpack` of the same image, and a second pull of the cached image.
Results: a table on stdout, raw samples in bench/results/<date>.json, docs/benchmarks.md.
"""
import argparse
import base64
import concurrent.futures
import threading
import datetime
import http.client
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from conftest import Daemon, make_busybox_rootfs  # noqa: E402
from scoreboard import Scoreboard  # noqa: E402


def pct(samples, p):
    s = sorted(samples)
    if not s:
        return float("nan")
    k = (len(s) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


class Client:
    """One keep-alive HTTP connection, as an SDK would hold."""

    def __init__(self, port):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def call(self, method, path, body=None):
        data = json.dumps(body) if body is not None else None
        self.conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        r = self.conn.getresponse()
        raw = r.read()
        if r.status != 200:
            raise RuntimeError(f"{method} {path}: {r.status} {raw[:200]!r}")
        return json.loads(raw)


def sse_first_byte(port, sid):
    """Time from sending the request to the first stdout event of `echo x`, and the
    command's own start-to-exit time as the agent reports it, in ms."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    t0 = time.perf_counter()
    conn.request("POST", f"/sandbox/sandboxes/{sid}/exec/stream", body=json.dumps({"cmd": "echo", "args": ["x"]}),
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    first = None
    while True:
        line = r.readline()
        if not line:
            break
        if line.startswith(b"data: "):
            ev = json.loads(line[6:])
            if ev["type"] == "stdout" and first is None:
                first = (time.perf_counter() - t0) * 1000
            if ev["type"] == "exit":
                break
    conn.close()
    return first


def stream_mb_per_s(port, sid, mb):
    """Payload MB/s of a command writing `mb` MiB to stdout, streamed over SSE as base64
    events to curl (a client that costs next to nothing), measured request to last byte."""
    body = json.dumps({"command": f"head -c {mb << 20} /dev/zero", "encoding": "base64"})
    t0 = time.perf_counter()
    r = subprocess.run(["curl", "-sN", "-o", "-", "-X", "POST", "-H", "Content-Type: application/json",
                        "--data", body, f"http://127.0.0.1:{port}/sandbox/sandboxes/{sid}/exec/stream"],
                       capture_output=True, check=True)
    dt = time.perf_counter() - t0
    total = 0
    for line in r.stdout.split(b"\n"):
        if line.startswith(b'data: {"type":"stdout"'):
            total += len(base64.b64decode(json.loads(line[6:])["data"]))
    assert total == mb << 20, total
    return total / dt / 1e6


def exec_throughput(port, sid, clients, seconds):
    stop = time.monotonic() + seconds
    counts = [0] * clients

    def worker(i):
        c = Client(port)
        while time.monotonic() < stop:
            c.call("POST", f"/sandbox/sandboxes/{sid}/exec", {"cmd": "true"})
            counts[i] += 1

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, range(clients)))
    return sum(counts) / (time.monotonic() - t0)


def stream_scenarios(d, live, rounds):
    out = {"first_byte_ms": [], "throughput": {}, "stream_mb_s": None}
    for _ in range(max(20, rounds // 2)):
        fb = sse_first_byte(d.port, live)
        if fb is not None:
            out["first_byte_ms"].append(fb)
    for clients in (1, 4, 16):
        out["throughput"][clients] = exec_throughput(d.port, live, clients, 1.0 if rounds < 100 else 3.0)
    out["stream_mb_s"] = stream_mb_per_s(d.port, live, 64 if rounds < 100 else 256)
    return out


def file_scenarios(d, rounds):
    """Raw file routes: write and read MB/s for 1 MiB and 256 MiB files, and a 4 KiB
    write + read round trip on one keep-alive connection.  The sandbox gets enough memory
    for its tmpfs writable layer (the file and, during an atomic overwrite, its temporary)."""
    c = Client(d.port)
    sid = c.call("POST", "/sandbox/sandboxes", {"image": "busybox", "memory_mb": 1536})["id"]
    conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=600)
    url = f"/sandbox/sandboxes/{sid}/files/raw?path="

    def put(name, data):
        conn.request("PUT", url + name, body=data, headers={"Content-Type": "application/octet-stream"})
        r = conn.getresponse()
        body = r.read()
        if r.status != 200:
            raise RuntimeError(f"PUT {name}: {r.status} {body[:200]!r}")

    def get(name):
        conn.request("GET", url + name)
        r = conn.getresponse()
        n = 0
        while True:
            b = r.read(1 << 20)
            if not b:
                break
            n += len(b)
        if r.status != 200:
            raise RuntimeError(f"GET {name}: {r.status}")
        return n

    out = {"write_mb_s": {}, "read_mb_s": {}, "small_rt_ms": []}
    try:
        for mib, n in ((1, max(10, rounds // 4)), (256, 3 if rounds >= 100 else 2)):
            data = os.urandom(1 << 20) * mib
            w, r = [], []
            for i in range(n):
                c.call("POST", f"/sandbox/sandboxes/{sid}/files/delete", {"path": f"f{mib}"})
                t0 = time.perf_counter()
                put(f"f{mib}", data)
                w.append(mib * 1.048576 / (time.perf_counter() - t0))
                t0 = time.perf_counter()
                assert get(f"f{mib}") == len(data)
                r.append(mib * 1.048576 / (time.perf_counter() - t0))
            out["write_mb_s"][mib] = statistics.median(w)
            out["read_mb_s"][mib] = statistics.median(r)
            c.call("POST", f"/sandbox/sandboxes/{sid}/files/delete", {"path": f"f{mib}"})
            del data
        small = os.urandom(4096)
        for i in range(max(50, rounds)):
            t0 = time.perf_counter()
            put("small", small)
            assert get("small") == 4096
            out["small_rt_ms"].append((time.perf_counter() - t0) * 1000)
    finally:
        conn.close()
        c.call("DELETE", f"/sandbox/sandboxes/{sid}")
    return out


def ensure_tools(*names):
    """Installs the Debian packages of missing tools (same names) once; returns those present."""
    missing = [n for n in names if not shutil.which(n)]
    if missing and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    return [n for n in names if shutil.which(n)]


def build_bench_image(mib):
    """A 3-layer image of about `mib` MiB: random (incompressible) files, text files, and
    random files again, gzip'ed as registries serve them."""
    import gzip
    import io
    import random
    import tarfile
    from test_images import Image

    def layer(files):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
            for name, data in files:
                ti = tarfile.TarInfo(name)
                ti.size, ti.mode = len(data), 0o644
                tf.addfile(ti, io.BytesIO(data))
        return gzip.compress(buf.getvalue(), compresslevel=1, mtime=0)

    words = [f"w{i:x}".encode() for i in range(4096)]
    rng = random.Random(42)

    def text(n):
        out = bytearray()
        while len(out) < n:
            out += b" ".join(rng.choice(words) for _ in range(16)) + b"\n"
        return bytes(out[:n])

    per = (mib << 20) // 10
    l1 = layer([(f"data/rand{i}.bin", os.urandom(per)) for i in range(5)])
    l2 = layer([(f"src/text{i}.txt", text(per // 2)) for i in range(6)])
    l3 = layer([(f"data/more{i}.bin", os.urandom(per // 2)) for i in range(4)])
    return Image([l1, l2, l3])


def image_scenarios(quick):
    """sandboxd pull + unpack against skopeo copy + umoci unpack, round by round in
    alternation, then the second (cached) pull.  Returns None when no registry exists."""
    try:
        from test_images import Registry
    except BaseException as e:  # the module skips itself (pytest) without docker-registry
        print(f"bench: image pulls skipped: {e}", file=sys.stderr)
        return None
    peers = ensure_tools("skopeo", "umoci")
    have_peer = peers == ["skopeo", "umoci"]
    if not have_peer:
        print("bench: skopeo/umoci not available; image pulls measured without their peer", file=sys.stderr)
    mib = 40 if quick else 200
    rounds = 1 if quick else 3
    img = build_bench_image(mib)
    size = sum(len(l) for l in img.layers)
    reg = Registry()
    tmp = tempfile.mkdtemp(prefix="sandboxd-bench-img-")
    d = None
    out = {"image_mb": size / 1e6, "unpacked_mib": mib, "layers": len(img.layers), "sandboxd_s": [], "peer_s": [], "cached_ms": []}
    try:
        ref = reg.push("bench/big", "1", img)
        rootfs = make_busybox_rootfs(os.path.join(tmp, "rootfs"))
        d = Daemon(rootfs, config={"insecure_registries": [reg.host], "image_allowlist": [ref]}).start()
        c = Client(d.port)
        for _ in range(rounds):
            t0 = time.perf_counter()
            r = c.call("POST", "/sandbox/images/pull", {"image": ref})
            out["sandboxd_s"].append(time.perf_counter() - t0)
            assert r["layers"] == 3
            for _ in range(20 if not quick else 5):
                t0 = time.perf_counter()
                c.call("POST", "/sandbox/images/pull", {"image": ref})
                out["cached_ms"].append((time.perf_counter() - t0) * 1000)
            c.call("DELETE", "/sandbox/images?image=" + ref)
            c.call("POST", "/sandbox/images/gc", {})
            if have_peer:
                layout, bundle = os.path.join(tmp, "oci"), os.path.join(tmp, "bundle")
                t0 = time.perf_counter()
                subprocess.run(["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{ref}",
                                f"oci:{layout}:1"], check=True)
                subprocess.run(["umoci", "unpack", "--image", f"{layout}:1", bundle], check=True,
                               stdout=subprocess.DEVNULL)
                out["peer_s"].append(time.perf_counter() - t0)
                shutil.rmtree(layout)
                shutil.rmtree(bundle)
    finally:
        if d:
            d.cleanup()
        reg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def pool_scenarios(rootfs, rounds):
    """create -> exec true -> delete when the create is served from the warm pool: a daemon
    with pool_size 4, rounds spaced so the pool refills between them (the pause is not
    timed)."""
    d = Daemon(rootfs, config={"pool_size": 4, "pool_images": ["busybox"]}).start()
    out = {"lifecycle_ms": [], "create_ms": [], "served": 0}
    try:
        c = Client(d.port)
        deadline = time.monotonic() + 30
        while c.call("GET", "/sandbox/pool/status")["total"] < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        for _ in range(rounds):
            t0 = time.perf_counter()
            sid = c.call("POST", "/sandbox/sandboxes", {"image": "busybox"})["id"]
            t1 = time.perf_counter()
            c.call("POST", f"/sandbox/sandboxes/{sid}/exec", {"cmd": "true"})
            c.call("DELETE", f"/sandbox/sandboxes/{sid}")
            out["lifecycle_ms"].append((time.perf_counter() - t0) * 1000)
            out["create_ms"].append((t1 - t0) * 1000)
            time.sleep(0.03)
        out["served"] = d.read_log().count("created from the warm pool")
    finally:
        d.cleanup()
    return out


def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) // 1024
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_mib": mem, "kernel": platform.release()}


def print_images(im):
    print(f"image pull + unpack ({im['unpacked_mib']} MiB, {im['image_mb']:.0f} MB compressed, {im['layers']} layers, "
          f"loopback registry): "
          f"sandboxd median {statistics.median(im['sandboxd_s']):.2f} s", end="")
    if im["peer_s"]:
        print(f", skopeo copy + umoci unpack median {statistics.median(im['peer_s']):.2f} s "
              f"({statistics.median(im['sandboxd_s']) / statistics.median(im['peer_s']):.2f}x)")
    else:
        print(" (peer not available)")
    print(f"second pull of the cached image: p50 {pct(im['cached_ms'], 50):.2f} ms, "
          f"p99 {pct(im['cached_ms'], 99):.2f} ms (target <= 50 ms)")


def image_lines(im):
    if not im:
        return []
    head = (f"{im['unpacked_mib']} MiB unpacked, {im['image_mb']:.0f} MB compressed, {im['layers']} layers, "
            "loopback docker-registry")
    lines = ["", "| OCI image pull | value |", "|---|---|",
             f"| sandboxd pull + verify + unpack ({head}), median of {len(im['sandboxd_s'])} | "
             f"{statistics.median(im['sandboxd_s']):.2f} s |"]
    if im["peer_s"]:
        lines.append(f"| `skopeo copy docker://… oci:DIR` + `umoci unpack` of the same image, median of "
                     f"{len(im['peer_s'])} | {statistics.median(im['peer_s']):.2f} s |")
        lines.append(f"| sandboxd / peer | "
                     f"{statistics.median(im['sandboxd_s']) / statistics.median(im['peer_s']):.2f}x |")
    lines.append(f"| second pull of the cached image (manifest check only) p50 / p99 | "
                 f"{pct(im['cached_ms'], 50):.2f} / {pct(im['cached_ms'], 99):.2f} ms (target ≤ 50 ms) |")
    return lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help="few rounds: a smoke test of every scenario")
    ap.add_argument("--no-docs", action="store_true")
    ap.add_argument("--no-images", action="store_true", help="skip the OCI image pull scenario")
    ap.add_argument("--images-only", action="store_true", help="only the OCI image pull scenario (no docs)")
    args = ap.parse_args()
    if args.images_only:
        images = image_scenarios(args.quick)
        if images:
            print_images(images)
        return 0 if images else 1
    rounds = 20 if args.quick else args.rounds

    tmp = tempfile.mkdtemp(prefix="sandboxd-bench-")
    rootfs = make_busybox_rootfs(os.path.join(tmp, "rootfs"))
    # Room for the density scenario (600 idle sandboxes) and 50 concurrent creators.
    d = Daemon(rootfs, config={"max_concurrent_sandboxes": 700}).start()
    sb = None
    bwrap = shutil.which("bwrap")
    true_bin = shutil.which("true")
    samples = {"lifecycle": [], "exec": [], "bwrap": [], "fork_exec": []}
    try:
        c = Client(d.port)
        sb = Scoreboard(d, rootfs, tmp, args.quick, Client)
        # Warm up: first create maps the image, first exec faults the agent in.
        sid = c.call("POST", "/sandbox/sandboxes", {"image": "busybox"})["id"]
        c.call("POST", f"/sandbox/sandboxes/{sid}/exec", {"cmd": "true"})
        c.call("DELETE", f"/sandbox/sandboxes/{sid}")

        live = c.call("POST", "/sandbox/sandboxes", {"image": "busybox"})["id"]
        for _ in range(rounds):
            t0 = time.perf_counter()
            sid = c.call("POST", "/sandbox/sandboxes", {"image": "busybox"})["id"]
            r = c.call("POST", f"/sandbox/sandboxes/{sid}/exec", {"cmd": "true"})
            c.call("DELETE", f"/sandbox/sandboxes/{sid}")
            samples["lifecycle"].append((time.perf_counter() - t0) * 1000)
            assert r["exit_code"] == 0

            for _ in range(5):
                t0 = time.perf_counter()
                c.call("POST", f"/sandbox/sandboxes/{live}/exec", {"cmd": "true"})
                samples["exec"].append((time.perf_counter() - t0) * 1000)

            if bwrap:
                t0 = time.perf_counter()
                subprocess.run([bwrap, "--unshare-all", "--die-with-parent", "--ro-bind", rootfs, "/",
                                "--proc", "/proc", "--dev", "/dev", "/bin/true"], check=True)
                samples["bwrap"].append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            subprocess.run([true_bin], check=True)
            samples["fork_exec"].append((time.perf_counter() - t0) * 1000)
            sb.round(samples)
        extra = stream_scenarios(d, live, rounds)
        extra["images"] = None if args.no_images else image_scenarios(args.quick)
        extra["files"] = file_scenarios(d, rounds)
        extra["pool"] = pool_scenarios(rootfs, rounds)
        c.call("DELETE", f"/sandbox/sandboxes/{live}")
        sb.finish()
        rss_kb = 0
        with open(f"/proc/{d.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS"):
                    rss_kb = int(line.split()[1])
    finally:
        if sb:
            sb.close()
        d.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)

    m = machine()
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rows = []

    def row(name, key, peer=None):
        s = samples[key]
        if not s:
            return
        line = {"scenario": name, "n": len(s), "p50": pct(s, 50), "p90": pct(s, 90), "p99": pct(s, 99)}
        if peer and samples.get(peer):
            line["ratio"] = f"{pct(s, 50) / pct(samples[peer], 50):.2f}x {peer} p50"
        rows.append(line)

    row("sandboxd create -> exec true -> delete (HTTP)", "lifecycle", "bwrap" if bwrap else "fork_exec")
    row("sandboxd exec true round trip (HTTP)", "exec", "fork_exec")
    row("bwrap --unshare-all one-shot true", "bwrap")
    row("host fork+exec true (subprocess)", "fork_exec")

    print(f"\nmachine: {m['cpu']}, {m['cores']} cores, {m['memory_mib']} MiB, Linux {m['kernel']}")
    print(f"{'scenario':<48} {'n':>5} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}  ratio")
    for r in rows:
        print(f"{r['scenario']:<48} {r['n']:>5} {r['p50']:>8.2f} {r['p90']:>8.2f} {r['p99']:>8.2f}  {r.get('ratio', '')}")
    fb = extra["first_byte_ms"]
    print(f"time to first streamed byte (echo x, SSE): p50 {pct(fb, 50):.2f} ms, p99 {pct(fb, 99):.2f} ms "
          f"(exec round trip p50 {pct(samples['exec'], 50):.2f} ms for comparison)")
    for k, v in extra["throughput"].items():
        print(f"exec throughput with {k:>2} clients: {v:.0f} execs/s")
    print(f"stdout streaming (SSE, base64): {extra['stream_mb_s']:.0f} MB/s")
    fs = extra["files"]
    for mib in fs["write_mb_s"]:
        print(f"raw file {mib:>3} MiB: write {fs['write_mb_s'][mib]:.0f} MB/s, read {fs['read_mb_s'][mib]:.0f} MB/s")
    print(f"4 KiB file write + read round trip (raw routes): p50 {pct(fs['small_rt_ms'], 50):.2f} ms, "
          f"p99 {pct(fs['small_rt_ms'], 99):.2f} ms")
    if extra["images"]:
        print_images(extra["images"])
    pl = extra["pool"]
    print(f"from the warm pool: create -> exec -> delete p50 {pct(pl['lifecycle_ms'], 50):.2f} ms, "
          f"create alone p50 {pct(pl['create_ms'], 50):.2f} ms ({pl['served']}/{len(pl['lifecycle_ms'])} from the pool)")
    print(f"daemon RSS after the run: {rss_kb / 1024:.1f} MiB")
    sb_term, sb_md = sb.report(samples)
    print("\n".join(sb_term))

    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    out = os.path.join(HERE, "results", datetime.datetime.now().strftime("%Y%m%d-%H%M%S") + ".json")
    with open(out, "w") as f:
        json.dump({"machine": m, "date": date, "samples_ms": samples, "streams": extra, "daemon_rss_kb": rss_kb,
                   "scoreboard": sb.results(samples)}, f)
    print(f"raw samples: {out}")
    missing = [k for k in ("lifecycle", "exec", "fork_exec") if not samples[k]]
    if not fb or not extra["throughput"] or not extra["stream_mb_s"]:
        missing.append("streams")
    if not extra["files"]["small_rt_ms"] or len(extra["files"]["write_mb_s"]) < 2:
        missing.append("files")
    if not extra["pool"]["lifecycle_ms"] or not extra["pool"]["served"]:
        missing.append("warm pool")
    missing += sb.missing()
    if missing:
        print(f"scenarios without numbers: {missing}", file=sys.stderr)
        return 1
    if args.quick or args.no_docs:
        return 0

    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (bench/bench.py). Each sandboxd figure is measured in the same",
        "run as its peer, round by round in alternation, so machine drift affects both alike.",
        "",
        f"- Date: {date}",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory_mib']} MiB RAM, Linux {m['kernel']}",
        f"- Image: busybox rootfs (static busybox, 2 MB); client: one keep-alive HTTP connection",
        "",
        "| scenario | n | p50 ms | p90 ms | p99 ms | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['scenario']} | {r['n']} | {r['p50']:.2f} | {r['p90']:.2f} | {r['p99']:.2f} | "
                     f"{r.get('ratio', '')} |")
    lines += [
        "",
        "| streaming and throughput | value |",
        "|---|---|",
        f"| time to first streamed byte (`echo x` over SSE, request to first event) p50 / p99 | "
        f"{pct(fb, 50):.2f} / {pct(fb, 99):.2f} ms |",
    ]
    for k, v in extra["throughput"].items():
        lines.append(f"| exec `true` throughput, {k} concurrent client(s) | {v:.0f} execs/s |")
    lines += [f"| stdout streamed over SSE (base64 events) | {extra['stream_mb_s']:.0f} MB/s |"]
    for mib in fs["write_mb_s"]:
        lines.append(f"| raw file {mib} MiB (`PUT` / `GET files/raw`): write / read | "
                     f"{fs['write_mb_s'][mib]:.0f} / {fs['read_mb_s'][mib]:.0f} MB/s |")
    lines += [f"| 4 KiB file write + read round trip (raw routes, keep-alive) p50 / p99 | "
              f"{pct(fs['small_rt_ms'], 50):.2f} / {pct(fs['small_rt_ms'], 99):.2f} ms |", ""]
    pl = extra["pool"]
    lines.append(f"| create -> exec `true` -> delete from the warm pool (pool_size 4) p50 / p99 | "
                 f"{pct(pl['lifecycle_ms'], 50):.2f} / {pct(pl['lifecycle_ms'], 99):.2f} ms "
                 f"(create alone p50 {pct(pl['create_ms'], 50):.2f} ms; {pl['served']} of "
                 f"{len(pl['lifecycle_ms'])} served from the pool) |")
    lines += image_lines(extra["images"])
    lines += ["", f"Daemon RSS after the run: {rss_kb / 1024:.1f} MiB.", ""]
    lines += sb_md
    with open(os.path.join(ROOT, "docs", "benchmarks.md.new"), "w") as f:
        f.write("\n".join(lines))
    notes = os.path.join(ROOT, "docs", "benchmarks-notes.md")
    if os.path.exists(notes):
        with open(notes) as f, open(os.path.join(ROOT, "docs", "benchmarks.md.new"), "a") as g:
            g.write(f.read())
    os.replace(os.path.join(ROOT, "docs", "benchmarks.md.new"), os.path.join(ROOT, "docs", "benchmarks.md"))
    print("wrote docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
