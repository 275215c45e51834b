import dspy
import pytest

from cogniverse_assets.modules.calibrated import CalibratedLabels
from cogniverse_assets.modules.registry import ROUTING_MODULES, get_module
from cogniverse_assets.runtime import UNOPTIMIZED_VERSION, Router, load_router
from cogniverse_assets.traffic import emit_traffic
from cogniverse_resources import trace_contract as tc
from cogniverse_resources.artifacts import ArtifactStore
from cogniverse_resources.config_store import DeploymentRecord, open_config_store
from cogniverse_resources.lm import PROMPT_LAYOUTS, LanguageModelResource

MODALITY = get_module("modality")


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


@pytest.fixture
def deployments(tmp_path):
    """A config store with tenant ``acme`` and an artifact folder, for versions stored by hand."""
    store = open_config_store(f"sqlite://{tmp_path}/config.sqlite")
    store.add("acme")
    return store, ArtifactStore(root=str(tmp_path / "artifacts"))


def _deploy(store, artifacts, module: str, version: str, **fields) -> None:
    state = get_module(module).program().dump_state()
    artifacts.write_json(
        artifacts.path("acme", module, "modules", f"{version}.json"), {"version": version, "state": state, **fields}
    )
    store.record_deployment(DeploymentRecord("acme", module, version, "promote", "test"))


def test_a_deployed_version_is_served_with_the_prompt_layout_it_recorded(deployments):
    store, artifacts = deployments
    lm = LanguageModelResource()
    # A module whose registry layout is not DSPy's, so that each check below tells the three apart.
    spec = next(spec for spec in ROUTING_MODULES.values() if spec.prompt_layout != "reminder_last")
    other = next(layout for layout in PROMPT_LAYOUTS if layout not in (spec.prompt_layout, "reminder_last"))

    def served_layout() -> str:
        return load_router("acme", spec.name, lm, store, artifacts).adapter.layout

    assert served_layout() == spec.prompt_layout  # nothing deployed: the unoptimized module
    _deploy(store, artifacts, spec.name, "v1", prompt_layout=other)
    assert served_layout() == other
    # Versions stored before layouts were recorded were compiled and gated with DSPy's.
    _deploy(store, artifacts, spec.name, "v0")
    assert served_layout() == "reminder_last"


def test_a_version_recording_an_unknown_prompt_layout_is_refused_by_name(deployments):
    store, artifacts = deployments
    _deploy(store, artifacts, "modality", "v1", prompt_layout="sideways")
    with pytest.raises(ValueError, match="version 'v1' records prompt layout 'sideways'"):
        load_router("acme", "modality", LanguageModelResource(), store, artifacts)


class _AnsweredInProcess(dspy.Module):
    """Stands in for a module that answers in process and knows its probability (``calibrated_state``)."""

    def __init__(self, probability: float | None):
        super().__init__()
        self.probability = probability

    def forward(self, **inputs):
        if self.probability is None:
            return dspy.Prediction(**MODALITY.outputs_for("audio"))
        return CalibratedLabels.answered_in_process(MODALITY, "audio", self.probability)


@pytest.mark.parametrize("probability", [0.37, None])
def test_the_lm_path_records_the_module_own_probability_and_no_constant_in_its_place(probability):
    router = Router(
        "acme", MODALITY, _AnsweredInProcess(probability), "v1", dspy.LM("openai/not-called"), dspy.ChatAdapter()
    )
    answer = router.answer({"query": "a podcast about gardening"})
    assert (answer.label, answer.path, answer.confidence) == ("audio", "lm", probability)
