"""Masking credentials in fault text before it is stored.

Components report whatever their exceptions say, and exceptions say too much:
a `ProcessExecutionError` quotes `mysql -u root -pSECRET`, an `OperationalError`
quotes its connection URL, an HTTP client dumps its `Authorization` header.
Every fault's message, details, source and host go through a `Scrubber`
before they are stored: each text whole, as sent, and only then cut to its
limit, so that no cut and no window can hide a secret from the patterns.

This is pattern matching, so it is best effort: it masks the forms below, and
anything that looks like them, and nothing else. oslo.utils'
`strutils.mask_password` is the floor: a key name holding any of its secret
words (`_SANITIZE_KEYS`), in any case, is masked in `key=value`, quoted, JSON,
escaped JSON, XML, tuple and `--option value` forms; the forms Nova, Trove and
oslo faults are known to have leaked are added.

A pattern is a regular expression; a match is replaced by the mask, or, when
the pattern has groups named `secret...`, only those groups are. Operators add
their own with the `scrub_patterns` setting. The text is a caller's choice, up
to the 4 MiB of a request, so every pattern, the operators' included, runs on
RE2 (google-re2), which matches in time linear in the text whatever the
pattern. RE2 has no lookaround and no backreferences, so the patterns consume
a boundary character outside the secret instead of looking behind, spell out
each quote kind instead of referring back to the opening one, and leave the
few checks a regular expression cannot make to a predicate on what was found.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import re2

MASK = "***"

# RE2 would also log every pattern it cannot compile to stderr: the error says it.
_OPTIONS = re2.Options()
_OPTIONS.log_errors = False

# oslo.utils' `strutils._SANITIZE_KEYS`, as listed there: a key holding one of
# these in any case is secret (`adminPass`, `CHAPPASSWORD`, `cephx_secret`).
OSLO_SANITIZE_KEYS = (
    "adminpass",
    "admin_pass",
    "password",
    "admin_password",
    "auth_token",
    "new_pass",
    "auth_password",
    "secret_uuid",
    "secret",
    "sys_pswd",
    "token",
    "configdrive",
    "chappassword",
    "encrypted_key",
    "private_key",
    "fernetkey",
    "sslkey",
    "passphrase",
    "cephclusterfsid",
    "octaviaheartbeatkey",
    "rabbitcookie",
    "cephmanilaclientkey",
    "pacemakerremoteauthkey",
    "designaterndckey",
    "cephadminkey",
    "heatauthencryptionkey",
    "cephclientkey",
    "keystonecredential",
    "barbicansimplecryptokek",
    "cephrgwkey",
    "swifthashsuffix",
    "migrationsshkey",
    "cephmdskey",
    "cephmonkey",
    "chapsecret",
)
# More words that make a key secret wherever they are in it, in any case:
# `db_passwd`, `MYSQL_PWD`, `Set-Cookie`, `X-Amz-Signature`, `ssl_key`, `pskey`.
_MORE_SECRET_WORDS = (
    "passwd",
    "pwd",
    "credential",
    "cookie",
    "signature",
    "keyring",
    "(?:api|access|auth|private|encrypted|encryption|fernet|ssl|cephx|ps)[_-]?key",
)
_ANYWHERE = "|".join([*OSLO_SANITIZE_KEYS, *_MORE_SECRET_WORDS])
# Literals, one of which every key holding a secret word contains (lower case).
_KEY_HINTS = (
    "pass",
    "pwd",
    "pswd",
    "secret",
    "token",
    "key",
    "kek",
    "credential",
    "cookie",
    "sig",
    "configdrive",
    "fsid",
    "suffix",
)


def _key(punctuation: str) -> str:
    """A key name of word characters and `punctuation` that holds a secret word.

    The secret words anywhere (`OS_PASSWORD`, `X-Auth-Token`); `pass` and `sig`
    only as a segment of their own (`admin_pass`, `temp_url_sig`, not `bypass`
    or `signal`), in snake or camel case (`adminPass`, `newPass`). The match
    must start where the name starts: the patterns consume the character
    before it.
    """
    char, non_letter = rf"[\w{punctuation}]", rf"[0-9_{punctuation}]"
    return (
        rf"(?:{char}*(?i:{_ANYWHERE}){char}*"
        rf"|(?:{char}*{non_letter})?(?i:pass|sig)(?:{non_letter}{char}*)?"
        rf"|{char}*[a-z](?:Pass|Sig)(?:[A-Z0-9_{punctuation}]{char}*)?)"
    )


_KEY = _key(".-")
_BEFORE_KEY = r"(?:^|[^\w.-])"
_SPACE = r"[ \t]*"


def _quoted(name: str) -> str:
    """A string on one line in quotes, plain or backslash-escaped (`\\"x\\"`, JSON in a string).

    `secret_<name>_...` is its inside; unterminated, it runs to the end of the line.
    """
    return (
        rf"(?:\"(?P<secret_{name}_double>(?:\\.|[^\"\\\n])*)\"?"
        rf"|'(?P<secret_{name}_single>(?:\\.|[^'\\\n])*)'?"
        rf"|\\+[\"'](?P<secret_{name}_escaped>(?:[^\"'\\\n]|\\+[^\"'\\\n])*)(?:\\+[\"'])?)"
    )


class ScrubPattern:
    """A pattern, and literals (lower case) one of which the text must hold for it to match.

    With `region`, the pattern is looked for only inside the regions that
    `region` finds (e.g. the lines of a mysql command). A found secret is
    masked only if `accept` takes it.
    """

    def __init__(
        self,
        pattern: str,
        *hints: str,
        region: str | None = None,
        accept: Callable[[str], bool] | None = None,
    ) -> None:
        self.regex = re2.compile(pattern, _OPTIONS)
        self.hints = tuple(hint.encode() for hint in hints)
        self.region = None if region is None else re2.compile(region, _OPTIONS)
        self.accept = accept
        self._secrets = sorted(
            index for name, index in self.regex.groupindex.items() if name.startswith("secret")
        )

    def mask_in(self, text: bytes, mask: bytes) -> bytes:
        """`text` (UTF-8) with what this pattern finds masked."""
        # Appended as found rather than joined from a list: freeing a list of a
        # million pieces would hold the GIL for tens of milliseconds at once.
        masked, kept = bytearray(), 0
        for start, end in self._secrets_in(text):
            masked += text[kept:start]
            masked += mask
            kept = end
        if not kept:
            return text
        masked += text[kept:]
        return bytes(masked)

    def _secrets_in(self, text: bytes) -> Iterator[tuple[int, int]]:
        """The spans to mask, in order: the secret groups of each match, or whole matches."""
        if self.region is None:
            matches = self.regex.finditer(text)
        else:
            matches = (
                match
                for region in self.region.finditer(text)
                for match in self.regex.finditer(text, region.start(), region.end())
            )
        for match in matches:
            spans = sorted(match.span(group) for group in self._secrets) or [match.span()]
            for start, end in spans:
                if start < end and self._accepts(text[start:end]):
                    yield start, end

    def _accepts(self, secret: bytes) -> bool:
        return self.accept is None or self.accept(secret.decode(errors="replace"))


def _not_mysql_saying_whether(value: str) -> bool:
    """MySQL's own `(using password: YES)` says whether a password was used: no secret."""
    return value not in ("YES)", "NO)")


