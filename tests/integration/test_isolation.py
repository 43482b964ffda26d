"""What a sandbox must not reach: host processes, host files, host network, privileges.
Each test runs real commands inside a sandbox and checks the host from outside."""
import os
import re
import socket
import threading
import time

import pytest

from conftest import host_leftovers, wait_no_leftovers


def sh(daemon, sid, command, **kw):
    r = daemon.exec(sid, command, **kw)
    assert r.status == 200, r
    return r.json


def test_cannot_see_host_processes(daemon, sandbox):
    out = sh(daemon, sandbox, "ls /proc | grep -E '^[0-9]+$'")["stdout"].split()
    pids = sorted(int(p) for p in out)
    assert 1 in pids and len(pids) < 10, pids
    assert sh(daemon, sandbox, "cat /proc/1/cmdline | tr '\\0' ' '")["stdout"].startswith("sandbox-agent")
    # The test process itself (on the host) is not among them.
    comms = sh(daemon, sandbox, "cat /proc/[0-9]*/comm")["stdout"].split()
    assert "pytest" not in comms and "python3" not in comms and "sandboxd" not in comms


def test_cannot_read_host_files(daemon, sandbox, tmp_path):
    marker = tmp_path / "host-secret.txt"
    marker.write_text("host secret")
    j = sh(daemon, sandbox, f"cat {marker}; cat /etc/shadow; ls /home")
    assert "host secret" not in j["stdout"]
    assert j["exit_code"] != 0
    assert "busybox" in sh(daemon, sandbox, "ls /bin")["stdout"]
    j = sh(daemon, sandbox, "cat /proc/1/root/etc/hostname 2>&1; ls /proc/1/root/ 2>&1")
    assert "host secret" not in j["stdout"]


def test_root_inside_is_unprivileged_outside(daemon, sandbox):
    assert sh(daemon, sandbox, "id -u")["stdout"] == "0\n"
    uid_map = sh(daemon, sandbox, "cat /proc/self/uid_map")["stdout"].split()
    assert uid_map[0] == "0" and int(uid_map[1]) >= 65536 and uid_map[2] == "65536"
    host_uid = int(uid_map[1])
    # A long-running process inside, seen from the host, runs as the mapped uid.
    sh(daemon, sandbox, "sleep 30 >/dev/null 2>&1 &")
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cgroup") as f:
                if f"/sandboxd/{sandbox}" not in f.read():
                    continue
            with open(f"/proc/{pid}/status") as f:
                uid = next(l for l in f if l.startswith("Uid:")).split()[1:]
            found.append(int(uid[0]))
        except OSError:
            pass
    assert found and all(u == host_uid for u in found), found
    # A file written inside is owned by the mapped uid on the host.
    sh(daemon, sandbox, "echo x > /workspace/owned")
    upper = f"/proc/{daemon.daemon_pid()}/root{daemon.state_dir}/sandboxes/{sandbox}/rw/upper/workspace/owned"
    assert os.stat(upper).st_uid == host_uid


def test_privileges_are_dropped(daemon, sandbox):
    status = sh(daemon, sandbox, "cat /proc/self/status")["stdout"]
    fields = dict(l.split(":", 1) for l in status.splitlines() if ":" in l)
    assert fields["NoNewPrivs"].strip() == "1"
    assert fields["Seccomp"].strip() == "2"
    cap_eff = int(fields["CapEff"].strip(), 16)
    CAP_SYS_ADMIN, CAP_NET_RAW, CAP_SYS_PTRACE, CAP_SYS_MODULE = 21, 13, 19, 16
    for cap in (CAP_SYS_ADMIN, CAP_NET_RAW, CAP_SYS_PTRACE, CAP_SYS_MODULE):
        assert not cap_eff & (1 << cap), hex(cap_eff)
    assert int(fields["CapBnd"].strip(), 16) & (1 << CAP_SYS_ADMIN) == 0


@pytest.mark.parametrize("attack", [
    "mount -t tmpfs none /mnt",
    "mount -o remount,rw /proc/sys",
    "umount /proc/kcore",
    "unshare -U -r true",
    "unshare -m true",
    "mknod /tmp/sda b 8 0",
    "echo 1 > /proc/sys/kernel/sysrq",
    "echo x > /proc/sysrq-trigger",
    "echo test > /sys/kernel/uevent_helper",
    "chroot / true && nsenter -t 1 -m true",
    "hostname evil",
    "ping -c 1 127.0.0.1",
])
def test_attacks_fail(daemon, sandbox, attack):
    j = sh(daemon, sandbox, attack)
    assert j["exit_code"] != 0, (attack, j)


