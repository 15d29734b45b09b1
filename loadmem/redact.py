"""Remove secrets from command lines and free text before they are written to a recording.

A recording is a file people attach to tickets and CI artifacts, so the command lines of
the watched processes (``processes.cmdline``) and of the recorder itself (``meta.json``
``argv``) go through ``redact_argv`` unless ``--no-redact`` is given. Environment variables
are never recorded at all, so they need no redaction.

The rules are pragmatic: they err on the side of hiding a harmless value rather than
leaking a secret, but they must leave ordinary options (``--port 8080``, ``-w 4``,
``--preload``, file paths) alone, because the cmdline is how a user recognises a process.
A secret is replaced by ``***``; the option or key name stays, so the reader still sees
*that* a password was passed.

Rules, in the order they apply to one argument list:

1. **Secret option names.** ``--NAME=VALUE``, ``--NAME VALUE`` and single-dash
   ``-NAME VALUE`` (Go/Java/openssl style, NAME at least two letters) where NAME is a secret
   name (see ``is_secret_name``): the value becomes ``***``. The separate VALUE is only taken
   when it does not start with ``-`` (``--ask-pass -i hosts`` keeps ``-i``).
2. **Tool-specific short options**, once an argument names the tool (``mysql``,
   ``/usr/bin/mysqldump``, ``sudo mysql ...``):

   - MySQL/MariaDB clients: ``-pSECRET`` and ``-p SECRET`` (``-p`` followed by a value
     not starting with ``-``; mysql would read ``-p db`` as "prompt, database db", so this
     may hide a database name: the safe side).
   - ``sshpass -p SECRET``; ``redis-cli -a SECRET``.
   - ``curl``/``wget``: ``-u``/``--user``/``-U``/``--proxy-user USER:SECRET`` keeps USER.

   Elsewhere ``-p`` and ``-u`` are left alone (``-p 8080`` is a port in most servers).
3. **Free-text rules** (``redact_text``) on every argument, which catch secrets embedded
   in values:

   - credentials in URLs: ``scheme://user:SECRET@host`` -> ``scheme://user:***@host``
     (``--db-url postgres://u:p@h/db``, ``redis://:p@h``);
   - ``KEY=VALUE``, ``"KEY": "VALUE"`` and ``KEY: VALUE`` pairs whose KEY is a secret name:
     ``token=...``, ``api_key=...``, ``secret=...``, environment-style ``PASSWORD=...`` or
     ``DB_PASSWORD=...`` arguments (``env PASSWORD=x cmd``), query strings
     (``?access_token=...&x=1``), Java properties (``-Dssl.keyStorePassword=...``);
   - HTTP headers: ``Authorization:``/``Proxy-Authorization:`` keep the scheme
     (``Bearer ***``, ``Basic ***``); ``Cookie:``/``Set-Cookie:`` values are hidden whole;
     a bare ``Bearer <token>`` is hidden too;
   - well-known token shapes wherever they appear: AWS access key ids (``AKIA...``,
     ``ASIA...``), GitHub (``ghp_...``, ``github_pat_...``), GitLab (``glpat-...``), Slack
     (``xoxb-...``), Stripe (``sk_live_...``), Google API keys (``AIza...``), JWTs
     (``eyJ...``) and PEM private key blocks.

What it does not catch: a secret passed as a bare positional argument with nothing
naming it (``mytool hunter2``), or a secret in an option whose name says nothing
(``--dsn u:p@tcp(h)/db`` without a scheme). Use ``--no-redact`` only for local debugging.
"""

from __future__ import annotations

import itertools
import os
import re

REDACTED = "***"

# --- secret names -----------------------------------------------------------------------

#: Words that make a name secret wherever they appear in it (``db_password``,
#: ``client_secret``, ``aws_secret_access_key``, ``keyStorePassword``).
_STRONG_WORDS = frozenset(
    {
        "password",
        "passwd",
        "passphrase",
        "secret",
        "secrets",
        "credential",
        "credentials",
    }
)
#: Two adjacent words that together make a name secret (``api_key``, ``apiKey``, ``API-KEY``).
_STRONG_PAIRS = frozenset(
    {"apikey", "accesskey", "secretkey", "privatekey", "authkey", "signingkey", "masterkey"}
)
#: Words that make a name secret only as its last word: ``--token``, ``--github-token``,
#: ``auth_token``, ``--db-pass``, ``--basic-auth`` are secret; ``--token-file``,
#: ``--pass-through``, ``--auth-type`` are not.
_LAST_WORDS = frozenset(
    {
        "token",
        "pass",
        "pwd",
        "auth",
        "apikey",
        "secretkey",
        "signature",
        "sessionid",
        "csrftoken",
    }
)
#: A last word that says the value is not the secret itself but where or how to get it.
_NOT_A_VALUE = frozenset(
    {
        "file",
        "files",
        "path",
        "dir",
        "directory",
        "stdin",
        "env",
        "var",
        "cmd",
        "command",
        "prompt",
        "type",
        "mode",
        "method",
        "plugin",
        "policy",
        "length",
        "len",
        "min",
        "max",
        "ttl",
        "timeout",
        "expiry",
        "expires",
        "url",
        "uri",
        "endpoint",
        "name",
        "ref",
    }
)
#: A first word that makes the option a switch, not a holder of the secret.
_SWITCH_PREFIX = frozenset({"no", "ask", "prompt", "skip", "require", "disable", "enable"})