def _looks_like_a_token(value: str) -> bool:
    """A bearer token, not a word: `Bearer authentication failed` keeps its words."""
    return len(value) >= 20 or any(character.isdigit() for character in value)


def _looks_like_an_aws_secret_key(value: str) -> bool:
    """40 characters of base64 mixing cases and digits (a SHA-1 in hex has one case)."""
    return (
        len(value) == 40
        and "=" not in value
        and any(character.islower() for character in value)
        and any(character.isupper() for character in value)
        and any(character.isdigit() for character in value)
    )


DEFAULT_PATTERNS: tuple[ScrubPattern, ...] = (
    # -----BEGIN RSA PRIVATE KEY----- ... -----END RSA PRIVATE KEY-----, or to
    # the end of the text when the block was cut.
    ScrubPattern(
        r"(?s)-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?P<secret>.*?)"
        r"(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|$)",
        "private key",
    ),
    # mysql+aiomysql://user:PASSWORD@host/db (the password may hold '@', not '/',
    # which a URL must encode: the last '@' ends it).
    ScrubPattern(
        r"(?i)\b[a-z][a-z0-9+.-]*://[^\s:/@'\"]*:(?P<secret>[^\s'\"/]+)@",
        "://",
    ),
    # Authorization: Bearer TOKEN, 'Authorization': 'Basic B64', Proxy-Authorization,
    # \"Authorization\": \"Bearer TOKEN\".
    ScrubPattern(
        rf"(?i)\b(?:proxy-)?authori[sz]ation\\*[\"']?{_SPACE}[:=]{_SPACE}(?:[ub]?\\*[\"'])?"
        r"(?:(?:bearer|basic|digest|negotiate|token|apikey|oauth|aws4-hmac-sha256)[ \t]+)?"
        r"(?P<secret>[^\s'\",\\]+)",
        "authori",
    ),
    # A bearer token anywhere: "sent Bearer eyJhbGciOi...".
    ScrubPattern(
        r"(?i)\bbearer[ \t]+(?P<secret>[a-z0-9._~+/-]+=*)",
        "bearer",
        accept=_looks_like_a_token,
    ),
    # AWS access key ids: long-term (AKIA) and temporary (ASIA).
    ScrubPattern(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", "akia", "asia"),
    # SQL: IDENTIFIED BY 'x', PASSWORD('x'), SET PASSWORD ... = 'x'.
    ScrubPattern(
        r"(?i)\bIDENTIFIED\s*(?:WITH\s*\w+\s*)?(?:BY|AS)\s*(?:PASSWORD\s*)?"
        rf"{_quoted('by')}|\bPASSWORD\s*\(\s*{_quoted('function')}"
        rf"|\bSET\s*PASSWORD\b[^\n=]*=\s*{_quoted('set')}",
        "identified",
        "password",
    ),
    # On a mysql/mariadb command line: -pSECRET, -p'SECRET', -p"SECRET" (glued to
    # -p; -P is the port), and `mysqladmin -u root password NEW`.
    ScrubPattern(
        r"(?m)(?:^|[\s\"])-p'(?P<secret_single>[^'\n]*)'?"
        r"|(?:^|[\s'])-p\"(?P<secret_double>[^\"\n]*)\"?"
        r"|(?:^|[\s'\"])-p(?P<secret_glued>[^\s'\"]+)"
        r"|(?i:\bpassword)[ \t,'\"]+(?P<secret_argument>[^\s'\",\]]+)",
        "mysql",
        "mariadb",
        region=r"(?im)^[^\n]*\b(?:mysql|mariadb)[^\n]*",
    ),
    # ['cmd', '--password', 'x'], as an argument list is printed, and
    # ('password', 'x'), as a tuple is.
    ScrubPattern(
        rf"(?:[\"']--?|\({_SPACE}[ub]?[\"']){_KEY}[\"']{_SPACE},{_SPACE}[ub]?{_quoted('item')}",
        *_KEY_HINTS,
    ),
    # --password x
    ScrubPattern(
        rf"{_BEFORE_KEY}-{_KEY}[ \t]+(?P<secret>[^-\s\"'][^\s\"']*)",
        *_KEY_HINTS,
    ),
    # <password>x</password>, <adminPass>x</adminPass>, <ns:password><![CDATA[x]]></ns:password>
    ScrubPattern(
        rf"(?s)<{_key(':.-')}(?:\s[^<>]*)?>"
        r"(?:<!\[CDATA\[(?P<secret_cdata>.*?)\]\]>|(?P<secret_text>[^<]*))</",
        *_KEY_HINTS,
    ),
    # password='x', "password": "x", {\"password\": \"x\"}, 'password' => 'x',
    # api_key = u'x', password=x, PASSWORD: x, passwords: ['x', 'y'], and
    # password 'x'. A value that opens a mapping is left to the keys inside it.
    ScrubPattern(
        rf"{_BEFORE_KEY}{_KEY}"
        rf"(?:\\*[\"']?{_SPACE}(?:=>|=|:){_SPACE}(?:[rub]?{_quoted('value')}"
        r"|\[(?P<secret_list>[^\]\n]*)\]?|(?P<secret_bare>[^\s\"',;&{\[][^\s\"',;&]*))"
        rf"|[ \t]+{_quoted('spaced')})",
        *_KEY_HINTS,
        accept=_not_mysql_saying_whether,
    ),
    # AWS secret access keys: 40 characters of base64 mixing cases and digits.
    # Looked for only in text that speaks of AWS: a secret key given as a value
    # (aws_secret_access_key=...) is masked by the key=value pattern anyway.
    ScrubPattern(
        r"(?:^|[^A-Za-z0-9/+=])(?P<secret>[A-Za-z0-9/+=]{40,})",
        "aws",
        "akia",
        "asia",
        accept=_looks_like_an_aws_secret_key,
    ),
)


class Scrubber:
    """Masks credentials in text: the default patterns, then the operator's."""

    def __init__(self, extra_patterns: Iterable[str] = (), mask: str = MASK) -> None:
        self.patterns: Sequence[ScrubPattern] = (
            *DEFAULT_PATTERNS,
            *(ScrubPattern(pattern) for pattern in extra_patterns),
        )
        self.mask = mask
        self._hints = frozenset(hint for pattern in self.patterns for hint in pattern.hints)

    def scrub(self, text: str) -> str:
        """`text` with every credential the patterns recognise replaced by the mask."""
        # RE2 matches UTF-8: on bytes, match offsets need no translation.
        encoded, mask = text.encode(errors="surrogatepass"), self.mask.encode()
        lowered = encoded.lower()
        present = {hint for hint in self._hints if hint in lowered}
        for pattern in self.patterns:
            if not pattern.hints or not present.isdisjoint(pattern.hints):
                encoded = pattern.mask_in(encoded, mask)
        return encoded.decode(errors="surrogatepass")


def check_patterns(patterns: Iterable[str]) -> list[str]:
    """The patterns, each checked to compile on RE2; the error names the first that does not."""
    checked = []
    for number, pattern in enumerate(patterns, 1):
        try:
            re2.compile(pattern, _OPTIONS)
        except re2.error as error:
            reason = error.args[0].decode() if error.args else "cannot compile"
            raise ValueError(
                f"scrub pattern {number} ({pattern!r}) is not a regular expression RE2 accepts"
                f" (no lookaround, backreferences, possessive quantifiers or atomic groups):"
                f" {reason}"
            ) from None
        checked.append(pattern)
    return checked
