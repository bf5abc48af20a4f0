"""What the daemon tells its SIP workers, built from the configuration and a claimed call: the
``init`` of worker N and the ``dial`` of a call (``dialer.ipc``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from dialer import ipc
from dialer.config import Config, TrunkConfig
from dialer.core.domain import DEFAULT_ANSWER_KEY, DEFAULT_LISTEN_KEY, DialogueSettings
from dialer.core.keys import RANDOM
from dialer.core.records import ClaimedCall


def init_message(config: Config, index: int, sources: list[str]) -> ipc.Init:
    """The first message worker ``index`` gets: its trunks, RTP ports, trusted sources."""
    trunks: dict[str, Any] = {}
    for name, t in config.trunks.items():
        trunks[name] = {
            "uri": t.uri, "registrar": t.registrar, "username": t.username,
            "password": t.password.reveal() if t.password else None,
            "transport": t.transport, "caller_id": t.caller_id,
            "expires": t.expires, "retry_interval": t.retry_interval, "proxy": t.proxy,
            "keepalive_interval": t.keepalive_interval,
            "keepalive_timeout": t.keepalive_timeout,
            "register_timeout": t.register_timeout, "invite_timeout": t.invite_timeout,
            "pai": t.pai,
            # One registration per trunk, held by worker 0: a PBX often keeps one contact.
            "register": bool(t.registrar) and index == 0,
        }
    # RTP and RTCP per call, plus room, twice: a new process for an index takes the other
    # half from the one it replaces (WorkerPool._half: stale far ends of a dead worker
    # still send to its ports), and a retiring worker and its successor fit side by side.
    per = 2 * (2 * config.calls_per_worker + 2)
    return ipc.Init(worker=index, bind=config.bind, trunks=trunks,
                    allowed_sources=list(sources),
                    reject_code=config.sip_reject_code,
                    orphan_timeout=config.orphan_timeout,
                    log_level=config.sip_log_level,
                    log_format=None if config.log_format == "text" else config.log_format,
                    rtp_port=config.rtp_port + index * per, rtp_port_range=per,
                    sip_port=config.sip_port + index if config.sip_port else None,
                    sip_port_alt=(config.sip_port + config.workers + index
                                  if config.sip_port else None))


def dial_message(call: ClaimedCall, trunk: TrunkConfig, media: dict[str, str],
                 duration: Callable[[str], float]) -> ipc.Dial:
    """The ``dial`` of a claimed call on ``trunk``; ``media``: the prompts and the message
    (name -> file; for a random key, the prompt saying its digit), ``duration``: the seconds of
    a prompt file. A key drawn for the call (``call.drawn``) is the only key that confirms."""
    st = call.settings
    drawn = call.drawn
    dialogue = DialogueSettings(
        answer_confirm=st.answer_confirm, listen_confirm=st.listen_confirm,
        answer_key=drawn.answer or st.answer_key, listen_key=drawn.listen or st.listen_key,
        answer_random=drawn.answer is not None, listen_random=drawn.listen is not None,
        max_repeats=st.max_repeats,
        key_timeout=st.key_timeout, message_seconds=call.audio_seconds,
        answer_prompt_seconds=duration(media["answer_prompt"]),
        listen_prompt_seconds=duration(media["listen_prompt"]),
        goodbye_seconds=duration(media["goodbye"]),
        connect_key=st.connect_key, connect_to=st.connect_to,
        connect_confirms=st.connect_confirms,
        connect_offer_seconds=duration(media["connect_offer"]) if "connect_offer" in media else 0.0,
        transfer_failed_seconds=duration(media["transfer_failed"])
        if "transfer_failed" in media else 0.0)
    caller = st.caller_number or trunk.caller_id
    return ipc.Dial(
        call_id=call.attempt_id, trunk=trunk.name, uri=trunk.target(call.number),
        from_uri=f"sip:{caller}@{trunk.host.split(':')[0]}" if caller else None,
        display=st.display_name, ring_timeout=st.ring_timeout, media=media,
        dialogue={k: getattr(dialogue, k) for k in dialogue.__dataclass_fields__})


class Dials:
    """The ``dial`` messages of claimed calls: the language's prompts (for a random key or a
    fixed key other than 1 and 9, the shipped prompt that says it; for a connect key, the offer
    that says it), the message file, and the audio durations (each file read once)."""

    def __init__(self, prompts: Callable[[str], dict[str, Path]],
                 key_prompts: Callable[[str, str, str], Path],
                 durations: Callable[[str], float]) -> None:
        self._prompts, self._key_prompts, self._seconds = prompts, key_prompts, durations
        self._cache: dict[str, float] = {}

    def message(self, call: ClaimedCall, trunk: TrunkConfig, message: Path) -> ipc.Dial:
        lang = call.settings.language
        media = {name: str(path) for name, path in self._prompts(lang).items()}
        st = call.settings
        for name, digit, default in (
                ("answer_prompt", call.drawn.answer or st.answer_key, DEFAULT_ANSWER_KEY),
                ("listen_prompt", call.drawn.listen or st.listen_key, DEFAULT_LISTEN_KEY)):
            if digit not in (default, RANDOM):  # the prompt says the key that confirms
                media[name] = str(self._key_prompts(lang, name, digit))
        if call.settings.connect_key is not None:  # the offer that says the connect key
            media["connect_offer"] = str(self._key_prompts(lang, "connect_offer",
                                                           call.settings.connect_key))
        media["message"] = str(message)
        return dial_message(call, trunk, media, self._duration)

    def _duration(self, path: str) -> float:
        if path not in self._cache:
            self._cache[path] = self._seconds(path)
        return self._cache[path]
