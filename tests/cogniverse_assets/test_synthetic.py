"""The synthetic query generator: logic with DummyLM, and the asset with the real local LM."""

import json

import dspy
import pytest
from dspy.utils import DummyLM

from cogniverse_assets import blending
from cogniverse_assets.assets.routing_traces import routing_traces_assets
from cogniverse_assets.assets.synthetic_examples import SYNTHETIC_TABLE, synthetic_examples_assets
from cogniverse_assets.modules.registry import get_module
from cogniverse_assets.synthetic import (
    COPIES_BEFORE_STOP,
    COPY_PROBE_TOKENS,
    MAX_ATTEMPTS,
    SyntheticQueryGenerator,
    copies_content,
)
from cogniverse_resources.content import CatalogContentBackend, ContentBackendResource
from cogniverse_resources.lm import LanguageModelResource
from cogniverse_resources.stack import free_port


def _generator(answers, module="modality"):
    adapter = dspy.JSONAdapter()
    lm = DummyLM(answers, adapter=adapter)
    return SyntheticQueryGenerator(get_module(module), CatalogContentBackend(), lm, adapter, seed=3)


def _written(query):
    return {"query": query, "entities": ["thing"]}


class CuttingLM(DummyLM):
    """A ``DummyLM`` that stops after ``max_tokens`` tokens of its answer (4 characters each), as a server does."""

    def __init__(self, answers, adapter):
        super().__init__(answers, adapter=adapter)
        self.max_chars = None

    def __call__(self, *args, **kwargs):
        self.max_chars = 4 * kwargs.get("max_tokens", self.kwargs["max_tokens"])
        return super().__call__(*args, **kwargs)

    def _format_answer_fields(self, field_names_and_values):
        return super()._format_answer_fields(field_names_and_values)[: self.max_chars]


LOADING_DOCK = "Security camera recording from the rear loading dock after closing time"


def _loading_dock_catalog():
    return CatalogContentBackend(
        [
            {"id": f"c-{modality}", "title": "Loading Dock", "description": LOADING_DOCK, "modality": modality}
            for modality in ("video", "image", "audio", "document", "text")
        ]
    )


def test_balanced_across_labels_with_provenance():
    answers = []
    for i in range(10):
        answers += [_written(f"distinct request number {i}"), {"agrees": True}]
    frame, report = _generator(answers).generate(10)
    assert report.accepted == 10 and report.lm_calls == 20
    assert frame["label"].value_counts().to_dict() == {label: 2 for label in get_module("modality").labels}
    assert set(frame["provenance"]) == {"synthetic"}
    assert all(len(ids) == 1 for ids in frame["source_item_ids"])


def test_duplicates_and_disagreement_are_retried_then_dropped():
    answers = [
        _written("a real user query"),  # duplicate of a real query
        _written("fresh request one"),
        {"agrees": False},  # the verifier disagrees
        _written("fresh request two"),
        {"agrees": True},  # accepted on the third attempt
        _written("x"),  # too short
        _written("fresh request two"),  # duplicate of the accepted one
        _written("yet another"),
        {"agrees": False},  # third failure: dropped
    ]
    frame, report = _generator(answers).generate(2, avoid_queries=["A real user QUERY"])
    assert frame["query"].tolist() == ["fresh request two"]
    assert frame["attempts"].tolist() == [3]
    assert report.rejected == {"duplicate": 2, "verifier_disagrees": 2, "length": 1}


def test_cross_modal_fusion_examples_are_grounded_in_two_modalities():
    answers = []
    for i in range(4):
        answers += [_written(f"cross modal request {i}"), {"agrees": True}]
    frame, _ = _generator(answers, module="cross_modal").generate(4)
    for _, row in frame.iterrows():
        assert (len(row["detected_modalities"]) >= 2) == (row["label"] != "none")


def test_stored_examples_are_reused_without_lm_calls(tenant_env, monkeypatch):
    """Nothing new means no LM call: the LM resource points at a dead port to prove it."""
    monkeypatch.setattr(blending, "COLD_START_SYNTHETIC_EXAMPLES", 4)
    tenant = tenant_env.add("reuse")
    frame, _ = _generator([x for i in range(4) for x in (_written(f"stored request {i}"), {"agrees": True})]).generate(
        4
    )
    tenant_env.artifacts.write_table(tenant, "modality", SYNTHETIC_TABLE, frame)
    dead_lm = LanguageModelResource(student_api_base=f"http://127.0.0.1:{free_port()}/v1", num_retries=0)
    result = tenant_env.materialize(
        [synthetic_examples_assets[0]], tenant, content=ContentBackendResource(vespa_url=""), lm=dead_lm
    )
    (event,) = result.asset_materializations_for_node(synthetic_examples_assets[0].op.name)
    assert event.metadata["lm_calls"].value == 0 and event.metadata["total"].value == 4


def test_synthetic_data_off_materializes_empty_with_the_reason(tenant_env):
    tenant = tenant_env.add("nosyn", use_synthetic_data=False)
    result = tenant_env.materialize(
        [synthetic_examples_assets[0]], tenant, content=ContentBackendResource(vespa_url=""), lm=LanguageModelResource()
    )
    (event,) = result.asset_materializations_for_node(synthetic_examples_assets[0].op.name)
    assert event.metadata["total"].value == 0 and event.metadata["reason"].value == "use_synthetic_data is off"


