"""The escape battery: real attack programs (attacks/*.c, built static into the rootfs) run
inside a sandbox.  Each case asserts that every attempt failed inside AND that the host is
untouched, checked from outside.  docs/security.md has the table of cases."""
import os
import re
import socket
import subprocess
import threading
import time

import pytest

from conftest import agent_pid, attack, host_leftovers, host_mounts, sh


def read(path):
    with open(path) as f:
        return f.read()


@pytest.fixture
def host_marker(tmp_path):
    """A host file that no sandbox may read, and its content."""
    p = tmp_path / "host-marker-secret"
    p.write_text("host secret\n")
    return str(p)


@pytest.fixture
def host_untouched(daemon):
    """Takes a snapshot of host state an escape would change and checks it after the test."""
    knobs = ["/proc/sys/kernel/core_pattern", "/proc/sys/kernel/sysrq", "/proc/sys/kernel/modprobe",
             "/proc/sys/fs/suid_dumpable", "/proc/sys/vm/overcommit_memory", "/proc/sys/net/ipv4/ip_forward",
             "/proc/sys/kernel/hostname", "/sys/kernel/mm/transparent_hugepage/enabled"]
    before = {k: read(k) for k in knobs if os.path.exists(k)}
    mounts = host_mounts()
    agent_ro = [l for l in read("/proc/modules").splitlines()] if os.path.exists("/proc/modules") else []
    yield
    assert {k: read(k) for k in before} == before
    new = host_mounts() - mounts
    assert not new, f"new host mounts: {new}"
    if agent_ro:
        assert read("/proc/modules").splitlines() == agent_ro
    assert daemon.request("GET", "/health").status == 200


# ---- mounts ----

def test_mount(daemon, sandbox, host_untouched):
    attack(daemon, sandbox, "mounts", "mount")


def test_umount_of_masks(daemon, sandbox, host_untouched):
    attack(daemon, sandbox, "mounts", "umount")
    assert sh(daemon, sandbox, "wc -c < /proc/kcore 2>/dev/null || echo 0")["stdout"].strip() == "0"


def test_pivot_root_and_chroot_breakout(daemon, sandbox, host_untouched, host_marker):
    attack(daemon, sandbox, "mounts", "pivot_root", host_marker)


def test_new_mount_api(daemon, sandbox, host_untouched):
    attack(daemon, sandbox, "mounts", "new_mount_api")


# ---- namespaces ----

def test_unshare(daemon, sandbox, host_untouched):
    attack(daemon, sandbox, "namespaces", "unshare")


def test_nested_user_namespace(daemon, sandbox, host_untouched):
    attack(daemon, sandbox, "namespaces", "nested_userns")


def test_setns(daemon, sandbox, host_untouched):
    attack(daemon, sandbox, "namespaces", "setns")


# ---- kernel surface ----

def test_shocker_open_by_handle_at(daemon, sandbox, host_untouched):
    attack(daemon, sandbox, "kernel", "shocker")


@pytest.mark.parametrize("case", ["machine", "surface"])
def test_kernel_management_and_surface_syscalls(daemon, sandbox, host_untouched, case):
    # machine: kexec_load, kexec_file_load, init_module, finit_module, delete_module, reboot,
    # swapoff, clock_settime.  surface: bpf, perf_event_open, add_key, keyctl, request_key,
    # userfaultfd, io_uring_setup, fanotify_init, syslog, iopl.
    out = attack(daemon, sandbox, "kernel", case)
    for name in (["kexec_load", "init_module", "finit_module"] if case == "machine"
                 else ["bpf", "perf_event_open", "add_key", "keyctl", "userfaultfd", "io_uring_setup"]):
        assert f"BLOCKED {name}" in out, out


def test_mknod_block_device(daemon, sandbox, host_untouched):
    attack(daemon, sandbox, "kernel", "devices")
    assert sh(daemon, sandbox, "ls /tmp/sda /tmp/mem 2>&1")["exit_code"] != 0


