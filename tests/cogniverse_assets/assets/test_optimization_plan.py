"""``<module>/optimization_plan``: an unchanged training set is a skip, unless the run carries the
``force_training`` tag (``cogniverse optimize --force-training``)."""

from cogniverse_assets.assets.optimization_plan import FORCE_TRAINING_TAG, PLAN_FILE
from cogniverse_assets.assets.training_set import TRAINING_SET_TABLE
from cogniverse_assets.planning import training_fingerprint
from cogniverse_assets.traffic import emit_traffic
from tests.cogniverse_assets.assets.test_trained_module import MODALITY_LANE, _resources


def test_force_training_overrides_only_the_unchanged_skip(tenant_env):
    tenant = tenant_env.add("force", use_synthetic_data=False, preferred_optimizer="labeled")
    emit_traffic(tenant_env.phoenix, tenant, n=45, feedback_rate=1.0, seed=111, progress=False, modules=["modality"])
    assert tenant_env.materialize(MODALITY_LANE[:3], tenant, **_resources(tenant_env)).success
    artifacts = tenant_env.artifacts
    fingerprint = training_fingerprint(artifacts.read_table(tenant, "modality", TRAINING_SET_TABLE))
    # What a version trained on this very training set leaves behind (trained_module writes the
    # plan it was trained on into the version).
    artifacts.write_json(
        artifacts.path(tenant, "modality", "modules", "v-earlier.json"),
        {"version": "v-earlier", "plan": {"training_fingerprint": fingerprint}},
    )
    artifacts.write_json(artifacts.path(tenant, "modality", "modules", "candidate.json"), {"version": "v-earlier"})
    plan_asset = MODALITY_LANE[3]

    assert tenant_env.materialize([plan_asset], tenant).success
    plan = artifacts.read_json(artifacts.path(tenant, "modality", PLAN_FILE))
    assert (plan["decision"], plan["source"], plan["forced_training"]) == ("skip", "unchanged", False)

    forced = tenant_env.materialize([plan_asset], tenant, tags={FORCE_TRAINING_TAG: "true"})
    assert forced.success
    plan = artifacts.read_json(artifacts.path(tenant, "modality", PLAN_FILE))
    assert (plan["decision"], plan["optimizer"], plan["forced_training"]) == ("train", "labeled", True)
    assert plan["reasons"][0] == f"training set unchanged ({fingerprint}), planned anyway: training was forced"
    (event,) = forced.asset_materializations_for_node(plan_asset.op.name)
    assert event.metadata["forced_training"].value is True
