"""The peers sandboxd is compared with, each over the same busybox rootfs.

One-shot `true` (the lifecycle peers):
  floor       bench/floor.c: clone of every namespace + idmapped overlay + pivot_root +
              fresh proc + exec `true` + wait, without and with a net namespace
  crun, runc  `crun run` / `runc run` of an OCI bundle whose root is the rootfs
(bubblewrap is driven by bench.py itself.)

Exec into a live sandbox (the exec round trip peers):
  nsenter     `nsenter -t PID -a -r -w /bin/true` into a long-lived namespaced `sleep`
  crun exec / runc exec into a running container

Every peer measures one round per call, so bench.py can alternate a sandboxd round with a
round of each peer.  A peer whose tool is missing or fails is dropped with a printed note.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
UID_BASE = 100000


def note(msg):
    print(f"bench: {msg}", file=sys.stderr)


def hybrid_cgroups():
    """True when v1 controllers and a cgroup2 mount coexist (/sys/fs/cgroup/unified):
    crun 1.8 refuses that layout ("cgroups in hybrid mode not supported")."""
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                parts = line.split()
                if parts[4] == "/sys/fs/cgroup/unified" and " - cgroup2 " in line:
                    return True
    except OSError:
        pass
    return False


class Floor:
    """bench/floor.c in its serve mode: one round per request line, no process start-up
    in the measurement beyond the round's own clone."""

    def __init__(self, rootfs, binary):
        self.proc = subprocess.Popen([binary, rootfs], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)

    def run(self, net):
        self.proc.stdin.write("net\n" if net else "nonet\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline().strip()
        if not line or line.startswith("error"):
            raise RuntimeError(f"floor: {line or 'exited'}")
        return int(line) / 1000.0

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(10)


def oci_bundle(path, rootfs, args):
    """An OCI bundle from `runc spec` (as root), edited: no terminal, `args`, the shared
    rootfs read-only, and user (0 -> 100000, 65536 ids) and cgroup namespaces added to the
    default pid/net/ipc/uts/mount set, so the container gets the namespaces a sandbox does."""
    os.makedirs(path, exist_ok=True)
    cfg_path = os.path.join(path, "config.json")
    if os.path.exists(cfg_path):
        os.unlink(cfg_path)
    subprocess.run(["runc", "spec", "--bundle", path], check=True, capture_output=True)
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = args
    cfg["root"] = {"path": rootfs, "readonly": True}
    have = {ns["type"] for ns in cfg["linux"]["namespaces"]}
    for t in ("user", "cgroup", "network"):
        if t not in have:
            cfg["linux"]["namespaces"].append({"type": t})
    ids = [{"containerID": 0, "hostID": UID_BASE, "size": 65536}]
    cfg["linux"]["uidMappings"] = ids
    cfg["linux"]["gidMappings"] = ids
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=1)
    return path


class Oci:
    """crun or runc: one-shot `run` of `true`, and `exec` of `true` in a running container.

    Commands go through a long-lived /bin/sh that starts the runtime once per request line,
    so every round costs the same process start-up as a direct spawn.  For crun on a hybrid
    cgroup layout the shell lives in a private mount namespace without the cgroup2 mount
    (the host's mounts are untouched); crun then uses the v1 controllers as runc does."""

    SCRIPT = r'''
rt="$1"; state="$2"; oneshot="$3"; live="$4"; log="$5"
while read -r op id; do
  case "$op" in
    run) "$rt" --root "$state" run --bundle "$oneshot" "$id" </dev/null >/dev/null 2>>"$log" ;;
    start) "$rt" --root "$state" run --detach --bundle "$live" "$id" </dev/null >/dev/null 2>>"$log" ;;
    exec) "$rt" --root "$state" exec "$id" /bin/true </dev/null >/dev/null 2>>"$log" ;;
    stop) "$rt" --root "$state" kill "$id" KILL 2>>"$log"; "$rt" --root "$state" delete --force "$id" 2>>"$log" ;;
  esac
  echo "$?"
done
'''

    def __init__(self, name, rootfs, tmp):
        self.name = name
        self.n = 0
        base = os.path.join(tmp, name)
        os.makedirs(base, exist_ok=True)
        self.state = os.path.join(base, "state")
        oneshot = oci_bundle(os.path.join(base, "oneshot"), rootfs, ["/bin/true"])
        live = oci_bundle(os.path.join(base, "live"), rootfs, ["/bin/sleep", "1000000"])
        self.log = os.path.join(base, "stderr.log")
        argv = ["/bin/sh", "-c", self.SCRIPT, "sh", shutil.which(name), self.state, oneshot, live, self.log]
        if name == "crun" and hybrid_cgroups():
            inner = "umount -l /sys/fs/cgroup/unified && exec \"$0\" \"$@\""
            argv = ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", inner] + argv
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.live = None

    def _op(self, op, cid):
        self.proc.stdin.write(f"{op} {cid}\n")
        self.proc.stdin.flush()
        rc = self.proc.stdout.readline().strip()
        if rc != "0":
            tail = ""
            try:
                with open(self.log) as f:
                    tail = f.read()[-300:].strip()
            except OSError:
                pass
            raise RuntimeError(f"{self.name} {op}: status {rc or 'none'}: {tail}")

    def run(self):
        self.n += 1
        t0 = time.perf_counter()
        self._op("run", f"bench-{os.getpid()}-{self.n}")
        return (time.perf_counter() - t0) * 1000

    def exec(self):
        if self.live is None:
            self.live = f"bench-{os.getpid()}-live"
            self._op("start", self.live)
        t0 = time.perf_counter()
        self._op("exec", self.live)
        return (time.perf_counter() - t0) * 1000

    def close(self):
        if self.proc.poll() is not None:
            return
        if self.live:
            try:
                self._op("stop", self.live)
            except RuntimeError:
                pass
        self.proc.stdin.close()
        self.proc.wait(30)