def test_raw_and_packet_sockets(daemon, sandbox, host_untouched):
    attack(daemon, sandbox, "kernel", "sockets")


# ---- processes and the agent ----

def test_ptrace_of_agent_is_denied(daemon, sandbox, host_untouched):
    attack(daemon, sandbox, "procs", "ptrace_agent")
    # The agent is not traced and keeps serving.
    pid = agent_pid(sandbox)
    status = read(f"/proc/{pid}/status")
    assert re.search(r"^TracerPid:\s+0$", status, re.M), status
    assert sh(daemon, sandbox, "echo alive")["stdout"] == "alive\n"


def test_ptrace_of_own_processes_is_allowed(daemon, sandbox):
    # Policy (docs/security.md): a sandbox may trace its own processes, as under Docker on
    # kernels >= 4.8; it cannot see anything else to trace.  Another exec's process:
    sh(daemon, sandbox, "sleep 30 >/dev/null 2>&1 & echo $! > /tmp/sleeper")
    pid = sh(daemon, sandbox, "cat /tmp/sleeper")["stdout"].strip()
    j = sh(daemon, sandbox, f"/attacks/procs ptrace_sibling {pid}")
    assert "ALLOWED" in j["stdout"], j
    # Host processes are not visible, so not traceable: the test runner's pid does not
    # exist inside (pid namespace).
    j = sh(daemon, sandbox, f"/attacks/procs ptrace_sibling {os.getpid()}")
    assert "DENIED" in j["stdout"] and "No such process" in j["stdout"], j


def test_kill_agent_from_inside(daemon, sandbox):
    pid = agent_pid(sandbox)
    attack(daemon, sandbox, "procs", "kill_agent")
    sh(daemon, sandbox, "kill -9 1; kill -KILL 1; kill -STOP 1; true")
    # kill -1 reaches every process of the sandbox but PID 1, including the session that
    # serves this very exec (so the exec itself reports an error): still not the agent.
    daemon.exec(sandbox, "kill -9 -1")
    assert agent_pid(sandbox) == pid
    assert sh(daemon, sandbox, "echo alive")["stdout"] == "alive\n"


def test_overwrite_agent_binary(daemon, sandbox):
    attack(daemon, sandbox, "procs", "overwrite_agent")
    pid = agent_pid(sandbox)
    exe = os.readlink(f"/proc/{pid}/exe")
    assert exe.startswith("/memfd:"), exe
    # Inside, /proc/1/exe is out of reach (the agent is non-dumpable).  Even host root,
    # which can open it, cannot change the binary: it is executing, and the memfd is
    # sealed against writes, shrinking and growing.
    with open(f"/proc/{pid}/exe", "rb") as f:
        head = f.read(4)
    assert head == b"\x7fELF"
    with pytest.raises(OSError):
        fd = os.open(f"/proc/{pid}/exe", os.O_WRONLY)
        try:
            os.write(fd, b"\x7f")
        finally:
            os.close(fd)
    # A second sandbox still starts from the intact agent.
    other = daemon.create()
    try:
        assert sh(daemon, other, "echo ok")["stdout"] == "ok\n"
    finally:
        daemon.delete(other)


def host_fd_targets(pid):
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            pass
    return out


