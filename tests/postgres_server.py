"""A throwaway PostgreSQL server for tests: initdb into a temp dir, run ``postgres``, tear it all down.

Use :func:`postgres_server` (a context manager yielding a :class:`PostgresServer`); ``tests/conftest.py``
wraps it as the session fixture ``postgres_url``. It raises :class:`PostgresUnavailable` when the server
binaries (or, under root, the ``postgres`` account) are missing; the fixture turns that into a skip.

How it runs:

* The binaries come from ``$PG_BINDIR`` if set, else Debian's ``/usr/lib/postgresql/<ver>/bin`` (15 first),
  else wherever ``initdb`` / ``postgres`` on ``$PATH`` really live.
* ``initdb`` and ``postgres`` refuse to run as root. Under root both run as the ``postgres`` user (via
  ``setpriv``), in a temp dir under /tmp chowned to that user; as a normal user they run directly.
* Both need a writable ``/dev/null``. If the server user cannot write to it (seen on some CI machines), each
  command runs inside ``unshare -m`` with a private ``mknod``'ed null device bind-mounted over /dev/null.
* The server listens on 127.0.0.1 on a free port (plus a unix socket in the temp dir), trust auth, with
  fsync off. The started process is the postmaster itself (``unshare``, ``sh`` and ``setpriv`` all exec), in
  a new session / process group, next to a small watchdog subshell forked just before that exec: it asks for a
  fast shutdown as soon as our end of its stdin pipe closes, so the server also goes away if the test process
  is killed outright (SIGKILL, SIGTERM), where no teardown runs. (Only the temp dir is left behind then.)
* Teardown: SIGINT (fast shutdown), escalating to SIGQUIT and SIGKILL; then SIGKILL to the process group,
  which by then holds only the watchdog (postgres' own children call setsid and are the postmaster's to
  stop); then the temp dir is removed.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PREFERRED_MAJOR = "15"
SERVER_OS_USER = "postgres"  # the account the server runs as when we are root
DB_USER = "postgres"  # the database superuser (trust auth)
DB_NAME = "test"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries (or no account to run them as) on this machine."""


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    dbname: str
    socket_dir: Path
    data_dir: Path

    @property
    def url(self) -> str:
        """A SQLAlchemy URL for the psycopg (3) driver."""
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{self.dbname}"


