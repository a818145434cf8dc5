"""SIPp (Debian's sip-tester) as the far end: scenarios written per test, run as a real process on
loopback, with its exit status and its message trace to judge by."""

from __future__ import annotations

import shutil
import socket
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path

from callgrid.testing.server import free_port

SIPP = shutil.which("sipp")


def _free_ports(count: int) -> int:
    """A port free for TCP from which `count` ports in a row are free for UDP. SIPp binds its SIP socket on
    UDP (a port free for TCP only may be an RTP session's) and its media above `-mp` (audio, video):
    a video port taken by someone else's RTP made SIPp exit at once ("Unable to bind", CI under load)."""
    while True:
        base = free_port()
        held: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                held.append(udp)
                udp.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for udp in held:
                udp.close()


_SDP = """\
v=0
o=sipp 53655765 2353687637 IN IP4 [local_ip]
s=-
c=IN IP4 [media_ip]
t=0 0
m=audio {media_port} RTP/AVP {payloads}
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16"""


def invite(
    *, caller: str = "+12065550100", headers: str = "", payloads: str = "0 101", media_port: str = "[media_port]"
) -> str:
    """The caller's INVITE; `media_port` "[rtp_peer]" (with `-key rtp_peer N`) points the media at a test's RtpPeer."""
    sdp = _SDP.format(payloads=payloads, media_port=media_port)
    extra = textwrap.indent(headers.strip(), "      ") + "\n" if headers.strip() else ""
    return f"""
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Pat Caller" <sip:{caller}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:{caller}@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
{extra}      Content-Type: application/sdp
      Content-Length: [len]

{textwrap.indent(sdp, "      ")}
    ]]>
  </send>"""


def ack(branch: str = "[branch]") -> str:
    return f"""
  <send>
    <![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch={branch}
      From: "Pat Caller" <sip:[field0]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>"""


def in_dialog(method: str, cseq: int, body: str = "", content_type: str = "") -> str:
    ctype = f"      Content-Type: {content_type}\n" if content_type else ""
    return f"""
  <send retrans="500">
    <![CDATA[
      {method} [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Pat Caller" <sip:[field0]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: {cseq} {method}
      Max-Forwards: 70
{ctype}      Content-Length: [len]

{textwrap.indent(body, "      ")}
    ]]>
  </send>"""


def scenario(name: str, *steps: str) -> str:
    return f'<?xml version="1.0" encoding="ISO-8859-1" ?>\n<scenario name="{name}">{"".join(steps)}\n</scenario>\n'


def recv(status: int | str, *, optional: bool = False, timeout_ms: int | None = None, rrs: bool = False) -> str:
    attrs = f' response="{status}"'
    if rrs:
        attrs += ' rrs="true"'  # remember Contact and Record-Route: [next_url] of in-dialog requests
    if optional:
        attrs += ' optional="true"'
    if timeout_ms is not None:
        attrs += f' timeout="{timeout_ms}"'
    return f"\n  <recv{attrs}/>"


def header_check(header: str, regexp: str, variable: str) -> str:
    """A check SIPp makes on the message just received (the call fails without a match); SIPp refuses a
    scenario whose variable is never used, hence the log line."""
    check = f'<ereg regexp="{regexp}" search_in="hdr" header="{header}:" check_it="true" assign_to="{variable}"/>'
    return check + f'<log message="{header}: [${variable}]"/>'


def pause(ms: int) -> str:
    return f'\n  <pause milliseconds="{ms}"/>'


@dataclass
class SippRun:
    returncode: int
    out: str
    trace: str
    process: subprocess.Popen[str] | None = None


