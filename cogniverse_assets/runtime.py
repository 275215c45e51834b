"""The router runtime: answer queries with a tenant's deployed routing module on the configured LM,
falling back to the unoptimized module (and saying so) when nothing has been promoted."""

from __future__ import annotations

import time
from dataclasses import dataclass

import dspy

from cogniverse_resources.artifacts import ArtifactStore, load_module_payload
from cogniverse_resources.config_store import TenantConfigStore, open_config_store
from cogniverse_resources.lm import LanguageModelResource
from cogniverse_resources.tenant import validate_tenant_id
from cogniverse_assets.modules.registry import RoutingModuleSpec, get_module

UNOPTIMIZED_VERSION = "unoptimized"


def deployed_program(store: TenantConfigStore, artifacts: ArtifactStore, tenant_id: str, spec: RoutingModuleSpec) -> tuple[str, dspy.Module]:
    """(version, program) of the deployed module; the unoptimized one when nothing is deployed."""
    record = store.deployed(tenant_id, spec.name)
    if record is None or record.version == UNOPTIMIZED_VERSION:
        return UNOPTIMIZED_VERSION, spec.program()
    return record.version, spec.load_program(load_module_payload(artifacts, tenant_id, spec.name, record.version))


@dataclass
class Router:
    tenant_id: str
    spec: RoutingModuleSpec
    program: dspy.Module
    version: str
    lm: dspy.LM
    adapter: dspy.Adapter

    @property
    def is_fallback(self) -> bool:
        return self.version == UNOPTIMIZED_VERSION

    def route(self, row: dict) -> dspy.Prediction:
        with dspy.context(lm=self.lm, adapter=self.adapter):
            return self.program(**self.spec.inputs(row))


def load_router(
    tenant_id: str,
    module: str,
    lm: LanguageModelResource | None = None,
    store: TenantConfigStore | None = None,
    artifacts: ArtifactStore | None = None,
) -> Router:
    """The tenant's deployed router for ``module`` (``Router.is_fallback`` when none is deployed)."""
    validate_tenant_id(tenant_id)
    spec = get_module(module)
    lm = lm or LanguageModelResource.from_env()
    store = store or open_config_store()
    version, program = deployed_program(store, artifacts or ArtifactStore.from_env(), tenant_id, spec)
    return Router(tenant_id, spec, program, version, lm.student(), lm.adapter())


def deployed_router_decider(tenant_id: str, lm: LanguageModelResource | None = None):
    """A ``traffic`` decider that asks the tenant's deployed routers (real LM calls)."""
    routers: dict[str, Router] = {}

    def decide(spec: RoutingModuleSpec, row: dict) -> tuple[str, float, str]:
        router = routers.get(spec.name) or routers.setdefault(spec.name, load_router(tenant_id, spec.name, lm))
        prediction = router.route(row)
        # Schema-constrained JSON carries no calibrated probability; 0.8 marks "model answer".
        return spec.label_of(prediction), 0.8, router.version

    return decide


def timed_route(router: Router, row: dict) -> tuple[dspy.Prediction, float]:
    started = time.perf_counter()
    prediction = router.route(row)
    return prediction, (time.perf_counter() - started) * 1000