def test_masked_proc_and_readonly_sys(daemon, sandbox):
    # Masked files read as empty (kcore does not exist on every kernel).
    for f in ("/proc/kcore", "/proc/keys", "/proc/timer_list"):
        assert sh(daemon, sandbox, f"cat {f} 2>/dev/null | wc -c")["stdout"].strip() == "0", f
    assert sh(daemon, sandbox, "touch /sys/x")["exit_code"] != 0
    assert sh(daemon, sandbox, "touch /proc/sys/x")["exit_code"] != 0


def test_devices_are_minimal(daemon, sandbox):
    devs = set(sh(daemon, sandbox, "ls /dev")["stdout"].split())
    assert {"null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm"} <= devs
    assert not devs & {"sda", "vda", "mem", "kmem", "kmsg", "port"}
    assert sh(daemon, sandbox, "head -c 4 /dev/urandom | wc -c")["stdout"].strip() == "4"


def test_loopback_only_network(daemon, sandbox):
    ifaces = sh(daemon, sandbox, "cat /proc/net/dev")["stdout"]
    names = [l.split(":")[0].strip() for l in ifaces.splitlines()[2:]]
    assert names == ["lo"], names
    # The daemon's own port on the host's 127.0.0.1 is not reachable from inside.
    j = sh(daemon, sandbox, f"wget -q -T 2 -O - http://127.0.0.1:{daemon.port}/health", timeout=10)
    assert j["exit_code"] != 0 and "healthy" not in j["stdout"]
    # Loopback inside works.
    j = sh(daemon, sandbox, "(nc -l -p 9000 > /tmp/got &); "
                            "for i in $(seq 1 50); do echo ping | nc 127.0.0.1 9000 && break; sleep 0.1; done; "
                            "for i in $(seq 1 50); do grep -q ping /tmp/got && break; sleep 0.1; done; cat /tmp/got")
    assert "ping" in j["stdout"]


def test_host_listener_not_reachable(daemon, sandbox):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(3)
    port = srv.getsockname()[1]
    got = []

    def accept():
        try:
            c, _ = srv.accept()
            got.append(c)
        except OSError:
            pass

    t = threading.Thread(target=accept)
    t.start()
    j = sh(daemon, sandbox, f"echo hi | nc -w 1 127.0.0.1 {port}", timeout=10)
    t.join()
    srv.close()
    assert not got and j["exit_code"] != 0


def test_hostname_and_env_do_not_leak(make_daemon):
    d = make_daemon(env={"III_AUTH_TOKEN": "tok-do-not-leak", "HOST_ONLY_VAR": "leak"}).start()
    sid = d.create()
    env = d.exec(sid, cmd="env").json["stdout"]
    assert "tok-do-not-leak" not in env and "HOST_ONLY_VAR" not in env
    assert d.exec(sid, "hostname").json["stdout"].strip() == sid.replace("_", "-")
    assert d.exec(sid, "cat /proc/1/environ | tr '\\0' '\\n'").json["stdout"].find("tok-do-not-leak") < 0


def test_agent_fds_are_clean(daemon, sandbox):
    fds = sh(daemon, sandbox, "ls -l /proc/self/fd")["stdout"]
    targets = re.findall(r"-> (.*)", fds)
    for t in targets:
        assert t.startswith(("pipe:", "/proc/", "/dev/null")), targets


def test_sandboxes_are_isolated_from_each_other(daemon):
    a, b = daemon.create(), daemon.create()
    try:
        sh(daemon, a, "echo secret-a > /workspace/a.txt; (nc -l -p 7000 &)")
        j = sh(daemon, b, "cat /workspace/a.txt")
        assert j["exit_code"] != 0
        j = sh(daemon, b, "echo x | nc -w 1 127.0.0.1 7000", timeout=10)
        assert j["exit_code"] != 0
    finally:
        daemon.delete(a)
        daemon.delete(b)


def test_delete_leaves_nothing(daemon):
    sid = daemon.create()
    sh(daemon, sid, "sleep 100 >/dev/null 2>&1 & echo data > /workspace/f")
    assert host_leftovers(daemon.state_dir, sid), "the sandbox should have host resources while it runs"
    assert daemon.delete(sid).status == 200
    assert wait_no_leftovers(daemon.state_dir, sid) == []
    assert not os.path.exists(os.path.join(daemon.state_dir, "run", "sandboxes", sid + ".sock"))
