"""The scoreboard scenarios bench.py runs besides its own: the peers in alternation with the
lifecycle and exec rounds, 50 concurrent creators, density, daemon cost, noisy neighbour
and a perf profile of the lifecycle path.

bench.py calls, in order:
  sb = Scoreboard(daemon, rootfs, tmp, quick, Client)   after the daemon started
  sb.round(samples)                                once per lifecycle round, after its own
  sb.finish()                                      after its other scenarios
  sb.report(samples)                               -> (terminal lines, markdown lines)
  sb.results(samples), sb.missing()                for the JSON and the smoke check
  sb.close()                                       always
"""
import concurrent.futures
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

from peers import Peers, note

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "integration"))
from conftest import agent_pid, spawner_pids  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
MiB = 1 << 20


def pct(samples, p):
    s = sorted(samples)
    if not s:
        return float("nan")
    k = (len(s) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    return 0


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


def mem_available_kb():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable"):
                return int(line.split()[1])
    return 0


def read_int(path):
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def sandbox_memory(sid):
    """Host memory of one sandbox in bytes: PSS of the processes in its cgroup (from
    smaps_rollup), the cgroup's charged usage (memory.usage_in_bytes on v1, memory.current
    on v2) and the kernel-side part of that usage (kmem on v1, kernel in memory.stat on v2)."""
    v1 = f"/sys/fs/cgroup/memory/sandboxd/{sid}"
    v2 = f"/sys/fs/cgroup/sandboxd/{sid}"
    if os.path.isdir(v1):
        cg, usage, kmem = v1, read_int(f"{v1}/memory.usage_in_bytes"), read_int(f"{v1}/memory.kmem.usage_in_bytes")
    elif os.path.isdir(v2):
        cg, usage, kmem = v2, read_int(f"{v2}/memory.current"), None
        try:
            with open(f"{v2}/memory.stat") as f:
                for line in f:
                    if line.startswith("kernel "):
                        kmem = int(line.split()[1])
        except OSError:
            pass
    else:
        return None
    pss = 0
    try:
        with open(f"{cg}/cgroup.procs") as f:
            pids = f.read().split()
    except OSError:
        pids = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
        except OSError:
            pass
    return {"pss": pss, "cgroup_usage": usage or 0, "cgroup_kmem": kmem or 0, "procs": len(pids)}


def bomb_evidence(sid):
    """What a bomb did to its own sandbox's cgroup (v1): peak memory, OOM kills, peak
    processes, CPU used.  Proves the bomb ran and stayed inside its limits."""
    out = {}
    for key, path in (("memory_peak_bytes", f"memory/sandboxd/{sid}/memory.max_usage_in_bytes"),
                      ("memory_failcnt", f"memory/sandboxd/{sid}/memory.failcnt"),
                      ("pids_current", f"pids/sandboxd/{sid}/pids.current"),
                      ("cpu_ns", f"cpuacct/sandboxd/{sid}/cpuacct.usage")):
        v = read_int(f"/sys/fs/cgroup/{path}")
        if v is not None:
            out[key] = v
    try:
        with open(f"/sys/fs/cgroup/memory/sandboxd/{sid}/memory.oom_control") as f:
            for line in f:
                if line.startswith("oom_kill "):
                    out["oom_kills"] = int(line.split()[1])
        with open(f"/sys/fs/cgroup/pids/sandboxd/{sid}/pids.events") as f:
            out["pids_max_hits"] = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        pass
    return out


def describe_bomber(ev):
    parts = []
    if "memory_peak_bytes" in ev:
        parts.append(f"peak {ev['memory_peak_bytes'] / MiB:.0f} MiB")
    if ev.get("oom_kills"):
        parts.append(f"{ev['oom_kills']} OOM kills")
    if "pids_current" in ev:
        parts.append(f"{ev['pids_current']} processes, pids.max hit {ev.get('pids_max_hits', 0)}x")
    if "cpu_ns" in ev:
        parts.append(f"{ev['cpu_ns'] / 1e9:.1f} s CPU")
    return f"; B: {', '.join(parts)}" if parts else ""



class Scoreboard:
    def __init__(self, d, rootfs, tmp, quick, client):
        self.Client = client
        self.d = d
        self.quick = quick
        self.pid = d.proc.pid
        self.out = {"daemon": {"rss_fresh_kb": rss_kb(self.pid)}, "loadavg_start": os.getloadavg()}
        self.pairs = {"lifecycle": [], "exec": []}
        self.peers = Peers(rootfs, tmp)
        self.tmp = tmp

    # ---- alternation with the peers -------------------------------------------------
    def round(self, samples):
        """Runs one round of every peer right after bench.py's sandboxd round, and keeps
        that round's sandboxd figures to pair with them."""
        self.pairs["lifecycle"].append(samples["lifecycle"][-1])
        self.peers.lifecycle_round(samples)
        self.pairs["exec"].append(statistics.median(samples["exec"][-5:]))
        self.peers.exec_round(samples)

    def ratio(self, kind, peer, samples):
        """Median over rounds of sandboxd's figure / the peer's figure in the same round."""
        mine = self.pairs[kind]
        theirs = samples.get(peer) or []
        r = [a / b for a, b in zip(mine, theirs) if b > 0]
        return statistics.median(r) if r else None

    # ---- scenarios --------------------------------------------------------------------
    def finish(self):
        c = self.Client(self.d.port)
        self.out["loadavg_peers_done"] = os.getloadavg()
        self.out["daemon"]["rss_idle_kb"] = rss_kb(self.pid)
        steps = (("concurrent", self.concurrent), ("exec_cpu", lambda: self.exec_cpu(c)),
                 ("density", lambda: self.density(c)), ("noisy", lambda: self.noisy(c)))
        for name, fn in steps:
            t0 = time.monotonic()
            try:
                self.out[name] = fn()
            except Exception as e:  # noqa: BLE001 - one failed scenario must not hide the others
                note(f"scenario {name} failed: {e!r}")
            print(f"bench: {name} done in {time.monotonic() - t0:.1f} s", file=sys.stderr)
        if not self.quick:
            try:
                self.out["profile"] = self.profile(c)
            except Exception as e:  # noqa: BLE001
                note(f"profile failed: {e!r}")

    def lifecycle_once(self, c, samples=None):
        t0 = time.perf_counter()
        sid = c.call("POST", "/sandbox/sandboxes", {"image": "busybox"})["id"]
        r = c.call("POST", f"/sandbox/sandboxes/{sid}/exec", {"cmd": "true"})
        c.call("DELETE", f"/sandbox/sandboxes/{sid}")
        if r["exit_code"] != 0:
            raise RuntimeError(f"exec true: {r}")
        dt = (time.perf_counter() - t0) * 1000
        if samples is not None:
            samples.append(dt)
        return dt

    def concurrent(self, threads=50):
        """50 creators at once, each doing create -> exec true -> delete in a loop."""
        rounds = 1 if self.quick else 4
        barrier = threading.Barrier(threads)
        lat, errors = [], []

        def worker(_):
            c = self.Client(self.d.port)
            barrier.wait()
            for _ in range(rounds):
                try:
                    self.lifecycle_once(c, lat)
                except Exception as e:  # noqa: BLE001 - counted and reported
                    errors.append(str(e)[:200])

        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            list(pool.map(worker, range(threads)))
        wall = time.perf_counter() - t0
        if errors:
            note(f"concurrent: {len(errors)} failed lifecycles, first: {errors[0]}")
        return {"threads": threads, "rounds_each": rounds, "samples_ms": lat, "errors": len(errors),
                "wall_s": wall, "lifecycles_per_s": len(lat) / wall}

    def exec_cpu(self, c):
        """Daemon CPU time per exec (utime + stime of sandboxd over N blocking execs of
        `true` on one sandbox), and the same for the sandbox's agent."""
        n = 300 if self.quick else 2000
        sid = c.call("POST", "/sandbox/sandboxes", {"image": "busybox"})["id"]
        try:
            c.call("POST", f"/sandbox/sandboxes/{sid}/exec", {"cmd": "true"})
            agent = agent_pid(sid)
            d0, a0 = cpu_ticks(self.pid), cpu_ticks(agent) if agent else None
            t0 = time.perf_counter()
            for _ in range(n):
                c.call("POST", f"/sandbox/sandboxes/{sid}/exec", {"cmd": "true"})
            wall = time.perf_counter() - t0
            d1, a1 = cpu_ticks(self.pid), cpu_ticks(agent) if agent else None
        finally:
            c.call("DELETE", f"/sandbox/sandboxes/{sid}")
        return {"execs": n, "wall_s": wall, "daemon_cpu_ms_per_exec": (d1 - d0) * 1000 / CLK_TCK / n,
                "agent_cpu_ms_per_exec": (a1 - a0) * 1000 / CLK_TCK / n if agent else None}

    def density(self, c):
        """Creates idle sandboxes until their memory reaches the budget (or the cap, or the
        daemon refuses), records what each costs and the daemon's RSS at 100, then deletes
        them all."""
        budget = (512 if self.quick else 4096) * MiB
        cap = 100 if self.quick else 600
        avail0 = mem_available_kb()
        ids, costs, create_ms = [], [], []
        stop = "cap"
        rss100 = None
        try:
            while len(ids) < cap:
                t0 = time.perf_counter()
                try:
                    sid = c.call("POST", "/sandbox/sandboxes",
                                 {"image": "busybox", "idle_timeout_secs": 0, "timeout": 86400})["id"]
                except RuntimeError as e:
                    stop = f"create refused: {str(e)[:160]}"
                    break
                create_ms.append((time.perf_counter() - t0) * 1000)
                ids.append(sid)
                m = sandbox_memory(sid)
                if m:
                    costs.append(m)
                if len(ids) == 100:
                    rss100 = rss_kb(self.pid)
                used = sum(x["pss"] + x["cgroup_usage"] for x in costs)
                if used >= budget or (avail0 - mem_available_kb()) * 1024 >= budget:
                    stop = "budget"
                    break
            avail_peak = mem_available_kb()
            # One exec proves the last sandbox still works at this density.
            live_exec_ok = bool(ids) and c.call("POST", f"/sandbox/sandboxes/{ids[-1]}/exec",
                                                {"cmd": "true"})["exit_code"] == 0
        finally:
            t0 = time.perf_counter()
            for sid in ids:
                try:
                    c.call("DELETE", f"/sandbox/sandboxes/{sid}")
                except RuntimeError as e:
                    note(f"density: delete {sid}: {e}")
            delete_s = time.perf_counter() - t0
            time.sleep(0.5)  # net namespaces are freed asynchronously
            avail_after = mem_available_kb()
        n = len(ids)
        if not n:
            raise RuntimeError(f"density: no sandbox created ({stop})")
        pss = statistics.mean(x["pss"] for x in costs) if costs else 0
        usage = statistics.mean(x["cgroup_usage"] for x in costs) if costs else 0
        kmem = statistics.mean(x["cgroup_kmem"] for x in costs) if costs else 0
        # Before-to-peak and peak-to-after, averaged: other work on the machine moves
        # MemAvailable too, so this is a cross-check, not the figure.
        host_delta = ((avail0 - avail_peak) + (avail_after - avail_peak)) / 2 * 1024 / n
        per = pss + usage
        return {"budget_bytes": budget, "cap": cap, "created": n, "stopped_by": stop,
                "pss_bytes": pss, "cgroup_usage_bytes": usage, "cgroup_kmem_bytes": kmem,
                "cost_bytes": per, "mem_available_drop_per_sandbox_bytes": host_delta,
                "fit_in_4gib": int(4096 * MiB // per) if per else None,
                "fit_in_4gib_by_mem_available": int(4096 * MiB // host_delta) if host_delta > 0 else None,
                "procs_per_sandbox": statistics.mean(x["procs"] for x in costs) if costs else 0,
                "daemon_rss_100_kb": rss100, "create_ms": create_ms, "delete_all_s": delete_s,
                "exec_at_density_ok": live_exec_ok}

    BOMBS = {
        "fork_bomb": "f() { f | f & }; f",
        "memory_bomb": "while :; do tail /dev/zero; done",
        "cpu_spin": "while :; do :; done & while :; do :; done",
    }

    def noisy(self, c):
        """Exec latency of `true` on sandbox A in a quiet window, then while sandbox B runs a
        bomb (B has the default CPU and pids limits and 256 MiB of memory); quiet and noisy
        windows alternate per bomb, and each ratio uses the window just before it."""
        window = 1.0 if self.quick else 5.0
        a = c.call("POST", "/sandbox/sandboxes", {"image": "busybox"})["id"]
        out = {"window_s": window}

        def measure(seconds):
            lat, stop = [], time.monotonic() + seconds
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                c.call("POST", f"/sandbox/sandboxes/{a}/exec", {"cmd": "true"})
                lat.append((time.perf_counter() - t0) * 1000)
            return lat

        try:
            c.call("POST", f"/sandbox/sandboxes/{a}/exec", {"cmd": "true"})
            for name, cmd in self.BOMBS.items():
                quiet = measure(window)
                b = c.call("POST", "/sandbox/sandboxes", {"image": "busybox", "memory_mb": 256})["id"]
                try:
                    c.call("POST", f"/sandbox/sandboxes/{b}/exec/background",
                           {"command": cmd, "timeout": int(window + 5)})
                    time.sleep(0.3)  # let the bomb get going
                    noisy = measure(window)
                    evidence = bomb_evidence(b)
                finally:
                    t0 = time.perf_counter()
                    c.call("DELETE", f"/sandbox/sandboxes/{b}")
                    delete_ms = (time.perf_counter() - t0) * 1000
                out[name] = {"quiet_ms": quiet, "noisy_ms": noisy, "delete_bomber_ms": delete_ms, "bomber": evidence,
                             "p50_ratio": pct(noisy, 50) / pct(quiet, 50),
                             "p99_ratio": pct(noisy, 99) / pct(quiet, 99)}
        finally:
            c.call("DELETE", f"/sandbox/sandboxes/{a}")
        return out

    def profile(self, c):
        """`perf record -g` on the daemon (and the children it forks) during a lifecycle
        loop; returns the top symbols and the split by command."""
        if not shutil.which("perf"):
            return {"skipped": "perf not installed"}
        data = os.path.join(self.tmp, "perf.data")
        # The daemon's sandbox spawner forks each sandbox's first processes: profile it too.
        pids = [str(self.pid)] + [str(p) for p in spawner_pids(self.pid)]
        perf = subprocess.Popen(["perf", "record", "-g", "-F", "4999", "-p", ",".join(pids), "-o", data],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        lat = []
        stop = time.monotonic() + 8
        while time.monotonic() < stop:
            self.lifecycle_once(c, lat)
        perf.send_signal(signal.SIGINT)
        perf.wait(60)

        def report(sort, limit):
            r = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", sort, "--stdio",
                                "-g", "none", "--percent-limit", str(limit)],
                               capture_output=True, text=True, timeout=300)
            rows = []
            for line in r.stdout.splitlines():
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                parts = line.split(None, 1)
                if parts[0].endswith("%") and len(parts) == 2:
                    rows.append([float(parts[0][:-1]), " ".join(parts[1].split())])
            return rows

        children = report("comm", 0.5)
        symbols = report("comm,dso,sym", 0.7)[:25]
        # The same profile with callers folded in: which daemon functions the time is spent under.
        r = subprocess.run(["perf", "report", "-i", data, "--children", "--sort", "sym", "--stdio", "-g", "none",
                            "--percent-limit", "3"], capture_output=True, text=True, timeout=300)
        inclusive = []
        for line in r.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 4 and parts[0].endswith("%") and parts[1].endswith("%"):
                inclusive.append([float(parts[0][:-1]), " ".join(parts[2:])])
        return {"rounds": len(lat), "lifecycle_p50_ms_under_perf": pct(lat, 50), "by_comm": children,
                "top_self": symbols, "top_inclusive": inclusive[:30]}

    # ---- output -----------------------------------------------------------------------
    def missing(self):
        miss = [k for k in ("concurrent", "exec_cpu", "density", "noisy") if k not in self.out]
        if "density" in self.out and not self.out["density"].get("daemon_rss_100_kb"):
            miss.append("daemon_rss_100")
        if "concurrent" in self.out and not self.out["concurrent"]["samples_ms"]:
            miss.append("concurrent samples")
        return miss

    def results(self, samples):
        ratios = {}
        for kind, peers in (("lifecycle", ("bwrap",) + Peers.LIFECYCLE), ("exec", ("fork_exec",) + Peers.EXEC)):
            for p in peers:
                r = self.ratio(kind, p, samples)
                if r is not None:
                    ratios[f"{kind}/{p}"] = r
        return dict(self.out, pair_ratios=ratios, peers_dropped=self.peers.dropped)

    def report(self, samples):
        """Lines for the terminal and for docs/benchmarks.md."""
        term, md = [], []
        names = {
            "floor": "kernel floor (bench/floor.c), no net ns", "floor_net": "kernel floor (bench/floor.c), net ns",
            "bwrap": "bwrap --unshare-all one-shot true", "crun": "crun run true (OCI bundle)",
            "runc": "runc run true (OCI bundle)", "fork_exec": "host fork+exec true",
            "nsenter": "nsenter -a into live namespaces, true", "crun_exec": "crun exec true (running container)",
            "runc_exec": "runc exec true (running container)",
        }
        term.append("")
        term.append(f"{'peer (alternated round by round with sandboxd)':<48} {'n':>5} {'p50 ms':>8} {'p99 ms':>8}"
                    f"  sandboxd/peer (median of per-round ratios)")
        md += ["", "### sandboxd against its peers", "",
               "Each peer ran one round after each sandboxd round (lifecycle: create → exec `true` → "
               "delete; exec: the median of that round's five exec round trips), so both saw the same "
               "machine. The ratio is the median over rounds of sandboxd's time divided by the peer's "
               "time in the same round (below 1: sandboxd is faster).", "",
               "| compared with | peer n | peer p50 ms | peer p99 ms | sandboxd ÷ peer |", "|---|---|---|---|---|"]
        for kind, keys, what in (("lifecycle", ("floor", "floor_net", "bwrap", "crun", "runc"), "lifecycle"),
                                 ("exec", ("nsenter", "crun_exec", "runc_exec", "fork_exec"), "exec round trip")):
            for k in keys:
                s = samples.get(k) or []
                if not s:
                    reason = self.peers.dropped.get(k.split("_")[0], "not run")
                    term.append(f"{names[k]:<48}   skipped: {reason[:60]}")
                    md.append(f"| {names[k]} | skipped: {reason[:80]} | | | |")
                    continue
                r = self.ratio(kind, k, samples)
                rs = f"{r:.2f}x ({what})" if r is not None else ""
                term.append(f"{names[k]:<48} {len(s):>5} {pct(s, 50):>8.2f} {pct(s, 99):>8.2f}  {rs}")
                md.append(f"| {names[k]} | {len(s)} | {pct(s, 50):.2f} | {pct(s, 99):.2f} | {rs} |")

        rows = [("host load average (1 min) at the start / after the alternated rounds (other work shares "
                 "this machine)", f"{self.out['loadavg_start'][0]:.1f} / "
                 f"{self.out.get('loadavg_peers_done', [float('nan')])[0]:.1f}")]
        cc = self.out.get("concurrent")
        if cc and cc["samples_ms"]:
            s = cc["samples_ms"]
            rows.append((f"lifecycle with {cc['threads']} concurrent creators ({cc['threads']}×{cc['rounds_each']}): "
                         "p50 / p90 / p99",
                         f"{pct(s, 50):.1f} / {pct(s, 90):.1f} / {pct(s, 99):.1f} ms, "
                         f"{cc['lifecycles_per_s']:.0f} lifecycles/s, {cc['errors']} errors"))
        ec = self.out.get("exec_cpu")
        if ec:
            agent = f", agent {ec['agent_cpu_ms_per_exec']:.3f} ms" if ec["agent_cpu_ms_per_exec"] is not None else ""
            rows.append((f"CPU per exec of `true` (over {ec['execs']} execs)",
                         f"daemon {ec['daemon_cpu_ms_per_exec']:.3f} ms{agent}; "
                         f"{ec['execs'] / ec['wall_s']:.0f} execs/s sequential"))
        dn = self.out.get("density")
        dm = self.out["daemon"]
        rows.append(("daemon RSS: just started / idle after the run's churn",
                     f"{dm['rss_fresh_kb'] / 1024:.1f} / {dm.get('rss_idle_kb', 0) / 1024:.1f} MiB"))
        if dn:
            if dn.get("daemon_rss_100_kb"):
                rows.append(("daemon RSS with 100 idle sandboxes", f"{dn['daemon_rss_100_kb'] / 1024:.1f} MiB"))
            rows.append((f"density: idle sandboxes created (budget {dn['budget_bytes'] // MiB} MiB, cap {dn['cap']})",
                         f"{dn['created']} (stopped by {dn['stopped_by']}); last one still execs: "
                         f"{dn['exec_at_density_ok']}"))
            rows.append(("density: host memory per idle sandbox (PSS + cgroup usage)",
                         f"{dn['cost_bytes'] / MiB:.2f} MiB = PSS {dn['pss_bytes'] / MiB:.2f} + cgroup "
                         f"{dn['cgroup_usage_bytes'] / MiB:.2f} (of which kernel {dn['cgroup_kmem_bytes'] / MiB:.2f}) "
                         f"→ {dn['fit_in_4gib']} fit in 4 GiB"))
            rows.append(("density: MemAvailable drop per sandbox (everything, daemon included)",
                         f"{dn['mem_available_drop_per_sandbox_bytes'] / MiB:.2f} MiB → "
                         f"{dn['fit_in_4gib_by_mem_available']} fit in 4 GiB"))
            rows.append(("density: create p50 at 0..N sandboxes / delete all",
                         f"{pct(dn['create_ms'], 50):.1f} ms (p99 {pct(dn['create_ms'], 99):.1f}) / "
                         f"{dn['delete_all_s']:.1f} s"))
        nz = self.out.get("noisy")
        if nz:
            for name in self.BOMBS:
                if name in nz:
                    x = nz[name]
                    rows.append((f"noisy neighbour: exec p50 / p99 while B runs a {name.replace('_', ' ')}",
                                 f"{pct(x['noisy_ms'], 50):.2f} / {pct(x['noisy_ms'], 99):.2f} ms vs quiet "
                                 f"{pct(x['quiet_ms'], 50):.2f} / {pct(x['quiet_ms'], 99):.2f} ms: "
                                 f"{x['p50_ratio']:.2f}x / {x['p99_ratio']:.2f}x "
                                 f"(delete of B {x['delete_bomber_ms']:.0f} ms){describe_bomber(x['bomber'])}"))
        term.append("")
        for k, v in rows:
            term.append(f"{k}: {v}")
        md += ["", "### Scale, density, daemon cost, noisy neighbour", "", "| scenario | value |", "|---|---|"]
        md += [f"| {k} | {v} |" for k, v in rows]
        pr = self.out.get("profile")
        if pr and "top_self" in pr:
            term.append("")
            term.append(f"profile of the lifecycle path ({pr['rounds']} rounds under perf, "
                        f"p50 {pr['lifecycle_p50_ms_under_perf']:.1f} ms):")
            for p, s in pr["top_self"][:12]:
                term.append(f"  {p:5.1f}%  {s}")
            md += ["", "### Where the lifecycle time goes (perf)", "",
                   f"`perf record -g -p <sandboxd>,<its spawner>` (children included) over {pr['rounds']} create → exec → "
                   "delete rounds. Share of samples by command, then the top functions by self time:", "",
                   "| % | command |", "|---|---|"]
            md += [f"| {p:.1f} | {s} |" for p, s in pr["by_comm"][:8]]
            md += ["", "| % self | command, object, symbol |", "|---|---|"]
            md += [f"| {p:.1f} | `{s}` |" for p, s in pr["top_self"][:15]]
            md += ["", "The same samples with callees folded into their callers (system call entry left out):", "",
                   "| % with callees | symbol |", "|---|---|"]
            md += [f"| {p:.1f} | `{s}` |" for p, s in pr["top_inclusive"]
                   if "SYSCALL" not in s and "do_syscall" not in s and "0000" not in s and "0x" not in s][:18]
        md.append("")
        return term, md

    def close(self):
        self.peers.close()