class Nsenter:
    """A long-lived `sleep` in its own user (root mapped), pid, mount, uts, ipc, net and
    cgroup namespaces, rooted in the rootfs with a fresh /proc; each round enters all of
    them plus its root and working directory and runs `true`."""

    def __init__(self, rootfs):
        self.proc = subprocess.Popen(
            ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--kill-child", "--mount", "--uts", "--ipc",
             "--net", "--cgroup", f"--root={rootfs}", "--mount-proc", "/bin/sleep", "1000000"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.target = None
        deadline = time.time() + 5
        while time.time() < deadline and self.target is None:
            for pid in self._children(self.proc.pid):
                self.target = pid
            time.sleep(0.01)
        if self.target is None:
            self.close()
            raise RuntimeError("nsenter: the namespaced sleep did not start")
        # Wait until the child has left the parent's namespaces (the mount namespace is last).
        while time.time() < deadline and os.readlink(f"/proc/{self.target}/root") == "/":
            time.sleep(0.01)
        self.nsenter = shutil.which("nsenter")

    @staticmethod
    def _children(pid):
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                return [int(x) for x in f.read().split()]
        except OSError:
            return []

    def exec(self):
        t0 = time.perf_counter()
        subprocess.run([self.nsenter, "-t", str(self.target), "-a", "-r", "-w", "/bin/true"], check=True)
        return (time.perf_counter() - t0) * 1000

    def close(self):
        # The sleep is PID 1 of its namespace: only SIGKILL ends it.
        if self.target is not None:
            try:
                os.kill(self.target, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


def build_floor(out):
    """Compiles bench/floor.c (bench/run.sh normally has already done it)."""
    src = os.path.join(HERE, "floor.c")
    if os.path.exists(out) and os.path.getmtime(out) >= os.path.getmtime(src):
        return out
    subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-o", out, src], check=True)
    return out


class Peers:
    """All available peers.  `lifecycle_round` and `exec_round` each add one sample per
    peer to `samples` (a dict of lists keyed by peer name)."""

    LIFECYCLE = ("floor", "floor_net", "crun", "runc")
    EXEC = ("nsenter", "crun_exec", "runc_exec")

    def __init__(self, rootfs, tmp):
        self.tmp = tmp
        # The containers' root (host uid 100000) must be able to reach the rootfs through
        # the bench's private temporary directory, which mkdtemp made 0700.
        os.chmod(os.path.dirname(os.path.abspath(rootfs)), 0o711)
        self.floor = self.crun = self.runc = self.nsenter = None
        self.dropped = {}
        try:
            self.floor = Floor(rootfs, build_floor(os.path.join(HERE, "..", "build", "bench-floor")))
            self.floor.run(False)
        except (OSError, RuntimeError, subprocess.CalledProcessError) as e:
            self._drop("floor", e)
        for name in ("crun", "runc"):
            if not shutil.which(name) or not shutil.which("runc"):
                self.dropped[name] = "not installed (runc provides `runc spec` for the bundle)"
                note(f"{name}: not installed; skipping it")
                continue
            try:
                peer = Oci(name, rootfs, tmp)
                peer.run()
                peer.exec()
                setattr(self, name, peer)
            except (OSError, RuntimeError, subprocess.CalledProcessError) as e:
                self.dropped[name] = str(e)
                note(f"{name}: {e}; skipping it")
        try:
            if not shutil.which("nsenter") or not shutil.which("unshare"):
                raise RuntimeError("nsenter or unshare not installed")
            self.nsenter = Nsenter(rootfs)
            self.nsenter.exec()
        except (OSError, RuntimeError, subprocess.CalledProcessError) as e:
            self._drop("nsenter", e)

    def _drop(self, name, e):
        self.dropped[name] = str(e)
        note(f"{name}: {e}; skipping it")
        peer = getattr(self, name, None)
        if peer is not None:
            try:
                peer.close()
            except Exception:  # noqa: BLE001 - closing a broken peer must not stop the run
                pass
        setattr(self, name, None)

    def _sample(self, samples, key, owner, fn):
        if getattr(self, owner) is None:
            return
        try:
            samples.setdefault(key, []).append(fn())
        except (OSError, RuntimeError, subprocess.CalledProcessError) as e:
            self._drop(owner, e)

    def lifecycle_round(self, samples):
        self._sample(samples, "floor", "floor", lambda: self.floor.run(False))
        self._sample(samples, "floor_net", "floor", lambda: self.floor.run(True))
        self._sample(samples, "crun", "crun", lambda: self.crun.run())
        self._sample(samples, "runc", "runc", lambda: self.runc.run())

    def exec_round(self, samples):
        self._sample(samples, "nsenter", "nsenter", lambda: self.nsenter.exec())
        self._sample(samples, "crun_exec", "crun", lambda: self.crun.exec())
        self._sample(samples, "runc_exec", "runc", lambda: self.runc.exec())

    def close(self):
        for name in ("floor", "crun", "runc", "nsenter"):
            peer = getattr(self, name)
            if peer is not None:
                try:
                    peer.close()
                except Exception as e:  # noqa: BLE001 - best effort at exit
                    note(f"{name}: close: {e}")
