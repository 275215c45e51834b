"""Remembered answers come back only under the key they were stored with (no LM: keys and files)."""

import dspy
import pytest

from cogniverse_assets.answer_memory import AnswerMemory, forget_other_versions
from cogniverse_assets.modules.registry import get_module
from cogniverse_resources.artifacts import ArtifactStore
from cogniverse_resources.lm import LanguageModelResource, LlamaCppJSONAdapter

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
