"""Which image URLs a client may make the gateway fetch (Gemini, Vertex and Bedrock take
image bytes only, so the gateway downloads http(s) image URLs for them).

The rule, configured by the top-level `imageFetch` key:

- only `http` and `https` URLs are fetched;
- a host in `denyHosts` is refused; when `allowHosts` is not empty, only its hosts are
  fetched. A pattern is a host name (`img.example.com`), an IP address, or `*.suffix`
  (`*.example.com`: any name under example.com, not example.com itself); a `denyHosts`
  IP address also refuses host names that resolve to it;
- the host name is resolved, and the URL is refused if ANY of its addresses is loopback,
  private, link-local (the cloud metadata address 169.254.169.254 among them), unique-local,
  shared (CGNAT, 100.64.0.0/10), multicast, reserved or unspecified, or an IPv6 address
  that embeds such an IPv4 one (IPv4-mapped, NAT64, 6to4, Teredo), unless
  `allowPrivateNetworks: true`. `allowHosts` does not lift this check;
- the fetch connects to the addresses that were checked (the host name is not resolved
  again, so a DNS answer that changes between check and fetch gains nothing); TLS still
  verifies the certificate against the host name;
- redirects are not followed (a 3xx answer is a failed fetch).

How much one request may make the gateway fetch is bounded by the same key (`ImageLimits`,
enforced in `images`): `maxImages` image parts in all (data: URLs count too), `maxImageBytes`
per image and `maxTotalBytes` per request (a 413 past either, before more is read), and at
most `maxConcurrentPerRequest` downloads at once for one request, `maxConcurrent` for all.

IPv4 literals in every form the C library accepts (`2130706433`, `0x7f.1`, `017700000001`,
`127.1`) and IPv6 literals (`[::1]`, `[::ffff:127.0.0.1]`) are read as the address they
name. A refused URL is a 400 `invalid_request_error`, code `image_url_not_allowed`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
import weakref
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any

import httpcore
import httpx
from msgspec import Meta, Struct

from aiproxy_middleware.errors import ProxyError, bad_request

IP = ipaddress.IPv4Address | ipaddress.IPv6Address

# A host name, `*.` and a host name, or an IP address (IPv6 with or without brackets).
HOST_PATTERN = (r"^(\*\.)?[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?$"
                r"|^\[?[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*\]?$")
HostPattern = Annotated[str, Meta(pattern=HOST_PATTERN, max_length=253)]
Positive = Annotated[int, Meta(ge=1)]
MiB = 1024 * 1024


@dataclass(frozen=True)
class ImageLimits:
    """How much one request may make the gateway fetch (a normal multimodal chat, a few
    images of a few MiB, never meets the defaults)."""

    max_images: int = 20
    """Image parts in one request, `data:` URLs included (a 400 past it, nothing fetched)."""
    max_image_bytes: int = 20 * MiB
    max_total_bytes: int = 50 * MiB
    """Fetched bytes of one request, an image counted once per part that uses it (413)."""
    per_request: int = 4
    overall: int = 32
    """Downloads at once, of one request and of every request of this configuration."""

    def slots(self) -> asyncio.Semaphore:
        """The `overall` download slots (one set per event loop: a semaphore binds to one)."""
        loop = asyncio.get_running_loop()
        slots = self._slots.get(loop)
        if slots is None:
            slots = self._slots[loop] = asyncio.Semaphore(self.overall)
        return slots

    @cached_property
    def _slots(self) -> weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]:
        return weakref.WeakKeyDictionary()


class ImageFetch(Struct, rename="camel", forbid_unknown_fields=True, dict=True):
    """The `imageFetch` config key."""

    allow_private_networks: bool = False
    allow_hosts: list[HostPattern] = []
    deny_hosts: list[HostPattern] = []
    max_images: Positive = ImageLimits.max_images
    max_image_bytes: Positive = ImageLimits.max_image_bytes
    max_total_bytes: Positive = ImageLimits.max_total_bytes
    max_concurrent_per_request: Positive = ImageLimits.per_request
    max_concurrent: Positive = ImageLimits.overall

    @cached_property
    def policy(self) -> ImagePolicy:
        return ImagePolicy(self.allow_private_networks, tuple(self.allow_hosts),
                           tuple(self.deny_hosts), limits=ImageLimits(
                               self.max_images, self.max_image_bytes, self.max_total_bytes,
                               self.max_concurrent_per_request, self.max_concurrent))


@dataclass(frozen=True, slots=True)
class Vetted:
    """A URL that passed the rule, and the addresses its fetch may connect to."""

    url: httpx.URL
    host: str
    """The host as the connection pool names it (IDNA-encoded, lower case)."""
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class ImagePolicy:
    """The allow/deny rule for image URLs (see the module's docstring)."""

    allow_private: bool = False
    allow_hosts: tuple[str, ...] = ()
    deny_hosts: tuple[str, ...] = ()
    schemes: frozenset[str] = frozenset({"http", "https"})
    limits: ImageLimits = ImageLimits()

    @cached_property
    def _allow(self) -> _Patterns:
        return _Patterns(self.allow_hosts)

    @cached_property
    def _deny(self) -> _Patterns:
        return _Patterns(self.deny_hosts)

    async def vet(self, url: str) -> Vetted:
        """The URL and the addresses to connect to; a 400 `image_url_not_allowed` when the
        rule refuses it (no request is made)."""
        def refused(why: str) -> ProxyError:
            return bad_request(f"the image URL {url} is not allowed: {why}",
                               "image_url_not_allowed", "messages")
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL:
            raise refused("it is not a valid URL") from None
        if parsed.scheme not in self.schemes:
            raise refused(f"only {' and '.join(sorted(self.schemes))} URLs are fetched")
        host = parsed.raw_host.decode("ascii").lower()
        if not host:
            raise refused("it has no host")
        name = host.rstrip(".")
        literal = literal_ip(name)
        shown = str(literal) if literal is not None else name
        if self._deny.matches(shown):
            raise refused(f"{shown} is a denied host")
        if self.allow_hosts and not self._allow.matches(shown):
            raise refused(f"{shown} is not one of the allowed hosts")
        if literal is not None:
            addresses = [literal]
        else:
            addresses = await _resolve(name, parsed.port or (443 if parsed.scheme == "https"
                                                             else 80))
            if not addresses:
                raise refused("its host name could not be resolved")
        for address in addresses:
            if self._deny.ips and _plain(address) in self._deny.ips:
                raise refused(f"{shown} resolves to a denied address")
            kind = None if self.allow_private else denied_kind(address)
            if kind is not None:
                raise refused(f"{shown} is {_a(kind)} address" if literal is not None
                              else f"{shown} resolves to {_a(kind)} address")
        return Vetted(parsed, host, tuple(dict.fromkeys(str(a) for a in addresses)))

    def client(self, vetted: list[Vetted]) -> httpx.AsyncClient:
        """A client whose connections go only to the vetted addresses of the vetted hosts
        (it never resolves a name itself), and that follows no redirect."""
        pins: dict[str, tuple[str, ...]] = {}
        for v in vetted:
            pins[v.host] = tuple(dict.fromkeys(pins.get(v.host, ()) + v.addresses))
        return httpx.AsyncClient(transport=_PinnedTransport(pins), follow_redirects=False,
                                 trust_env=False)


DEFAULT_POLICY = ImagePolicy()
"""Deny private networks, no host lists."""


def _a(kind: str) -> str:
    return ("an " if kind[0] in "aeiou" else "a ") + kind


_NUMERIC = re.compile(r"^[0-9a-fx.]+$", re.I)


def literal_ip(host: str) -> IP | None:
    """The address an IP-literal host names (IPv4 in any inet_aton form), else None."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _NUMERIC.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def denied_kind(address: IP) -> str | None:
    """Why an address is not a public one (None when it is)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            address = ipaddress.IPv6Address(str(address).split("%")[0])
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is None and address.teredo:
            embedded = address.teredo[1]
        if embedded is not None:
            kind = denied_kind(embedded)
            if kind is not None:
                return kind
            if address.ipv4_mapped:
                return None
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return "shared (CGNAT)"
    if isinstance(address, ipaddress.IPv6Address) and address in _ULA:
        return "unique-local"
    if address.is_reserved:
        return "reserved"
    if address.is_private or any(address in n for n in _SPECIAL[address.version]):
        return "private"
    if not address.is_global:
        return "reserved"
    return None


_ULA = ipaddress.IPv6Network("fc00::/7")
# IANA's special-purpose ranges that are not globally reachable, listed here as well as
# Python's `is_private` because older Pythons miss some of them.
_SPECIAL: dict[int, list[ipaddress.IPv4Network] | list[ipaddress.IPv6Network]] = {
    4: [ipaddress.IPv4Network(n) for n in (
        "0.0.0.0/8", "10.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
        "198.51.100.0/24", "203.0.113.0/24")],
    6: [ipaddress.IPv6Network(n) for n in (
        "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32", "fec0::/10")]}


def _plain(address: IP) -> IP:
    """The address without an IPv6 zone; an IPv4-mapped IPv6 address as its IPv4 one."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            address = ipaddress.IPv6Address(str(address).split("%")[0])
        if address.ipv4_mapped:
            return address.ipv4_mapped
    return address


class _Patterns:
    def __init__(self, patterns: tuple[str, ...]) -> None:
        self.names: set[str] = set()
        self.suffixes: tuple[str, ...] = ()
        self.ips: set[IP] = set()
        suffixes = []
        for p in patterns:
            p = p.lower().rstrip(".")
            ip = literal_ip(p)
            if ip is not None:
                self.ips.add(_plain(ip))
                self.names.add(str(_plain(ip)))
            elif p.startswith("*."):
                suffixes.append(p[1:])
            else:
                self.names.add(p)
        self.suffixes = tuple(suffixes)

    def matches(self, host: str) -> bool:
        ip = literal_ip(host)
        if ip is not None:
            return _plain(ip) in self.ips
        return host in self.names or (bool(self.suffixes) and host.endswith(self.suffixes))


async def _getaddrinfo(host: str, port: int) -> list[Any]:
    """The resolver (tests replace it)."""
    return await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)


async def _resolve(host: str, port: int) -> list[IP]:
    try:
        infos = await _getaddrinfo(host, port)
    except (OSError, UnicodeError):
        return []
    found: list[IP] = []
    for info in infos:
        try:
            found.append(ipaddress.ip_address(info[4][0]))
        except ValueError:
            continue
    return found


_SSL: ssl.SSLContext | None = None


def _ssl_context() -> ssl.SSLContext:
    global _SSL
    if _SSL is None:
        _SSL = httpx.create_ssl_context(trust_env=False)
    return _SSL


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """Connects a host name only to its vetted addresses; any other host is refused."""

    def __init__(self, pins: dict[str, tuple[str, ...]]) -> None:
        self._pins = pins
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        addresses = self._pins.get(host.lower())
        if not addresses:
            raise httpcore.ConnectError(f"{host} was not checked against the image URL rule")
        error: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(address, port, timeout, local_address,
                                                     socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        raise error  # type: ignore[misc]

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("image fetches use TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _PinnedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport over a connection pool that uses `_PinnedBackend`; TLS
    verifies the certificate against the URL's host name (the pool passes it as
    `server_hostname`), not the address connected to."""

    def __init__(self, pins: dict[str, tuple[str, ...]]) -> None:
        context = _ssl_context()
        super().__init__(verify=context, trust_env=False)
        # httpx takes no network backend, so its pool is replaced by an equal one with ours.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context, max_connections=16, max_keepalive_connections=0,
            network_backend=_PinnedBackend(pins))
