"""``cogniverse optimize``: the sensor's verdicts and the plan without launching (``--dry-run``), the
exit codes a script relies on, and a forced launch through a real daemon followed to its end."""

import json

import dagster as dg
import litellm
import pytest

from cogniverse_assets.assets.lane import lane_keys
from cogniverse_assets.assets.optimization_plan import FORCE_TRAINING_TAG
from cogniverse_assets.cli import main, optimize
from cogniverse_assets.demo import prepare_instance, start_daemon, stop_daemon
from cogniverse_assets.traffic import emit_traffic
from tests.cogniverse_assets.assets.test_trained_module import MODALITY_LANE, _resources


@pytest.fixture
def cli_env(tenant_env, tmp_path, monkeypatch):
    """The CLI reads the same config store, artifacts and Dagster instance as ``tenant_env``."""
    monkeypatch.setenv("CONFIG_STORE_URL", f"sqlite://{tmp_path}/config.sqlite")
    monkeypatch.setenv("COGNIVERSE_ARTIFACTS_URL", str(tmp_path / "artifacts"))
    monkeypatch.setattr(optimize, "dagster_instance", lambda: tenant_env.instance)
    return tenant_env


def _no_lm_calls(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a dry run must not call the LM")

    monkeypatch.setattr(litellm, "completion", refuse)
    monkeypatch.setattr(litellm, "acompletion", refuse)


def test_dry_run_prints_the_sensor_verdicts_and_the_plan_and_launches_nothing(cli_env, monkeypatch, capsys):
    tenant = cli_env.add("dry", min_samples_for_optimization=3, use_synthetic_data=False)
    emit_traffic(cli_env.phoenix, tenant, n=4, feedback_rate=1.0, seed=101, progress=False, modules=["modality"])
    cli_env.materialize(MODALITY_LANE[:3], tenant, **_resources(cli_env))  # a stored training set to plan on
    _no_lm_calls(monkeypatch)
    runs_before = len(cli_env.instance.get_runs())

    assert main(["optimize", "--tenant", tenant, "--dry-run", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dry_run"] is True and report["exit_code"] == 0
    lanes = {lane["module"]: lane for lane in report["lanes"]}
    assert list(lanes) == ["modality", "cross_modal", "routing"]
    modality = lanes["modality"]
    assert (modality["verdict"], modality["new_labeled"], modality["would_run"]) == ("run", 4, True)
    assert modality["run_id"] is None
    assert modality["plan"]["decision"] == "skip" and modality["plan"]["reasons"]
    assert "stored training set" in modality["plan_note"]
    routing = lanes["routing"]
    assert routing["verdict"] == "0 new labeled traces < 3" and routing["would_run"] is False
    assert routing["plan"] is None and routing["plan_note"].startswith("no training set yet")
    assert len(cli_env.instance.get_runs()) == runs_before

    assert main(["optimize", "--tenant", tenant, "--module", "routing", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"tenant {tenant} (dry run: nothing launched)")
    assert "routing      would not run: 0 new labeled traces < 3" in text and "modality" not in text

    assert main(["optimize", "--tenant", tenant, "--module", "modality", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "  modality     would run: 4 new labeled traces >= 3"
    assert lines[2].strip().startswith(f"plan: skip ({modality['plan']['source']}); planned on the stored training set")
    assert [line.strip() for line in lines[3:]] == [f"- {reason}" for reason in modality["plan"]["reasons"]]


def test_exit_codes_for_nothing_to_launch_and_bad_input(cli_env, capsys):
    tenant = cli_env.add("codes", min_samples_for_optimization=50)
    assert main(["optimize", "--tenant", tenant, "--module", "routing"]) == optimize.EXIT_NOTHING_TO_LAUNCH
    assert "nothing launched: no selected lane meets its conditions" in capsys.readouterr().out
    assert cli_env.instance.get_runs() == []

    assert main(["optimize", "--tenant", "nobody", "--dry-run"]) == 2
    assert "unknown tenant 'nobody'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["optimize", "--tenant", tenant, "--module", "sentiment"])
    assert exited.value.code == 2


def test_an_unreachable_phoenix_is_its_own_exit_code(cli_env, capsys):
    from cogniverse_resources.stack import free_port

    tenant = cli_env.add("dark", phoenix_endpoint=f"http://127.0.0.1:{free_port()}")
    assert main(["optimize", "--tenant", tenant, "--json"]) == optimize.EXIT_PHOENIX_UNREACHABLE
    report = json.loads(capsys.readouterr().out)
    assert report["unreachable"] and all(lane["verdict"] == "Phoenix unreachable" for lane in report["lanes"])
    assert cli_env.instance.get_runs() == []


def test_force_launches_through_the_daemon_and_wait_follows_the_run(phoenix, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CONFIG_STORE_URL", f"sqlite://{tmp_path}/config.sqlite")
    monkeypatch.setenv("COGNIVERSE_ARTIFACTS_URL", str(tmp_path / "artifacts"))
    monkeypatch.setenv("COGNIVERSE_STEP_EXECUTION", "in_process")  # one process per run on 2 cores
    home = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    settings = ["min_samples_for_optimization=50", "use_synthetic_data=false"]  # no Vespa here
    assert main(["tenants", "add", "forced", *[arg for pair in settings for arg in ("--set", pair)]]) == 0
    emit_traffic(phoenix, "forced", n=4, feedback_rate=1.0, seed=102, progress=False, modules=["modality"])
    instance = prepare_instance(home, ["forced"])
    capsys.readouterr()
    assert main(["optimize", "--tenant", "forced", "--module", "modality"]) == optimize.EXIT_NOTHING_TO_LAUNCH
    capsys.readouterr()

    daemon = start_daemon(home, tmp_path / "daemon.log")
    try:
        argv = ["optimize", "--tenant", "forced", "--module", "modality", "--force", "--force-training"]
        code = main([*argv, "--wait", "--timeout", "900", "--json"])
    finally:
        stop_daemon(daemon)
    report = json.loads(capsys.readouterr().out)
    assert code == 0, (tmp_path / "daemon.log").read_text()[-3000:]
    (lane,) = report["lanes"]
    assert lane["would_run"] is False and lane["launch"] is True and lane["run_status"] == "SUCCESS"

    run = instance.get_run_by_id(lane["run_id"])
    assert run.tags["trigger"] == optimize.TRIGGER and run.tags["dagster/partition"] == "forced"
    assert run.tags["module"] == "modality" and run.tags["attempt"] == "1"
    assert run.tags[optimize.FORCED_TAG] == "true" and run.tags[FORCE_TRAINING_TAG] == "true"
    assert run.asset_selection == frozenset(lane_keys("modality"))
    (plan,) = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(["modality", "optimization_plan"]), asset_partitions=["forced"]),
        limit=5,
    ).records
    assert plan.event_log_entry.run_id == run.run_id
    assert plan.asset_materialization.metadata["forced_training"].value is True
    (outcome,) = report["outcomes"]
    assert (outcome["tenant_id"], outcome["module"], outcome["labeled"]) == ("forced", "modality", 4)
