"""A throw-away PostgreSQL server on loopback for the tests: installed with apt when missing."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def server_bin() -> Path | None:
    """The folder of initdb/pg_ctl, if PostgreSQL's server is installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    which = shutil.which("pg_ctl")
    return Path(which).parent if which else None


def install() -> Path:
    """Install Debian's postgresql package; raise with apt's words when that is impossible."""
    if os.geteuid() != 0:
        raise RuntimeError(
            "PostgreSQL's server is not installed and installing it needs root (apt-get install postgresql)"
        )
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "postgresql"]):
        res = subprocess.run(
            cmd, capture_output=True, text=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        )
        if res.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed: {res.stderr.strip()[-500:]}")
    found = server_bin()
    if found is None:
        raise RuntimeError("apt-get installed postgresql but pg_ctl is not found")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server in a fresh folder on a free loopback port; yield its SQLAlchemy URL; stop and remove it after."""
    bindir = server_bin() or install()
    root = Path(tempfile.mkdtemp(prefix="competition-pg-"))
    data, port = root / "data", free_port()
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]

    def run(*cmd: str) -> None:
        res = subprocess.run([*as_user, *cmd], capture_output=True, text=True)
        if res.returncode:
            raise RuntimeError(f"{cmd[0]} failed: {res.stderr.strip()[-500:]}")

    run(str(bindir / "initdb"), "-D", str(data), "-U", "optuna", "--auth=trust")
    run(str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "log"), "-o",
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start")  # fmt: skip
    try:
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "optuna", "optuna")
        yield f"postgresql+psycopg://optuna@127.0.0.1:{port}/optuna"
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop")
        shutil.rmtree(root, ignore_errors=True)
