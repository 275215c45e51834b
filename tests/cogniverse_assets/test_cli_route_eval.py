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
    data.write_text("\n".join([
        json.dumps({"query": "watch the match highlights", "label": "video"}),
        "{not json",
        json.dumps({"query": "the tax form pdf", "accept": ["document", "text"]}),
        json.dumps({"query": "a podcast about sleep", "label": "hologram"}),
        json.dumps({"label": "image"}),
        json.dumps({"query": "photos of the northern lights", "label": "image"}),
    ]) + "\n")
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
    assert main(["route", "--tenant", "route-t", "--module", "routing", "--entity", "keynote", "summarize the keynote"]) == 0
    captured = capsys.readouterr()
    answer = json.loads(captured.out.strip().splitlines()[-1])
    assert "using the unoptimized module" in captured.err
    assert answer["module_version"] == "unoptimized" and answer["label"].endswith("_agent")
    phoenix.wait_for_spans("route-t", [answer["span_id"]])
