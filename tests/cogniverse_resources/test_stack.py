import os
import signal
import socket
import subprocess
import sys

import pytest

from cogniverse_resources import stack
from cogniverse_resources.paths import REPO_ROOT


def test_port_in_use_is_one_clear_error(tmp_path):
    with socket.socket() as blocker:
        blocker.bind((stack.HOST, 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        service = stack.phoenix_service(
            working_dir=tmp_path / "w", port=port, grpc_port=stack.free_port(), directory=tmp_path
        )
        with pytest.raises(stack.StackError) as error:
            service.start()
    message = str(error.value)
    assert f"port {port}" in message and "already in use" in message and "\n" not in message


def test_hash_mismatch_is_one_clear_error(tmp_path, monkeypatch):
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"not a model")
    monkeypatch.setenv("COGNIVERSE_LM_MODEL_PATH", str(bogus))
    with pytest.raises(stack.StackError) as error:
        stack.ensure_local_model()
    assert "sha256" in str(error.value) and "\n" not in str(error.value)


def test_model_that_will_not_load_is_one_clear_error(tmp_path):
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"GGUF" + os.urandom(4096))
    service = stack.lm_service(port=stack.free_port(), directory=tmp_path, model_path=garbage)
    with pytest.raises(stack.StackError) as error:
        service.start()
    assert "lm exited" in str(error.value) and "\n" not in str(error.value)
    assert not service.pid_file.exists()


def test_an_unusable_prompt_cache_size_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("COGNIVERSE_LM_PROMPT_CACHE_MB", "1GB")
    with pytest.raises(stack.StackError, match="COGNIVERSE_LM_PROMPT_CACHE_MB='1GB': expected a whole number"):
        stack.lm_service(port=stack.free_port(), directory=tmp_path, model_path=tmp_path / "model.gguf")


def test_down_only_stops_what_up_started(tmp_path):
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        service = stack.phoenix_service(
            working_dir=tmp_path / "w", port=stack.free_port(), grpc_port=stack.free_port(), directory=tmp_path
        )
        # A PID file pointing at a process that is not ours (e.g. a recycled PID).
        service.pid_file.write_text(f'{{"pid": {bystander.pid}, "marker": "serve"}}')
        assert service.stop() is False
        assert bystander.poll() is None
    finally:
        bystander.kill()


def test_phoenix_fixture_is_a_real_server(phoenix):
    assert phoenix.healthy()
    names = [project["name"] for project in phoenix.client().projects.list()]
    assert "default" in names


def test_phoenix_database_comes_from_the_environment_and_defaults_to_sqlite(tmp_path, monkeypatch):
    monkeypatch.setenv("PHOENIX_POSTGRES_HOST", "elsewhere.invalid")  # Phoenix's own fallback: never reached
    service = stack.phoenix_service(working_dir=tmp_path / "w", port=1, grpc_port=2, directory=tmp_path)
    assert service.spec.env["PHOENIX_SQL_DATABASE_URL"] == f"sqlite:///{tmp_path / 'w'}/phoenix.db"

    monkeypatch.setenv("PHOENIX_SQL_DATABASE_URL", "postgresql://phoenix@db.internal:5432/theirs")
    service = stack.phoenix_service(working_dir=tmp_path / "w", port=1, grpc_port=2, directory=tmp_path)
    assert service.spec.env["PHOENIX_SQL_DATABASE_URL"] == "postgresql://phoenix@db.internal:5432/theirs"

    monkeypatch.setenv("COGNIVERSE_PHOENIX_DATABASE_URL", "postgresql://phoenix@db.internal:5432/ours")
    service = stack.phoenix_service(working_dir=tmp_path / "w", port=1, grpc_port=2, directory=tmp_path)
    assert service.spec.env["PHOENIX_SQL_DATABASE_URL"] == "postgresql://phoenix@db.internal:5432/ours"


def test_a_database_url_phoenix_cannot_use_is_refused_without_its_password(tmp_path):
    with pytest.raises(stack.StackError) as error:
        stack.phoenix_service(
            working_dir=tmp_path / "w", directory=tmp_path, database_url="mysql://root:hunter2-secret@db/phoenix"
        )
    assert "hunter2-secret" not in str(error.value) and "mysql://***@db/phoenix" in str(error.value)


def test_phoenix_that_cannot_open_its_postgres_database_fails_without_its_password(tmp_path, postgres_url):
    missing = postgres_url.replace("://", "://postgres:hunter2-secret@", 1).rsplit("/", 1)[0] + "/no_such_database"
    service = stack.phoenix_service(
        working_dir=tmp_path / "w",
        port=stack.free_port(),
        grpc_port=stack.free_port(),
        directory=tmp_path,
        database_url=missing,
    )
    with pytest.raises(stack.StackError) as error:
        service.start()
    assert "phoenix exited" in str(error.value) and "hunter2-secret" not in str(error.value)
    assert not service.pid_file.exists()


