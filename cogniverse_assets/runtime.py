"""The router runtime: answer queries with a tenant's routing module on the configured LM."""

from __future__ import annotations

from dataclasses import dataclass

import dspy

from cogniverse_resources.lm import LanguageModelResource
from cogniverse_resources.tenant import validate_tenant_id
from cogniverse_assets.modules.registry import RoutingModuleSpec, get_module

UNOPTIMIZED_VERSION = "unoptimized"


@dataclass
class Router:
    tenant_id: str
    spec: RoutingModuleSpec
    program: dspy.Module
    version: str
    lm: dspy.LM
    adapter: dspy.Adapter

    def route(self, row: dict) -> dspy.Prediction:
        with dspy.context(lm=self.lm, adapter=self.adapter):
            return self.program(**self.spec.inputs(row))


def load_router(tenant_id: str, module: str, lm: LanguageModelResource | None = None) -> Router:
    """The tenant's router for ``module``.

    There is no deployment registry yet, so every tenant runs the unoptimized module and the
    version says so.
    """
    validate_tenant_id(tenant_id)
    spec = get_module(module)
    lm = lm or LanguageModelResource()
    return Router(tenant_id, spec, spec.program(), UNOPTIMIZED_VERSION, lm.student(), lm.adapter())


def deployed_router_decider(tenant_id: str, lm: LanguageModelResource | None = None):
    """A ``traffic`` decider that asks the tenant's routers (real LM calls)."""
    routers: dict[str, Router] = {}

    def decide(spec: RoutingModuleSpec, row: dict) -> tuple[str, float, str]:
        router = routers.get(spec.name) or routers.setdefault(spec.name, load_router(tenant_id, spec.name, lm))
        prediction = router.route(row)
        # Schema-constrained JSON carries no calibrated probability; 0.8 marks "model answer".
        return spec.label_of(prediction), 0.8, router.version

    return decide
