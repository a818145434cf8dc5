"""SDP offer/answer (RFC 3264) for one audio stream: G.711 µ-law (0) or A-law (8), and RFC 4733
telephone-events for keys. Anything else on offer is declined, as a trunk's media gateway would."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

PCMU, PCMA = 0, 8
CODEC_NAMES = {PCMU: "PCMU", PCMA: "PCMA"}


class SdpError(ValueError):
    pass


@dataclass
class AudioOffer:
    host: str
    port: int
    payloads: list[int]  # in the offerer's order of preference
    event_payload: int | None = None  # telephone-event/8000
    direction: str = "sendrecv"
    rtpmap: dict[int, str] = field(default_factory=dict)

    def codec(self) -> int | None:
        """The first payload on offer that callgrid speaks (G.711's static types)."""
        for pt in self.payloads:
            if pt in (PCMU, PCMA):
                return pt
        return None


def parse(body: bytes) -> AudioOffer:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SdpError("SDP is not UTF-8") from None
    session_host = ""
    audio: AudioOffer | None = None
    direction = "sendrecv"
    for raw in text.splitlines():
        line = raw.strip()
        if len(line) < 2 or line[1] != "=":
            continue
        kind, value = line[0], line[2:]
        if kind == "c":
            parts = value.split()
            if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
                raise SdpError("bad c= line")
            host = parts[2].split("/")[0]
            if audio is None:
                session_host = host
            else:
                audio.host = host
        elif kind == "m":
            parts = value.split()
            if audio is not None:
                break  # the first audio stream is ours; later ones are declined by omission
            if len(parts) < 4 or parts[0] != "audio":
                continue
            if not parts[1].split("/")[0].isdigit() or not all(p.isdigit() for p in parts[3:]):
                raise SdpError("bad m= line")
            port = int(parts[1].split("/")[0])
            if port > 65535:
                raise SdpError("bad port")
            audio = AudioOffer(session_host, port, [int(p) for p in parts[3:] if int(p) < 128])
        elif kind == "a":
            name, _, rest = value.partition(":")
            if name in ("sendrecv", "sendonly", "recvonly", "inactive"):
                if audio is None:
                    direction = name
                else:
                    audio.direction = name
            elif name == "rtpmap" and audio is not None:
                pt_text, _, encoding = rest.partition(" ")
                if pt_text.isdigit():
                    pt = int(pt_text)
                    audio.rtpmap[pt] = encoding.strip()
                    if encoding.strip().lower().startswith("telephone-event/8000"):
                        audio.event_payload = pt
    if audio is None:
        raise SdpError("no audio stream")
    if not audio.host:
        raise SdpError("no connection address")
    if audio.direction == "sendrecv" and direction != "sendrecv":
        audio.direction = direction
    return audio


_ANSWER_DIRECTION = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}


class Origin:
    """Our o= line through one dialog (RFC 3264 8, RFC 4566 5.2): its username, session id and address
    never change; the version goes up by exactly one with each description that differs from the last
    one sent, and stays when the same one goes again (a session refresh repeating our SDP)."""

    def __init__(self, session_id: int | None = None) -> None:
        # Random rather than the time: two legs set up in the same second must not share a session id.
        self.session_id = session_id if session_id is not None else secrets.randbelow(2**62) + 1
        self.version = 0  # none sent yet
        self.address = ""  # the first description's, kept for the dialog
        self._sent: list[str] | None = None  # the last description, less its o= line

    def describe(self, host: str, lines: list[str]) -> bytes:
        """The description of `lines` (everything after o=), stamped with this dialog's origin."""
        if self._sent is None or lines != self._sent:
            self.version += 1
            self._sent = list(lines)
        if not self.address:
            self.address = host
        family = "IP6" if ":" in self.address else "IP4"
        origin = f"o=callgrid {self.session_id} {self.version} IN {family} {self.address}"
        return ("\r\n".join(["v=0", origin, *lines]) + "\r\n").encode()


def _session(host: str, media: list[str]) -> list[str]:
    family = "IP6" if ":" in host else "IP4"
    return ["s=callgrid", f"c=IN {family} {host}", "t=0 0", *media]


def build(
    host: str,
    port: int,
    codec: int,
    event_payload: int | None,
    *,
    origin: Origin | None = None,
    direction: str = "sendrecv",
) -> bytes:
    """An SDP for our side: the answer to an inbound call's offer, or to a re-INVITE's or UPDATE's."""
    payloads = [codec] + ([event_payload] if event_payload is not None else [])
    media = [
        f"m=audio {port} RTP/AVP {' '.join(map(str, payloads))}",
        f"a=rtpmap:{codec} {CODEC_NAMES[codec]}/8000",
    ]
    if event_payload is not None:
        media += [f"a=rtpmap:{event_payload} telephone-event/8000", f"a=fmtp:{event_payload} 0-16"]
    media += ["a=ptime:20", f"a={direction}"]
    return (origin or Origin()).describe(host, _session(host, media))


def build_offer(host: str, port: int, *, origin: Origin | None = None) -> bytes:
    """Our offer (an outbound call's, or in a 200 to an INVITE without SDP): µ-law, A-law and
    telephone-events on 101."""
    media = [
        f"m=audio {port} RTP/AVP 0 8 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ptime:20",
        "a=sendrecv",
    ]
    return (origin or Origin()).describe(host, _session(host, media))


def answer_direction(offered: str) -> str:
    return _ANSWER_DIRECTION.get(offered, "sendrecv")
