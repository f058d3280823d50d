"""Starting and joining Ray clusters: local ones on loopback at the driver's priority; clear errors on joining."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

from icon_bench.errors import ClusterError

__all__ = ["AUTH_HELP", "LOOPBACK_ENV", "check_address", "loopback_only", "ray_session", "split_address"]

# Ray's single-machine switch (meant for macOS / Windows, honoured on Linux too): with it off, Ray
# takes 127.0.0.1 as the node's address, and its GCS, raylet and worker servers then listen on
# loopback only. Without it, `127.0.0.1` is rewritten to the machine's network address and every
# service listens on all interfaces; Ray's services run code for whoever reaches them.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
NICENESS_ENV = "RAY_worker_niceness"

AUTH_HELP = (
    "the Ray cluster at {address} requires token authentication (`ray start` turns it on when "
    "~/.ray/auth_token exists); run icon-bench with RAY_AUTH_MODE=token and the cluster's token in "
    "~/.ray/auth_token, in a file named by RAY_AUTH_TOKEN_PATH, or in RAY_AUTH_TOKEN "
    "(`ray get-auth-token` on the head prints it)"
)


def split_address(address: str) -> tuple[str, int] | None:
    """(host, port) of a `HOST:PORT` (or `[v6]:PORT`) address; None for `auto`, `ray://...` and the like."""
    if "://" in address or ":" not in address:
        return None
    host, _, port = address.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return host, int(port)
    except ValueError:
        return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextlib.contextmanager
def loopback_only() -> Iterator[None]:
    """Ray on 127.0.0.1 for this process and the Ray processes it starts, restored on exit."""
    from ray._private import ray_constants

    before_env, before_flag = os.environ.get(LOOPBACK_ENV), ray_constants.ENABLE_RAY_CLUSTER
    # The variable reaches the processes Ray spawns; the constant was read when ray was imported.
    os.environ[LOOPBACK_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before_flag
        if before_env is None:
            os.environ.pop(LOOPBACK_ENV, None)
        else:
            os.environ[LOOPBACK_ENV] = before_env


def _probe_gcs(address: str, timeout_s: float) -> tuple[BaseException | None, list[str] | None]:
    """Ask the GCS at `address` for its nodes: (the error it gave, the nodes' addresses).

    Ray's client retries a refused token for 20 s and an unresponsive port for 40 s before its
    own error, so the probe runs in a thread (the call releases the GIL) and is given up after
    `timeout_s`, with (TimeoutError, None).
    """
    result: dict[str, Any] = {}

    def probe() -> None:
        try:
            from ray._raylet import GcsClient

            nodes = GcsClient(address=address).get_all_node_info(timeout=timeout_s)
            result["nodes"] = [info.node_manager_address for info in nodes.values()]
        except BaseException as exc:  # reported to the caller, which decides what it means
            result["error"] = exc

    thread = threading.Thread(target=probe, name="icon-bench-gcs-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        return TimeoutError(f"no answer in {timeout_s:g} s"), None
    return result.get("error"), result.get("nodes")


def _is_auth_error(exc: BaseException | None) -> bool:
    """Whether `exc` (or an exception it was raised from) is Ray refusing a missing or wrong token."""
    from ray.exceptions import AuthenticationError

    seen = 0
    while exc is not None and seen < 10:
        text = str(exc)
        if isinstance(exc, AuthenticationError) or "InvalidAuthToken" in text or "authorization header" in text:
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def check_address(address: str, timeout_s: float = 15.0) -> bool:
    """Check that a Ray cluster answers at `address` and accepts this process; True when it is loopback-only.

    Raises ClusterError naming the address and what to do: nothing listens there, it is not a
    Ray GCS, or the cluster wants a token this process does not send.
    """
    hostport = split_address(address)
    if hostport is None:  # `auto`, a Ray Client URL: ray.init resolves and reports those itself
        return False
    host, port = hostport
    try:
        socket.create_connection((host, port), timeout=min(timeout_s, 5.0)).close()
    except OSError as exc:
        raise ClusterError(
            f"no Ray cluster answers at {address} ({exc.strerror or exc}); start one with "
            f"`ray start --head --port {port}` or pass the address `ray start` printed"
        ) from None
    error, nodes = _probe_gcs(address, timeout_s)
    if _is_auth_error(error):
        raise ClusterError(AUTH_HELP.format(address=address))
    if isinstance(error, TimeoutError):
        raise ClusterError(f"{address} accepts connections but no Ray cluster answered there in {timeout_s:g} s")
    if error is not None and not isinstance(error, (ImportError, AttributeError)):
        raise ClusterError(f"could not reach the Ray cluster at {address}: {type(error).__name__}: {error}")
    if nodes:  # a cluster started on loopback: the driver must stay there too (Ray would leave it)
        return all(_is_loopback(n) for n in nodes)
    return _is_loopback(host)


def _local_kwargs(num_cpus: int | None, num_gpus: int | None, dashboard: bool) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"num_cpus": num_cpus, "num_gpus": num_gpus, "include_dashboard": dashboard}
    if NICENESS_ENV not in os.environ:
        # Ray's workers default to nice 15: on a busy machine they get CPU only when nothing else
        # wants it (trials ran 8x slower than in the driver). 0 = the driver's own priority.
        kwargs["_system_config"] = {"worker_niceness": 0}
    return kwargs


@contextlib.contextmanager
def ray_session(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    dashboard: bool = False,
    log_to_driver: bool = False,
) -> Iterator[bool]:
    """Join the cluster at `address` (default: $RAY_ADDRESS), or start a local one on loopback.

    Yields True when this call initialised Ray in this process, which it then shuts down on exit
    (a local cluster stops; a joined one is only left); an already initialised Ray is used as it
    is and left running (False). A local cluster listens on 127.0.0.1 only, runs its workers at
    the driver's priority and starts no dashboard unless asked.
    """
    import ray

    if ray.is_initialized():
        yield False
        return
    # ray.init would read RAY_ADDRESS itself, and then refuse the local cluster's num_cpus.
    address = address or os.environ.get("RAY_ADDRESS") or None
    with contextlib.ExitStack() as stack:
        if address:
            if check_address(address):
                stack.enter_context(loopback_only())
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=log_to_driver)
            except Exception as exc:  # Ray's ConnectionError after its retries: say what it means
                if _is_auth_error(exc):
                    raise ClusterError(AUTH_HELP.format(address=address)) from None
                what = f"{type(exc).__name__}: {exc}"
                raise ClusterError(f"could not join the Ray cluster at {address}: {what}") from exc
        else:
            stack.enter_context(loopback_only())
            # address="local": always a new cluster of this run's own. Without it ray.init joins
            # whatever cluster the `ray_current_cluster` file in Ray's temporary folder names (one
            # another tool, or a crashed run, left behind) instead of starting one.
            ray.init(address="local", log_to_driver=log_to_driver, **_local_kwargs(num_cpus, num_gpus, dashboard))
        try:
            yield True
        finally:
            try:
                ray.shutdown()
            except Exception as exc:  # a cluster whose node died: the run's rows are stored; say it and go on
                import sys

                print(f"icon-bench: note: Ray did not shut down cleanly ({type(exc).__name__}: {exc})", file=sys.stderr)
