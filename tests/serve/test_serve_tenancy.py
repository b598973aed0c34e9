"""API keys (Bearer, constant-time compare), per-tenant cache isolation (keys and cache_salt), tenant-bounded
flushes and admin keys, and /metrics and the API docs behind the key."""

from __future__ import annotations

import httpx
import openai
import pytest
from serve_harness import serve_fake

from trellis_jax.serve.tenancy import Caller, Tenancy

KEYS = ("key-alpha-0123456789", "key-beta-9876543210")
ADMIN = "key-admin-5555555555"
PROMPT = "Tenant A's private prefix that is long enough to fill a few pages. "
CLOSED_WITH_KEYS = ("/metrics", "/openapi.json", "/docs", "/redoc")
DOCS = ("/openapi.json", "/docs", "/redoc")


@pytest.fixture(scope="module")
def keyed_server():
    server, engine = serve_fake(api_keys=KEYS, admin_api_keys=(ADMIN,))
    with server:
        yield server
    engine.shutdown()


@pytest.fixture(scope="module")
def opened_server():
    server, engine = serve_fake(api_keys=KEYS, public_metrics=True, open_docs=True)
    with server:
        yield server
    engine.shutdown()


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def client_for(server, key):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=30)


def cached(client, prompt, **extra):
    r = client.completions.create(model="fake-model", prompt=prompt, max_tokens=1, temperature=0, **extra)
    return r.usage.prompt_tokens_details.cached_tokens


def test_missing_and_wrong_keys_are_401(keyed_server):
    r = httpx.get(keyed_server.url + "/v1/models")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert r.headers["www-authenticate"] == "Bearer"
    with pytest.raises(openai.AuthenticationError):
        client_for(keyed_server, "key-alpha-0123456788").models.list()


def test_valid_key_is_accepted_and_health_stays_open(keyed_server):
    assert client_for(keyed_server, KEYS[1]).models.list().data[0].id == "fake-model"
    assert httpx.get(keyed_server.url + "/health").status_code == 200


def test_tenant_b_never_hits_tenant_a_prefix(keyed_server):
    a, b = client_for(keyed_server, KEYS[0]), client_for(keyed_server, KEYS[1])
    cached(a, PROMPT + "1")
    assert cached(a, PROMPT + "2") > 0  # A reuses its own prefix
    assert cached(b, PROMPT + "3") == 0  # B sending A's exact prefix gets nothing from A's cache
    assert cached(b, PROMPT + "4") > 0  # ... but reuses its own


def test_cache_salt_splits_a_tenant(fake_server):
    client = openai.OpenAI(base_url=fake_server.url + "/v1", api_key="x", max_retries=0)
    prompt = "A salted conversation prefix, long enough for several pages. "
    cached(client, prompt + "1", extra_body={"cache_salt": "user-1"})
    assert cached(client, prompt + "2", extra_body={"cache_salt": "user-2"}) == 0
    assert cached(client, prompt + "3") == 0  # unsalted requests do not see salted entries either
    assert cached(client, prompt + "4", extra_body={"cache_salt": "user-1"}) > 0


def test_namespaces_hash_the_salt_and_keep_tenants_apart():
    tenancy = Tenancy(KEYS)
    ns_a = tenancy.authenticate(f"Bearer {KEYS[0]}").namespace
    ns_b = tenancy.authenticate(f"bearer {KEYS[1]}").namespace
    assert ns_a != ns_b
    salted = Tenancy.namespace(ns_a, "secret-salt")
    assert "secret-salt" not in salted and salted != Tenancy.namespace(ns_b, "secret-salt")


def test_single_key_uses_the_shared_namespace():
    assert Tenancy(["only"]).authenticate("Bearer only") == Caller("", is_admin=False)


def test_without_keys_everyone_is_the_local_admin():
    assert Tenancy().authenticate(None) == Caller("", is_admin=True)


def test_an_admin_key_is_a_tenant_of_its_own_with_admin_rights():
    tenancy = Tenancy(KEYS, [ADMIN])
    admin = tenancy.authenticate(f"Bearer {ADMIN}")
    assert admin.is_admin and not tenancy.authenticate(f"Bearer {KEYS[0]}").is_admin
    assert admin.namespace not in {tenancy.authenticate(f"Bearer {k}").namespace for k in KEYS}


