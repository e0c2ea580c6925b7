"""Stored responses (state/response_records.py) and the store's blobs under them, on both
stores (`store`: in this process and in a real redis-server on 127.0.0.1): each consumer's
last N, the TTL, the size cap, another consumer's id, hostile ids and consumer names that
never reach a key as spelled, and a Redis that is down (reads answer "not stored", writes
are skipped, nothing raises)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from aiproxy_middleware import (AIProxyMiddleware, ConfigError, MemoryStore, RedisStore,
                                load_config)
from aiproxy_middleware.errors import ProxyError
from aiproxy_middleware.state.redis_link import RedisSettings
from aiproxy_middleware.state.response_records import (Record, ResponseRecords,
                                                       ResponsesSettings, previous_not_found)

ITEMS = [{"type": "message", "role": "user", "content": "hi"},
         {"type": "message", "role": "assistant", "id": "msg_1",
          "content": [{"type": "output_text", "text": "hello", "annotations": []}]}]


def response(rid: str) -> dict:
    return {"id": rid, "object": "response", "status": "completed", "output": [ITEMS[1]]}


def keys(store) -> list[str]:
    """The keys a store holds (Redis: as the server lists them)."""
    if isinstance(store, MemoryStore):
        return [*store._blobs, *store._groups]
    return list(store._test_server.command("KEYS", "*"))


@pytest.fixture
def shared(store, request):
    """The `store` fixture, with a Redis store's server at hand for a look at its keys."""
    if isinstance(store, RedisStore):
        store._test_server = request.getfixturevalue("shared_redis")
    return store


# --- blobs --------------------------------------------------------------------------------

async def test_a_blob_is_kept_replaced_and_deleted(shared):
    assert await shared.blob_get("b:1") is None
    await shared.blob_set("b:1", b"\x00one\xff", 60)
    assert await shared.blob_get("b:1") == b"\x00one\xff"
    await shared.blob_set("b:1", b"two", 60)
    assert await shared.blob_get("b:1") == b"two"
    assert await shared.blob_delete("b:1") is True
    assert await shared.blob_get("b:1") is None
    assert await shared.blob_delete("b:1") is False


async def test_a_blob_expires(shared):
    await shared.blob_set("b:short", b"x", 0.05)
    await shared.blob_set("b:long", b"y", 60)
    await asyncio.sleep(0.15)
    assert await shared.blob_get("b:short") is None
    assert await shared.blob_get("b:long") == b"y"
    assert await shared.blob_delete("b:short") is False


async def test_a_group_keeps_its_newest_members(shared):
    for i in range(5):
        await shared.blob_set(f"b:{i}", str(i).encode(), 60, group="g:a", keep=3)
    await shared.blob_set("b:other", b"o", 60, group="g:b", keep=3)
    assert [await shared.blob_get(f"b:{i}") for i in range(5)] == [None, None, b"2", b"3", b"4"]
    await shared.blob_set("b:2", b"again", 60, group="g:a", keep=3)  # now the newest
    await shared.blob_set("b:5", b"5", 60, group="g:a", keep=3)
    assert [await shared.blob_get(f"b:{i}") for i in (2, 3, 4, 5)] == [b"again", None, b"4", b"5"]
    assert await shared.blob_delete("b:4", group="g:a") is True
    await shared.blob_set("b:6", b"6", 60, group="g:a", keep=3)
    assert await shared.blob_get("b:2") == b"again"  # the deleted one left room
    assert await shared.blob_get("b:other") == b"o"


async def test_memory_blobs_are_bounded_by_count_and_bytes():
    store = MemoryStore(max_blobs=10, max_blob_bytes=1000)
    for i in range(50):
        await store.blob_set(f"n:{i}", b"x", 60)
        assert len(store._blobs) <= 10
    assert await store.blob_get("n:0") is None and await store.blob_get("n:49") == b"x"
    for i in range(5):
        await store.blob_set(f"big:{i}", b"y" * 400, 60, group="g", keep=100)
        assert store._blob_bytes <= 1000
    assert await store.blob_get("big:4") == b"y" * 400
    assert await store.blob_get("big:2") is None
    await store.blob_set("huge", b"z" * 1001, 60)  # larger than the whole bound: not kept
    assert await store.blob_get("huge") is None and await store.blob_get("big:4") is not None
    assert set(store._groups["g"]) <= set(store._blobs)  # evicted members left their group


async def test_memory_blobs_drop_expired_ones_before_live_ones():
    store = MemoryStore(max_blobs=10)
    for i in range(9):
        await store.blob_set(f"short:{i}", b"s", 0.01, group=f"g:{i}", keep=1)
    await store.blob_set("live", b"l", 60)
    await asyncio.sleep(0.02)
    await store.blob_set("new", b"n", 60)
    assert await store.blob_get("live") == b"l"
    assert len(store._blobs) == 2 and not store._groups