_SPLIT = re.compile(r"[^A-Za-z0-9]+")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")


def _words(name: str) -> list[str]:
    words: list[str] = []
    for part in _SPLIT.split(name):
        words += [w.lower() for w in _CAMEL.findall(part)]
    return words


def is_secret_name(name: str) -> bool:
    """Whether an option or key called ``name`` holds a secret value.

    ``name`` may carry leading dashes. It is split into words on ``-``, ``_``, ``.`` and
    camelCase, and is secret when a word is one of password/passwd/passphrase/secret/
    credential(s), or two adjacent words form api key/access key/secret key/private key/...,
    or its last word is token/pass/pwd/auth/signature/...; unless its last word names a
    place or a kind (``--password-file``, ``--token-url``, ``--auth-type``) or its first word
    makes it a switch (``--no-password``, ``--ask-pass``).
    """
    words = _words(name)
    if not words:
        return False
    if words[-1] in _NOT_A_VALUE or (len(words) > 1 and words[0] in _SWITCH_PREFIX):
        return False
    if any(w in _STRONG_WORDS for w in words):
        return True
    if any(a + b in _STRONG_PAIRS for a, b in itertools.pairwise(words)):
        return True
    if words[-1] == "pwd":  # DB_PWD is a password, a lone PWD is the working directory
        return len(words) > 1
    return words[-1] in _LAST_WORDS or (len(words) > 1 and words[-2] + words[-1] in _LAST_WORDS)


# --- free text --------------------------------------------------------------------------

_URL_CREDENTIALS = re.compile(
    # the scheme is bounded: an unbounded one makes a long "a-a-a-..." quadratic
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]{0,31}://[^/\s:@?#]*):(?P<pw>[^/\s?#]*)@"
)
_AUTH_HEADER = re.compile(
    r"(?P<head>\b(?:proxy-)?authorization\s*:\s*)"
    r"(?P<scheme>(?:bearer|basic|token|digest|negotiate|apikey|aws4-hmac-sha256)\s+)?"
    r"(?P<value>[^\r\n\"']+)",
    re.IGNORECASE,
)
_COOKIE_HEADER = re.compile(
    r"(?P<head>\b(?:set-)?cookie\s*:\s*)(?P<value>[^\r\n\"']+)", re.IGNORECASE
)
_BEARER = re.compile(r"\b(?P<head>[Bb]earer\s+)(?P<value>[A-Za-z0-9\-._~+/]{8,}=*)")
#: A key and its separator; the value is matched separately (``_VALUE``), only when the
#: key is secret, so that scanning stays linear on long arguments such as ``a=a=a=...``.
_KEY_SEP = re.compile(
    r"(?P<q>[\"']?)(?P<key>(?<![\w.\-])-{0,2}[A-Za-z_][\w.\-]*)(?P=q)"
    r"(?P<sep>\s*=\s*|\s*:\s+|(?<=[\"']):\s*)"
)
_VALUE = re.compile(r"\"[^\"]{0,4096}\"|'[^']{0,4096}'|[^\s&;,\"'<>]+")
_TOKEN_SHAPES = re.compile(
    "|".join(
        [
            r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b",  # AWS key ids
            r"\bgh[pousr]_[A-Za-z0-9]{30,}\b",  # GitHub tokens
            r"\bgithub_pat_[A-Za-z0-9_]{20,}\b",
            r"\bglpat-[A-Za-z0-9_\-]{20,}\b",  # GitLab
            r"\bxox[abprs]-[A-Za-z0-9\-]{10,}\b",  # Slack
            r"\b[sr]k_(?:live|test)_[A-Za-z0-9]{16,}\b",  # Stripe
            r"\bAIza[0-9A-Za-z_\-]{35}\b",  # Google API keys
            r"\beyJ[A-Za-z0-9_\-]{5,}\.eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]+",  # JWT
        ]
    )
)
_PEM_KEY = re.compile(
    r"(-----BEGIN [A-Z ]*PRIVATE KEY-----).{0,16384}?(-----END [A-Z ]*PRIVATE KEY-----)", re.DOTALL
)


