"""Property-based: hostile spans and annotations never crash ingestion's parsing and labeling;
every span ends up either as an example or in quarantine, and the counts add up."""

import json

import pandas as pd
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cogniverse_assets.examples import (
    EXAMPLE_COLUMNS,
    MAX_RAW_CHARS,
    PROVENANCES,
    QUARANTINE_COLUMNS,
    label_examples,
    parse_page,
)
from cogniverse_assets.modules.registry import ROUTING_MODULES
from cogniverse_resources import trace_contract as tc

junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.text(min_size=2001, max_size=6000),
    st.binary(max_size=20),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
label_like = st.one_of(st.sampled_from([*tc.MODALITIES, *tc.AGENTS, *tc.FUSION_STRATEGIES, "true", "false"]), junk)
string_list = st.one_of(
    st.lists(st.sampled_from(tc.MODALITIES), max_size=4),
    st.lists(st.text(max_size=300), max_size=60),
    st.lists(junk, max_size=3),
    st.text(max_size=40),
    junk,
)


def mostly(valid, hostile=junk):
    """Valid about 5 times in 6: most spans break one rule at a time, some break many."""
    return st.integers(min_value=0, max_value=5).flatmap(lambda pick: hostile if pick == 5 else valid)


def attributes(module: str):
    spec = ROUTING_MODULES[module]
    core = {
        tc.MODULE: mostly(st.just(module), st.one_of(st.sampled_from(tc.MODULE_NAMES), junk)),
        tc.QUERY: mostly(
            st.text(min_size=1, max_size=200),
            st.one_of(st.text(alphabet="\u200b\u202e\U0001f600 \n\x00", max_size=20), junk),
        ),
        spec.decision_attribute: mostly(st.sampled_from(spec.labels), label_like),
    }
    fields = {
        tc.CONFIDENCE: mostly(st.floats(min_value=0, max_value=1)),
        tc.USER_SATISFACTION: mostly(
            st.integers(min_value=1, max_value=5), st.one_of(st.integers(min_value=-5, max_value=10), junk)
        ),
        tc.AGENT_SUCCESS: mostly(st.booleans()),
        tc.PROCESSING_TIME_MS: mostly(st.floats(min_value=0, max_value=1e6)),
        tc.DETECTED_MODALITIES: mostly(st.lists(st.sampled_from(tc.MODALITIES), max_size=4), string_list),
        tc.ENTITIES: mostly(st.lists(st.text(max_size=30), max_size=5), string_list),
        tc.MODULE_VERSION: mostly(st.text(max_size=40)),
        tc.PATH: mostly(st.sampled_from(tc.ROUTING_PATHS)),
        tc.PROGRAM_KEY: mostly(st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)),
    }
    return st.one_of(
        st.fixed_dictionaries(core, optional=fields), st.fixed_dictionaries({}, optional={**core, **fields})
    )


def spans(module: str):
    span_id = mostly(st.text(alphabet="0123456789abcdef", min_size=16, max_size=16))
    well_formed = st.fixed_dictionaries(
        {
            "context": st.fixed_dictionaries({"span_id": span_id, "trace_id": st.one_of(st.text(max_size=32), junk)}),
            "attributes": attributes(module),
            "start_time": mostly(st.just("2026-11-26T10:00:00+00:00")),
        },
    )
    return mostly(
        well_formed, st.one_of(junk, st.fixed_dictionaries({}, optional={"context": junk, "attributes": junk}))
    )


annotation = st.fixed_dictionaries(
    {
        "result": mostly(st.fixed_dictionaries({}, optional={"label": label_like, "score": junk})),
        "annotator_kind": mostly(st.sampled_from(tc.ANNOTATOR_KINDS)),
        "updated_at": mostly(st.just("2026-11-26T11:00:00+00:00")),
    },
)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(module=st.sampled_from(tuple(ROUTING_MODULES)), data=st.data())
def test_hostile_spans_are_parsed_or_quarantined_and_counts_add_up(module, data):
    spec = ROUTING_MODULES[module]
    page = data.draw(st.lists(spans(module), min_size=1, max_size=4))
    examples, rejected = parse_page(page, spec)
    assert len(examples) + len(rejected) == len(page)
    annotations = {example["span_id"]: data.draw(st.lists(annotation, max_size=3)) for example in examples}
    labeled, contradictory = label_examples(examples, annotations, spec, min_trace_confidence=0.7)
    assert len(labeled) + len(contradictory) == len(examples)

    # Both tables take every row as ingestion writes them (Parquet needs consistent columns).
    table = pd.DataFrame(labeled, columns=EXAMPLE_COLUMNS)
    quarantine = pd.DataFrame(rejected + contradictory, columns=QUARANTINE_COLUMNS)
    for row in labeled:
        assert row["provenance"] in PROVENANCES
        assert row["label"] is None or row["label"] in spec.labels
        assert isinstance(row["query"], str) and 0 < len(row["query"]) <= tc.MAX_QUERY_CHARS
        json.dumps(row["detected_modalities"]), json.dumps(row["entities"])
        # A program key is kept only beside an LM-path answer of the router.
        assert row["router_program_key"] is None or (
            len(row["router_program_key"]) == tc.PROGRAM_KEY_CHARS and row["router_label"] in spec.labels
        )
    for row in quarantine.to_dict("records"):
        assert row["reason"] and len(row["raw"]) <= MAX_RAW_CHARS and isinstance(row["span_id"], str)
    assert len(table) + len(quarantine) == len(page)
    event(f"{'some' if labeled else 'no'} examples, {'some' if len(quarantine) else 'no'} quarantined")


def test_a_program_key_is_kept_beside_an_lm_path_answer_only():
    spec = ROUTING_MODULES["modality"]
    key = "0123456789abcdef" * 4

    def parsed(**extra):
        attributes = {tc.MODULE: "modality", tc.QUERY: "a podcast", tc.MODALITY: "audio", **extra}
        span = {"context": {"span_id": "a" * 16}, "attributes": attributes, "start_time": "2026-11-26T10:00:00+00:00"}
        examples, rejected = parse_page([span], spec)
        return examples[0]["router_program_key"] if examples else rejected[0]["reason"]

    assert parsed(**{tc.PROGRAM_KEY: key, tc.PATH: "lm"}) == key
    assert parsed(**{tc.PROGRAM_KEY: key}) == key  # routers from before routing.path answered with the LM
    assert parsed(**{tc.PROGRAM_KEY: key, tc.PATH: "fast"}) is None
    assert parsed(**{tc.PATH: "lm"}) is None
    assert "routing.program_key" in parsed(**{tc.PROGRAM_KEY: key.upper()})
