"""The order in which one `ai-proxy-multi` request tries the route's instances.

Instances are grouped by `priority`, highest first; a lower group is tried only after every
member of the higher one (APISIX's `apisix.balancer.priority`). Within a group the algorithm
is either `roundrobin`, nginx's smooth weighted round-robin, or `chash`, a consistent-hash
ring keyed by a request value.

Health: members whose checker says unhealthy are left out of the order, unless every member
is unhealthy, in which case all are used (APISIX: "all upstream nodes is unhealthy, use
default").

Weight 0: such a member is never tried at all, as with APISIX, whose weighted round-robin
never selects it. The one exception is a route where *every* member weighs 0: there all
members weigh the same, so the route still answers (APISIX leaves that case undefined).
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiproxy_middleware.config.apisix import schema as apisix_schema
ALGORITHMS = ("roundrobin", "chash")

POINTS_PER_WEIGHT = 160
"""Virtual points a `chash` ring gives each unit of weight (as nginx's and resty's chash)."""
MAX_RING_POINTS = 40960
"""Points a `chash` ring has at most: large weights are scaled down to keep it small."""


@dataclass(frozen=True, slots=True)
class Member:
    """One instance as the balancer sees it."""

    name: str
    weight: int
    priority: int = 0


def _hash(data: str) -> int:
    # blake2b rather than hash(): Python's str hash is salted per process, and a key must
    # land on the same member in every worker and after every restart.
    return int.from_bytes(hashlib.blake2b(data.encode(), digest_size=8).digest(), "big")


class _RoundRobin:
    """Smooth weighted round-robin over one priority group (nginx's algorithm)."""

    __slots__ = ("indexes", "weights", "current")

    def __init__(self, weights: dict[int, int]) -> None:
        self.indexes = list(weights)
        self.weights = weights
        self.current = dict.fromkeys(weights, 0)
        """Each member's current weight: the state kept across requests."""

    @staticmethod
    def _pick(current: dict[int, int], weights: dict[int, int], among: Sequence[int]) -> int:
        # Every candidate gains its weight, the highest current weight wins (the first one on
        # a tie, as nginx) and loses the total. Members outside `among` (unhealthy ones, or
        # ones already in this request's order) neither gain nor lose, as in nginx.
        total = 0
        best = among[0]
        for i in among:
            current[i] += weights[i]
            total += weights[i]
            if current[i] > current[best]:
                best = i
        current[best] -= total
        return best

    def order(self, among: list[int]) -> list[int]:
        first = self._pick(self.current, self.weights, among)
        # The rest follow as the same algorithm would continue if the first failed (nginx
        # skipping tried peers), computed on a copy: only a request's first pick advances
        # the shared state, so retries do not skew the distribution of first picks.
        scratch = dict(self.current)
        result = [first]
        left = [i for i in among if i != first]
        while left:
            nxt = self._pick(scratch, self.weights, left)
            result.append(nxt)
            left.remove(nxt)
        return result


class _Ring:
    """A consistent-hash ring over one priority group, built from all its members."""

    __slots__ = ("indexes", "hashes", "owners")

    def __init__(self, members: Sequence[Member], weights: dict[int, int]) -> None:
        # Scale weights down by their gcd, then so the ring stays small; every member keeps
        # at least one point.
        self.indexes = list(weights)
        divisor = math.gcd(*weights.values()) or 1
        units = {i: w // divisor for i, w in weights.items()}
        total = sum(units.values()) * POINTS_PER_WEIGHT
        scale = min(1.0, MAX_RING_POINTS / total) if total else 1.0
        points: list[tuple[int, int]] = []
        for i, u in units.items():
            # Points are named after the member's name, not its index, so reordering or
            # adding instances moves as few keys as possible.
            for v in range(max(1, round(u * POINTS_PER_WEIGHT * scale))):
                points.append((_hash(f"{members[i].name}#{v}"), i))
        points.sort()
        self.hashes = [h for h, _ in points]
        self.owners = [i for _, i in points]

    def order(self, among: list[int], key: str) -> list[int]:
        # Walk clockwise from the key's point; members not in `among` (unhealthy) are passed
        # over, so a key whose member is healthy keeps it whatever the others' health.
        wanted = set(among)
        result: list[int] = []
        n = len(self.owners)
        start = bisect.bisect_left(self.hashes, _hash(key))
        for step in range(n):
            i = self.owners[(start + step) % n]
            if i in wanted:
                result.append(i)
                wanted.discard(i)
                if not wanted:
                    break
        return result


class Balancer:
    """Chooses the order in which one request tries an ai-proxy-multi route's instances."""

    def __init__(self, members: Sequence[Member], algorithm: str = "roundrobin") -> None:
        if not members:
            raise ValueError("a balancer needs at least one member")
        if algorithm not in ALGORITHMS:
            raise ValueError(f"unknown balancer algorithm {algorithm!r}")
        if any(m.weight < 0 for m in members):
            raise ValueError("member weights must be >= 0")
        self.members = tuple(members)
        self.algorithm = algorithm
        everyone_zero = all(m.weight == 0 for m in members)
        # Members that can be tried at all: positive weight (or everyone, all weighing 1,
        # when all weigh 0).
        self._weights = {i: (1 if everyone_zero else m.weight) for i, m in enumerate(members)
                         if everyone_zero or m.weight > 0}
        by_priority: dict[int, dict[int, int]] = {}
        for i, w in self._weights.items():
            by_priority.setdefault(members[i].priority, {})[i] = w
        self._groups: list[_RoundRobin | _Ring] = [
            _Ring(self.members, by_priority[p]) if algorithm == "chash"
            else _RoundRobin(by_priority[p])
            for p in sorted(by_priority, reverse=True)]

    @classmethod
    def from_apisix(cls, instances: Sequence[apisix_schema.Instance],
                    conf: apisix_schema.Balancer | None = None) -> Balancer:
        """The balancer of an `ai-proxy-multi` route: its `instances` and `balancer`."""
        members = [Member(i.name, i.weight, i.priority) for i in instances]
        return cls(members, conf.algorithm if conf is not None else "roundrobin")

    def order(self, healthy: Sequence[bool] | None = None, key: str | None = None) -> list[int]:
        """Indexes of the members to try, first choice first.

        `healthy[i]` false leaves member i out (unless every member is unhealthy); `key` is
        the request's hash key for `chash` (None hashes as ""); `roundrobin` ignores it.
        Each call to a `roundrobin` balancer advances its state by one pick.
        """
        if len(self.members) == 1:
            # APISIX bypasses the balancer for a single instance: no health, no weights.
            return [0]
        if healthy is not None and len(healthy) != len(self.members):
            raise ValueError(f"{len(healthy)} health states for {len(self.members)} members")
        usable = self._weights.keys()
        up = usable if healthy is None else {i for i in usable if healthy[i]} or usable
        result: list[int] = []
        for group in self._groups:
            among = [i for i in group.indexes if i in up]
            if not among:
                continue
            if isinstance(group, _Ring):
                result += group.order(among, key or "")
            else:
                result += group.order(among)
        return result

