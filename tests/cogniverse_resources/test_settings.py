"""The one mapping from environment variables to resource fields, and its two readers."""

import dagster as dg
import pytest

from cogniverse_resources import settings, stack
from cogniverse_resources.artifacts import ArtifactStore, DSPyModuleIOManager
from cogniverse_resources.config_store import ConfigStoreResource
from cogniverse_resources.content import ContentBackendResource
from cogniverse_resources.lm import LOCAL_MODEL, LanguageModelResource
from cogniverse_resources.phoenix import PhoenixResource

RESOURCES = (
    PhoenixResource,
    LanguageModelResource,
    ConfigStoreResource,
    ContentBackendResource,
    ArtifactStore,
    DSPyModuleIOManager,
)


def test_every_mapped_field_exists_on_its_resource():
    assert set(settings.RESOURCE_ENV) == {resource.__name__ for resource in RESOURCES}
    for resource in RESOURCES:
        assert set(settings.RESOURCE_ENV[resource.__name__]) <= set(resource.model_fields), resource.__name__


def test_phoenix_endpoint_falls_back_to_the_collector_endpoint():
    collector = {"PHOENIX_ENDPOINT": "", "PHOENIX_COLLECTOR_ENDPOINT": "http://collector:6006"}
    assert settings.env_values(PhoenixResource, collector) == {"endpoint": "http://collector:6006"}
    assert settings.env_vars(PhoenixResource, collector) == {"endpoint": dg.EnvVar("PHOENIX_COLLECTOR_ENDPOINT")}
    both = {**collector, "PHOENIX_ENDPOINT": "http://phoenix:6006"}
    assert PhoenixResource.from_env(both).endpoint == "http://phoenix:6006"
    assert settings.env_vars(PhoenixResource, both) == {"endpoint": dg.EnvVar("PHOENIX_ENDPOINT")}


def test_both_readers_see_the_same_variables():
    environ = {
        "VESPA_URL": "http://vespa:8080",
        "VESPA_SCHEMA": "media",
        "VESPA_RANK_PROFILE": "",
        "VESPA_FIELD_MAP": '{"title": "headline"}',
        "ROUTER_OPTIMIZER_TEACHER_KEY": "sk-x",
    }
    for resource in RESOURCES:
        assert set(settings.env_values(resource, environ)) == set(settings.env_vars(resource, environ))
    content = settings.env_vars(ContentBackendResource, environ)
    assert content["vespa_url"] == dg.EnvVar("VESPA_URL") and content["vespa_schema"] == dg.EnvVar("VESPA_SCHEMA")
    assert content["vespa_field_map"] == {"title": "headline"}  # not a string: passed as its value
    assert "vespa_rank_profile" not in content  # empty = unset: the resource's default
    built = ContentBackendResource.from_env(environ)
    assert (built.vespa_schema, built.vespa_rank_profile) == ("media", "random")
    assert built.vespa_field_map == {"title": "headline"}
    with pytest.raises(ValueError, match="VESPA_FIELD_MAP"):
        settings.env_vars(ContentBackendResource, {"VESPA_FIELD_MAP": "[1, 2]"})


def test_overrides_win_and_plain_constructors_ignore_the_environment(monkeypatch):
    monkeypatch.setenv("ROUTER_OPTIMIZER_STUDENT_MODEL", "openai/gpt-x")
    monkeypatch.setenv("CONFIG_STORE_URL", "redis://store:6379/0")
    assert LanguageModelResource.from_env().student_model == "openai/gpt-x"
    assert LanguageModelResource.from_env(student_model=LOCAL_MODEL).is_local()
    assert LanguageModelResource().student_model == LOCAL_MODEL
    assert ConfigStoreResource.from_env().url == "redis://store:6379/0" and ConfigStoreResource().url == ""


def test_stack_derived_defaults_are_computed_when_a_resource_is_built(tmp_path, monkeypatch):
    monkeypatch.delenv("PHOENIX_ENDPOINT", raising=False)
    monkeypatch.delenv("PHOENIX_COLLECTOR_ENDPOINT", raising=False)
    monkeypatch.delenv("COGNIVERSE_ARTIFACTS_URL", raising=False)
    monkeypatch.setenv("PHOENIX_PORT", "16006")
    monkeypatch.setenv("COGNIVERSE_DATA_DIR", str(tmp_path))
    assert PhoenixResource.from_env().endpoint == stack.phoenix_url(16006) == PhoenixResource().endpoint
    assert ArtifactStore.from_env().root == str(tmp_path.resolve() / "artifacts")


def test_count_concurrency_is_read_as_a_number_and_a_bad_value_is_named():
    from cogniverse_resources.phoenix import PhoenixResource

    assert PhoenixResource.from_env({"COGNIVERSE_PHOENIX_COUNT_CONCURRENCY": "4"}).count_concurrency == 4
    with pytest.raises(ValueError, match="COGNIVERSE_PHOENIX_COUNT_CONCURRENCY='four': use a whole number"):
        PhoenixResource.from_env({"COGNIVERSE_PHOENIX_COUNT_CONCURRENCY": "four"})
