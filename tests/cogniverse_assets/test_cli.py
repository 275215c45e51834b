import json
import os

import pytest

from cogniverse_assets.cli import main
from tests.hostile_ids import HOSTILE_TENANT_IDS


@pytest.fixture(autouse=True)
def own_store(tmp_path, monkeypatch):
    monkeypatch.setenv("CONFIG_STORE_URL", f"sqlite://{tmp_path}/config.sqlite")


def test_tenants_lifecycle(capsys):
    assert main(["tenants", "add", "acme", "--set", "min_samples_for_optimization=20"]) == 0
    assert main(["tenants", "list"]) == 0
    assert "acme" in capsys.readouterr().out
    assert main(["tenants", "set", "acme", "synthetic_data_ratio=0.5", "preferred_optimizer=gepa"]) == 0
    capsys.readouterr()
    assert main(["tenants", "show", "acme"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["synthetic_data_ratio"] == 0.5 and shown["preferred_optimizer"] == "gepa"
    assert shown["min_samples_for_optimization"] == 20
    assert main(["tenants", "disable", "acme"]) == 0
    assert json.loads(capsys.readouterr().out)["enable_auto_optimization"] is False


@pytest.mark.parametrize("tenant_id", HOSTILE_TENANT_IDS[1:6])
def test_hostile_ids_are_rejected_by_the_cli(tenant_id, capsys):
    assert main(["tenants", "add", tenant_id]) == 2
    err = capsys.readouterr().err
    assert "invalid tenant id" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["tenants", "set", "acme", "synthetic_data_ratio=7"], "synthetic_data_ratio"),
        (["tenants", "set", "acme", "colour=blue"], "unknown setting 'colour'"),
        (["tenants", "set", "acme", "oops"], "expected KEY=VALUE"),
        (["tenants", "show", "nobody"], "unknown tenant 'nobody'"),
        (["traffic", "--tenant", "nobody", "--n", "1"], "unknown tenant 'nobody'"),
    ],
)
def test_bad_input_is_one_clear_error(argv, message, capsys):
    main(["tenants", "add", "acme"])
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("cogniverse: error:")


def test_the_stack_points_the_pipeline_at_its_own_phoenix_database(tmp_path, monkeypatch):
    from cogniverse_assets.cli.stack import read_own_database
    from cogniverse_resources import stack

    variable = "COGNIVERSE_PHOENIX_READ_DATABASE_URL"
    for name in (variable, "PHOENIX_ENDPOINT", "PHOENIX_COLLECTOR_ENDPOINT", *stack.PHOENIX_DATABASE_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    phoenix = stack.phoenix_service(working_dir=tmp_path / "phoenix", port=16006, grpc_port=14317)
    monkeypatch.setenv("PHOENIX_PORT", "16006")
    monkeypatch.setenv("PHOENIX_ENDPOINT", "http://phoenix.elsewhere:6006")  # another Phoenix: not its database
    read_own_database(phoenix)
    assert variable not in os.environ
    monkeypatch.setenv("PHOENIX_ENDPOINT", stack.phoenix_url())
    read_own_database(phoenix)
    assert os.environ[variable] == f"sqlite:///{(tmp_path / 'phoenix').resolve()}/phoenix.db"
    monkeypatch.setenv(variable, "postgresql://reader@db.internal/phoenix")  # the user's own setting wins
    read_own_database(phoenix)
    assert os.environ[variable] == "postgresql://reader@db.internal/phoenix"
