import os
import socket
import subprocess
import sys

import pytest

from cogniverse_resources import stack


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
