"""Masking credentials in fault text before it is stored.

Components report whatever their exceptions say, and exceptions say too much:
a `ProcessExecutionError` quotes `mysql -u root -pSECRET`, an `OperationalError`
quotes its connection URL, an HTTP client dumps its `Authorization` header.
Every fault's message, details, source and host go through a `Scrubber`
before they are stored, and before they are truncated, so that a cut cannot
leave half a secret that no pattern recognises any more.

This is pattern matching, so it is best effort: it masks the forms below, and
anything that looks like them, and nothing else. The ideas come from
oslo.utils' `strutils.mask_password` (secret words found anywhere in a key
name; `key=value`, quoted, JSON, XML and `--option value` forms), with the
forms Nova and Trove faults are known to have leaked added.

A pattern is a regular expression; a match is replaced by the mask, or, when
the pattern has groups named `secret...`, only those groups are. Operators add
their own with the `scrub_patterns` setting. The scrubber runs on every
recorded fault, on text a caller chose, so its cost must not explode: the
patterns use possessive quantifiers and atomic groups, each default pattern
runs only when the text holds one of its literal hints, and only as much text
is scrubbed as can survive the cut that follows.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from faultsvc.faults import TRUNCATION_MARKER

MASK = "***"

# Words that make a key name secret wherever they appear in it, in any case:
# password, passwd, passphrase, pwd, secret, token, api_key, access_key,
# private_key, auth_key, credential(s), cookie, and `pass` as a segment of its
# own (`admin_pass`, not `bypass`). So `OS_PASSWORD`, `db_password`,
# `X-Auth-Token` and `aws_secret_access_key` are all secret keys.
_WORD = (
    r"(?:pass(?:word|wd|phrase)|pwd|secret|token|(?:api|access|private|auth)[_-]?key"
    r"|credentials?|cookie|(?<![a-z])pass(?![a-z]))"
)
_WORD_HINTS = ("pass", "pwd", "secret", "token", "key", "credential", "cookie")
# A key name holding a secret word, found once per word (atomic): `OS_PASSWORD`.
_KEY = rf"(?<![\w.-])(?>[\w.-]*?{_WORD})[\w.-]*+"
_OPTION = rf"(?<![\w-])--?(?>[\w.-]*?{_WORD})[\w.-]*+"
_SPACE = r"[ \t]*+"


def _quoted(name: str) -> str:
    """A quoted string on one line; `secret_<name>` is its inside. Unterminated, to line end."""
    quote = f"q_{name}"
    return (
        rf"(?P<{quote}>[\"'])(?P<secret_{name}>(?:\\.|(?!(?P={quote}))[^\\\n])*+)"
        rf"(?:(?P={quote})|(?=\n)|\Z)"
    )


# An unquoted value ends at white space, a quote, `,`, `;` or `&`.
_UNQUOTED = r"(?![\"'])(?P<secret_bare>[^\s\"',;&]++)"


@dataclass(frozen=True)
class ScrubPattern:
    """A pattern, and literals (lower case) one of which the text must hold for it to match.

    With `within`, the pattern finds regions (e.g. the lines of a mysql
    command) and `within` is what is masked inside them.
    """

    regex: re.Pattern[str]
    hints: tuple[str, ...] = ()
    within: re.Pattern[str] | None = None

    def apply(self, text: str, masked: Callable[[re.Match[str]], str]) -> str:
        within = self.within
        if within is None:
            return self.regex.sub(masked, text)
        return self.regex.sub(lambda region: within.sub(masked, region[0]), text)


def _pattern(
    regex: str, *hints: str, flags: int = re.IGNORECASE, within: str | None = None
) -> ScrubPattern:
    return ScrubPattern(
        re.compile(regex, flags), hints, None if within is None else re.compile(within)
    )


DEFAULT_PATTERNS: tuple[ScrubPattern, ...] = (
    # -----BEGIN RSA PRIVATE KEY----- ... -----END RSA PRIVATE KEY-----, or to
    # the end of the text when the block was cut.
    _pattern(
        r"-----BEGIN (?P<kind>[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?)-----"
        r"(?P<secret>.*?)(?:-----END (?P=kind)-----|\Z)",
        "private key",
        flags=re.DOTALL,
    ),
    # mysql+aiomysql://user:PASSWORD@host/db (the password may hold '@', not '/',
    # which a URL must encode).
    _pattern(
        r"\b[a-z][a-z0-9+.-]*+://[^\s:/@'\"]*+:(?P<secret>[^\s'\"/]+?)"
        r"(?=@[^\s'\"@/]*+(?:[\s'\"/?#]|\Z))",
        "://",
    ),
    # Authorization: Bearer TOKEN, 'Authorization': 'Basic B64', Proxy-Authorization.
    _pattern(
        rf"\b(?:proxy-)?authori[sz]ation[\"']?{_SPACE}[:=]{_SPACE}(?:[ub]?[\"'])?"
        r"(?:(?:bearer|basic|digest|negotiate|token|apikey|oauth|aws4-hmac-sha256)[ \t]++)?"
        r"(?P<secret>[^\s'\",]++)",
        "authori",
    ),
    # AWS access key ids: long-term (AKIA) and temporary (ASIA).
    _pattern(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", "akia", "asia", flags=0),
    # SQL: IDENTIFIED BY 'x', PASSWORD('x'), SET PASSWORD ... = 'x'.
    _pattern(
        rf"\bIDENTIFIED{_SPACE}(?:WITH{_SPACE}\w++{_SPACE})?(?:BY|AS){_SPACE}"
        rf"(?:PASSWORD{_SPACE})?{_quoted('sql')}",
        "identified",
    ),
    _pattern(rf"\bPASSWORD{_SPACE}\({_SPACE}{_quoted('sql')}", "password"),
    _pattern(rf"\bSET{_SPACE}PASSWORD\b[^\n=]{{0,200}}={_SPACE}{_quoted('sql')}", "password"),
    # On a mysql/mariadb command line: -pSECRET (glued to -p; -P is the port),
    # and `mysqladmin -u root password NEW`.
    _pattern(
        r"(?im)^[^\n]*?\b(?:mysql|mariadb)[^\n]*+",
        "mysql",
        "mariadb",
        within=r"(?<=[\s'\"])-p(?P<secret_glued>[^\s'\"]++)"
        r"|(?i:\bpassword)[ \t,'\"]++(?P<secret_argument>[^\s'\",\]]++)",
    ),
    # ['cmd', '--password', 'x'], as an argument list is printed; and --password x.
    _pattern(rf"[\"']{_OPTION}[\"']{_SPACE},{_SPACE}[ub]?{_quoted('arg')}", *_WORD_HINTS),
    _pattern(rf"{_OPTION}[ \t]++(?P<secret>(?![-\"'])[^\s\"']++)", *_WORD_HINTS),
    # <password>x</password>
    _pattern(rf"<(?P<tag>(?>[\w:.-]*?{_WORD})[\w:.-]*+)>(?P<secret>[^<]*+)</(?P=tag)>", "<"),
    # password='x', "password": "x", 'password' => 'x', api_key = u'x', password=x,
    # PASSWORD: x (not MySQL's own "(using password: YES)"), and password 'x'.
    _pattern(
        rf"{_KEY}(?:[\"']?{_SPACE}(?:=>|=|:){_SPACE}(?:[rub]?{_quoted('value')}"
        rf"|(?!(?:YES|NO)\)){_UNQUOTED})|[ \t]++{_quoted('spaced')})",
        *_WORD_HINTS,
    ),
    # AWS secret access keys: 40 characters of base64 mixing cases and digits
    # (a SHA-1 in hex is 40 characters too, but of one case). Looked for only
    # in text that speaks of AWS: this shape is the costliest to search for,
    # a third of scrubbing a traceback, and a secret key given as a value
    # (aws_secret_access_key=...) is masked by the key=value pattern anyway.
    _pattern(
        r"(?<![A-Za-z0-9/+=])(?=[A-Za-z0-9/+]{0,39}[a-z])(?=[A-Za-z0-9/+]{0,39}[A-Z])"
        r"(?=[A-Za-z0-9/+]{0,39}[0-9])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])",
        "aws",
        "akia",
        "asia",
        flags=0,
    ),
)


class Scrubber:
    """Masks credentials in text: the default patterns, then the operator's."""

    def __init__(self, extra_patterns: Iterable[str] = (), mask: str = MASK) -> None:
        self.patterns: Sequence[ScrubPattern] = (
            *DEFAULT_PATTERNS,
            *(ScrubPattern(re.compile(pattern)) for pattern in extra_patterns),
        )
        self.mask = mask

    def scrub(self, text: str) -> str:
        """`text` with every credential the patterns recognise replaced by the mask."""
        lowered = text.lower()

        @functools.cache  # several patterns share their hints
        def may_match(hints: tuple[str, ...]) -> bool:
            return not hints or any(hint in lowered for hint in hints)

        for pattern in self.patterns:
            if may_match(pattern.hints):
                text = pattern.apply(text, self._masked)
        return text

    def scrub_before_cut(self, text: str, limit: int) -> str:
        """`text` scrubbed, ready to be cut at `limit` characters or bytes.

        Only the first 2 x `limit` characters are scrubbed: what lies beyond
        is cut anyway, and the cost must not grow with what a caller sends.
        The margin keeps a secret that straddles the cut whole, so it is
        recognised. When masks shrink the kept part below the limit, it ends
        with the truncation marker, so that the cut stays visible.
        """
        window = 2 * limit
        if len(text) <= window:
            return self.scrub(text)
        return self.scrub(text[:window]) + TRUNCATION_MARKER

    def _masked(self, match: re.Match[str]) -> str:
        secrets = [name for name in match.re.groupindex if name.startswith("secret")]
        if not secrets:
            return self.mask
        whole, offset = match[0], match.start()
        spans = sorted(match.span(name) for name in secrets if match.start(name) < match.end(name))
        pieces, kept = [], 0
        for start, end in spans:
            pieces += [whole[kept : start - offset], self.mask]
            kept = end - offset
        return "".join([*pieces, whole[kept:]])


def check_patterns(patterns: Iterable[str]) -> list[str]:
    """The patterns, each checked to compile; the error names the first that does not."""
    checked = []
    for number, pattern in enumerate(patterns, 1):
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(
                f"scrub pattern {number} is not a regular expression: {error}"
            ) from None
        checked.append(pattern)
    return checked
