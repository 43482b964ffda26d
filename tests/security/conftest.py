"""Fixtures of the security suites.  They reuse tests/integration/conftest.py (the daemon
harness, the busybox rootfs, the host-leftover scan) and add the attack programs: every
tests/security/attacks/*.c is compiled with `gcc -static` into /attacks/ of the rootfs the
sandboxes run."""
import glob
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
INTEGRATION = os.path.join(HERE, "..", "integration")

# Loaded under its own name: both directories have a conftest.py, and pytest imports each
# as the module "conftest".
_spec = importlib.util.spec_from_file_location("sbx_integration_conftest", os.path.join(INTEGRATION, "conftest.py"))
harness = importlib.util.module_from_spec(_spec)
sys.modules["sbx_integration_conftest"] = harness
_spec.loader.exec_module(harness)

from sbx_integration_conftest import (  # noqa: E402,F401  (fixtures are re-exported)
    BUILD, CLI, ROOT, SANDBOXD, Daemon, Response, agent_pid, daemon, free_port, host_leftovers,
    make_busybox_rootfs, make_daemon, sandbox, spawner_pids, wait_no_leftovers)

ATTACKS = sorted(glob.glob(os.path.join(HERE, "attacks", "*.c")))


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory):
    """The busybox rootfs plus /attacks/<name>, one static program per attacks/*.c."""
    if not shutil.which("gcc"):
        pytest.skip("gcc is needed to build the attack programs")
    root = make_busybox_rootfs(str(tmp_path_factory.mktemp("security-rootfs")))
    out = os.path.join(root, "attacks")
    os.makedirs(out)
    for src in ATTACKS:
        name = os.path.splitext(os.path.basename(src))[0]
        r = subprocess.run(["gcc", "-static", "-O1", "-Wall", "-o", os.path.join(out, name), src],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.fail(f"building {src} failed:\n{r.stderr}")
    return root


def sh(daemon, sid, command, timeout=60, **kw):
    """Runs a shell command in a sandbox; returns the exec's JSON result."""
    r = daemon.exec(sid, command, timeout_ms=timeout * 1000, **kw)
    assert r.status == 200, r
    return r.json


def attack(daemon, sid, program, case, *args, timeout=30):
    """Runs /attacks/<program> <case> <args> and asserts that every attempt was blocked."""
    cmd = " ".join(shlex.quote(a) for a in ["/attacks/" + program, case, *args])
    j = sh(daemon, sid, cmd, timeout=timeout)
    out = j["stdout"]
    assert "ESCAPED" not in out, f"{cmd}:\n{out}{j['stderr']}"
    assert "BLOCKED" in out and j["exit_code"] == 0, f"{cmd}: exit {j['exit_code']}\n{out}{j['stderr']}"
    return out


def host_mounts():
    """The host's mount table (the test's own mount namespace), as a set of lines."""
    with open("/proc/self/mountinfo") as f:
        return {" ".join(l.split()[3:5]) for l in f}