async def test_a_redis_outage_reads_nothing_and_skips_writes(redis_server, caplog):
    store = RedisStore(RedisSettings("127.0.0.1", redis_server.port, timeout_ms=500))
    records = ResponseRecords(store)
    try:
        assert await records.save("alice", "resp_1", ITEMS, response("resp_1"))
        redis_server.stop()
        with caplog.at_level(logging.WARNING):
            assert await records.load("alice", "resp_1") is None
            assert not records.reachable
            await store.blob_set("b", b"x", 60)
            assert await store.blob_delete("b") is False
            assert await records.save("alice", "resp_2", ITEMS, response("resp_2"))
        assert "Traceback" not in caplog.text
        redis_server.start()
        store.link._down_until = 0.0  # (no wait for the retry interval)
        assert await records.load("alice", "resp_2") is None  # an empty server: not kept
        assert records.reachable
    finally:
        await store.aclose()


# --- records ------------------------------------------------------------------------------

async def test_a_record_is_saved_loaded_and_deleted(shared):
    records = ResponseRecords(shared)
    assert await records.save("alice", "resp_abc", ITEMS, response("resp_abc")) is True
    record = await records.load("alice", "resp_abc")
    assert record == Record("resp_abc", ITEMS, response("resp_abc"))
    assert await records.delete("alice", "resp_abc") is True
    assert await records.load("alice", "resp_abc") is None
    assert await records.delete("alice", "resp_abc") is False


async def test_another_consumers_id_is_not_found(shared):
    records = ResponseRecords(shared)
    await records.save("alice", "resp_a", ITEMS, response("resp_a"))
    assert await records.load("bob", "resp_a") is None
    assert await records.delete("bob", "resp_a") is False
    assert await records.load(None, "resp_a") is None
    assert await records.load("alice", "resp_a") is not None  # bob's delete did nothing


async def test_without_identity_everyone_shares_one_namespace(shared):
    records = ResponseRecords(shared)
    await records.save(None, "resp_n", ITEMS, response("resp_n"))
    assert await records.load("", "resp_n") is not None
    assert await records.load(None, "resp_n") is not None
    assert await records.load("alice", "resp_n") is None


async def test_each_consumer_keeps_its_last_n(shared):
    records = ResponseRecords(shared, max_per_consumer=2)
    for i in range(4):
        await records.save("alice", f"resp_{i}", ITEMS, response(f"resp_{i}"))
    await records.save("bob", "resp_b", ITEMS, response("resp_b"))
    assert [await records.load("alice", f"resp_{i}") is not None for i in range(4)] == [
        False, False, True, True]
    assert await records.load("bob", "resp_b") is not None
    assert len(keys(shared)) == 2 + 1 + 2  # alice's two, bob's one, and their two groups


async def test_concurrent_saves_keep_exactly_the_last_n(shared):
    records = ResponseRecords(shared, max_per_consumer=5)
    await asyncio.gather(*(records.save("alice", f"resp_{i}", ITEMS, response(f"resp_{i}"))
                           for i in range(30)))
    kept = [i for i in range(30) if await records.load("alice", f"resp_{i}") is not None]
    assert len(kept) == 5
    assert len(keys(shared)) == 5 + 1  # no record outside its group, none left behind


async def test_records_expire(shared):
    records = ResponseRecords(shared, ttl=0.05)
    await records.save("alice", "resp_t", ITEMS, response("resp_t"))
    await asyncio.sleep(0.15)
    assert await records.load("alice", "resp_t") is None
    if isinstance(shared, RedisStore):
        assert keys(shared) == []  # the group expired with its newest member


async def test_a_record_over_the_cap_is_not_stored(shared, caplog):
    records = ResponseRecords(shared, max_bytes=2000)
    big = [{"type": "message", "role": "user", "content": "secret " * 400}]
    with caplog.at_level(logging.WARNING):
        assert await records.save("alice", "resp_big", big, response("resp_big")) is False
    assert await records.load("alice", "resp_big") is None
    assert "resp_big" in caplog.text and "maxBytes" in caplog.text
    assert "secret" not in caplog.text
    assert keys(shared) == []


async def test_storing_can_be_turned_off(shared):
    records = ResponseRecords(shared, max_per_consumer=0)
    assert await records.save("alice", "resp_off", ITEMS, response("resp_off")) is False
    assert await records.load("alice", "resp_off") is None


@pytest.mark.parametrize("rid", ["../resp_a", "resp_a/../b", "resp_a\x00", "resp_", "resp_a b",
                                 "resp_" + "a" * 200, "resp_%2F", "msg_1", "", "RESP_a"])
