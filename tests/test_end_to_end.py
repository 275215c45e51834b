"""The closed loop at small scale, driven by a real Dagster daemon and the real local LM:
traffic with feedback → trace_threshold_sensor → run → training → evaluation → promotion gate →
deployment → `cogniverse route` answers with the new version → its span lands in the right
tenant's Phoenix project and not in the other's."""

import json

import dagster as dg
import dspy
import pytest

from cogniverse_assets.cli import main
from cogniverse_assets.demo import format_table, outcomes, prepare_instance, start_daemon, stop_daemon, wait_for_runs
from cogniverse_assets.modules.registry import get_module
from cogniverse_assets.traffic import emit_traffic
from cogniverse_resources import trace_contract as tc
from cogniverse_resources.artifacts import ArtifactStore
from cogniverse_resources.config_store import DeploymentRecord, open_config_store

pytestmark = pytest.mark.lm


def _sabotaged_version(artifacts, tenant):
    """Deploy a version taught that everything is text, so a trained candidate must beat it."""
    program = get_module("modality").program()
    program.demos = [
        dspy.Example(query=q, modality="text").with_inputs("query")
        for q in ("watch the goal replay", "photo of a lighthouse", "listen to the jazz podcast", "the pdf manual")
    ]
    artifacts.write_json(
        artifacts.path(tenant, "modality", "modules", "sabotaged.json"),
        {"version": "sabotaged", "state": program.dump_state()},
    )


def test_closed_loop_through_the_daemon(phoenix, local_lm, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CONFIG_STORE_URL", f"sqlite://{tmp_path}/config.sqlite")
    monkeypatch.setenv("COGNIVERSE_ARTIFACTS_URL", str(tmp_path / "artifacts"))
    store, artifacts = open_config_store(), ArtifactStore.from_env()
    store.add(
        "e2e-a",
        min_samples_for_optimization=25,
        optimization_interval_seconds=60,
        use_synthetic_data=False,
        max_training_iterations=10,
        # The sabotaged baseline answers "text" to everything (text recall 1.0), so any real module
        # loses recall there; the class-collapse rule is tested in test_scoring, not here.
        promotion_max_class_recall_drop=1.0,
    )
    store.add("e2e-b", enable_auto_optimization=False)
    _sabotaged_version(artifacts, "e2e-a")
    store.record_deployment(DeploymentRecord("e2e-a", "modality", "sabotaged", "promote", "test"))
    emit_traffic(phoenix, "e2e-a", n=45, feedback_rate=1.0, accuracy=0.8, seed=41, progress=False, modules=["modality"])
    emit_traffic(phoenix, "e2e-b", n=5, feedback_rate=1.0, seed=42, progress=False, modules=["modality"])

    instance = prepare_instance(tmp_path / "dagster_home", ["e2e-a", "e2e-b"])
    daemon = start_daemon(tmp_path / "dagster_home", tmp_path / "daemon.log")
    try:
        runs = wait_for_runs(instance, ["e2e-a", "e2e-b"], expected=1, timeout_s=900, progress=lambda _: None)
    finally:
        stop_daemon(daemon)
    assert [run.tags["tenant"] for run in runs] == ["e2e-a"]  # e2e-b is disabled
    assert runs[0].tags["module"] == "modality" and runs[0].status == dg.DagsterRunStatus.SUCCESS, (
        tmp_path / "daemon.log"
    ).read_text()[-3000:]

    deployed = store.deployed("e2e-a", "modality")
    assert deployed.action == "promote" and deployed.version != "sabotaged" and deployed.previous_version == "sabotaged"
    table = format_table(outcomes(store, artifacts, ["e2e-a"]))
    assert "yes" in table.splitlines()[2]

    capsys.readouterr()
    assert main(["route", "--tenant", "e2e-a", "--module", "modality", "find the recording of the keynote"]) == 0
    answer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert answer["module_version"] == deployed.version and answer["label"] in tc.MODALITIES
    phoenix.wait_for_spans("e2e-a", [answer["span_id"]])
    other = phoenix.client().spans.get_spans(
        project_identifier=phoenix.project_name("e2e-b"), span_ids=[answer["span_id"]], limit=1
    )
    assert other == []
