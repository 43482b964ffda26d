"""Shared fixtures: a busybox rootfs, a real sandboxd on a free port with a temporary
state directory, and a tiny HTTP client.  Tests talk to the daemon only over HTTP and
through the CLI, as a user would."""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.path.join(ROOT, os.environ.get("SANDBOXD_BUILD_DIR", "build"))  # e.g. build-asan
SANDBOXD = os.path.join(BUILD, "sandboxd")
CLI = os.path.join(BUILD, "sandbox")

BUSYBOX_APPLETS = None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_busybox_rootfs(path):
    """A 2 MB root filesystem: busybox-static and its applets, owned by root."""
    bb = shutil.which("busybox") or "/bin/busybox"
    for d in ("bin", "sbin", "usr/bin", "etc", "proc", "sys", "dev", "tmp", "root", "workspace"):
        os.makedirs(os.path.join(path, d), exist_ok=True)
    os.chmod(os.path.join(path, "tmp"), 0o1777)
    shutil.copy2(bb, os.path.join(path, "bin", "busybox"))
    applets = subprocess.run([bb, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for a in applets:
        link = os.path.join(path, "bin", a)
        if not os.path.exists(link):
            os.symlink("busybox", link)
    with open(os.path.join(path, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    with open(os.path.join(path, "etc", "group"), "w") as f:
        f.write("root:x:0:\nnogroup:x:65534:\n")
    return path


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory):
    return make_busybox_rootfs(str(tmp_path_factory.mktemp("busybox-rootfs")))


class Response:
    def __init__(self, status, body, headers):
        self.status = status
        self.raw = body
        self.headers = headers
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None

    def __repr__(self):
        return f"<Response {self.status} {self.raw[:300]!r}>"


class Daemon:
    """A sandboxd process with its own state dir, port and config."""

    def __init__(self, rootfs, config=None, env=None, state_dir=None, port=None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp = tempfile.mkdtemp(prefix="sandboxd-test-")
        self.state_dir = state_dir or os.path.join(self.tmp, "state")
        base = {
            "image_allowlist": ["busybox", "python", "node"],
            "custom_images": {"busybox": rootfs},
            "reaper_interval_secs": 1,
        }
        base.update(config or {})
        self.config_path = os.path.join(self.tmp, "config.yaml")
        with open(self.config_path, "w") as f:
            json.dump(base, f)  # JSON is YAML
        self.env = dict(os.environ)
        for k in list(self.env):
            if k.startswith("III_"):
                del self.env[k]
        self.env.update(env or {})
        self.token = self.env.get("III_AUTH_TOKEN")
        self.log_path = os.path.join(self.tmp, "sandboxd.log")
        self.proc = None

    def start(self, wait=True):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [SANDBOXD, "--config", self.config_path, "--listen", f"127.0.0.1:{self.port}",
             "--state-dir", self.state_dir],
            stdout=self.log, stderr=subprocess.STDOUT, env=self.env, stdin=subprocess.DEVNULL)
        if wait:
            deadline = time.time() + 20
            while time.time() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError("sandboxd exited early:\n" + self.read_log())
                try:
                    if self.request("GET", "/health").status == 200:
                        return self
                except OSError:
                    pass
                time.sleep(0.05)
            raise RuntimeError("sandboxd did not answer /health:\n" + self.read_log())
        return self

    def read_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode if self.proc else None
        if getattr(self, "log", None):
            self.log.close()
        return rc

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def request(self, method, path, body=None, token=None, raw=None, headers=None, timeout=120):
        data = None
        hdrs = {"Content-Type": "application/json"}
        if raw is not None:
            data = raw if isinstance(raw, bytes) else raw.encode()
        elif body is not None:
            data = json.dumps(body).encode()
        tok = token if token is not None else self.token
        if tok:
            hdrs["Authorization"] = f"Bearer {tok}"
        hdrs.update(headers or {})
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return Response(r.status, r.read().decode(errors="replace"), dict(r.headers))
        except urllib.error.HTTPError as e:
            return Response(e.code, e.read().decode(errors="replace"), dict(e.headers))

    # Conveniences used by many tests.
    def create(self, image="busybox", **kw):
        body = {"image": image}
        body.update(kw)
        r = self.request("POST", "/sandbox/sandboxes", body)
        assert r.status == 200, r
        return r.json["id"]

    def exec(self, sid, command=None, **kw):
        body = dict(kw)
        if command is not None:
            body["command"] = command
        return self.request("POST", f"/sandbox/sandboxes/{sid}/exec", body)

    def delete(self, sid):
        return self.request("DELETE", f"/sandbox/sandboxes/{sid}")

    def daemon_pid(self):
        return self.proc.pid

    def cli(self, *args, input=None, timeout=120, env=None):
        e = dict(os.environ)
        e["SANDBOXD_URL"] = self.url
        if self.token:
            e["SANDBOXD_TOKEN"] = self.token
        e.update(env or {})
        return subprocess.run([CLI, *args], capture_output=True, input=input, timeout=timeout, env=e)


@pytest.fixture(scope="module")
def daemon(busybox_rootfs):
    d = Daemon(busybox_rootfs, config={"default_pids_max": 128, "max_concurrent_sandboxes": 12})
    d.start()
    yield d
    d.cleanup()


@pytest.fixture
def make_daemon(busybox_rootfs):
    made = []

    def make(**kw):
        d = Daemon(busybox_rootfs, **kw)
        made.append(d)
        return d

    yield make
    for d in made:
        d.cleanup()


@pytest.fixture
def sandbox(daemon):
    sid = daemon.create()
    yield sid
    daemon.delete(sid)


def host_leftovers(state_dir, sid):
    """Everything of a sandbox that could remain on the host, as a list of descriptions."""
    found = []
    for ctrl in ("memory", "cpu", "pids", "cpuacct", "freezer"):
        p = f"/sys/fs/cgroup/{ctrl}/sandboxd/{sid}"
        if os.path.exists(p):
            found.append(p)
    if os.path.exists(f"/sys/fs/cgroup/unified/sandboxd/{sid}"):
        found.append(f"/sys/fs/cgroup/unified/sandboxd/{sid}")
    d = os.path.join(state_dir, "sandboxes", sid)
    if os.path.exists(d):
        found.append(d)
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cgroup") as f:
                if f"/sandboxd/{sid}" in f.read():
                    found.append(f"process {pid} in the sandbox's cgroup")
            with open(f"/proc/{pid}/mountinfo") as f:
                for line in f:
                    if sid in line:
                        found.append(f"mount in pid {pid}: {line.strip()}")
                        break
        except OSError:
            pass
    return found


def wait_no_leftovers(state_dir, sid, timeout=10):
    """host_leftovers once they are gone, or as they are after `timeout` seconds: a delete
    answers once the sandbox is killed and hidden, and its teardown finishes just after."""
    deadline = time.time() + timeout
    found = host_leftovers(state_dir, sid)
    while found and time.time() < deadline:
        time.sleep(0.05)
        found = host_leftovers(state_dir, sid)
    return found


def spawner_pids(daemon_pid):
    """The daemon's sandbox spawner (spawner.h): its child named sandboxd-spawn."""
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                st = f.read()
        except OSError:
            continue
        comm = st[st.index("(") + 1:st.rindex(")")]
        ppid = int(st[st.rindex(")") + 2:].split()[1])
        if comm == "sandboxd-spawn" and ppid == daemon_pid:
            out.append(int(p))
    return out


def agent_pid(sid):
    """The host pid of a sandbox's agent (its PID 1), found through its cgroup."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cgroup") as f:
                if f"/sandboxd/{sid}" not in f.read():
                    continue
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("NSpid:") and line.split()[-1] == "1":
                        return int(pid)
        except OSError:
            pass
    return None