def test_postgres_phoenix_stores_its_spans_in_its_postgres_database(phoenix_postgres, phoenix_postgres_database):
    import psycopg2

    from cogniverse_resources.tracer import RoutingTracer
    from tests.cogniverse_resources.test_tracer import _decision

    tracer = RoutingTracer(phoenix_postgres, "pg-store")
    span_id = tracer.record(_decision(query="stored in postgres"))
    tracer.shutdown()
    phoenix_postgres.wait_for_spans("pg-store", [span_id])
    with psycopg2.connect(phoenix_postgres_database) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM spans WHERE span_id = %s", (span_id,))
        assert cursor.fetchone() == (1,)


def test_a_private_lm_server_is_the_one_the_lm_points_at_until_it_stops(tmp_path, monkeypatch):
    monkeypatch.setenv("COGNIVERSE_LM_PORT", "1234")
    stopped = []

    class RecordingService:  # stands in for the llama.cpp process: only the bookkeeping is under test
        def __init__(self, port, directory, model_path):
            self.port = port

        def start(self, stop_with_parent=False):
            return stack.ServiceStatus("lm", True, True, 1, f"http://{stack.HOST}:{self.port}", tmp_path / "lm.log")

        def stop(self):
            stopped.append(self.port)

    with pytest.raises(RuntimeError, match="bench failed"):
        with stack.private_lm_server(tmp_path, tmp_path / "model.gguf", RecordingService) as status:
            assert stack.local_lm_api_base() == f"{status.url}/v1" != f"http://{stack.HOST}:1234/v1"
            raise RuntimeError("bench failed")
    assert len(stopped) == 1 and os.environ["COGNIVERSE_LM_PORT"] == "1234"


def test_a_private_lm_server_is_stopped_when_its_process_is_terminated(tmp_path):
    stopped = tmp_path / "stopped"
    # The child starts with SIGTERM as a fresh process has it: one started from this session may
    # inherit it ignored (Dagster's in-process runs leave SIGTERM with SIGINT's disposition, and a
    # shell ignores SIGINT in a background job), and an ignored SIGTERM is left alone on purpose.
    script = f"""
import signal
import time
from pathlib import Path
from cogniverse_resources import stack

signal.signal(signal.SIGTERM, signal.SIG_DFL)

class RecordingService:
    def __init__(self, port, directory, model_path):
        pass
    def start(self, stop_with_parent=False):
        return stack.ServiceStatus("lm", True, True, 1, "http://127.0.0.1:1", Path("lm.log"))
    def stop(self):
        Path({str(stopped)!r}).write_text("stopped")

with stack.private_lm_server(Path({str(tmp_path)!r}), Path("model.gguf"), RecordingService):
    print("started", flush=True)
    time.sleep(60)
"""
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    try:
        assert process.stdout.readline().strip() == "started"
        process.terminate()
        assert process.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        process.kill()
        process.wait()
    assert stopped.read_text() == "stopped"


@pytest.mark.parametrize("stop_with_parent", [True, False])
def test_a_service_started_to_stop_with_its_parent_ends_when_the_parent_is_killed(tmp_path, stop_with_parent):
    """SIGKILL runs no ``finally``: only the kernel can stop a bench's or a test session's servers then.
    The parent ignores SIGTERM, as a process started after a Dagster in-process run in a background
    shell does (and so would the service it starts, without its disposition reset)."""
    script = f"""
import signal
import sys
from pathlib import Path
from cogniverse_resources import stack

signal.signal(signal.SIGTERM, signal.SIG_IGN)

port = stack.free_port()
spec = stack.ServiceSpec(
    name="http",
    command=[sys.executable, "-m", "http.server", str(port), "--bind", stack.HOST, "--directory", {str(tmp_path)!r}],
    ports=[port],
    health_url=f"http://{{stack.HOST}}:{{port}}/",
    start_timeout_s=30,
)
print(stack.ManagedService(spec, Path({str(tmp_path)!r})).start(stop_with_parent={stop_with_parent}).pid, flush=True)
sys.stdin.read()
"""
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT
    )
    service_pid = int(parent.stdout.readline())
    try:
        parent.kill()
        parent.wait(timeout=30)
        assert stack.process_ended(service_pid, timeout_s=15) == stop_with_parent
    finally:
        if not stack.process_ended(service_pid, timeout_s=0):
            os.kill(service_pid, signal.SIGKILL)
