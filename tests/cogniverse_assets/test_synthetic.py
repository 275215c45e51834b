"""The synthetic query generator: logic with DummyLM, and the asset with the real local LM."""

import json

import dspy
import pytest
from dspy.utils import DummyLM

from cogniverse_assets import blending
from cogniverse_assets.assets.routing_traces import routing_traces_assets
from cogniverse_assets.assets.synthetic_examples import (
    COPY_VERDICT_FILE,
    SYNTHETIC_TABLE,
    TEACHER_ANSWERS_FILE,
    copied_in_another_lane,
    read_copy_verdicts,
    read_teacher_answers,
    synthetic_examples_assets,
    update_copy_verdict,
)
from cogniverse_assets.modules.registry import ROUTING_MODULES, get_module
from cogniverse_assets.synthetic import (
    COPIES_BEFORE_STOP,
    COPIES_TO_CONFIRM,
    COPY_PROBE_TOKENS,
    MAX_ATTEMPTS,
    CopyVerdict,
    GenerationReport,
    SyntheticQueryGenerator,
    TeacherAnswers,
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


def _loading_dock_catalog(description=LOADING_DOCK):
    return CatalogContentBackend(
        [
            {"id": f"c-{modality}", "title": "Loading Dock", "description": description, "modality": modality}
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
        # Nothing kept, nothing changed: the next run sends the same requests and asks the teacher none of
        # them (its LM is a dead port), with the same outcome.
        dead_lm = LanguageModelResource(student_api_base=f"http://127.0.0.1:{free_port()}/v1", num_retries=0)
        again = tenant_env.materialize(lane, tenant, content=ContentBackendResource(vespa_url=""), lm=dead_lm)
        (event,) = again.asset_materializations_for_node(synthetic_examples_assets[0].op.name)
        figures = {key: value.value for key, value in event.metadata.items()}
        assert figures["lm_calls"] == 0 and figures["remembered_answers"] == metadata["lm_calls"]
        assert (figures["rejected"], figures["stopped"]) == (metadata["rejected"], metadata["stopped"])


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


def _consistent_teacher():
    """Answers as a function of the request, as a temperature-0 teacher does: the verifier says no, an
    audio request gets a query of its own, every other request is answered with its content."""
    audio = get_module("modality").label_meanings["audio"]
    answers = {
        "`agrees`": {"agrees": False},
        f"audio: {audio}": _written("night footage of the van at the loading dock"),
        LOADING_DOCK: _written(f"Loading Dock. {LOADING_DOCK}"),
    }
    return CuttingLM(answers, adapter=dspy.JSONAdapter())


def _generate(answers, catalog=None, teacher=None):
    teacher = teacher or _consistent_teacher()
    generator = SyntheticQueryGenerator(
        get_module("modality"), catalog or _loading_dock_catalog(), teacher, teacher.adapter, seed=3, answers=answers
    )
    frame, report = generator.generate(4)
    return frame, report, teacher


def test_the_teacher_is_asked_each_request_once_and_a_later_run_only_what_is_new():
    adapter = dspy.JSONAdapter()
    first = TeacherAnswers.for_teacher(_consistent_teacher(), adapter)
    frame, report, teacher = _generate(first)
    # video copies (3 attempts), audio is turned down by the verifier (3), document copies (3), text
    # copies (2). Each distinct request is asked once: 7 calls for 17 answers.
    assert frame.empty and report.rejected == {"copies_content": 8, "verifier_disagrees": 3}
    assert report.lm_calls == len(teacher.history) == 7 and report.remembered == 10

    stored = json.loads(json.dumps(first.to_json()))  # as the asset stores it
    second = TeacherAnswers.for_teacher(_consistent_teacher(), adapter, stored)
    _, again, teacher = _generate(second, teacher=CuttingLM([], adapter=adapter))  # any call would fail

    assert again.lm_calls == len(teacher.history) == 0 and again.remembered == 17
    assert again.rejected == report.rejected
    assert second.now == first.now  # what the run after recalls

    other_content = _loading_dock_catalog(f"{LOADING_DOCK}, re-encoded in 4K")
    third = TeacherAnswers.for_teacher(_consistent_teacher(), adapter, second.to_json())
    _, asked, teacher = _generate(third, catalog=other_content)
    # Every write and probe is asked again; the verifier's question (the query and the decision) is not.
    assert asked.lm_calls == len(teacher.history) == 6 and asked.rejected == report.rejected


def test_answers_of_another_teacher_or_settings_are_not_used():
    local = LanguageModelResource()
    adapter = local.adapter()
    stored = {"key": TeacherAnswers.for_teacher(local.teacher(), adapter).key, "answers": {"k": {"query": "q"}}}
    assert TeacherAnswers.for_teacher(local.teacher(), adapter, stored).earlier == {"k": {"query": "q"}}
    assert TeacherAnswers.for_teacher(local.teacher(temperature=0.7), adapter, stored) is None  # it samples
    for teacher, teacher_adapter in [
        (local.teacher(max_tokens=64), adapter),
        (local.teacher(), local.adapter("reminder_first")),
        (dspy.LM("openai/gpt-4o-mini", api_base="https://llm.example.com/v1"), dspy.JSONAdapter()),
    ]:
        assert TeacherAnswers.for_teacher(teacher, teacher_adapter, stored).earlier == {}
    for damaged in [None, [], {"key": stored["key"], "answers": ["q"]}]:
        assert TeacherAnswers.for_teacher(local.teacher(), adapter, damaged).earlier == {}


def test_the_asset_keeps_the_teachers_answers_for_its_next_run(tenant_env, monkeypatch):
    """A scripted teacher; what is asserted is whether the asset asks it at all."""
    monkeypatch.setattr(blending, "COLD_START_SYNTHETIC_EXAMPLES", 4)
    teacher = _consistent_teacher()
    adapter = teacher.adapter
    catalog = {"backend": _loading_dock_catalog()}
    monkeypatch.setattr(LanguageModelResource, "teacher", lambda self, **overrides: teacher)
    monkeypatch.setattr(LanguageModelResource, "adapter", lambda self, layout="reminder_last": adapter)
    monkeypatch.setattr(ContentBackendResource, "backend", lambda self: catalog["backend"])
    tenant = tenant_env.add("copies")
    asset = synthetic_examples_assets[0]

    def run():
        calls = len(teacher.history)
        result = tenant_env.materialize([asset], tenant, content=ContentBackendResource(vespa_url=""))
        (event,) = result.asset_materializations_for_node(asset.op.name)
        figures = {key: value.value for key, value in event.metadata.items()}
        assert figures["lm_calls"] == len(teacher.history) - calls
        return figures

    first = run()
    answers = first["lm_calls"] + first["remembered_answers"]
    assert first["lm_calls"] > 0 and first["generated"] == 0 and "copied its content" in first["stopped"]
    assert len(read_teacher_answers(tenant_env.artifacts, tenant, "modality")["answers"]) == first["lm_calls"]

    again = run()
    assert (again["lm_calls"], again["remembered_answers"], again["generated"]) == (0, answers, 0)
    assert (again["rejected"], again["stopped"]) == (first["rejected"], first["stopped"])

    catalog["backend"] = _loading_dock_catalog(f"{LOADING_DOCK}, re-encoded in 4K")
    assert run()["lm_calls"] > 0  # other content, other requests: the teacher is asked

    tenant_env.artifacts.path(tenant, "modality", TEACHER_ANSWERS_FILE).write_text("{not json")
    assert read_teacher_answers(tenant_env.artifacts, tenant, "modality") is None
    assert run()["lm_calls"] == first["lm_calls"]  # a damaged file is no file


def _copying_teacher():
    """Answers every write with its content, as the local 0.5B teacher does."""
    return CuttingLM({LOADING_DOCK: _written(f"Loading Dock. {LOADING_DOCK}")}, adapter=dspy.JSONAdapter())


def test_a_lane_told_that_the_teacher_copied_elsewhere_probes_at_once_and_stops_after_two_copies():
    teacher = _copying_teacher()
    told = CopyVerdict(teacher="k", module="routing", copies=COPIES_BEFORE_STOP)
    generator = SyntheticQueryGenerator(
        get_module("modality"), _loading_dock_catalog(), teacher, teacher.adapter, seed=3, copied_elsewhere=told
    )

    frame, report = generator.generate(10)

    assert frame.empty and report.rejected == {"copies_content": COPIES_TO_CONFIRM}
    assert report.lm_calls == report.copy_probes == COPIES_TO_CONFIRM  # no full write at all
    assert f"(and {COPIES_BEFORE_STOP} times in a row in this tenant's routing lane)" in report.stopped


def test_a_lane_told_that_the_teacher_copied_elsewhere_still_keeps_a_request_of_its_own():
    own = "please find the night time security footage of the rear loading dock where a white van arrives"
    adapter = dspy.JSONAdapter()
    answers = [_written(own), _written(own), {"agrees": True}]  # the probe, the full write, the verifier
    told = CopyVerdict(teacher="k", module="routing", copies=COPIES_BEFORE_STOP)
    generator = SyntheticQueryGenerator(
        get_module("modality"),
        _loading_dock_catalog(),
        CuttingLM(answers, adapter=adapter),
        adapter,
        seed=3,
        copied_elsewhere=told,
    )

    frame, report = generator.generate(1)

    assert frame["query"].tolist() == [own] and report.rejected == {}
    assert report.lm_calls == 3 and report.copy_probes == 1 and report.stopped is None


def test_copy_verdicts_that_are_not_one_read_as_none():
    verdict = CopyVerdict(teacher="k", module="modality", copies=5)
    assert CopyVerdict.from_json(json.loads(json.dumps(verdict.to_json()))) == verdict
    for damaged in [None, [], {}, {"teacher": "k", "module": "modality"}, {**verdict.to_json(), "copies": "5"}]:
        assert CopyVerdict.from_json(damaged) is None


def test_the_first_lane_the_teacher_stops_by_copying_spares_the_tenants_other_lanes(tenant_env, monkeypatch):
    """A scripted teacher; what is asserted is how many requests each lane spends before it stops."""
    monkeypatch.setattr(blending, "COLD_START_SYNTHETIC_EXAMPLES", 4)
    teacher = {"lm": _copying_teacher()}
    monkeypatch.setattr(LanguageModelResource, "teacher", lambda self, **overrides: teacher["lm"])
    monkeypatch.setattr(LanguageModelResource, "adapter", lambda self, layout="reminder_last": dspy.JSONAdapter())
    monkeypatch.setattr(ContentBackendResource, "backend", lambda self: _loading_dock_catalog())
    assets = dict(zip(ROUTING_MODULES, synthetic_examples_assets))

    def run(tenant, module):
        asset = assets[module]
        result = tenant_env.materialize([asset], tenant, content=ContentBackendResource(vespa_url=""))
        (event,) = result.asset_materializations_for_node(asset.op.name)
        return {key: value.value for key, value in event.metadata.items()}

    tenant, other = tenant_env.add("told"), tenant_env.add("untold")
    first = run(tenant, "modality")
    assert first["rejected"] == {"copies_content": COPIES_BEFORE_STOP} and first["teacher_copied_in"] == ""
    assert [verdict.module for verdict in read_copy_verdicts(tenant_env.artifacts, tenant)] == ["modality"]

    told = run(tenant, "cross_modal")
    assert told["teacher_copied_in"] == "modality" and told["rejected"] == {"copies_content": COPIES_TO_CONFIRM}
    # Probes only, no full write; a request sent twice (one item of each kind here) is asked once.
    assert told["lm_calls"] == told["copy_probes"]
    assert told["lm_calls"] + told["remembered_answers"] == COPIES_TO_CONFIRM
    assert "in this tenant's modality lane" in told["stopped"]
    # The told lane stopped too, so it keeps a verdict of its own beside the first stop's.
    assert [v.module for v in read_copy_verdicts(tenant_env.artifacts, tenant)] == ["modality", "cross_modal"]

    untold = run(other, "cross_modal")  # another tenant's content: its lane finds out for itself
    assert untold["teacher_copied_in"] == "" and untold["rejected"] == {"copies_content": COPIES_BEFORE_STOP}
    assert untold["lm_calls"] + untold["remembered_answers"] == COPIES_BEFORE_STOP  # one full write, 4 probes

    again = run(tenant, "modality")  # the verdict's own lane is not told: it sends its first run's requests
    assert (again["lm_calls"], again["teacher_copied_in"], again["rejected"]) == (0, "", first["rejected"])

    own = "please find the night time security footage of the rear loading dock where a white van arrives"
    teacher["lm"] = CuttingLM({"`agrees`": {"agrees": True}, LOADING_DOCK: _written(own)}, adapter=dspy.JSONAdapter())
    writes = run(tenant, "routing")
    assert writes["teacher_copied_in"] == "modality" and writes["generated"] == 1  # the rest are duplicates of it
    assert read_copy_verdicts(tenant_env.artifacts, tenant) == []  # the teacher can write for this tenant
    tenant_env.artifacts.path(tenant, "modality", COPY_VERDICT_FILE).write_text("{not json")
    assert read_copy_verdicts(tenant_env.artifacts, tenant) == []


def test_lanes_the_teacher_stops_together_keep_their_verdicts_and_one_accepted_request_clears_them(tenant_env):
    artifacts, tenant = tenant_env.artifacts, tenant_env.add("together")
    stopped = GenerationReport(requested=4, stopped="copied", consecutive_copies=5)
    # Two lanes of one run read no verdict, both stop, and both write.
    read = read_copy_verdicts(artifacts, tenant)
    assert [copied_in_another_lane(read, module, "teacher") for module in ("modality", "cross_modal")] == [None] * 2
    for module in ("modality", "cross_modal"):
        update_copy_verdict(artifacts, tenant, module, "teacher", stopped)
    verdicts = read_copy_verdicts(artifacts, tenant)
    assert {verdict.module for verdict in verdicts} == {"modality", "cross_modal"}
    assert copied_in_another_lane(verdicts, "routing", "teacher").module in {"modality", "cross_modal"}
    assert copied_in_another_lane(verdicts, "modality", "teacher") is None  # its own kept answers cover it
    assert copied_in_another_lane(verdicts, "routing", "another teacher") is None

    # A verdict an earlier release wrote in the tenant's folder still tells, and is cleared with the rest.
    artifacts.write_json(artifacts.path(tenant, COPY_VERDICT_FILE), CopyVerdict("teacher", "routing", 5).to_json())
    assert len(read_copy_verdicts(artifacts, tenant)) == 3
    update_copy_verdict(artifacts, tenant, "modality", "another teacher", GenerationReport(requested=4, accepted=1))
    assert len(read_copy_verdicts(artifacts, tenant)) == 3  # another teacher writing says nothing of this one
    update_copy_verdict(artifacts, tenant, "routing", "teacher", GenerationReport(requested=4, accepted=1))
    assert read_copy_verdicts(artifacts, tenant) == []
