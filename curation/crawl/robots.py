"""robots.txt (RFC 9309): which paths of an origin a user agent may fetch, and its crawl delay.

A small parser of our own rather than ``urllib.robotparser``: the standard library takes the *first*
matching rule and treats ``*`` and ``$`` literally, while RFC 9309 (and every large crawler) takes the
*longest* match, lets ``allow`` win a tie, and supports both wildcards. ``Crawl-delay`` (not in the
RFC, but widely used) is read from the chosen group.

Group choice: the groups whose ``User-agent`` equals our product token (the user agent up to the
first ``/`` or space, case-insensitive; ``GristmillBot``) are merged; without one, the ``*`` groups.

How a fetch of ``/robots.txt`` is interpreted (RFC 9309 §2.3.1): 2xx → its rules (at most 500 KiB
read); 4xx → no restrictions; 5xx or a network failure → "unreachable", complete disallow. Redirects
are followed (up to 5 hops, each checked by the address policy) by the crawler.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from curation.crawl.urls import _PATH_SAFE, _QUERY_SAFE, _fix_escapes

MAX_ROBOTS_BYTES = 500 << 10


def product_token(user_agent: str) -> str:
    token = re.split(r"[/\s]", user_agent.strip(), maxsplit=1)[0]
    return token.lower()


def _pattern_regex(pattern: str) -> re.Pattern:
    anchored = pattern.endswith("$")
    body = pattern[:-1] if anchored else pattern
    regex = ".*".join(re.escape(piece) for piece in body.split("*"))
    return re.compile(regex + ("$" if anchored else ""), re.DOTALL)


@dataclass
class RobotsRules:
    rules: list[tuple[int, bool, re.Pattern]] = field(default_factory=list)  # (length, allow, regex)
    crawl_delay: float | None = None
    disallow_all: bool = False
    note: str = ""  # how the rules came about (for the crawl log)

    def allowed(self, path_and_query: str) -> bool:
        if path_and_query == "/robots.txt":
            return True
        if self.disallow_all:
            return False
        best: tuple[int, bool] | None = None
        for length, allow, regex in self.rules:
            if regex.match(path_and_query) and (best is None or (length, allow) > best):
                best = (length, allow)
        return True if best is None else best[1]


def parse_robots(text: str, user_agent: str) -> RobotsRules:
    token = product_token(user_agent)
    groups: list[tuple[set[str], list[tuple[str, str]]]] = []
    agents: set[str] = set()
    lines: list[tuple[str, str]] = []
    in_agents = False
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip().lower(), value.strip()
        if key in ("user-agent", "useragent"):
            if not in_agents:
                agents, lines = set(), []
                groups.append((agents, lines))
                in_agents = True
            agents.add(value.lower())
        elif key in ("allow", "disallow", "crawl-delay"):
            in_agents = False
            if groups:
                lines.append((key, value))
        # anything else (sitemap, host, unknown) is not a group member and does not end a group
    mine = [g for g in groups if token in g[0]] or [g for g in groups if "*" in g[0]]
    out = RobotsRules()
    for _, group_lines in mine:
        for key, value in group_lines:
            if key == "crawl-delay":
                try:
                    delay = float(value)
                except ValueError:
                    continue
                if delay >= 0:
                    out.crawl_delay = max(out.crawl_delay or 0.0, delay)
            elif value:  # an empty Disallow allows everything: no rule
                if not value.startswith("/") and not value.startswith("*"):
                    value = "/" + value
                path, q, query = value.partition("?")
                norm = _fix_escapes(path, _PATH_SAFE) + (q + _fix_escapes(query, _QUERY_SAFE) if q else "")
                out.rules.append((len(norm), key == "allow", _pattern_regex(norm)))
    return out


def rules_for_status(status: int, body: bytes | None, user_agent: str) -> RobotsRules:
    if 200 <= status < 300:
        rules = parse_robots((body or b"")[:MAX_ROBOTS_BYTES].decode("utf-8", "replace"), user_agent)
        rules.note = f"robots.txt {status}"
        return rules
    if 400 <= status < 500:
        return RobotsRules(note=f"robots.txt {status}: no restrictions")
    return RobotsRules(disallow_all=True, note=f"robots.txt {status}: unreachable, complete disallow")
