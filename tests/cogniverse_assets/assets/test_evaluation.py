"""Evaluation, the blocking promotion gate and deployment with the real local LM.

The deployed module in these tests is chosen on purpose (a sabotaged version, or a trained one),
so that the gate's decision is known in advance: a regressing candidate must never be deployed,
and an improving one must be deployed and then served by the runtime."""

from datetime import datetime, timezone

import dagster as dg
import dspy
import pytest

from cogniverse_assets.assets.deployment import deployment_assets
from cogniverse_assets.assets.evaluation import EVALUATION_FILE, evaluation_assets
from cogniverse_assets.assets.routing_traces import routing_traces_assets
from cogniverse_assets.assets.synthetic_examples import synthetic_examples_assets
from cogniverse_assets.assets.trained_module import trained_module_assets
from cogniverse_assets.assets.training_set import training_set_assets
from cogniverse_assets.modules.registry import get_module
from cogniverse_assets.runtime import load_router
from cogniverse_assets.traffic import deployed_router_decider, emit_traffic
from cogniverse_resources.artifacts import DSPyModuleIOManager
from cogniverse_resources.config_store import DeploymentRecord
from cogniverse_resources.content import ContentBackendResource
from cogniverse_resources.lm import LanguageModelResource

pytestmark = pytest.mark.lm
SPEC = get_module("modality")
SABOTAGE_DEMOS = [
    dspy.Example(query=query, modality="text").with_inputs("query")
    for query in (
        "watch the goal replay",
        "photo of the eiffel tower",
        "listen to the jazz podcast",
        "the pdf manual for my router",
        "video tutorial on knitting",
        "pictures of red pandas",
        "audio recording of the board call",
        "slides from the keynote",
    )
]


def _store_version(env, tenant, version, demos=(), **fields):
    """A module version; with ``SABOTAGE_DEMOS`` it is taught that everything is text."""
    program = SPEC.program()
    program.demos = list(demos)
    payload = {
        "version": version,
        "tenant_id": tenant,
        "module": "modality",
        "optimizer": "bootstrap",
        "state": program.dump_state(),
        "lm_calls": 0,
        "wall_time_s": 0.0,
        "plan": {"features": {}},
        "created_at": datetime.now(timezone.utc).isoformat(),
        **fields,
    }
    env.artifacts.write_json(env.artifacts.path(tenant, "modality", "modules", f"{version}.json"), payload)
    env.artifacts.write_json(env.artifacts.path(tenant, "modality", "modules", "candidate.json"), {"version": version})


def _prepare(env, prefix, routed_by_lm=False, **settings):
    """A tenant with 40 annotated modality spans; their answers come from a simulated router, or with
    ``routed_by_lm`` from the tenant's own router on the real LM (as a deployed router in production)."""
    tenant = env.add(prefix, use_synthetic_data=False, **settings)
    decide = (
        deployed_router_decider(tenant, store=env.config_store.store(), artifacts=env.artifacts)
        if routed_by_lm
        else None
    )
    emit_traffic(
        env.phoenix,
        tenant,
        n=40,
        feedback_rate=1.0,
        accuracy=0.8,
        seed=31,
        progress=False,
        modules=["modality"],
        decide=decide,
    )
    resources = dict(
        content=ContentBackendResource(vespa_url=""),
        lm=LanguageModelResource(),
        dspy_module_io_manager=DSPyModuleIOManager(root=env.artifacts.root),
    )
    assert env.materialize(
        [routing_traces_assets[0], synthetic_examples_assets[0], training_set_assets[0]], tenant, **resources
    ).success
    return tenant, resources


def _gate_and_deploy(env, tenant, resources):
    return dg.materialize(
        [trained_module_assets[0], evaluation_assets[0], deployment_assets[0]],
        partition_key=tenant,
        instance=env.instance,
        resources=env.resources(**resources),
        raise_on_error=False,
        selection=[evaluation_assets[0].key, deployment_assets[0].key],
    )


