"""Joining a Ray cluster: a real `ray start --head` on loopback with token authentication, and the address checks."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ray_procs import descendants, kill_scoped, listening

from icon_bench.errors import ClusterError
from icon_bench.run.execution.ray_cluster import LOOPBACK_ENV, _is_auth_error, check_address, ray_session, split_address

REPO = Path(__file__).resolve().parents[1]
TINY_SUITE = "name: tiny\ndatasets: [iris]\nseeds: [0]\ngrid:\n  method: [kmeans]\nexecutor: ray\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_split_address() -> None:
    assert split_address("127.0.0.1:6379") == ("127.0.0.1", 6379)
    assert split_address("[::1]:6379") == ("::1", 6379)
    assert split_address("head.example:10") == ("head.example", 10)
    assert split_address("auto") is None and split_address("ray://head:10001") is None
    assert split_address("head:port") is None


def test_an_address_nobody_listens_on_fails_at_once_with_the_address() -> None:
    port = _free_port()
    t0 = time.time()
    with pytest.raises(ClusterError, match=rf"no Ray cluster answers at 127\.0\.0\.1:{port} .*ray start --head"):
        check_address(f"127.0.0.1:{port}")
    assert time.time() - t0 < 5  # not Ray's 40 s of retries


def test_a_port_that_is_not_ray_is_given_up_after_the_timeout() -> None:
    with socket.socket() as server:  # accepts TCP connections, never speaks gRPC
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = f"127.0.0.1:{server.getsockname()[1]}"
        t0 = time.time()
        with pytest.raises(ClusterError, match="accepts connections but no Ray cluster answered"):
            check_address(address, timeout_s=2)
        assert time.time() - t0 < 10


def test_ray_address_from_the_environment_is_the_cluster_to_join(monkeypatch: pytest.MonkeyPatch) -> None:
    port = _free_port()
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    with pytest.raises(ClusterError, match=f"no Ray cluster answers at 127.0.0.1:{port}"), ray_session(num_cpus=1):
        pass


def test_auth_errors_are_recognised_through_rays_connection_error() -> None:
    from ray.exceptions import AuthenticationError

    try:
        try:
            raise AuthenticationError("RPC error: InvalidAuthToken: Authentication token is missing or incorrect")
        except AuthenticationError as inner:
            raise ConnectionError("Failed to connect to Ray cluster at 127.0.0.1:1") from inner
    except ConnectionError as outer:
        assert _is_auth_error(outer)
    assert not _is_auth_error(ConnectionError("Failed to connect to Ray cluster at 127.0.0.1:1"))


# ---------------------------------------------------------------------------------------------
# A real head node, as a user starts one, with token authentication on
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_head() -> Iterator[dict[str, Any]]:
    """`ray start --head` on 127.0.0.1 in a temp HOME holding a token (so Ray turns authentication on).

    Stopped by killing its process group and every process naming its temp dir: `ray stop` would
    stop every Ray on the machine.
    """
    if not Path("/proc/net/tcp").exists():
        pytest.skip("reads /proc (Linux)")
    # A short path: Ray's Unix sockets live under it (at most 107 bytes).
    root = Path(tempfile.mkdtemp(prefix="ib-ray-", dir="/tmp"))
    home = root / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(secrets.token_hex(32))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(home), **{LOOPBACK_ENV: "0", "RAY_worker_niceness": "0"})
    ray_bin = Path(sys.executable).with_name("ray")
    cmd = [str(ray_bin) if ray_bin.exists() else "ray", "start", "--head", "--block", "--node-ip-address", "127.0.0.1"]
    cmd += ["--port", str(port), "--temp-dir", str(root / "t"), "--disable-usage-stats", "--include-dashboard", "false"]
    cmd += ["--num-cpus", "1", "--num-gpus", "0"]
    with open(root / "head.log", "w") as log:  # the child keeps its own copy of the descriptor
        head = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 60
        while "Ray runtime started" not in (root / "head.log").read_text():
            if head.poll() is not None or time.time() > deadline:
                pytest.fail(f"ray start --head failed:\n{(root / 'head.log').read_text()[-3000:]}")
            time.sleep(0.2)
        yield {"address": f"127.0.0.1:{port}", "home": home, "root": root, "pid": head.pid, "env": env}
    finally:
        left = kill_scoped(head.pid, str(root))
        head.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)
        assert not left, f"Ray processes of the test cluster still running: {sorted(left)}"


def _run_driver(ray_head: dict[str, Any], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "tiny.yaml").write_text(TINY_SUITE)
    driver_env = {k: v for k, v in ray_head["env"].items() if k not in (LOOPBACK_ENV, "RAY_worker_niceness")}
    driver_env.update(PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), **env)
    cmd = [sys.executable, "-m", "icon_bench.cli", "run", "tiny.yaml", "--address", ray_head["address"], "--no-report"]
    return subprocess.run(cmd, cwd=tmp_path, env=driver_env, capture_output=True, text=True, timeout=90, check=False)


@pytest.mark.slow
def test_joining_a_token_cluster_without_the_token_says_what_to_set(ray_head: dict[str, Any], tmp_path: Path) -> None:
    t0 = time.time()
    done = _run_driver(ray_head, tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    message = done.stderr.strip().splitlines()[-1]
    assert message.startswith(f"icon-bench: error: the Ray cluster at {ray_head['address']} requires token authentication")
    assert "RAY_AUTH_MODE=token" in message and "~/.ray/auth_token" in message
    assert time.time() - t0 < 30  # not Ray's 20 s of retries on top of start-up
    assert not list(tmp_path.glob("**/results.jsonl"))


@pytest.mark.slow
def test_joining_a_token_cluster_with_the_token_runs_the_suite_on_loopback(ray_head: dict[str, Any], tmp_path: Path) -> None:
    done = _run_driver(ray_head, tmp_path, RAY_AUTH_MODE="token")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [json.loads(line) for line in next(tmp_path.glob("**/results.jsonl")).read_text().splitlines()]
    assert [(r["method"], r["status"]) for r in rows] == [("kmeans", "ok")]
    assert rows[0]["nice"] == os.nice(0)  # RAY_worker_niceness=0 on the head: trials at this priority
    ports = listening(descendants(ray_head["pid"]))
    assert ports, "the head's processes should listen somewhere"
    assert {addr for addr, _, _ in ports} == {"127.0.0.1"}, ports
