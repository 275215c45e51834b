import pytest

from cogniverse_assets.runtime import UNOPTIMIZED_VERSION, load_router
from cogniverse_assets.traffic import emit_traffic
from cogniverse_resources import trace_contract as tc


def test_load_router_rejects_bad_input():
    with pytest.raises(ValueError, match="invalid tenant id"):
        load_router("../x", "modality")
    with pytest.raises(ValueError, match="unknown routing module"):
        load_router("acme", "sentiment")


@pytest.mark.lm
def test_deployed_policy_routes_with_the_real_lm(phoenix, local_lm):
    report = emit_traffic(phoenix, "runtime-t", n=2, feedback_rate=0.0, policy="deployed", seed=3, progress=False)
    assert report.spans == 6
    spans = phoenix.client().spans.get_spans(
        project_identifier=phoenix.project_name("runtime-t"), name=tc.SPAN_NAME, limit=100
    )
    assert len(spans) == 6
    for span in spans:
        attributes = span["attributes"]
        assert attributes[tc.MODULE_VERSION] == UNOPTIMIZED_VERSION
        module = attributes[tc.MODULE]
        assert attributes[tc.MODULE_DECISION_ATTRIBUTE[module]] in tc.MODULE_LABELS[module]
