"""Who made a tracking hit: a person, or a machine acting for the mailbox.

Each rule that fires adds a reason; the first machine rule that fires names the class.
The address ranges and user-agent fragments are the published or widely observed ones;
they are data, extended in one place here.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from automation.tracking.hits import Hit


class HitClass(enum.StrEnum):
    HUMAN = "human"
    APPLE_MPP = "apple_mpp"
    IMAGE_PROXY = "image_proxy"
    SCANNER = "scanner"
    PREFETCH = "prefetch"


APPLE_NETWORKS = [ipaddress.ip_network("17.0.0.0/8")]
# Microsoft Exchange Online Protection (Safe Links), Proofpoint, Mimecast, Barracuda.
SCANNER_NETWORKS = [
    ipaddress.ip_network(n)
    for n in (
        "40.92.0.0/15",
        "40.107.0.0/16",
        "52.100.0.0/14",
        "104.47.0.0/17",
        "148.163.128.0/17",  # Proofpoint
        "67.231.144.0/20",  # Proofpoint
        "205.139.110.0/24",  # Mimecast
        "207.211.30.0/24",  # Mimecast
        "209.222.80.0/21",  # Barracuda
        "64.235.144.0/20",  # Barracuda
    )
]
IMAGE_PROXY_AGENTS = ("googleimageproxy", "ggpht.com", "yahoomailproxy", "ymailproxy")
SCANNER_AGENTS = (
    "barracuda",
    "proofpoint",
    "mimecast",
    "safelinks",
    "python-requests",
    "curl/",
    "wget/",
    "go-http-client",
    "headlesschrome",
    "bot",
    "spider",
    "crawler",
)
OPEN_TOO_SOON = 2.0  # seconds after delivery: no person has read the mail yet
CLICK_TOO_SOON = 10.0
BURST_SECONDS = 5.0  # several different links of one message clicked within this


@dataclass
class Verdict:
    cls: HitClass = HitClass.HUMAN
    reasons: list[str] = field(default_factory=list)

    @property
    def machine(self) -> bool:
        return self.cls is not HitClass.HUMAN

    def flag(self, cls: HitClass, reason: str) -> None:
        if self.cls is HitClass.HUMAN:
            self.cls = cls
        self.reasons.append(reason)


# The first octets of every range above as text: an IPv4 address starting otherwise is in
# none of them (nor is an IPv6 one), and is not worth parsing.
_FIRST_OCTETS = frozenset(
    str(n.network_address).split(".")[0] for n in [*APPLE_NETWORKS, *SCANNER_NETWORKS]
)


@functools.lru_cache(maxsize=65536)
def _networks_of(ip: str) -> tuple[bool, bool]:
    """(Apple, security gateway) for an address; cached, a batch repeats addresses."""
    if ip.partition(".")[0] not in _FIRST_OCTETS:
        return False, False
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False, False
    return (
        any(address in n for n in APPLE_NETWORKS),
        any(address in n for n in SCANNER_NETWORKS),
    )


@functools.lru_cache(maxsize=4096)
def _agent_of(user_agent: str) -> tuple[bool, bool, bool]:
    """(image proxy, scanner or script, empty) for a user agent; cached: a batch repeats
    a few agents thousands of times."""
    ua = user_agent.lower()
    return (
        any(a in ua for a in IMAGE_PROXY_AGENTS),
        any(a in ua for a in SCANNER_AGENTS),
        not ua.strip(),
    )


def classify(
    hit: Hit, sent_at: float | None, *, honeypot: bool = False, burst: bool = False
) -> Verdict:
    """Classify one hit. ``sent_at`` is the message's delivery time (epoch seconds)."""
    verdict = Verdict()
    image_proxy, scanner_agent, no_agent = _agent_of(hit.user_agent)
    if honeypot:
        verdict.flag(HitClass.SCANNER, "honeypot link clicked")
    if hit.prefetch:
        verdict.flag(HitClass.PREFETCH, "prefetch request header")
    if hit.head:
        verdict.flag(HitClass.SCANNER, "HEAD request")
    apple, gateway = _networks_of(hit.ip)
    if apple:
        verdict.flag(HitClass.APPLE_MPP, "Apple Mail Privacy Protection address range")
    if image_proxy:
        verdict.flag(HitClass.IMAGE_PROXY, "image proxy user agent")
    if gateway:
        verdict.flag(HitClass.SCANNER, "security gateway address range")
    if scanner_agent:
        verdict.flag(HitClass.SCANNER, "scanner or script user agent")
    if no_agent:
        verdict.flag(HitClass.SCANNER, "no user agent")
    if sent_at is not None:
        delay = hit.at - sent_at
        limit = OPEN_TOO_SOON if hit.kind == "open" else CLICK_TOO_SOON
        if delay < limit:
            verdict.flag(
                HitClass.PREFETCH if hit.kind == "open" else HitClass.SCANNER,
                f"{max(delay, 0):.1f} s after delivery",
            )
    if burst:
        verdict.flag(HitClass.SCANNER, f"several links clicked within {BURST_SECONDS:.0f} s")
    return verdict


def burst_hits(hits: Sequence[Hit], link_counts: dict[int, int]) -> set[str]:
    """Ids of click hits on a message whose distinct links (all of them, or at least 3)
    were clicked within BURST_SECONDS of each other — what a gateway following every link
    does. Seen within one ingested batch."""
    by_message: dict[int, list[Hit]] = defaultdict(list)
    for hit in hits:
        if hit.kind == "click":
            by_message[hit.message_id].append(hit)
    out: set[str] = set()
    for message_id, clicks in by_message.items():
        need = max(2, min(3, link_counts.get(message_id, 3)))
        if len({h.link_index for h in clicks}) < need:
            continue
        clicks.sort(key=lambda h: h.at)
        start = 0
        for end in range(len(clicks)):
            while clicks[end].at - clicks[start].at > BURST_SECONDS:
                start += 1
            window = clicks[start : end + 1]
            if len({h.link_index for h in window}) >= need:
                out.update(h.id for h in window)
    return out
