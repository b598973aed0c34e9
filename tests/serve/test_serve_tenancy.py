"""API keys (Bearer, constant-time compare) and per-tenant cache isolation (keys and cache_salt)."""

from __future__ import annotations

import httpx
import openai
import pytest
from serve_harness import serve_fake

from trellis_jax.serve.tenancy import Tenancy

KEYS = ("key-alpha-0123456789", "key-beta-9876543210")
PROMPT = "Tenant A's private prefix that is long enough to fill a few pages. "


@pytest.fixture(scope="module")
def keyed_server():
    server, engine = serve_fake(api_keys=KEYS)
    with server:
        yield server
    engine.shutdown()


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
    ns_a = tenancy.authenticate(f"Bearer {KEYS[0]}")
    ns_b = tenancy.authenticate(f"bearer {KEYS[1]}")
    assert ns_a != ns_b
    salted = Tenancy.namespace(ns_a, "secret-salt")
    assert "secret-salt" not in salted and salted != Tenancy.namespace(ns_b, "secret-salt")


def test_single_key_uses_the_shared_namespace():
    assert Tenancy(["only"]).authenticate("Bearer only") == ""


def test_duplicate_keys_are_rejected():
    with pytest.raises(ValueError, match="twice"):
        Tenancy(["k", "k"])


def test_flush_cache_needs_a_key_and_makes_the_next_request_start_cold(keyed_server):
    a = client_for(keyed_server, KEYS[0])
    cached(a, PROMPT + "flush 1")
    assert cached(a, PROMPT + "flush 2") > 0
    assert httpx.post(keyed_server.url + "/flush_cache").status_code == 401
    r = httpx.post(keyed_server.url + "/flush_cache", headers={"Authorization": f"Bearer {KEYS[1]}"})
    assert r.status_code == 200 and r.json()["flushed_pages"] > 0
    assert cached(a, PROMPT + "flush 3") == 0