def test_no_leaked_host_fds(daemon, sandbox):
    # From inside: every fd of an exec'd process is a pipe, a socket, /dev/null or its own
    # /proc entry, and no directory fd leads outside.  PID 1's fd targets are not readable
    # at all (the agent is non-dumpable); they are checked from the host below.
    j = sh(daemon, sandbox, "/attacks/procs list_fds self; /attacks/procs list_fds 1")
    assert "ESCAPED" not in j["stdout"], j
    assert "FD self 0 pipe:" in j["stdout"], j
    for line in j["stdout"].splitlines():
        if line.startswith("FD "):
            _, pid, _, target = line.split(" ", 3)
            if pid == "1":
                assert target.startswith("<denied"), line
            else:
                assert re.match(r"(pipe|socket|anon_inode):|/dev/null$|/proc/", target), line
    # From the host: the agent holds exactly stdio (/dev/null), its listening socket, and
    # the signalfd; its sessions hold sockets and pipes.  No file or directory of the host.
    for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
        try:
            if f"/sandboxd/{sandbox}" not in read(f"/proc/{pid}/cgroup"):
                continue
            targets = host_fd_targets(pid)
        except OSError:
            continue
        for fd, t in targets.items():
            assert re.match(r"(pipe|socket|anon_inode):|/dev/null$|/proc/", t), (pid, fd, t)


# ---- host files and host-wide knobs ----

def test_host_files_unreachable(daemon, sandbox, host_marker):
    attack(daemon, sandbox, "hostfs", "host_file", host_marker)
    j = sh(daemon, sandbox, f"cat /proc/1/root{host_marker} /proc/self/root{host_marker} 2>&1; "
                            "readlink /proc/self/exe /proc/1/exe /proc/1/root")
    assert "host secret" not in j["stdout"]


def test_proc_kcore_and_kernel_memory(daemon, sandbox):
    attack(daemon, sandbox, "hostfs", "kcore")


def test_sysrq_trigger(daemon, sandbox, host_untouched):
    attack(daemon, sandbox, "hostfs", "sysrq")


def test_proc_sys_and_core_pattern(daemon, sandbox, host_untouched):
    attack(daemon, sandbox, "hostfs", "core_pattern", "|/tmp/pwn-core")
    assert "pwn" not in read("/proc/sys/kernel/core_pattern")


def test_sys_writes(daemon, sandbox, host_untouched):
    attack(daemon, sandbox, "hostfs", "sysfs")


def test_cgroup_release_agent(daemon, sandbox, host_untouched):
    attack(daemon, sandbox, "hostfs", "release_agent")
    # The host's release_agent files are as they were (empty on this machine).
    for p in ("/sys/fs/cgroup/memory/release_agent", "/sys/fs/cgroup/pids/release_agent"):
        if os.path.exists(p):
            assert "/tmp/x" not in read(p)


# ---- network ----

def connect(daemon, sid, host, port, timeout_ms=2000):
    j = sh(daemon, sid, f"/attacks/net connect {host} {port} {timeout_ms}")
    assert "ESCAPED" not in j["stdout"] and "BLOCKED" in j["stdout"], j
    return j["stdout"]


def host_ipv4_addresses():
    out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    return [a for a in re.findall(r"inet (\d+\.\d+\.\d+\.\d+)/", out) if not a.startswith("127.")]


class Listener:
    """A host TCP listener that records whether anyone connected."""

    def __init__(self, host="0.0.0.0"):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.hits = []
        self.stop = False
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        deadline = time.time() + 60
        while not self.stop and time.time() < deadline:
            try:
                c, a = self.sock.accept()
                self.hits.append(a)
                c.close()
            except OSError:
                pass

    def close(self):
        self.stop = True
        self.t.join()
        self.sock.close()


def test_daemon_api_port_unreachable(daemon, sandbox):
    out = connect(daemon, sandbox, "127.0.0.1", daemon.port)
    assert "refused" in out.lower(), out  # the sandbox's own loopback: nobody listens


def test_other_host_ports_unreachable(daemon, sandbox):
    lst = Listener()
    try:
        connect(daemon, sandbox, "127.0.0.1", lst.port)
        for addr in host_ipv4_addresses():
            out = connect(daemon, sandbox, addr, lst.port)
            assert "unreachable" in out.lower(), out
    finally:
        lst.close()
    assert lst.hits == []


def test_metadata_address_has_no_route(daemon, sandbox):
    out = connect(daemon, sandbox, "169.254.169.254", 80, timeout_ms=2000)
    assert "unreachable" in out.lower(), out
    ms = int(re.search(r"after (\d+) ms", out).group(1))
    assert ms < 1000, out  # failed at once (no route), not after a timeout


