import pytest
from pydantic import ValidationError

from cogniverse_resources.tenant import InvalidTenantId, RoutingConfig, validate_tenant_id
from tests.hostile_ids import HOSTILE_TENANT_IDS


@pytest.mark.parametrize("tenant_id", HOSTILE_TENANT_IDS)
def test_hostile_tenant_ids_are_rejected_with_a_message(tenant_id):
    with pytest.raises(InvalidTenantId, match="invalid tenant id"):
        validate_tenant_id(tenant_id)
    with pytest.raises(ValidationError):
        RoutingConfig(tenant_id=tenant_id)


@pytest.mark.parametrize("tenant_id", ["acme", "globex", "a", "tenant_42", "t-1", "0day", "a" * 63])
def test_valid_tenant_ids(tenant_id):
    assert validate_tenant_id(tenant_id) == tenant_id


def test_non_strings_are_rejected():
    for value in (None, 42, ["acme"]):
        with pytest.raises(InvalidTenantId):
            validate_tenant_id(value)


def test_defaults_follow_the_design():
    config = RoutingConfig(tenant_id="acme")
    assert config.model_dump() == {
        "tenant_id": "acme",
        "enable_auto_optimization": True,
        "optimization_interval_seconds": 3600,
        "min_samples_for_optimization": 100,
        "preferred_optimizer": "auto",
        "max_training_iterations": 100,
        "max_optimization_seconds": 120,
        "max_optimization_lm_calls": 50,
        "llm_annotation_budget": 0,
        "use_synthetic_data": True,
        "synthetic_data_ratio": 0.3,
        "phoenix_lookback_hours": 24,
        "min_trace_confidence": 0.7,
        "promotion_min_gain": 0.01,
        "promotion_max_class_recall_drop": 0.15,
        "phoenix_endpoint": None,
        "phoenix_api_key_env": None,
        "optimization_window": None,
        "optimization_timezone": "UTC",
    }


@pytest.mark.parametrize(
    "field, value",
    [
        ("optimization_interval_seconds", 0),
        ("min_samples_for_optimization", 0),
        ("preferred_optimizer", "adam"),
        ("max_training_iterations", -1),
        ("llm_annotation_budget", -1),
        ("synthetic_data_ratio", 1.5),
        ("synthetic_data_ratio", 1.0),
        ("phoenix_lookback_hours", 0),
        ("min_trace_confidence", 1.2),
        ("phoenix_endpoint", "ftp://phoenix:21"),
        ("phoenix_endpoint", "http://"),
        ("no_such_setting", 1),
    ],
)
def test_invalid_settings_are_rejected(field, value):
    with pytest.raises(ValidationError, match=field):
        RoutingConfig(tenant_id="acme", **{field: value})


def test_assignment_is_validated():
    config = RoutingConfig(tenant_id="acme")
    with pytest.raises(ValidationError):
        config.synthetic_data_ratio = 2.0


def test_a_refused_assignment_keeps_the_previous_value():
    config = RoutingConfig(tenant_id="acme")
    with pytest.raises(ValidationError, match="shorter than optimization_interval_seconds"):
        config.optimization_interval_seconds = 7 * 24 * 3600  # longer than the 24 h lookback
    assert config.optimization_interval_seconds == 3600
    assert config == RoutingConfig(tenant_id="acme")


def test_own_phoenix_endpoint_and_back_to_the_shared_one():
    config = RoutingConfig(tenant_id="acme", phoenix_endpoint="https://phoenix.eu.example.com")
    assert config.phoenix_endpoint == "https://phoenix.eu.example.com"
    config.phoenix_endpoint = ""
    assert config.phoenix_endpoint is None


def test_a_lookback_shorter_than_the_interval_is_refused():
    # The defaults (24 h lookback, 1 h interval) and a lookback exactly as long as the interval pass.
    RoutingConfig(tenant_id="acme")
    RoutingConfig(tenant_id="acme", phoenix_lookback_hours=2, optimization_interval_seconds=7200)
    with pytest.raises(ValidationError, match="phoenix_lookback_hours=1 .* shorter than optimization_interval_seconds"):
        RoutingConfig(tenant_id="acme", phoenix_lookback_hours=1, optimization_interval_seconds=7200)
    with pytest.raises(ValidationError, match="raise phoenix_lookback_hours"):
        RoutingConfig(tenant_id="acme", optimization_interval_seconds=2 * 24 * 3600)


def test_the_config_store_refuses_a_lookback_shorter_than_the_interval(tmp_path):
    from cogniverse_resources.config_store import SQLiteConfigStore

    store = SQLiteConfigStore(tmp_path / "config.sqlite")
    store.add("acme")
    with pytest.raises(ValidationError, match="shorter than optimization_interval_seconds"):
        store.update("acme", optimization_interval_seconds=25 * 3600)
    with pytest.raises(ValidationError, match="shorter than optimization_interval_seconds"):
        store.update("acme", phoenix_lookback_hours=1, optimization_interval_seconds=7200)
    assert store.get("acme") == RoutingConfig(tenant_id="acme")  # nothing was written
    # Both together, in an order that is valid at the end, are accepted.
    assert (
        store.update("acme", phoenix_lookback_hours=48, optimization_interval_seconds=36 * 3600).phoenix_lookback_hours
        == 48
    )