def test_a_regressing_candidate_is_never_deployed(tenant_env, local_lm):
    tenant, resources = _prepare(tenant_env, "regress")
    _store_version(tenant_env, tenant, "sabotaged", SABOTAGE_DEMOS)
    result = _gate_and_deploy(tenant_env, tenant, resources)
    evaluation = tenant_env.artifacts.read_json(tenant_env.artifacts.path(tenant, "modality", EVALUATION_FILE))
    assert evaluation["candidate_version"] == "sabotaged" and not evaluation["promote"]
    assert evaluation["candidate"]["accuracy"] < evaluation["deployed"]["accuracy"]
    (check,) = [e for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert check.event_specific_data.passed is False
    assert not result.asset_materializations_for_node(deployment_assets[0].op.name)
    assert tenant_env.config_store.store().deployed(tenant, "modality") is None  # pointer unchanged


def test_an_improving_candidate_is_deployed_and_served(tenant_env, local_lm):
    # The sabotaged baseline answers "text" to everything, so its text recall is 1.0 and any real
    # module loses recall there: the class-collapse rule (tested in test_scoring) is relaxed here.
    tenant, resources = _prepare(tenant_env, "improve", promotion_max_class_recall_drop=1.0)
    store = tenant_env.config_store.store()
    _store_version(tenant_env, tenant, "sabotaged", SABOTAGE_DEMOS)
    store.record_deployment(DeploymentRecord(tenant, "modality", "sabotaged", "promote", "test"))
    _store_version(tenant_env, tenant, "v-good")
    result = _gate_and_deploy(tenant_env, tenant, resources)
    (event,) = result.asset_materializations_for_node(evaluation_assets[0].op.name)
    assert event.metadata["promote"].value is True, event.metadata["reasons"].value
    assert "| accuracy |" in event.metadata["comparison"].value
    for picture in ("confusion_matrices", "accuracy_over_versions"):  # shown inline in the UI
        assert (
            event.metadata[picture].value.startswith("![") and "data:image/png;base64," in event.metadata[picture].value
        )
    assert str(event.metadata["phoenix_experiment_candidate"].value).startswith(tenant_env.phoenix.endpoint)
    assert store.deployed(tenant, "modality").version == "v-good"
    assert tenant_env.artifacts.path(tenant, "modality", "plots", "accuracy-over-versions.png").exists()

    router = load_router(tenant, "modality", store=store, artifacts=tenant_env.artifacts)
    assert router.version == "v-good" and not router.is_fallback
    assert router.spec.label_of(router.route({"query": "slides from the quarterly review pdf"})) in SPEC.labels
    datasets = [d["name"] for d in tenant_env.phoenix.client().datasets.list()]
    assert f"{tenant_env.phoenix.project_name(tenant)}-modality-validation" in datasets


def test_each_side_is_scored_with_the_prompt_layout_it_is_served_with(tenant_env, monkeypatch):
    """The deployed version keeps the layout it was gated with and the candidate is scored with its own.
    Scoring is replaced (no LM: this test is about which adapter each side gets)."""
    from cogniverse_assets.assets import evaluation as evaluation_stage
    from cogniverse_assets.scoring import CascadeScores, score_examples

    layouts = {}

    def score_without_lm(spec, program, fast_path, examples, lm, adapter, memory=None):
        layouts["deployed" if program.demos else "candidate"] = adapter.layout
        gold = [str(getattr(example, spec.label_field)) for example in examples]
        scores = score_examples(spec, gold, gold, [1.0] * len(gold), len(gold))
        return CascadeScores(scores, scores, False, "no fast path")

    monkeypatch.setattr(evaluation_stage, "score_cascade", score_without_lm)
    tenant, resources = _prepare(tenant_env, "layouts")
    _store_version(tenant_env, tenant, "old", SABOTAGE_DEMOS, prompt_layout="reminder_first")
    tenant_env.config_store.store().record_deployment(DeploymentRecord(tenant, "modality", "old", "promote", "test"))
    _store_version(tenant_env, tenant, "new", prompt_layout="no_reminder")
    _gate_and_deploy(tenant_env, tenant, resources)
    assert layouts == {"deployed": "reminder_first", "candidate": "no_reminder"}


def test_a_version_is_asked_only_about_examples_it_has_not_answered(tenant_env, local_lm):
    """The deployed module is scored again by every evaluation; its answers on the same validation
    examples are remembered, so only a new version (or a new example) costs LM calls."""
    tenant, resources = _prepare(tenant_env, "memory")
    _store_version(tenant_env, tenant, "sabotaged", SABOTAGE_DEMOS)

    def evaluated():
        result = _gate_and_deploy(tenant_env, tenant, resources)
        (event,) = result.asset_materializations_for_node(evaluation_assets[0].op.name)
        figures = ("lm_calls", "remembered_answers", "validation_size", "candidate_accuracy", "deployed_accuracy")
        return {name: event.metadata[name].value for name in figures}

    first = evaluated()
    size = first["validation_size"]
    assert first["remembered_answers"] == 0 and first["lm_calls"] >= 2 * size
    again = evaluated()
    assert again == {**first, "lm_calls": 0, "remembered_answers": 2 * size}

    _store_version(tenant_env, tenant, "sabotaged-less", SABOTAGE_DEMOS[:4])
    new_candidate = evaluated()
    assert new_candidate["remembered_answers"] == size  # the deployed (unoptimized) side's
    assert size <= new_candidate["lm_calls"] < 2 * size
    assert new_candidate["deployed_accuracy"] == first["deployed_accuracy"]


def test_the_deployed_side_takes_the_answers_its_router_gave_in_production(tenant_env, local_lm):
    """The validation spans were answered by the deployed (unoptimized) router on the LM path, and
    record its program key: the evaluation scores the deployed side with those answers and asks
    the LM only for the candidate's. A key the runtime and the evaluation compute differently
    would cost the LM calls again and fail here."""
    tenant, resources = _prepare(tenant_env, "served", routed_by_lm=True)
    _store_version(tenant_env, tenant, "sabotaged", SABOTAGE_DEMOS)
    result = _gate_and_deploy(tenant_env, tenant, resources)
    (event,) = result.asset_materializations_for_node(evaluation_assets[0].op.name)
    size = event.metadata["validation_size"].value
    assert size > 0 and event.metadata["answers_taken_from_serving"].value == size
    record = tenant_env.artifacts.read_json(tenant_env.artifacts.path(tenant, "modality", EVALUATION_FILE))
    assert record["deployed"]["lm_calls"] == 0 and record["candidate"]["lm_calls"] >= size
    table = tenant_env.artifacts.read_table(tenant, "modality", "training_set")
    validation = table[table["split"] == "validation"]
    served_accuracy = float((validation["router_label"] == validation["label"]).mean())
    assert record["deployed"]["accuracy"] == pytest.approx(served_accuracy)
