"""The shared Phoenix key goes to the shared Phoenix only; a tenant's own Phoenix gets the key its
config names by reference (``phoenix_api_key_env``), and only on a host the allow-list permits; a
password inside an endpoint URL never reaches an error message. Against tiny local HTTP servers
that record every request's headers (no LM, no real Phoenix)."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import httpx
import pytest
from pydantic import ValidationError

from cogniverse_assets.modules.registry import ROUTING_MODULES
from cogniverse_assets.sensors import DueTenant, LaneCheck, count_upper_bounds
from cogniverse_resources import settings
from cogniverse_resources.phoenix import PhoenixEndpointRefused, PhoenixResource, PhoenixUnavailable, host_allowed
from cogniverse_resources.redaction import redact_url, redact_urls
from cogniverse_resources.stack import free_port
from cogniverse_resources.tenant import RoutingConfig

SHARED_KEY = "phx-shared-5Rt7SECRET"
TENANT_KEY = "phx-acme-8Wq2SECRET"
PASSWORD = "pw-3Hn6SECRET"


class Recorder:
    """A local HTTP server answering like an empty Phoenix and recording each request's headers."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _answer(self, method: str) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                recorder.requests.append((method, self.path, {k.lower(): v for k, v in self.headers.items()}))
                path = self.path.split("?", 1)[0]
                if path == "/graphql":
                    body = {"data": {"projects": {"pageInfo": {"hasNextPage": False, "endCursor": None}, "edges": []}}}
                elif path.startswith("/v1/projects"):
                    body = {"data": [], "next_cursor": None}
                elif path == "/healthz":
                    body = {}
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                payload = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                self._answer("GET")

            def do_POST(self) -> None:
                self._answer("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def header_values(self) -> list[str]:
        return [value for _, _, headers in self.requests for value in headers.values()]

    def authorizations(self) -> list[str | None]:
        return [headers.get("authorization") for _, _, headers in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tenant_server():
    server = Recorder()
    yield server
    server.close()


@pytest.fixture
def shared_env(monkeypatch):
    """The shared key set in the environment too, where the Phoenix and OTel clients look for it."""
    monkeypatch.setenv("PHOENIX_API_KEY", SHARED_KEY)
    monkeypatch.setenv("PHOENIX_CLIENT_HEADERS", f"x-shared-header={SHARED_KEY}")
    monkeypatch.delenv("ACME_PHOENIX_KEY", raising=False)
    return PhoenixResource(endpoint=f"http://127.0.0.1:{free_port()}", api_key=SHARED_KEY)


def _talk_to(phoenix: PhoenixResource) -> None:
    """Every kind of request the resource makes: GraphQL counts, REST span pages, the Phoenix client."""
    now = datetime.now(timezone.utc)
    phoenix.count_labeled_routing_spans_since(["acme"], ["modality"], now - timedelta(hours=1), 0.7)
    assert list(phoenix.iter_routing_spans("acme", "modality", now - timedelta(hours=1), now)) == []
    assert phoenix.client().projects.list() == []
    assert phoenix.healthy()


def test_the_shared_key_is_never_sent_to_a_tenant_host(shared_env, tenant_server):
    tenant_phoenix = shared_env.for_tenant(tenant_server.url)
    assert tenant_phoenix.api_key is None
    _talk_to(tenant_phoenix)
    assert len(tenant_server.requests) >= 3
    assert not any(SHARED_KEY in value for value in tenant_server.header_values()), tenant_server.requests
    assert set(tenant_server.authorizations()) == {None}


def test_the_tenant_gets_its_own_key_by_reference(shared_env, tenant_server, monkeypatch):
    monkeypatch.setenv("ACME_PHOENIX_KEY", TENANT_KEY)
    config = RoutingConfig(tenant_id="acme", phoenix_endpoint=tenant_server.url, phoenix_api_key_env="ACME_PHOENIX_KEY")
    tenant_phoenix = shared_env.for_tenant(config.phoenix_endpoint, config.phoenix_api_key_env)
    _talk_to(tenant_phoenix)
    # The health check sends no key; every API request sends the tenant's, never the shared one.
    api_calls = [headers for _, path, headers in tenant_server.requests if path != "/healthz"]
    assert len(api_calls) >= 3
    assert {headers.get("authorization") for headers in api_calls} == {f"Bearer {TENANT_KEY}"}
    assert not any(SHARED_KEY in value for value in tenant_server.header_values())
    assert TENANT_KEY not in config.model_dump_json()  # the config holds the variable's name only


def test_the_shared_phoenix_keeps_the_shared_key(tenant_server):
    shared = PhoenixResource(endpoint=tenant_server.url, api_key=SHARED_KEY)
    assert shared.for_tenant(None) is shared
    assert shared.for_tenant("") is shared
    assert shared.for_tenant(tenant_server.url + "/", "ACME_PHOENIX_KEY") is shared  # the same Phoenix
    _talk_to(shared)
    api_calls = [headers for _, path, headers in tenant_server.requests if path != "/healthz"]
    assert {headers.get("authorization") for headers in api_calls} == {f"Bearer {SHARED_KEY}"}


@pytest.mark.parametrize(
    "variable, value, reason",
    [
        ("ACME_PHOENIX_KEY", None, "is not set"),
        ("PHOENIX_API_KEY", SHARED_KEY, "own settings"),
        ("ROUTER_OPTIMIZER_TEACHER_KEY", "sk-teacher", "own settings"),
        ("ACME_PHOENIX_KEY", SHARED_KEY, "holds the shared Phoenix key"),
        ("acme-key", "x", "not an environment variable name"),
    ],
)
def test_unusable_key_variables_are_refused(shared_env, tenant_server, monkeypatch, variable, value, reason):
    if value is not None and variable.isupper():
        monkeypatch.setenv(variable, value)
    with pytest.raises(PhoenixEndpointRefused, match=reason) as refused:
        shared_env.for_tenant(tenant_server.url, variable)
    assert isinstance(refused.value, PhoenixUnavailable)  # what the sensor and ingestion already handle
    assert SHARED_KEY not in str(refused.value)
    assert tenant_server.requests == []


def test_the_key_variable_name_is_validated_in_the_config():
    assert RoutingConfig(tenant_id="acme", phoenix_api_key_env="ACME_PHOENIX_KEY").phoenix_api_key_env
    assert RoutingConfig(tenant_id="acme", phoenix_api_key_env="").phoenix_api_key_env is None
    for bad in ("acme-key", "1KEY", "KEY WITH SPACE", SHARED_KEY):
        with pytest.raises(ValidationError, match="phoenix_api_key_env"):
            RoutingConfig(tenant_id="acme", phoenix_api_key_env=bad)


def test_the_allow_list_comes_from_the_one_settings_mapping():
    environ = {"COGNIVERSE_PHOENIX_ALLOWED_HOSTS": "phoenix.example.com, *.tenants.example.com"}
    phoenix = PhoenixResource.from_env(environ)
    assert phoenix.allowed_hosts == "phoenix.example.com, *.tenants.example.com"
    config = settings.env_vars(PhoenixResource, environ)["allowed_hosts"]
    assert isinstance(config, dg.EnvVar) and config.env_var_name == "COGNIVERSE_PHOENIX_ALLOWED_HOSTS"
    assert PhoenixResource.from_env({}).allowed_hosts is None


@pytest.mark.parametrize(
    "host, allowed",
    [
        ("phoenix.example.com", True),
        ("PHOENIX.example.com", True),
        ("a.tenants.example.com", True),
        ("a.b.tenants.example.com", True),
        ("tenants.example.com", False),  # *.suffix means subdomains
        ("eviltenants.example.com", False),
        ("phoenix.example.com.evil.net", False),
        ("169.254.169.254", False),
        ("127.0.0.1", False),
    ],
)
def test_host_matching(host, allowed):
    assert host_allowed(host, "phoenix.example.com, *.tenants.example.com") is allowed
    assert host_allowed(host, None) and host_allowed(host, " , ") and host_allowed(host, "*")


def test_a_host_outside_the_allow_list_is_refused_before_any_request(tenant_server, monkeypatch):
    monkeypatch.setenv("ACME_PHOENIX_KEY", TENANT_KEY)
    shared = PhoenixResource(endpoint="http://phoenix.internal:6006", api_key=SHARED_KEY, allowed_hosts="localhost")
    with pytest.raises(PhoenixEndpointRefused, match="host '127.0.0.1' is not allowed by COGNIVERSE_PHOENIX_ALLOWED"):
        shared.for_tenant(tenant_server.url, "ACME_PHOENIX_KEY")
    with pytest.raises(PhoenixEndpointRefused, match="not allowed"):
        shared.for_tenant("http://169.254.169.254/latest/meta-data")
    assert tenant_server.requests == []
    # The same server under an allowed name is used, with the tenant's key only.
    allowed = shared.for_tenant(tenant_server.url.replace("127.0.0.1", "localhost"), "ACME_PHOENIX_KEY")
    assert allowed.api_key == TENANT_KEY and allowed.allowed_hosts == "localhost"
    allowed.count_labeled_routing_spans_since(["acme"], ["modality"], None, 0.7)
    assert tenant_server.authorizations() == [f"Bearer {TENANT_KEY}"]


def test_the_sensor_reports_a_refused_tenant_and_counts_the_others(tenant_server, monkeypatch):
    monkeypatch.delenv("PHOENIX_API_KEY", raising=False)
    shared = PhoenixResource(endpoint=tenant_server.url, allowed_hosts="phoenix.example.com")
    lookback = datetime.now(timezone.utc) - timedelta(hours=24)

    def due(config: RoutingConfig) -> DueTenant:
        lanes = tuple(LaneCheck(config.tenant_id, module, None, None) for module in ROUTING_MODULES)
        return DueTenant(config, lanes, lookback)

    good = due(RoutingConfig(tenant_id="good", min_samples_for_optimization=1))
    rogue = due(RoutingConfig(tenant_id="rogue", phoenix_endpoint="http://169.254.169.254/"))
    bounds = count_upper_bounds(shared, [good, rogue])
    assert list(bounds.unreachable) == ["rogue"] and "not allowed" in bounds.unreachable["rogue"]
    assert all(lane.verdict and lane.new_labeled == 0 for lane in good.lanes)  # counted on the shared Phoenix
    assert len(tenant_server.requests) == 1


def test_credentials_in_a_tenant_endpoint_are_refused_and_never_shown(shared_env):
    endpoint = f"https://user:{PASSWORD}@phoenix.acme.example.com"
    with pytest.raises(ValidationError) as invalid:
        RoutingConfig(tenant_id="acme", phoenix_endpoint=endpoint)
    assert "phoenix_api_key_env" in str(invalid.value) and PASSWORD not in str(invalid.value)
    config = RoutingConfig(tenant_id="acme")
    with pytest.raises(ValidationError) as invalid:
        config.phoenix_endpoint = endpoint
    assert PASSWORD not in str(invalid.value) and config.phoenix_endpoint is None
    # A config stored before this rule existed is refused at use, without the password.
    with pytest.raises(PhoenixEndpointRefused, match="carries credentials") as refused:
        shared_env.for_tenant(endpoint)
    assert PASSWORD not in str(refused.value) and "https://***@phoenix.acme.example.com" in str(refused.value)


def test_credentials_in_the_shared_endpoint_never_reach_errors_or_urls(tenant_server):
    closed = f"http://admin:{PASSWORD}@127.0.0.1:{free_port()}"
    phoenix = PhoenixResource(endpoint=closed)
    assert PASSWORD not in phoenix.redacted_endpoint and phoenix.redacted_endpoint.startswith("http://***@127.0.0.1")
    with pytest.raises(PhoenixUnavailable) as unreachable:
        phoenix.count_labeled_routing_spans_since(["acme"], ["modality"], None, 0.7)
    assert PASSWORD not in str(unreachable.value)
    now = datetime.now(timezone.utc)
    with pytest.raises(httpx.HTTPError) as failed:  # ingestion wraps this error's text into its own
        list(phoenix.iter_routing_spans("acme", "modality", now - timedelta(hours=1), now))
    assert PASSWORD not in str(failed.value) and PASSWORD not in str(failed.value.request.url)
    # Against a live server the userinfo still authenticates (as a header, not in the URL).
    live = PhoenixResource(endpoint=tenant_server.url.replace("http://", f"http://admin:{PASSWORD}@"))
    live.count_labeled_routing_spans_since(["acme"], ["modality"], None, 0.7)
    assert tenant_server.authorizations()[0].startswith("Basic ")
    assert all(PASSWORD not in path for _, path, _ in tenant_server.requests)


def test_redact_url():
    assert redact_url(f"https://user:{PASSWORD}@host:8443/p?q=1") == "https://***@host:8443/p?q=1"
    assert redact_url("https://host/a@b") == "https://host/a@b"  # an "@" in the path is not userinfo
    assert redact_url("http://host:6006") == "http://host:6006"
    assert redact_url(None) is None
    text = f"Client error '401' for url 'https://u:{PASSWORD}@h.example/v1/x' (see http://a@b/c)"
    assert redact_urls(text) == "Client error '401' for url 'https://***@h.example/v1/x' (see http://***@b/c)"


def test_the_tracer_never_sends_the_shared_key_to_a_tenant_host(shared_env, tenant_server):
    from cogniverse_resources.tracer import RoutingDecision, RoutingTracer

    tracer = RoutingTracer(shared_env.for_tenant(tenant_server.url), "acme")
    tracer.record(RoutingDecision("modality", "a podcast", "audio", 0.9, 12.0, "v1"))
    tracer.shutdown()  # flushes the span to the tenant's server
    assert [path for _, path, _ in tenant_server.requests] == ["/v1/traces"]
    assert not any(SHARED_KEY in value for value in tenant_server.header_values())
