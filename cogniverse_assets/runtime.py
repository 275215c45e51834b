"""The router runtime: answer queries with a tenant's deployed routing module on the configured LM,
falling back to the unoptimized module (and saying so) when nothing has been promoted.

A deployed version may carry a distilled fast path (``fast_path.py``): queries it is confident
about are answered by the classifier without an LM call (``path == "fast"``, confidence = its
probability); the rest go to the LM module (``path == "lm"``)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cached_property

import dspy

from cogniverse_assets.answer_memory import program_key
from cogniverse_assets.fast_path import FastPath
from cogniverse_assets.modules.calibrated import CalibratedLabels
from cogniverse_assets.modules.registry import RoutingModuleSpec, get_module
from cogniverse_resources.artifacts import ArtifactStore, load_module_payload
from cogniverse_resources.config_store import TenantConfigStore, open_config_store
from cogniverse_resources.lm import LanguageModelResource, PromptLayout, checked_layout
from cogniverse_resources.tenant import validate_tenant_id

UNOPTIMIZED_VERSION = "unoptimized"


@dataclass(frozen=True)
class DeployedModule:
    version: str
    program: dspy.Module
    fast_path: FastPath | None
    # The local adapter's layout this version is served with (``LanguageModelResource.adapter``).
    prompt_layout: PromptLayout = "reminder_last"


def module_from_payload(spec: RoutingModuleSpec, payload: dict) -> DeployedModule:
    """A stored module version as (program, fast path, prompt layout); loading executes no stored code."""
    # Only what serving needs is read: versions stored by earlier releases carry fewer fields, and
    # those were all compiled and gated with DSPy's layout.
    fast_path = FastPath.from_state(payload["fast_path"]) if payload.get("fast_path") else None
    try:
        layout = checked_layout(payload.get("prompt_layout", "reminder_last"))
    except ValueError as error:
        raise ValueError(f"{spec.name} version {payload.get('version')!r} records {error}") from None
    return DeployedModule(str(payload["version"]), spec.load_program(payload), fast_path, layout)


def unoptimized_module(spec: RoutingModuleSpec) -> DeployedModule:
    """The module as the registry defines it, served with the registry's prompt layout."""
    return DeployedModule(UNOPTIMIZED_VERSION, spec.program(), None, spec.prompt_layout)


def deployed_module(
    store: TenantConfigStore, artifacts: ArtifactStore, tenant_id: str, spec: RoutingModuleSpec
) -> DeployedModule:
    """The deployed module version; the unoptimized one when nothing is deployed."""
    record = store.deployed(tenant_id, spec.name)
    if record is None or record.version == UNOPTIMIZED_VERSION:
        return unoptimized_module(spec)
    return module_from_payload(spec, load_module_payload(artifacts, tenant_id, spec.name, record.version))


@dataclass(frozen=True)
class RoutedAnswer:
    label: str
    path: str  # "fast" | "lm"
    # The fast path's probability of its answer; on the LM path, the module's own probability of
    # its answer where it answers in process (``calibrated_state``), else the fast path's
    # probability of the LM's answer when the version has one (None otherwise: no constant stands
    # in for it).
    confidence: float | None
    prediction: dspy.Prediction
    # On the LM path, the router's ``program_key``: what the span records so that an evaluation of
    # the same program can take this answer as its own (``routing.program_key``).
    program_key: str | None = None


@dataclass
class Router:
    tenant_id: str
    spec: RoutingModuleSpec
    program: dspy.Module
    version: str
    lm: dspy.LM
    adapter: dspy.Adapter
    fast_path: FastPath | None = None

    @property
    def is_fallback(self) -> bool:
        return self.version == UNOPTIMIZED_VERSION

    @cached_property
    def program_key(self) -> str:
        """What decides the LM path's answer besides the inputs (``answer_memory.program_key``)."""
        return program_key(self.spec, self.program, self.lm, self.adapter)

    def answer(self, row: dict) -> RoutedAnswer:
        inputs = self.spec.inputs(row)
        if self.fast_path is not None:
            label, probability = self.fast_path.predict(inputs)
            if probability >= self.fast_path.threshold:
                return RoutedAnswer(label, "fast", probability, dspy.Prediction(**self.spec.outputs_for(label)))
        with dspy.context(lm=self.lm, adapter=self.adapter):
            prediction = self.program(**inputs)
        label = self.spec.label_of(prediction)
        confidence = CalibratedLabels.own_probability(prediction)
        if confidence is None and self.fast_path is not None and label in self.fast_path.classes:
            confidence = float(self.fast_path.probabilities([inputs])[0][self.fast_path.classes.index(label)])
        return RoutedAnswer(label, "lm", confidence, prediction, self.program_key)

    def route(self, row: dict) -> dspy.Prediction:
        return self.answer(row).prediction

    @classmethod
    def serving(
        cls, tenant_id: str, spec: RoutingModuleSpec, deployed: DeployedModule, lm: LanguageModelResource
    ) -> Router:
        """A router answering with ``deployed`` as it is served: the student LM, the version's layout."""
        return cls(
            tenant_id,
            spec,
            deployed.program,
            deployed.version,
            lm.student(),
            lm.adapter(deployed.prompt_layout),
            deployed.fast_path,
        )


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
    deployed = deployed_module(store, artifacts or ArtifactStore.from_env(), tenant_id, spec)
    return Router.serving(tenant_id, spec, deployed, lm)


def timed_route(router: Router, row: dict) -> tuple[RoutedAnswer, float]:
    """The router's answer and how long it took, in milliseconds."""
    started = time.perf_counter()
    answer = router.answer(row)
    return answer, (time.perf_counter() - started) * 1000
