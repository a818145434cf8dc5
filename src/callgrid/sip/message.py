"""SIP messages (RFC 3261 section 7): parsing what arrives, building what leaves.

Strict where a mistake would mislead the trunk (start line, Via, CSeq, Call-ID, From/To, Content-Length),
lenient where real peers differ (header name case, compact forms, folded lines, LF without CR). Every
failure is a `SipParseError`: the transport answers 400 when it can tell whom to answer, or drops.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Any

MAX_MESSAGE = 65535  # larger than any SIP over UDP; a TCP peer sending more is cut off
MAX_HEADERS = 200
BRANCH_MAGIC = "z9hG4bK"

# RFC 3261 7.3.3 compact forms -> the full names.
_COMPACT = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
    "x": "Session-Expires",  # RFC 4028 4
}
_CANONICAL = {
    name.lower(): name
    for name in (
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Max-Forwards",
        "Content-Type",
        "Content-Length",
        "Allow",
        "Supported",
        "User-Agent",
        "Server",
        "Route",
        "Record-Route",
        "Reason",
        "P-Asserted-Identity",
        "Require",
        "Accept",
        "Expires",
        "WWW-Authenticate",
        "Retry-After",
        "Warning",
        "Subject",
        "Content-Encoding",
        "Referred-By",
        "Diversion",
        "Unsupported",
        "Session-Expires",
        "Min-SE",
    )
}
_TOKEN = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")
_REQUEST_LINE = re.compile(r"^([A-Za-z0-9.!%*_+`'~-]+) (\S+) SIP/2\.0$")
_STATUS_LINE = re.compile(r"^SIP/2\.0 ([1-6][0-9][0-9]) ?(.*)$")
# Compiled once: a call's messages go through these a dozen times, and re's own cache costs a lookup each.
_SCHEME = re.compile(r"^(sips?|tel):", re.IGNORECASE)
_VIA = re.compile(r"^SIP\s*/\s*2\.0\s*/\s*([A-Za-z]+)\s+([^;\s]+)\s*(;.*)?$", re.IGNORECASE)
_ADDR_URI = re.compile(r"^(sips?|tel):\S+$", re.IGNORECASE)
_URI = re.compile(r"^(sips?|tel):([^;?]*)((?:;[^?]*)?)", re.IGNORECASE)
_PHONE_PUNCTUATION = re.compile(r"[-.()\s]")
_E164 = re.compile(r"\+?[1-9][0-9]{6,14}")

REASONS = {
    100: "Trying",
    180: "Ringing",
    183: "Session Progress",
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    420: "Bad Extension",
    422: "Session Interval Too Small",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    603: "Decline",
}


class SipParseError(ValueError):
    """Not a SIP message callgrid can act on."""


# Names seen before -> their canonical spelling, and that spelling lowercased (what lookups compare).
# Bounded: a peer inventing header names must not grow it without end.
_SPELLING: dict[str, str] = {}
_LOOKUP: dict[str, str] = {}
_MEMO_MAX = 2048


def canonical(name: str) -> str:
    """The usual spelling of a known header (compact forms expanded); others keep the sender's spelling
    (custom X- headers reach the app as the caller wrote them). Names compare case-insensitively."""
    known = _SPELLING.get(name)
    if known is not None:
        return known
    stripped = name.strip()
    low = stripped.lower()
    spelled = _COMPACT[low] if low in _COMPACT else _CANONICAL.get(low, stripped)
    if len(_SPELLING) < _MEMO_MAX:
        _SPELLING[name] = spelled
    return spelled


def _lookup_key(name: str) -> str:
    key = _LOOKUP.get(name)
    if key is None:
        key = canonical(name).lower()
        if len(_LOOKUP) < _MEMO_MAX:
            _LOOKUP[name] = key
    return key


@dataclass
class Message:
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    # Lowercased name -> values, built on the first look-up: a message is read far more often than it is
    # changed. Rebuilt when `headers` is another list or has another length (appended to or replaced).
    _index: dict[str, list[str]] | None = field(default=None, init=False, repr=False, compare=False)
    _indexed: tuple[int, int] = field(default=(0, -1), init=False, repr=False, compare=False)
    # What has been parsed out of the headers (top Via, tags), dropped with the index.
    _parsed: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def _values(self, name: str) -> list[str] | None:
        headers = self.headers
        index = self._index
        if index is None or self._indexed != (id(headers), len(headers)):
            index = {}
            for key, value in headers:
                low = key.lower()
                values = index.get(low)
                if values is None:
                    index[low] = [value]
                else:
                    values.append(value)
            self._index = index
            self._indexed = (id(headers), len(headers))
            self._parsed.clear()
        return index.get(_LOOKUP.get(name) or _lookup_key(name))

    def _changed(self) -> None:
        self._index = None
        self._parsed.clear()

    def get(self, name: str) -> str | None:
        values = self._values(name)
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        """Every value of a header, comma-separated lists split (for Via, Route, Record-Route...)."""
        values = self._values(name)
        if not values:
            return []
        out: list[str] = []
        for value in values:
            out.extend(split_commas(value))
        return out

    def set(self, name: str, value: str) -> None:
        self.remove(name)
        self.headers.append((canonical(name), value))
        self._changed()

    def add(self, name: str, value: str) -> None:
        self.headers.append((canonical(name), value))
        self._changed()

    def remove(self, name: str) -> None:
        low = _lookup_key(name)
        self.headers = [(k, v) for k, v in self.headers if k.lower() != low]
        self._changed()

    @property
    def call_id(self) -> str:
        return self.get("Call-ID") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        number, method = parse_cseq(self.get("CSeq") or "")
        return number, method

    @property
    def top_via(self) -> Via:
        self._values("Via")  # brings the index (and what was parsed from it) up to date
        via = self._parsed.get("via")
        if via is None:
            vias = self.get_all("Via")
            if not vias:
                raise SipParseError("no Via")
            via = self._parsed["via"] = parse_via(vias[0])
        return via  # type: ignore[no-any-return]

    def tag(self, name: str) -> str | None:
        """The tag parameter of a From or To header; None without one or when it does not parse."""
        value = self.get(name)
        key = "tag:" + name
        if key in self._parsed:
            return self._parsed[key]  # type: ignore[no-any-return]
        try:
            tag = parse_name_addr(value).tag if value is not None else None
        except ValueError:
            tag = None
        self._parsed[key] = tag
        return tag

    def _head(self) -> str:
        raise NotImplementedError

    def encode(self) -> bytes:
        lines = [self._head()]
        for name, value in self.headers:
            if name.lower() != "content-length":
                lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


@dataclass
class Request(Message):
    method: str = ""
    uri: str = ""

    def _head(self) -> str:
        return f"{self.method} {self.uri} SIP/2.0"


@dataclass
class Response(Message):
    status: int = 200
    reason: str = "OK"

    def _head(self) -> str:
        return f"SIP/2.0 {self.status} {self.reason}"


def split_commas(value: str) -> list[str]:
    """Split a header value on commas outside quotes and angle brackets."""
    if "," not in value:
        stripped = value.strip()
        return [stripped] if stripped else []
    parts: list[str] = []
    depth, quoted, start = 0, False, 0
    for i, ch in enumerate(value):
        if ch == '"' and (i == 0 or value[i - 1] != "\\"):
            quoted = not quoted
        elif not quoted and ch == "<":
            depth += 1
        elif not quoted and ch == ">":
            depth = max(0, depth - 1)
        elif ch == "," and not quoted and depth == 0:
            parts.append(value[start:i].strip())
            start = i + 1
    parts.append(value[start:].strip())
    return [p for p in parts if p]


def parse(data: bytes) -> Request | Response:
    """One SIP message from a datagram (or a framed TCP message). Raises SipParseError."""
    if len(data) > MAX_MESSAGE:
        raise SipParseError("message too large")
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")
        if not sep:
            raise SipParseError("no end of headers")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise SipParseError("headers are not UTF-8") from None
    lines = text.replace("\r\n", "\n").split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)  # RFC 3261 7.5: CRLFs before the start line are ignored
    if not lines:
        raise SipParseError("empty message")
    start = lines[0].strip()
    msg: Request | Response
    if start.startswith("SIP/"):
        m = _STATUS_LINE.match(start)
        if m is None:
            raise SipParseError("bad status line")
        msg = Response(status=int(m.group(1)), reason=m.group(2))
    else:
        m = _REQUEST_LINE.match(start)
        if m is None:
            raise SipParseError("bad request line")
        msg = Request(method=m.group(1).upper(), uri=m.group(2))
        if not _SCHEME.match(msg.uri):
            raise SipParseError("unsupported Request-URI scheme")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t":
            if not headers:
                raise SipParseError("continuation before any header")
            name, value = headers[-1]
            headers[-1] = (name, value + " " + line.strip())
            continue
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.match(name.strip()):
            raise SipParseError("bad header line")
        headers.append((canonical(name), value.strip()))
        if len(headers) > MAX_HEADERS:
            raise SipParseError("too many headers")
    msg.headers = headers
    length = msg.get("Content-Length")
    if length is not None:
        if not length.isdigit():
            raise SipParseError("bad Content-Length")
        n = int(length)
        if n > len(body):
            raise SipParseError("body shorter than Content-Length")
        body = body[:n]
    msg.body = body
    _check_mandatory(msg)
    return msg


def _check_mandatory(msg: Request | Response) -> None:
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        if msg.get(name) is None:
            raise SipParseError(f"missing {name}")
    if not msg.get("Call-ID"):
        raise SipParseError("empty Call-ID")  # RFC 3261 25.1: a word, at least one character; dialogs key on it
    number, method = parse_cseq(msg.get("CSeq") or "")
    if isinstance(msg, Request) and method != msg.method:
        raise SipParseError("CSeq method differs from the request's")
    vias = msg.get_all("Via")
    msg._parsed["via"] = parse_via(vias[0] if vias else "")  # kept: every layer reads the top Via
    for name in ("From", "To"):
        msg._parsed["tag:" + name] = parse_name_addr(msg.get(name) or "").tag
    del number


def parse_cseq(value: str) -> tuple[int, str]:
    parts = value.split()
    if len(parts) != 2 or not parts[0].isdigit() or not _TOKEN.match(parts[1]):
        raise SipParseError("bad CSeq")
    number = int(parts[0])
    if number >= 2**31:
        raise SipParseError("CSeq out of range")
    return number, parts[1].upper()


@dataclass
class Via:
    transport: str
    host: str
    port: int | None
    params: dict[str, str | None]

    @property
    def branch(self) -> str:
        return self.params.get("branch") or ""


def parse_params(text: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        key, eq, value = part.partition("=")
        params[key.strip().lower()] = value.strip().strip('"') if eq else None
    return params


def parse_via(value: str) -> Via:
    m = _VIA.match(value.strip())
    if m is None:
        raise SipParseError("bad Via")
    host, port = split_host_port(m.group(2))
    return Via(m.group(1).upper(), host, port, parse_params(m.group(3) or ""))


def split_host_port(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError("bad IPv6 reference")
        host, rest = text[1:end], text[end + 1 :]
        port_text = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise SipParseError("bad host")
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise SipParseError("empty host")
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise SipParseError("bad port")
        return host, int(port_text)
    return host, None


@dataclass
class NameAddr:
    display: str
    uri: str
    params: dict[str, str | None]

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        shown = f'"{self.display}" ' if self.display else ""
        params = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self.params.items())
        return f"{shown}<{self.uri}>{params}"


def parse_name_addr(value: str) -> NameAddr:
    value = value.strip()
    if "<" in value:
        lt = value.index("<")
        gt = value.find(">", lt)
        if gt < 0:
            raise SipParseError("unclosed <")
        display = value[:lt].strip()
        if display.startswith('"'):
            if len(display) < 2 or not display.endswith('"'):
                raise SipParseError("bad display name")
            display = display[1:-1].replace('\\"', '"')
        uri, params = value[lt + 1 : gt].strip(), parse_params(value[gt + 1 :])
    else:
        uri, _, rest = value.partition(";")
        display, params = "", parse_params(rest)
    if not _ADDR_URI.match(uri):
        raise SipParseError("bad URI")
    return NameAddr(display, uri, params)


@dataclass
class SipUri:
    scheme: str
    user: str
    host: str
    port: int | None
    params: dict[str, str | None]


def parse_uri(uri: str) -> SipUri:
    m = _URI.match(uri.strip())
    if m is None:
        raise SipParseError("bad URI")
    scheme, rest, params = m.group(1).lower(), m.group(2), parse_params(m.group(3) or "")
    if scheme == "tel":
        return SipUri(scheme, rest, "", None, params)
    user, at, hostport = rest.rpartition("@")
    host, port = split_host_port(hostport)
    return SipUri(scheme, user.partition(":")[0] if at else "", host, port, params)


def phone_number(uri: str) -> str | None:
    """The E.164 number a sip:/tel: URI names (+14255550123, or digits with a + added), or None."""
    try:
        user = parse_uri(uri).user
    except SipParseError:
        return None
    digits = _PHONE_PUNCTUATION.sub("", user)
    if _E164.fullmatch(digits):
        return digits if digits.startswith("+") else "+" + digits
    return None


def new_tag() -> str:
    return secrets.token_hex(6)


def new_branch() -> str:
    return BRANCH_MAGIC + secrets.token_hex(8)


def response_to(request: Request, status: int, reason: str | None = None, *, to_tag: str | None = None) -> Response:
    """A response copying what RFC 3261 8.2.6.2 says it must: Via, From, To (+ tag), Call-ID, CSeq."""
    resp = Response(status=status, reason=reason or REASONS.get(status, ""))
    headers = resp.headers
    tagged: str | None = None
    if to_tag is not None and status != 100 and request.tag("To") is None:
        to = parse_name_addr(request.get("To") or "")
        to.params["tag"] = to_tag
        tagged = str(to)
    for name in ("via", "from", "to", "call-id", "cseq"):
        values = request._values(name)
        if not values:
            continue
        if name == "to" and tagged is not None:
            headers.append(("To", tagged))  # one To, with our tag (RFC 3261 8.2.6.2)
            continue
        spelled = canonical(name)
        headers.extend((spelled, value) for value in values)
    return resp