class Sipp:
    """One SIPp process: a UAC calling callgrid, or a UAS standing for a trunk's far end."""

    def __init__(
        self,
        workdir: Path,
        name: str,
        xml: str,
        *,
        remote: str | None,
        service: str = "",
        caller: str = "+12065550100",
        transport: str = "u1",
        extra: list[str] | None = None,
        ip: str = "127.0.0.1",
        port: int | None = None,
    ) -> None:
        assert SIPP is not None, "sipp (Debian's sip-tester) is required"
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.xml = self.dir / f"{name}.xml"
        self.xml.write_text(xml)
        # [field0] in the scenarios is the caller's number.
        (self.dir / "fields.csv").write_text(f"SEQUENTIAL\n{caller};\n")
        self.port = port or _free_ports(1)
        self.media_port = _free_ports(4)
        self.args = [
            SIPP,
            *([remote] if remote else []),
            "-sf",
            str(self.xml),
            "-inf",
            str(self.dir / "fields.csv"),
            "-i",
            ip,
            "-p",
            str(self.port),
            "-mp",
            str(self.media_port),
            "-t",
            transport,
            "-nostdin",
            "-trace_msg",
            "-trace_err",
            "-message_file",
            str(self.dir / "messages.log"),
            "-error_file",
            str(self.dir / "errors.log"),
            *(["-s", service] if service else []),
            *(extra or []),
        ]
        self.proc: subprocess.Popen[str] | None = None

    def start(self, *, calls: int = 1, timeout: float = 60) -> Sipp:
        self.proc = subprocess.Popen(
            [*self.args, "-m", str(calls), "-timeout", f"{int(timeout)}s", "-timeout_error"],
            cwd=self.dir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        return self

    def wait(self, timeout: float = 90) -> SippRun:
        assert self.proc is not None
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return SippRun(self.proc.returncode, out or "", self.trace())

    def trace(self) -> str:
        parts = []
        for name in ("messages.log", "errors.log"):
            path = self.dir / name
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def uas_answer() -> str:
    """The far end of a trunk answers: 100, 180, then 200 with SDP; then waits for callgrid's BYE."""
    steps = [
        '\n  <recv request="INVITE" crlf="true" rrs="true"/>',
        uas_reply("100 Trying"),
        uas_reply("180 Ringing", tag=True),
        pause(300),
        uas_reply("200 OK", tag=True, sdp=True),
        '\n  <recv request="ACK" crlf="true"/>',
    ]
    steps += ['\n  <recv request="BYE"/>', uas_reply("200 OK", tag=True)]
    return scenario("uas-answer", *steps)


def uas_refuse(status: str, *, ring: bool = True) -> str:
    """The far end refuses: 100, 180 (unless not `ring`), then `status` (e.g. "486 Busy Here"); the ACK follows."""
    return scenario(
        "uas-refuse",
        '\n  <recv request="INVITE" crlf="true"/>',
        uas_reply("100 Trying"),
        uas_reply("180 Ringing", tag=True) if ring else "",
        pause(300),
        uas_reply(status, tag=True),
        '\n  <recv request="ACK"/>',
    )


def uas_ring() -> str:
    """The far end rings until callgrid gives up: CANCEL answered 200, the INVITE 487."""
    return scenario(
        "uas-ring",
        '\n  <recv request="INVITE" crlf="true"/>',
        uas_reply("100 Trying"),
        uas_reply("180 Ringing", tag=True),
        '\n  <recv request="CANCEL"/>',
        uas_reply("200 OK", tag=True),
        uas_reply("487 Request Terminated", tag=True, cseq="1 INVITE"),
        '\n  <recv request="ACK"/>',
    )


def uas_reply(status: str, *, tag: bool = False, sdp: bool = False, cseq: str = "") -> str:
    to = "[last_To:];tag=[pid]SIPpTag01[call_number]" if tag else "[last_To:]"
    body = _SDP.format(payloads="0 101", media_port="[media_port]") if sdp else ""
    ctype = "      Content-Type: application/sdp\n" if sdp else ""
    contact = "      Contact: <sip:far@[local_ip]:[local_port];transport=[transport]>\n"
    return f"""
  <send>
    <![CDATA[
      SIP/2.0 {status}
      [last_Via:]
      [last_From:]
      {to}
      [last_Call-ID:]
      {f"CSeq: {cseq}" if cseq else "[last_CSeq:]"}
{contact}{ctype}      Content-Length: [len]

{textwrap.indent(body, "      ")}
    ]]>
  </send>"""


def uas_answer_then_hang_up(hold_ms: int) -> str:
    """The far end answers, then hangs up itself after `hold_ms` (BYE to callgrid's Contact)."""
    return scenario(
        "uas-hang-up",
        """
  <recv request="INVITE" crlf="true" rrs="true">
    <action>
      <ereg regexp=".*" search_in="hdr" header="From:" check_it="true" assign_to="caller_from"/>
    </action>
  </recv>""",
        uas_reply("100 Trying"),
        uas_reply("180 Ringing", tag=True),
        uas_reply("200 OK", tag=True, sdp=True),
        '\n  <recv request="ACK" crlf="true"/>',
        pause(hold_ms),
        """
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: [last_To:];tag=[pid]SIPpTag01[call_number]
      To: [$caller_from]
      [last_Call-ID:]
      CSeq: 1 BYE
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>""",
        recv(200),
    )
