"""`cogniverse eval` and `cogniverse route` with the real local LM."""

import json

import pytest

from cogniverse_assets.cli import main

pytestmark = pytest.mark.lm


@pytest.fixture(autouse=True)
def own_store(tmp_path, monkeypatch):
    monkeypatch.setenv("CONFIG_STORE_URL", f"sqlite://{tmp_path}/config.sqlite")
    monkeypatch.setenv("COGNIVERSE_ARTIFACTS_URL", str(tmp_path / "artifacts"))


def test_eval_reports_bad_lines_and_prints_json_last(tmp_path, local_lm, capsys):
    data = tmp_path / "labeled.jsonl"
    data.write_text(
        "\n".join(
            [
                json.dumps({"query": "watch the match highlights", "label": "video"}),
                "{not json",
                json.dumps({"query": "the tax form pdf", "accept": ["document", "text"]}),
                json.dumps({"query": "a podcast about sleep", "label": "hologram"}),
                json.dumps({"label": "image"}),
                json.dumps({"query": "photos of the northern lights", "label": "image"}),
            ]
        )
        + "\n"
    )
    assert main(["eval", "--module", "modality", "--baseline", "--data", str(data), "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert result["n"] == 3 and result["errors"] == 3 and result["module_version"] == "unoptimized"
    assert 0.0 <= result["accuracy"] <= 1.0 and set(result["per_class"]) == {"video", "document", "image"}
    for line in ("line 2: not JSON", "line 4:", "line 5: missing 'query'"):
        assert line in captured.err


def test_route_falls_back_to_the_unoptimized_module_and_says_so(phoenix, local_lm, capsys):
    assert main(["tenants", "add", "route-t"]) == 0
    capsys.readouterr()
    assert (
        main(["route", "--tenant", "route-t", "--module", "routing", "--entity", "keynote", "summarize the keynote"])
        == 0
    )
    captured = capsys.readouterr()
    answer = json.loads(captured.out.strip().splitlines()[-1])
    assert "using the unoptimized module" in captured.err
    assert answer["module_version"] == "unoptimized" and answer["label"].endswith("_agent")
    phoenix.wait_for_spans("route-t", [answer["span_id"]])


def test_eval_reports_the_fast_path_share_and_latency_per_path(tmp_path, local_lm, capsys):
    """A deployed version with a fast path: confident queries skip the LM, and --json says how many."""
    import dspy
    import pandas as pd

    from cogniverse_assets.demo_data import load_queries
    from cogniverse_assets.fast_path import train_fast_path
    from cogniverse_assets.modules.registry import get_module
    from cogniverse_assets.optimizers import compile_module
    from cogniverse_resources.artifacts import ArtifactStore
    from cogniverse_resources.config_store import DeploymentRecord, open_config_store

    spec = get_module("modality")
    train = pd.DataFrame(load_queries("train")).rename(columns={"modality": "label"}).assign(provenance="human")
    offline = dspy.utils.DummyLM([])  # the labeled optimizer makes no LM call
    program = compile_module(spec, "labeled", train, offline, offline, dspy.JSONAdapter()).program
    fast = train_fast_path(spec, train, lm_accuracy_estimate=0.75)
    assert fast.fast_path is not None, fast.reason
    assert main(["tenants", "add", "fast-t"]) == 0
    artifacts = ArtifactStore.from_env()
    payload = {
        "version": "v-fast",
        "tenant_id": "fast-t",
        "module": "modality",
        "optimizer": "labeled",
        "state": program.dump_state(),
        "fast_path": fast.fast_path.to_state(),
    }
    artifacts.write_json(artifacts.path("fast-t", "modality", "modules", "v-fast.json"), payload)
    open_config_store().record_deployment(DeploymentRecord("fast-t", "modality", "v-fast", "promote", "test"))

    rows = load_queries("eval")[:12]
    data = tmp_path / "eval.jsonl"
    data.write_text("".join(json.dumps({"query": row["query"], "label": row["modality"]}) + "\n" for row in rows))
    capsys.readouterr()
    assert main(["eval", "--tenant", "fast-t", "--module", "modality", "--data", str(data), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["module_version"] == "v-fast" and result["n"] == 12
    assert 0 < result["fast_path_share"] < 1  # some queries answered fast, the rest by the LM
    assert result["fast_latency_ms_p50"] < result["lm_latency_ms_p50"]  # both paths are reported
    assert result["latency_ms_p50"] is not None and result["latency_ms_p95"] >= result["latency_ms_p50"]