@pytest.mark.lm
def test_cold_start_lane_with_the_local_lm_keeps_no_copied_content_and_says_why_it_stops(
    tenant_env, local_lm, monkeypatch
):
    monkeypatch.setattr(blending, "COLD_START_SYNTHETIC_EXAMPLES", 3)
    tenant = tenant_env.add("cold")
    lane = [routing_traces_assets[0], synthetic_examples_assets[0]]
    result = tenant_env.materialize(
        lane, tenant, content=ContentBackendResource(vespa_url=""), lm=LanguageModelResource()
    )
    assert result.success
    synthetic = tenant_env.artifacts.read_table(tenant, "modality", SYNTHETIC_TABLE)
    items = {item.id: item for item in CatalogContentBackend().items}
    for row in synthetic.itertuples():
        assert row.label in get_module("modality").labels
        assert not copies_content(row.query, "\n".join(items[i].as_text() for i in row.source_item_ids))
    (event,) = result.asset_materializations_for_node(synthetic_examples_assets[0].op.name)
    metadata = {key: value.value for key, value in event.metadata.items()}
    # Four candidates were asked for; each attempt is a write call, after a copy a probe before it, and a
    # verifier call when it is not rejected first.
    assert len(synthetic) + sum(metadata["rejected"].values()) <= metadata["lm_calls"] <= 3 * 4 * MAX_ATTEMPTS
    copies = metadata["rejected"].get("copies_content", 0)
    assert metadata["copy_probes"] >= copies - 1  # every attempt after the first copy is probed
    if len(synthetic) == 0:  # the 0.5B teacher copies its content (docs/benchmarks.md, "make demo")
        assert copies >= COPIES_BEFORE_STOP
        assert "ROUTER_OPTIMIZER_TEACHER_MODEL" in metadata["stopped"]


def test_candidates_that_copy_their_content_are_rejected_and_generation_stops():
    adapter = dspy.JSONAdapter()
    lm = CuttingLM([_written(f"Loading Dock. {LOADING_DOCK}")] * 20, adapter=adapter)
    generator = SyntheticQueryGenerator(get_module("modality"), _loading_dock_catalog(), lm, adapter, seed=3)

    frame, report = generator.generate(10)

    assert frame.empty
    assert report.rejected == {"copies_content": 5}  # the first example's 3 attempts, 2 of the second's, stop
    # One full write; after it, each write is cut at the probe's length, which shows the copy already.
    assert report.lm_calls == 5 and report.copy_probes == 4
    assert "copied its content instead of writing a request 5 times in a row" in report.stopped


def test_after_a_copy_a_request_of_its_own_is_probed_then_written_in_full():
    own = "please find the night time security footage of the rear loading dock where a white van arrives"
    assert len(json.dumps(_written(own))) > 4 * COPY_PROBE_TOKENS  # the probe ends inside the JSON: no parse
    adapter = dspy.JSONAdapter()
    answers = [_written(f"Loading Dock. {LOADING_DOCK}"), _written(own), _written(own), {"agrees": True}]
    generator = SyntheticQueryGenerator(
        get_module("modality"), _loading_dock_catalog(), CuttingLM(answers, adapter=adapter), adapter, seed=3
    )

    frame, report = generator.generate(1)

    assert frame["query"].tolist() == [own] and frame["attempts"].tolist() == [2]
    assert report.rejected == {"copies_content": 1}
    assert report.lm_calls == 4 and report.copy_probes == 1


def test_copies_stop_generation_only_when_they_come_in_a_row():
    copy = _written(f"Loading Dock. {LOADING_DOCK}")
    answers = [copy]  # after this first copy, every write is probed first (the probe's answer comes first)
    for i in range(4):  # two copies, then a request of its own, accepted: each run of copies is broken
        own = _written(f"night footage of the loading dock {i}")
        answers += ([] if i == 0 else [copy]) + [copy, own, own, {"agrees": True}]
    adapter = dspy.JSONAdapter()
    generator = SyntheticQueryGenerator(
        get_module("modality"), _loading_dock_catalog(), CuttingLM(answers, adapter=adapter), adapter, seed=3
    )

    frame, report = generator.generate(4)

    assert len(frame) == 4 and report.stopped is None
    assert report.rejected == {"copies_content": 8}
    assert report.copy_probes == 11  # every write after the first copy: 7 copies and 4 requests of their own


def test_copies_content_flags_long_verbatim_runs_not_titles_or_rewordings():
    content = "How to Debone a Whole Chicken. Chef Marco walks through breaking a whole chicken down into eight pieces."
    assert copies_content("chef marco walks through breaking a whole chicken down", content)
    assert not copies_content("How to Debone a Whole Chicken", content)  # a title is something users type
    assert not copies_content("video tutorial on cutting a whole chicken into eight pieces", content)


def test_a_paraphrase_that_returns_a_known_query_is_retried_as_a_direct_request():
    labels = len(get_module("modality").labels)
    answers = []
    for i in range(labels):  # the first round (direct) fills every label
        answers += [_written(f"distinct request number {i}"), {"agrees": True}]
    answers += [_written("distinct request number 0")]  # the paraphrase round's first label: its seed back
    answers += [_written("a fresh request"), {"agrees": True}]
    generator = _generator(answers)

    frame, report = generator.generate(labels + 1)

    assert report.rejected == {"duplicate": 1}
    last = frame.iloc[-1]
    assert (last["query"], last["augmentation"], last["attempts"]) == ("a fresh request", "direct", 2)
    paraphrase_prompt, retry_prompt = (str(call["messages"]) for call in generator.lm.history[-3:-1])
    assert "paraphrase of this request" in paraphrase_prompt
    assert "paraphrase" not in retry_prompt and "a natural, direct request" in retry_prompt