def find_bindir() -> Path | None:
    """The directory holding ``initdb`` and ``postgres``, PostgreSQL 15 preferred."""

    def usable(d: Path) -> bool:
        return all(os.access(d / exe, os.X_OK) for exe in ("initdb", "postgres"))

    if os.environ.get("PG_BINDIR"):
        d = Path(os.environ["PG_BINDIR"])
        return d if usable(d) else None
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        versions = sorted(
            (p for p in debian.iterdir() if p.name.isdigit()), key=lambda p: int(p.name), reverse=True
        )
        versions.sort(key=lambda p: p.name != PREFERRED_MAJOR)  # stable: the preferred major first
        for v in versions:
            if usable(v / "bin"):
                return v / "bin"
    for exe in ("postgres", "initdb"):
        found = shutil.which(exe)
        if found and usable(Path(found).resolve().parent):
            return Path(found).resolve().parent
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Launcher:
    """Builds argvs that run a command as the server user, with a private /dev/null where needed."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.as_user: list[str] = []
        self.null_fix = ""
        if os.geteuid() != 0:
            return
        try:
            pw = pwd.getpwnam(SERVER_OS_USER)
        except KeyError:
            raise PostgresUnavailable(
                f"running as root and there is no {SERVER_OS_USER!r} user to run the server as"
            ) from None
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            raise PostgresUnavailable("running as root and `setpriv` (util-linux) is missing")
        os.chown(workdir, pw.pw_uid, pw.pw_gid)
        self.as_user = [setpriv, f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups", "--"]
        probe = subprocess.run([*self.as_user, "sh", "-c", ": >/dev/null"], cwd=workdir, capture_output=True)
        if probe.returncode != 0:
            if shutil.which("unshare") is None:
                raise RuntimeError(
                    f"/dev/null is not writable by {SERVER_OS_USER!r} and `unshare` is missing"
                )
            null = shlex.quote(str(workdir / "null"))
            self.null_fix = f"mknod {null} c 1 3 && chmod 666 {null} && mount --bind {null} /dev/null\n"

    def argv(self, cmd: list[str], *, watchdog: bool = False) -> list[str]:
        script = "set -e\n" + self.null_fix
        if watchdog:
            # $$ is the shell's pid, which the exec below hands on to the server. Our stdin is a pipe from
            # the test process; at EOF (closed by teardown or by the test process dying) ask for a fast
            # shutdown. The watchdog shares the server's process group, so that pid cannot be recycled.
            script += 'exec 3<&0\n( read -r _ <&3 || :; kill -INT "$$" 2>/dev/null || : ) &\nexec 3<&-\n'
        script += 'exec "$@" </dev/null\n'
        argv = ["sh", "-c", script, "sh", *self.as_user, *cmd]
        return ["unshare", "-m", *argv] if self.null_fix else argv


def _stop(proc: subprocess.Popen) -> None:
    for sig, timeout in ((signal.SIGINT, STOP_TIMEOUT), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    # The process group (pgid == server pid) outlives the server while the watchdog is alive.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5.0)


def _log_tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _wait_ready(proc: subprocess.Popen, port: int, log: Path) -> bool:
    """True once the server accepts connections; False if it exited (e.g. port taken); raises on timeout."""
    import psycopg

    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            return False
        try:
            with psycopg.connect(
                host="127.0.0.1", port=port, user=DB_USER, dbname="postgres", connect_timeout=2
            ):
                return True
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"postgres did not accept connections within {START_TIMEOUT:.0f}s; log tail:\n"
                    + _log_tail(log)
                ) from None
            time.sleep(0.05)


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    bindir = find_bindir()
    if bindir is None:
        raise PostgresUnavailable(
            "PostgreSQL server binaries (initdb, postgres) not found; "
            "install them (Debian: apt-get install postgresql) or set PG_BINDIR"
        )
    # Under root, TMPDIR may be private to root; /tmp is reachable by the server user. Keep the path short:
    # the unix socket path must fit in 107 bytes.
    workdir = Path(tempfile.mkdtemp(prefix="pgtest-", dir="/tmp" if os.geteuid() == 0 else None))
    proc: subprocess.Popen | None = None
    try:
        launcher = _Launcher(workdir)
        data = workdir / "data"
        init = subprocess.run(
            launcher.argv(
                [str(bindir / "initdb"), "-D", str(data), "-U", DB_USER, "--auth=trust"]
                + ["--encoding=UTF8", "--no-locale", "--no-sync", "--no-instructions"]
            ),
            cwd=workdir,
            capture_output=True,
            text=True,
        )
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed ({init.returncode}):\n{init.stdout}\n{init.stderr}")

        log = workdir / "postgres.log"
        for _attempt in range(5):
            port = _free_port()
            server = [str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(workdir)]
            for setting in (
                "listen_addresses=127.0.0.1",
                "fsync=off",
                "synchronous_commit=off",
                "full_page_writes=off",
            ):
                server += ["-c", setting]
            with open(log, "ab") as log_fh:
                proc = subprocess.Popen(
                    launcher.argv(server, watchdog=True),
                    cwd=workdir,
                    stdin=subprocess.PIPE,
                    stdout=log_fh,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            if _wait_ready(proc, port, log):
                break
            _stop(proc)
            proc = None
            if "could not bind" not in _log_tail(log) and "in use" not in _log_tail(log):
                raise RuntimeError("postgres exited during startup; log tail:\n" + _log_tail(log))
        else:
            raise RuntimeError("postgres could not bind a free port; log tail:\n" + _log_tail(log))

        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=port, user=DB_USER, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{DB_NAME}"')
        yield PostgresServer("127.0.0.1", port, DB_USER, DB_NAME, workdir, data)
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)
