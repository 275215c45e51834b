"""Remembered answers come back only under the key they were stored with, and a router's served
answer is taken only under its own key (no LM: keys and files)."""

import math

import dspy
import pytest

from cogniverse_assets.answer_memory import AnswerMemory, ServedAnswer, forget_other_versions, served_answers
from cogniverse_assets.modules.registry import get_module
from cogniverse_assets.runtime import Router, unoptimized_module
from cogniverse_resources.artifacts import ArtifactStore
from cogniverse_resources.lm import PROMPT_LAYOUTS, LanguageModelResource, LlamaCppJSONAdapter

SPEC = get_module("modality")
QUERY = {"query": "the keynote slides as a pdf"}


@pytest.fixture
def artifacts_store(tmp_path):
    return ArtifactStore(root=str(tmp_path))


def _open(artifacts, program=None, lm=None, adapter=None, version="v1"):
    lm = lm or LanguageModelResource().student()
    return AnswerMemory.open(
        artifacts, "acme", SPEC, version, program or SPEC.program(), lm, adapter or LlamaCppJSONAdapter("reminder_last")
    )


def test_an_answer_is_recalled_under_the_same_key_only(artifacts_store):
    memory = _open(artifacts_store)
    assert memory.recall(QUERY) is None
    memory.remember(QUERY, "document", 812.5)
    memory.save(artifacts_store)

    same = _open(artifacts_store)
    assert same.recall(QUERY).label == "document" and same.recall(QUERY).latency_ms == 812.5
    assert same.recall({"query": "another query"}) is None
    assert same.recalled == 2

    with_demos = SPEC.program()
    with_demos.demos = [dspy.Example(query="a podcast", modality="audio").with_inputs("query")]
    changed = {
        "another layout": _open(artifacts_store, adapter=LlamaCppJSONAdapter("reminder_first")),
        "another program": _open(artifacts_store, program=with_demos),
        "another LM": _open(artifacts_store, lm=LanguageModelResource(student_model="openai/gpt-4o-mini").student()),
        "another version": _open(artifacts_store, version="v2"),
    }
    assert {name: memory.recall(QUERY) for name, memory in changed.items()} == dict.fromkeys(changed)


def test_a_damaged_memory_is_a_miss_and_is_replaced(artifacts_store):
    memory = _open(artifacts_store)
    memory.path.parent.mkdir(parents=True, exist_ok=True)
    memory.path.write_text("{not json")
    reopened = _open(artifacts_store)
    assert reopened.recall(QUERY) is None
    reopened.remember(QUERY, "document", 1.0)
    reopened.save(artifacts_store)
    assert _open(artifacts_store).recall(QUERY).label == "document"


def test_only_the_kept_versions_memories_stay(artifacts_store):
    for version in ("old", "candidate", "deployed"):
        memory = _open(artifacts_store, version=version)
        memory.remember(QUERY, "document", 1.0)
        memory.save(artifacts_store)
    assert forget_other_versions(artifacts_store, "acme", SPEC.name, keep={"candidate", "deployed"}) == ["old"]
    assert _open(artifacts_store, version="old").recall(QUERY) is None
    assert _open(artifacts_store, version="deployed").recall(QUERY).label == "document"
    assert forget_other_versions(artifacts_store, "globex", SPEC.name, keep=set()) == []


def test_the_key_a_router_records_is_the_key_its_evaluation_remembers_under():
    lm = LanguageModelResource()
    deployed = unoptimized_module(SPEC)
    router = Router.serving("acme", SPEC, deployed, lm)
    memory = AnswerMemory.open(
        ArtifactStore(root="/nonexistent"),
        "acme",
        SPEC,
        deployed.version,
        deployed.program,
        lm.student(),
        lm.adapter(deployed.prompt_layout),
    )
    assert router.program_key == memory.key
    layout = next(layout for layout in PROMPT_LAYOUTS if layout != deployed.prompt_layout)
    other_layout = Router("acme", SPEC, deployed.program, deployed.version, lm.student(), lm.adapter(layout))
    assert other_layout.program_key != memory.key


def test_served_answers_are_taken_under_the_memory_key_only_and_never_replace_one(artifacts_store):
    memory = _open(artifacts_store)
    memory.remember({"query": "asked before"}, "text", 5.0)
    inputs = [{"query": "a podcast"}, {"query": "fast path"}, {"query": "other program"}, {"query": "asked before"}]
    served = [
        ServedAnswer("audio", 900.0, memory.key),
        None,
        ServedAnswer("video", 700.0, "0" * 64),
        ServedAnswer("image", 800.0, memory.key),
    ]
    assert memory.take_served(inputs, served) == 1
    assert memory.recall({"query": "a podcast"}) == memory.answers[memory.example_key({"query": "a podcast"})]
    assert memory.recall({"query": "a podcast"}).label == "audio"
    assert memory.recall({"query": "other program"}) is None and memory.recall({"query": "fast path"}) is None
    assert memory.recall({"query": "asked before"}).label == "text"
    assert memory.taken_from_serving == 1


def test_only_a_complete_served_answer_is_read_from_a_training_set_row():
    key = "a" * 64
    rows = [
        {"router_label": "audio", "router_program_key": key, "processing_time_ms": 812.0},
        {"router_label": "audio", "router_program_key": math.nan, "processing_time_ms": 812.0},  # no key recorded
        {"router_label": "smell", "router_program_key": key, "processing_time_ms": 812.0},  # not a label
        {"router_label": None, "router_program_key": key, "processing_time_ms": 812.0},
        {"router_label": "audio", "router_program_key": key, "processing_time_ms": math.nan},
        {"label": "audio"},  # a synthetic row: no router at all
    ]
    assert served_answers(SPEC, rows) == [ServedAnswer("audio", 812.0, key), None, None, None, None, None]
