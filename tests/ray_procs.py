"""Process trees, the TCP ports they listen on (read from /proc) and scoped clean-up, for the Ray tests."""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import time
from pathlib import Path

PROC = Path("/proc")


def _ppids() -> dict[int, int]:
    out: dict[int, int] = {}
    for stat in PROC.glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended while we looked
            continue
        # "pid (name) state ppid ...": the name may hold spaces and parentheses.
        out[int(stat.parent.name)] = int(text.rsplit(")", 1)[1].split()[1])
    return out


def descendants(root: int) -> set[int]:
    """`root` and every process below it."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _ppids().items():
        children.setdefault(ppid, []).append(pid)
    found, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _address(hex_addr: str) -> str:
    raw = bytes.fromhex(hex_addr)
    # /proc/net/tcp* prints each 32-bit word in host (little-endian) order.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, words))
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped or ip)


def _listening_inodes() -> dict[str, tuple[str, int]]:
    inodes: dict[str, tuple[str, int]] = {}
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                addr, port = fields[1].split(":")
                inodes[fields[9]] = (_address(addr), int(port, 16))
    return inodes


def listening(pids: set[int]) -> list[tuple[str, int, str]]:
    """(address, port, process name) of every TCP socket the processes `pids` listen on."""
    inodes = _listening_inodes()
    found = []
    for pid in pids:
        try:
            name = (PROC / str(pid) / "comm").read_text().strip()
            fds = list((PROC / str(pid) / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                found.append((*inodes[target[8:-1]], name))
    return sorted(found)


def with_marker(marker: str) -> set[int]:
    """Processes whose command line contains `marker` (a temp dir only our cluster uses)."""
    pids = set()
    for cmdline in PROC.glob("[0-9]*/cmdline"):
        try:
            if marker.encode() in cmdline.read_bytes():
                pids.add(int(cmdline.parent.name))
        except OSError:
            continue
    pids.discard(os.getpid())
    return pids


def kill_scoped(pgid: int, marker: str, wait_s: float = 10.0) -> set[int]:
    """SIGKILL the process group `pgid` and every process naming `marker`; returns any still alive after `wait_s`.

    Ray's workers run in sessions of their own, so the group alone misses them; the marker (the
    cluster's own temp dir, in every Ray process's command line) finds them without touching any
    other Ray on the machine.
    """
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    deadline = time.time() + wait_s
    while True:
        alive = with_marker(marker)
        if not alive or time.time() > deadline:
            return alive
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