def test_other_sandbox_unreachable(daemon, sandbox):
    other = daemon.create()
    try:
        sh(daemon, other, "(nc -l -p 7001 -e echo reached >/dev/null 2>&1 &); sleep 0.2")
        assert "BLOCKED" in connect(daemon, sandbox, "127.0.0.1", 7001)
        # Its own listener answers inside it: the test is real.
        j = sh(daemon, other, "/attacks/net connect 127.0.0.1 7001")
        assert "ESCAPED" in j["stdout"], j
    finally:
        daemon.delete(other)


# ---- identity ----

def cap_eff(pid):
    return int(re.search(r"^CapEff:\s+([0-9a-f]+)", read(f"/proc/{pid}/status"), re.M).group(1), 16)


def test_root_inside_has_no_host_capability(daemon, sandbox):
    sh(daemon, sandbox, "sleep 30 >/dev/null 2>&1 &")
    pid = agent_pid(sandbox)
    # CapEff is shown relative to the namespace that owns the task's credentials: the
    # sandbox's user namespace.  The bits are capabilities over objects that namespace
    # owns (its mounts, net namespace, ...), none in the host namespace, because the
    # user namespace's owner is the mapped uid, not host root.  What the kernel would
    # grant against the host is shown by the ns-relative view: the task's user namespace
    # is not the host's, and its uid is the unprivileged mapped one.
    assert os.readlink(f"/proc/{pid}/ns/user") != os.readlink("/proc/self/ns/user")
    uid = int(re.search(r"^Uid:\s+(\d+)", read(f"/proc/{pid}/status"), re.M).group(1))
    assert uid >= 65536
    assert cap_eff(pid) & (1 << 21) == 0  # no CAP_SYS_ADMIN even inside
    # Proof by use: the host-side actions a capability would allow all fail from inside.
    for cmd in ("hostname evil", "mount -t tmpfs x /mnt", "ip link add x type dummy",
                "echo 1 > /proc/sys/kernel/sysrq"):
        assert sh(daemon, sandbox, cmd + " 2>&1")["exit_code"] != 0, cmd
    assert socket.gethostname() != "evil"


def test_upper_layer_files_owned_by_mapped_uid(daemon, sandbox):
    sh(daemon, sandbox, "mkdir -p /workspace/d && echo x > /workspace/d/f && echo y > /etc/newfile")
    uid_base = int(sh(daemon, sandbox, "cat /proc/self/uid_map")["stdout"].split()[1])
    upper = f"/proc/{daemon.daemon_pid()}/root{daemon.state_dir}/sandboxes/{sandbox}/rw/upper"
    for rel in ("workspace/d", "workspace/d/f", "etc/newfile"):
        st = os.stat(os.path.join(upper, rel))
        assert st.st_uid == uid_base and st.st_gid == uid_base, (rel, st.st_uid, st.st_gid)
    # chown to an id outside the map is refused.
    assert sh(daemon, sandbox, "chown 70000 /workspace/d/f")["exit_code"] != 0


# ---- environment ----

def test_environment_does_not_leak(make_daemon):
    d = make_daemon(env={"III_AUTH_TOKEN": "tok-escape-battery", "HOST_SECRET_VAR": "leak-me"}).start()
    sid = d.create()
    j = sh(d, sid, "env; cat /proc/self/environ; hostname; cat /proc/sys/kernel/hostname; "
                   "grep -r tok-escape-battery /proc/1/environ /etc 2>/dev/null; true")
    assert "tok-escape-battery" not in j["stdout"] and "HOST_SECRET_VAR" not in j["stdout"], j
    assert socket.gethostname() not in j["stdout"].split()
    assert sh(d, sid, "hostname")["stdout"].strip() == sid.replace("_", "-")
