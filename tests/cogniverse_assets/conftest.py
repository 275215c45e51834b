import uuid

import dagster as dg
import pytest

from cogniverse_assets.partitions import tenants_partitions
from cogniverse_resources.artifacts import ArtifactStore
from cogniverse_resources.config_store import ConfigStoreResource
from cogniverse_resources.lm import LanguageModelResource


@pytest.fixture
def tenant_env(tmp_path, phoenix):
    """A fresh config store, artifact folder and Dagster instance; ``add(tenant)`` registers one."""

    class Env:
        def __init__(self):
            self.config_store = ConfigStoreResource(url=f"sqlite://{tmp_path}/config.sqlite")
            self.artifacts = ArtifactStore(root=str(tmp_path / "artifacts"))
            self._instance_cm = dg.instance_for_test()
            self.instance = self._instance_cm.__enter__()
            self.phoenix = phoenix

        def add(self, prefix: str, **settings) -> str:
            tenant_id = f"{prefix}-{uuid.uuid4().hex[:6]}"
            self.config_store.store().add(tenant_id, **settings)
            self.instance.add_dynamic_partitions(tenants_partitions.name, [tenant_id])
            return tenant_id

        def resources(self, **overrides):
            return {
                "phoenix": phoenix,
                "config_store": self.config_store,
                "artifacts": self.artifacts,
                "lm": LanguageModelResource(),
                **overrides,
            }

        def materialize(self, assets, tenant_id, raise_on_error=True, tags=None, **overrides):
            """One run of ``assets`` for the tenant; ``tags`` as a CLI or sensor launch would set them."""
            return dg.materialize(
                assets,
                partition_key=tenant_id,
                instance=self.instance,
                resources=self.resources(**overrides),
                raise_on_error=raise_on_error,
                tags=tags,
            )

    env = Env()
    yield env
    env._instance_cm.__exit__(None, None, None)
