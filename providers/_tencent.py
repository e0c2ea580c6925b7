"""Tencent Cloud API v3 request signing (TC3-HMAC-SHA256), as Hunyuan's native API takes it.

Source: Tencent Cloud's "Signature v3" documentation (the canonical request, the credential
scope `{date}/{service}/tc3_request`, and the HMAC-SHA256 key chain from `TC3` + the secret
key). The service defaults to `hunyuan`, the one Tencent Cloud API the gateway calls.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timezone


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def tc3_authorization(secret_id: str, secret_key: str, body: bytes, timestamp: int, *,
                      headers: dict[str, str], service: str = "hunyuan",
                      method: str = "POST", path: str = "/", query: str = "") -> str:
    """The `Authorization` value for a request signed with TC3-HMAC-SHA256.

    `headers` are the signed headers (name -> value, `host` among them), signed in name
    order with lower-cased names; values are signed trimmed and lower-cased (as Tencent's
    documented example does for `x-tc-action`).
    """
    signed = sorted((k.lower(), v.strip().lower()) for k, v in headers.items())
    canonical = "\n".join([method, path, query,
                           "".join(f"{k}:{v}\n" for k, v in signed),
                           ";".join(k for k, _ in signed),
                           hashlib.sha256(body).hexdigest()])
    date = datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d")
    scope = f"{date}/{service}/tc3_request"
    to_sign = "\n".join(["TC3-HMAC-SHA256", str(timestamp), scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(("TC3" + secret_key).encode(), date), service), "tc3_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return (f"TC3-HMAC-SHA256 Credential={secret_id}/{scope},"
            f" SignedHeaders={';'.join(k for k, _ in signed)}, Signature={signature}")
