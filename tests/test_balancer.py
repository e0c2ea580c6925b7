"""The ai-proxy-multi balancer: smooth weighted round-robin, priorities, health, chash."""

from __future__ import annotations

from collections import Counter

import msgspec
import pytest

from aiproxy_middleware.config.apisix import schema as apisix_schema
from aiproxy_middleware.runtime.balancer import Balancer, Member


def firsts(balancer: Balancer, n: int, **kwargs: object) -> str:
    """The first choice of n successive requests, as member names joined."""
    return "".join(balancer.members[balancer.order(**kwargs)[0]].name for _ in range(n))


def test_weights_4_1_give_8_2_interleaved_like_nginx():
    b = Balancer([Member("a", 4), Member("b", 1)])
    picks = firsts(b, 10)
    assert Counter(picks) == {"a": 8, "b": 2}
    assert picks == "aabaa" * 2  # nginx's smooth sequence, not aaaab


def test_weights_5_1_1_follow_nginx_sequence():
    b = Balancer([Member("a", 5), Member("b", 1), Member("c", 1)])
    assert firsts(b, 14) == "aabacaa" * 2


def test_each_order_lists_every_member_once():
    b = Balancer([Member("a", 5), Member("b", 1), Member("c", 1)])
    for _ in range(20):
        assert sorted(b.order()) == [0, 1, 2]


def test_rest_of_order_does_not_advance_the_state():
    # Only the first pick moves the shared state: first picks stay 8/2 however many of each
    # order's later entries a caller uses.
    b = Balancer([Member("a", 4), Member("b", 1)])
    orders = [b.order() for _ in range(10)]
    assert Counter(o[0] for o in orders) == {0: 8, 1: 2}
    assert all(o[1] == 1 - o[0] for o in orders)


def test_higher_priority_group_first_and_lower_only_after_all_of_it():
    members = [Member("low", 10, priority=-1), Member("a", 1, priority=5),
               Member("b", 1, priority=5), Member("mid", 3)]
    b = Balancer(members)
    for _ in range(10):
        order = b.order()
        assert set(order[:2]) == {1, 2}
        assert order[2:] == [3, 0]
    # Within the top group, round-robin alternates.
    assert firsts(b, 4) == "abab"


def test_unhealthy_member_is_skipped():
    b = Balancer([Member("a", 4), Member("b", 1), Member("c", 1)])
    for _ in range(12):
        assert 0 not in b.order(healthy=[False, True, True])
    assert Counter(firsts(b, 10, healthy=[False, True, True])) == {"b": 5, "c": 5}


def test_unhealthy_higher_group_falls_to_lower_group():
    b = Balancer([Member("top", 1, priority=1), Member("low", 1)])
    assert b.order(healthy=[False, True]) == [1]
    assert b.order(healthy=[True, True]) == [0, 1]


def test_all_unhealthy_uses_all():
    b = Balancer([Member("a", 4), Member("b", 1)])
    orders = [b.order(healthy=[False, False]) for _ in range(10)]
    assert all(sorted(o) == [0, 1] for o in orders)
    assert Counter(o[0] for o in orders) == {0: 8, 1: 2}


def test_weight_zero_is_never_tried():
    b = Balancer([Member("a", 2), Member("zero", 0), Member("b", 1)])
    zero = 1  # the index of the member of weight 0
    for _ in range(9):
        assert zero not in b.order()
    # Not even when the others are unhealthy: then they count as all unhealthy.
    assert zero not in b.order(healthy=[False, True, False])
    assert Balancer([Member("a", 1), Member("zero", 0)], "chash").order(key="k") == [0]


def test_all_weights_zero_weigh_equally():
    b = Balancer([Member("a", 0), Member("b", 0)])
    assert firsts(b, 4) == "abab"


def test_single_member_always_first():
    for algorithm in ("roundrobin", "chash"):
        b = Balancer([Member("only", 0)], algorithm)
        assert b.order() == [0]
        assert b.order(healthy=[False], key="x") == [0]


def test_bad_arguments():
    with pytest.raises(ValueError):
        Balancer([])
    with pytest.raises(ValueError):
        Balancer([Member("a", 1)], "least_conn")
    with pytest.raises(ValueError):
        Balancer([Member("a", 1), Member("b", 1)]).order(healthy=[True])


def test_from_apisix_config():
    conf = msgspec.convert({"instances": [
        {"name": "a", "provider": "openai", "weight": 4, "auth": {}},
        {"name": "b", "provider": "openai", "weight": 1, "auth": {}, "priority": 1}],
        "balancer": {"algorithm": "chash", "hash_on": "vars", "key": "arg_user"},
        "path": "/v1/chat/completions"}, apisix_schema.AiProxyMulti)
    b = Balancer.from_apisix(conf.instances, conf.balancer)
    assert b.algorithm == "chash"
    assert b.order(key="u1") == [1, 0]
    assert Balancer.from_apisix(conf.instances).algorithm == "roundrobin"


def test_chash_same_key_same_member():
    b = Balancer([Member("a", 1), Member("b", 1), Member("c", 1)], "chash")
    for key in ("user-1", "user-2", "", None):
        first = b.order(key=key)
        assert sorted(first) == [0, 1, 2]
        assert all(b.order(key=key) == first for _ in range(5))
    assert b.order(key=None) == b.order(key="")


def test_chash_distribution_follows_weights():
    b = Balancer([Member("a", 4), Member("b", 1)], "chash")
    counts = Counter(b.order(key=f"key-{n}")[0] for n in range(1000))
    assert 700 <= counts[0] <= 900


def test_chash_is_stable_across_balancers():
    # A stable hash, not Python's salted one: another balancer (process) agrees.
    members = [Member("a", 1), Member("b", 2), Member("c", 1)]
    one, two = Balancer(members, "chash"), Balancer(members, "chash")
    assert all(one.order(key=str(n)) == two.order(key=str(n)) for n in range(100))


def test_chash_key_keeps_its_member_when_another_turns_unhealthy():
    b = Balancer([Member("a", 1), Member("b", 1), Member("c", 1)], "chash")
    keys = [f"k{n}" for n in range(300)]
    before = {k: b.order(key=k)[0] for k in keys}
    for k in keys:
        down = [i != (before[k] + 1) % 3 for i in range(3)]
        assert b.order(healthy=down, key=k)[0] == before[k]


def test_chash_skips_unhealthy_member():
    b = Balancer([Member("a", 1), Member("b", 1), Member("c", 1)], "chash")
    keys = [f"k{n}" for n in range(300)]
    moved = Counter()
    for k in keys:
        full = b.order(key=k)
        healthy = [i != full[0] for i in range(3)]
        order = b.order(healthy=healthy, key=k)
        # The next member clockwise takes over, and the down member is not tried.
        assert order == full[1:]
        moved[order[0]] += 1
    assert len(moved) == 3  # keys of a down member spread over the others


def test_chash_priorities():
    b = Balancer([Member("low", 1, priority=-1), Member("a", 1, 1), Member("b", 1, 1)],
                 "chash")
    for n in range(20):
        order = b.order(key=str(n))
        assert set(order[:2]) == {1, 2} and order[2] == 0


def test_chash_large_weights_keep_the_ring_small():
    b = Balancer([Member("a", 10**6), Member("b", 1)], "chash")
    assert len(b._groups[0].hashes) <= 40960 + 1
    assert sorted(b.order(key="x")) == [0, 1]
