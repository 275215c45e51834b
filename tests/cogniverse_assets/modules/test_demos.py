"""Retrieved and class-medoid demos: chosen without LM calls, deterministic, and restored exactly."""

import json

import dspy
import numpy as np
import pandas as pd
import pytest

from cogniverse_assets.demo_data import load_queries
from cogniverse_assets.modules.demos import RetrievedDemos, balanced_nearest, class_medoid_demos, to_demo
from cogniverse_assets.modules.registry import ROUTING_MODULES, get_module
from cogniverse_assets.optimizers import compile_module

SPEC = get_module("modality")


def _train(spec=SPEC, n=130) -> pd.DataFrame:
    rows = pd.DataFrame(load_queries("train")).rename(columns={spec.corpus_label_key: "label"})
    return rows.iloc[:n].assign(provenance="human")


def test_balanced_nearest_caps_each_label_and_puts_the_most_similar_last():
    similarities = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    labels = ["a", "a", "a", "b", "b", "c"]
    # k=3 over 3 labels: at most one per label while others remain
    assert balanced_nearest(similarities, labels, 3) == [5, 3, 0]
    # k=4: the cap is 2 per label
    assert balanced_nearest(similarities, labels, 4) == [4, 3, 1, 0]
    # one label only: fill by similarity
    assert balanced_nearest(similarities[:3], labels[:3], 2) == [1, 0]


def test_router_self_labels_never_become_demos():
    train = _train(n=40)
    train.loc[train.index[:20], "provenance"] = "router"
    program = RetrievedDemos.compile(SPEC, train)
    assert len(program.pool) == 20 and {row["provenance"] for row in program.pool} == {"human"}
    with pytest.raises(ValueError, match="no gold-labeled"):
        RetrievedDemos.compile(SPEC, train.assign(provenance="router"))


@pytest.mark.parametrize("module", list(ROUTING_MODULES))
def test_knn_compiles_without_lm_calls_and_reloads_with_the_same_demos(module):
    spec = get_module(module)
    train = _train(spec)
    lm = dspy.utils.DummyLM([])  # any call would fail: compiling must not call the LM
    result = compile_module(spec, "knn", train, lm, lm, dspy.JSONAdapter())
    assert result.lm_calls == 0 and result.parameters["k"] >= 1
    payload = json.loads(json.dumps({"state": result.program.dump_state()}))
    restored = spec.load_program(payload)
    assert isinstance(restored, RetrievedDemos)
    for row in load_queries("eval")[:25]:
        inputs = spec.inputs(row)
        assert restored.neighbours(inputs) == result.program.neighbours(inputs)
    neighbours = result.program.neighbours(spec.inputs(load_queries("eval")[0]))
    assert len(neighbours) == result.parameters["k"]


def test_knn_demos_are_the_queries_nearest_neighbours():
    train = _train()
    program = RetrievedDemos.compile(SPEC, train)
    query = train.iloc[7]["query"]
    demos = program.neighbours({"query": query})
    assert demos[-1]["inputs"]["query"] == query  # the identical query is the most similar, so it is last
    held_out = program.neighbours({"query": query}, exclude_query=True)
    assert query not in [row["inputs"]["query"] for row in held_out]


def test_cross_modal_demos_carry_every_output_field():
    spec = get_module("cross_modal")
    program = RetrievedDemos.compile(spec, _train(spec))
    demo = program.neighbours({"query": "clips and reviews of the tour", "detected_modalities": ["video", "text"]})[0]
    example = to_demo(spec, demo)
    assert example.needs_fusion == (example.fusion_strategy != "none")


def test_class_medoid_demos_cover_every_label_in_a_fixed_order():
    train = _train()
    first = class_medoid_demos(SPEC, train)
    again = class_medoid_demos(SPEC, train.sample(frac=1.0, random_state=3))
    assert [demo.modality for demo in first] == list(SPEC.labels)
    assert [demo.query for demo in first] == [demo.query for demo in again]  # the row order does not matter


def test_labeled_optimizer_is_a_plain_predict_that_round_trips():
    lm = dspy.utils.DummyLM([])
    result = compile_module(SPEC, "labeled", _train(), lm, lm, dspy.JSONAdapter())
    assert result.lm_calls == 0 and len(result.program.demos) == len(SPEC.labels)
    restored = SPEC.load_program(json.loads(json.dumps({"state": result.program.dump_state()})))
    assert [demo["query"] for demo in restored.demos] == [demo.query for demo in result.program.demos]