def _redact_pairs(s: str) -> str:
    """Hide the values of ``KEY=VALUE`` pairs whose key is secret.

    The value of a pair whose key is not secret is scanned again for pairs
    (``--env=PASSWORD=x``, ``--opt="token=x"``).
    """
    out: list[str] = []
    pos = 0
    while True:
        m = _KEY_SEP.search(s, pos)
        if m is None:
            out.append(s[pos:])
            return "".join(out)
        v = _VALUE.match(s, m.end()) if is_secret_name(m.group("key")) else None
        if v is None:
            out.append(s[pos : m.end()])
            pos = m.end()
            continue
        value = v.group(0)
        value = value[0] + REDACTED + value[-1] if value[:1] in "\"'" else REDACTED
        out.append(s[pos : m.end()] + value)
        pos = v.end()


def redact_text(s: str) -> str:
    """Hide secrets in one string (an argument, a log line, a header); see the module doc.

    Idempotent: redacting twice gives the same result as once.
    """
    if not s:
        return s
    s = _PEM_KEY.sub(rf"\1{REDACTED}\2", s)
    s = _AUTH_HEADER.sub(lambda m: m["head"] + (m["scheme"] or "") + REDACTED, s)
    s = _COOKIE_HEADER.sub(lambda m: m["head"] + REDACTED, s)
    s = _BEARER.sub(lambda m: m["head"] + REDACTED, s)
    s = _URL_CREDENTIALS.sub(lambda m: f"{m['head']}:{REDACTED}@", s)
    s = _redact_pairs(s)
    return _TOKEN_SHAPES.sub(REDACTED, s)


# --- argument lists ---------------------------------------------------------------------

_MYSQL = re.compile(r"^(?:mysql[\w\-]*|mariadb[\w\-]*)$")
#: tool -> short options whose value is wholly secret.
_SECRET_SHORT = {"sshpass": ("-p",), "redis-cli": ("-a",)}
#: curl-like tools: these options take USER:SECRET.
_USER_COLON_SECRET = {
    "curl": ("-u", "--user", "-U", "--proxy-user"),
    "wget": ("--user", "--proxy-user"),
}
_LONG = re.compile(r"^(?P<dashes>--?)(?P<name>[A-Za-z][\w.\-]*)(?:=(?P<value>.*))?$", re.DOTALL)


def _tool(arg: str) -> str:
    return os.path.basename(arg) if "/" in arg else arg


def _user_colon(value: str) -> str:
    user, colon, _ = value.partition(":")
    return f"{user}:{REDACTED}" if colon else value


def redact_argv(argv: list[str]) -> list[str]:
    """A copy of ``argv`` with secrets replaced by ``***`` (option names kept).

    See the module docstring for the rules. The list keeps its length, so argument
    positions stay meaningful.
    """
    out = list(argv)
    mysql = False
    short_secret: tuple[str, ...] = ()
    user_colon: tuple[str, ...] = ()
    hide_next: str | None = None  # "all" or "user" for the argument after an option
    for i, arg in enumerate(argv):
        if hide_next is not None:
            hidden, hide_next = hide_next, None
            if not arg.startswith("-") or arg == "-":
                out[i] = REDACTED if hidden == "all" else redact_text(_user_colon(arg))
                continue
        tool = _tool(arg)
        if _MYSQL.match(tool):
            mysql = True
        if tool in _SECRET_SHORT:
            short_secret = _SECRET_SHORT[tool]
        if tool in _USER_COLON_SECRET:
            user_colon = _USER_COLON_SECRET[tool]

        m = _LONG.match(arg)
        if m and (m["dashes"] == "--" or len(m["name"]) >= 2):
            name, value = m["name"], m["value"]
            if arg.split("=", 1)[0] in user_colon:
                if value is None:
                    hide_next = "user"
                else:
                    out[i] = f"{arg.split('=', 1)[0]}={_user_colon(value)}"
                    continue
            elif is_secret_name(name):
                if value is None:
                    hide_next = "all"
                    continue
                out[i] = f"{m['dashes']}{name}={REDACTED}"
                continue
        if mysql and arg.startswith("-p") and not arg.startswith("--"):
            if arg == "-p":
                hide_next = "all"
            else:
                out[i] = "-p" + REDACTED
            continue
        for opt in short_secret:
            if arg == opt:
                hide_next = "all"
            elif arg.startswith(opt) and len(opt) == 2:
                out[i] = opt + REDACTED
        for opt in user_colon:
            if arg == opt:
                hide_next = "user"
            elif len(opt) == 2 and arg.startswith(opt) and len(arg) > 2:
                out[i] = opt + _user_colon(arg[2:])
        if out[i] == arg:
            out[i] = redact_text(arg)
    return out