def test_duplicate_keys_are_rejected():
    with pytest.raises(ValueError, match="twice"):
        Tenancy(["k", "k"])
    with pytest.raises(ValueError, match="twice"):
        Tenancy(["k"], ["k"])


def flush(server, key):
    r = httpx.post(server.url + "/flush_cache", headers=bearer(key))
    assert r.status_code == 200
    return r.json()["flushed_pages"]


def test_flush_cache_needs_a_key(keyed_server):
    assert httpx.post(keyed_server.url + "/flush_cache").status_code == 401


def test_tenant_b_flush_leaves_tenant_a_cached(keyed_server):
    a, b = client_for(keyed_server, KEYS[0]), client_for(keyed_server, KEYS[1])
    cached(a, PROMPT + "b flushes 1")
    cached(b, "Tenant B's own prefix, long enough for a few pages too. 1")
    assert flush(keyed_server, KEYS[1]) > 0  # B's own pages went
    assert cached(a, PROMPT + "b flushes 2") > 0


def test_a_tenant_flush_reaches_its_own_salted_prefixes(keyed_server):
    a = client_for(keyed_server, KEYS[0])
    cached(a, PROMPT + "salted 1", extra_body={"cache_salt": "conversation-7"})
    flush(keyed_server, KEYS[0])
    assert cached(a, PROMPT + "salted 2", extra_body={"cache_salt": "conversation-7"}) == 0


def test_an_admin_flush_empties_every_tenant(keyed_server):
    a, b = client_for(keyed_server, KEYS[0]), client_for(keyed_server, KEYS[1])
    cached(a, PROMPT + "admin 1")
    cached(b, PROMPT + "admin 1")
    assert flush(keyed_server, ADMIN) > 0
    assert cached(a, PROMPT + "admin 2") == 0 and cached(b, PROMPT + "admin 2") == 0


def test_an_admin_key_may_generate_like_any_key(keyed_server):
    admin = client_for(keyed_server, ADMIN)
    cached(admin, PROMPT + "as admin 1")
    assert cached(admin, PROMPT + "as admin 2") > 0


@pytest.mark.parametrize("path", CLOSED_WITH_KEYS)
def test_metrics_and_docs_answer_401_without_a_key_when_keys_are_configured(keyed_server, path):
    assert httpx.get(keyed_server.url + path).status_code == 401


@pytest.mark.parametrize("path", DOCS)
def test_any_key_reads_the_docs(keyed_server, path):
    assert httpx.get(keyed_server.url + path, headers=bearer(KEYS[1])).status_code == 200


def test_once_admin_keys_exist_only_they_read_every_tenant_s_metrics(keyed_server):
    tenant = httpx.get(keyed_server.url + "/metrics", headers=bearer(KEYS[1]))
    assert tenant.status_code == 403 and tenant.json()["error"]["code"] == "admin_key_required"
    assert httpx.get(keyed_server.url + "/metrics", headers=bearer(ADMIN)).status_code == 200


def test_the_document_lists_403_for_metrics_once_admin_keys_exist(keyed_server):
    schema = httpx.get(keyed_server.url + "/openapi.json", headers=bearer(ADMIN)).json()
    assert {"401", "403"} <= set(schema["paths"]["/metrics"]["get"]["responses"])


def test_without_admin_keys_any_key_reads_the_metrics():
    tenancy = Tenancy(KEYS)
    assert tenancy.authenticate_operator(f"Bearer {KEYS[1]}").namespace == "key1"


@pytest.mark.parametrize("path", CLOSED_WITH_KEYS)
def test_flags_open_metrics_and_docs_again(opened_server, path):
    assert httpx.get(opened_server.url + path).status_code == 200


def test_opening_metrics_and_docs_keeps_the_api_closed(opened_server):
    assert httpx.get(opened_server.url + "/v1/models").status_code == 401


@pytest.mark.parametrize("path", CLOSED_WITH_KEYS)
def test_without_keys_metrics_and_docs_stay_open(fake_server, path):
    assert fake_server.get(path).status_code == 200
