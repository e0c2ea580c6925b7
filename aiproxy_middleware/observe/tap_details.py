"""An answer tap that also keeps what a trace shows of the answer: its id, the model that
answered and why it finished (`gen_ai.response.*`).

Only a traced request gets one (`RequestSpan.tap`): an untraced request's tap (tap.py) reads
none of this, and pays nothing for it.
"""

from __future__ import annotations

from typing import Any

import msgspec

from aiproxy_middleware.observe.tap import AnswerTap, _event_at, _payload
from aiproxy_middleware.shapes import SKIM_ABOVE

_FINISH = b'"finish_reason":"'
_FINISH_SPACED = b'"finish_reason": "'


class _Choice(msgspec.Struct):
    finish_reason: Any = None


class _Head(msgspec.Struct):
    """What a large answer's details are read from (everything else skipped unread)."""

    id: Any = None
    model: Any = None
    stop_reason: Any = None
    choices: list[_Choice] | None = None


class DetailedTap(AnswerTap):
    """`AnswerTap` plus the answer's id, model and finish reasons (OpenAI's or Anthropic's
    shape, whole or streamed)."""

    __slots__ = ("response_id", "response_model", "finish_reasons")

    def __init__(self, keep_text: bool = False) -> None:
        super().__init__(keep_text)
        self.response_id: str | None = None
        self.response_model: str | None = None
        self.finish_reasons: list[str] = []

    def json(self, body: bytes) -> bool:
        if len(body) > SKIM_ABOVE:  # the base skims a large body: read its head here
            try:
                head = msgspec.json.decode(body, type=_Head)
                self._details({"id": head.id, "model": head.model,
                               "stop_reason": head.stop_reason,
                               "choices": [{"finish_reason": c.finish_reason}
                                           for c in head.choices or ()]})
            except Exception:  # noqa: BLE001 - the tap never raises
                pass
        return super().json(body)

    def _skim_block(self, block: bytes) -> None:
        super()._skim_block(block)
        # OpenAI's chunks all name a finish_reason, null until the choice's last: only one
        # with a string value is read (two searches per block, no decoding).
        at = block.rfind(_FINISH)
        if at < 0:
            at = block.rfind(_FINISH_SPACED)
        if at >= 0:
            self._read(_payload(_event_at(block, at)))

    def _event(self, event: dict[str, Any]) -> bool:
        if event.get("type") == "message_delta":  # Anthropic's stream: why it stopped
            delta = event.get("delta")
            if isinstance(delta, dict):
                self._reason(delta.get("stop_reason"))
        return super()._event(event)

    def _answer(self, answer: dict[str, Any], key: str) -> bool:
        self._details(answer)
        return super()._answer(answer, key)

    def _details(self, answer: dict[str, Any]) -> None:
        if self.response_id is None:
            value = answer.get("id")
            if isinstance(value, str) and value:
                self.response_id = value
        if self.response_model is None:
            value = answer.get("model")
            if isinstance(value, str) and value:
                self.response_model = value
        self._reason(answer.get("stop_reason"))
        choices = answer.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if isinstance(choice, dict):
                    self._reason(choice.get("finish_reason"))

    def _reason(self, value: Any) -> None:
        # (each reason once: a skimmed stream's last event may be read twice)
        if isinstance(value, str) and value and value not in self.finish_reasons \
                and len(self.finish_reasons) < 16:
            self.finish_reasons.append(value)
