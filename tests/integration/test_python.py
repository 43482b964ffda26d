"""The headline: Python in an isolated sandbox, with the preset built from Debian packages
on first use (mmdebstrap), shared by concurrent first creates, then reused."""
import concurrent.futures
import os
import shutil

import pytest

from conftest import Daemon

pytestmark = pytest.mark.skipif(shutil.which("mmdebstrap") is None,
                                reason="mmdebstrap is not installed (scripts/install-deps.sh installs it)")


@pytest.fixture(scope="module")
def pydaemon(busybox_rootfs):
    d = Daemon(busybox_rootfs, state_dir=os.environ.get("SANDBOXD_TEST_IMAGE_STATE"))
    d.start()
    yield d
    d.cleanup()


def test_python_preset_builds_once_and_runs(pydaemon):
    d = pydaemon
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: d.request("POST", "/sandbox/sandboxes", {"image": "python"}, timeout=900),
                                range(3)))
    for r in results:
        assert r.status == 200, r
    log = d.read_log()
    runs = [l for l in log.splitlines() if "build-image python: running" in l]
    assert len(runs) <= 1, runs  # three concurrent first creates share one build
    sids = [r.json["id"] for r in results]
    try:
        r = d.exec(sids[0], cmd="python3", args=["-c", "print(2 ** 10)"])
        assert r.json["stdout"] == "1024\n", r
        r = d.exec(sids[1], cmd="python3", args=["-c", "import os; print(os.getuid(), os.getcwd())"])
        assert r.json["stdout"] == "0 /workspace\n", r
        st = d.request("GET", "/sandbox/images/python").json
        assert st["state"] == "ready"
    finally:
        for s in sids:
            d.delete(s)


def test_cli_run_python(pydaemon):
    r = pydaemon.cli("run", "python", "--", "python3", "-c", "print('hi')", timeout=900)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"hi\n"