async def test_hostile_ids_never_reach_the_store(rid):
    store = MemoryStore()
    records = ResponseRecords(store)
    assert await records.save("alice", rid, ITEMS, response("x")) is False
    assert await records.load("alice", rid) is None
    assert await records.delete("alice", rid) is False
    assert not store._blobs


async def test_keys_hold_no_consumer_name_or_id_as_spelled(shared):
    records = ResponseRecords(shared)
    hostile = ["alice:responses:c", "a\r\nDEL *", "../..", "*", "{x}", "\x00"]
    for name in hostile:
        await records.save(name, "resp_visible", ITEMS, response("resp_visible"))
    stored = keys(shared)
    assert len(stored) == 2 * len(hostile)  # none collided with another
    for key in stored:
        assert "resp_visible" not in key and "alice" not in key and "\r" not in key
    for name in hostile:
        assert await records.load(name, "resp_visible") is not None


async def test_a_store_without_blobs_keeps_responses_in_process():
    class Old:  # a SharedStore written before blobs
        reachable = True

    records = ResponseRecords(Old())
    await records.save("a", "resp_1", ITEMS, response("resp_1"))
    assert await records.load("a", "resp_1") is not None


async def test_previous_is_the_record_or_a_400_naming_the_field(shared):
    records = ResponseRecords(shared)
    await records.save("alice", "resp_p", ITEMS, response("resp_p"))
    assert (await records.previous("alice", "resp_p")).items == ITEMS
    for consumer, rid in (("bob", "resp_p"), ("alice", "resp_q"), ("alice", "../x"),
                          ("alice", 42)):
        with pytest.raises(ProxyError) as caught:
            await records.previous(consumer, rid)
        assert caught.value.status == 400
        assert caught.value.param == "previous_response_id"


async def test_previous_while_redis_is_down_is_a_503(redis_server):
    store = RedisStore(RedisSettings("127.0.0.1", redis_server.port, timeout_ms=500))
    records = ResponseRecords(store)
    try:
        redis_server.stop()
        with pytest.raises(ProxyError) as caught:
            await records.previous("alice", "resp_p")
        assert caught.value.status == 503
    finally:
        await store.aclose()


def test_a_missing_previous_response_is_a_400_naming_the_field():
    error = previous_not_found("resp_gone")
    assert error.status == 400 and error.param == "previous_response_id"
    assert "resp_gone" in error.message
    assert "\x00" not in previous_not_found("resp_\x00").message


# --- the config's `responses:` ------------------------------------------------------------

HIGRESS = {"provider": {"type": "openai", "apiTokens": ["sk-test-0123456789"]}}
APISIX = {"routes": [{"uri": "/v1/responses", "plugins": {"ai-proxy": {
    "provider": "openai", "auth": {"header": {"Authorization": "Bearer sk-test"}}}}}]}


@pytest.mark.parametrize("base", [HIGRESS, APISIX], ids=["higress", "apisix"])
def test_the_responses_section_in_both_dialects(base):
    assert load_config(base).responses == ResponsesSettings(86_400.0, 100, 4 * 1024 * 1024)
    config = load_config({**base, "responses": {"ttl": 600, "maxPerConsumer": 5,
                                                "maxBytes": 65536}})
    assert config.responses == ResponsesSettings(600.0, 5, 65536)


@pytest.mark.parametrize(("section", "path"), [
    ({"ttl": 0}, "responses.ttl"), ({"maxPerConsumer": -1}, "responses.maxPerConsumer"),
    ({"maxBytes": 10}, "responses.maxBytes"), ({"maxBytes": "1MiB"}, "responses.maxBytes"),
    ({"max_bytes": 2048}, "responses.max_bytes"), ("on", "responses")])
@pytest.mark.parametrize("base", [HIGRESS, APISIX], ids=["higress", "apisix"])
def test_a_bad_responses_section_names_its_field(base, section, path):
    with pytest.raises(ConfigError) as caught:
        load_config({**base, "responses": section})
    assert str(caught.value).startswith(f"{path}: ")


async def test_the_middleware_keeps_responses_in_its_store(redis_server):
    plain = AIProxyMiddleware(None, {**HIGRESS, "responses": {"maxPerConsumer": 7}})
    assert plain.services.responses is plain.responses
    assert plain.responses.store is plain.store and plain.responses.max_per_consumer == 7
    shared = AIProxyMiddleware(None, {**APISIX, "redis": {"url": redis_server.url}})
    try:
        assert isinstance(shared.responses.store, RedisStore)
        await shared.responses.save("a", "resp_r", ITEMS, response("resp_r"))
        assert len(redis_server.command("KEYS", "aiproxy:responses:*")) == 2
    finally:
        await shared.aclose()
