"""Remove secrets from command lines and free text before they are written to a recording.

A recording is a file people attach to tickets and CI artifacts, so the command lines of
the watched processes (``processes.cmdline``) and of the recorder itself (``meta.json``
``argv``) go through ``redact_argv`` unless ``--no-redact`` is given. Environment variables
are never recorded at all, so they need no redaction.

The rules are pragmatic: they err on the side of hiding a harmless value rather than
leaking a secret, but they must leave ordinary options (``--port 8080``, ``-w 4``,
``--preload``, file paths) alone, because the cmdline is how a user recognises a process.
A secret is replaced by ``***``; the option or key name stays, so the reader still sees
*that* a password was passed. The list keeps its length.

The rules are tables, each with a name (``RULES`` lists them all, with what each hides;
``docs/guarantees.md`` is written from the same list and ``tests/test_redact.py`` has a
case for every name):

1. **Flags** (``FLAG_RULES``): ``--NAME=VALUE``, ``--NAME VALUE`` and, for short options of
   the program named, ``-xVALUE`` and ``-x VALUE``. A rule may be limited to programs
   (an argument naming the program: ``mysql``, ``/usr/bin/mysqldump``, ``sudo mysql``):
   ``-p`` hides a password only for MySQL/MariaDB clients, ``sshpass``, 7-Zip and the MongoDB
   tools, because ``-p 8000`` is a port in most servers. A separate VALUE is taken only when
   it does not start with ``-`` (``--ask-pass -i hosts`` keeps ``-i``).
2. **Secret option names** (``secret-name``): any ``--NAME``/``-NAME`` (NAME of two letters
   or more) whose words name a secret (``is_secret_name``: password, secret, token, api
   key, ``requirepass``...), but not ``--password-file`` or ``--no-password``.
3. **Text rules** on every argument (``redact_text``), for secrets embedded in values:
   URL credentials (``scheme://user:SECRET@`` and a token as the URL's user,
   ``https://TOKEN@github.com``), ``KEY=VALUE`` / ``"KEY": "VALUE"`` / ``KEY: VALUE`` pairs
   with a secret KEY, HTTP ``Authorization``/``Cookie`` headers and bare ``Bearer`` tokens,
   PEM private keys, and the token shapes of ``TOKEN_RULES`` (``sk-``, ``ghp_``,
   ``glpat-``, ``xox?-``, ``AKIA``, ``AIza``, JWTs...) wherever they appear.
4. **Shell strings** (``shell-string``): an argument holding a command (``sh -c "mysql
   -pX db"``) is split into words and goes through rules 1 and 2 too (up to 16 KiB).

What it does not catch: a secret passed as a bare positional argument with nothing
naming it (``mytool hunter2``), a secret in an option whose name says nothing (``--dsn
u:p@tcp(h)/db`` without a scheme), a token of a shape not in the table. Use
``--no-redact`` only for local debugging.
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass

REDACTED = "***"

# --- rule tables --------------------------------------------------------------------------


@dataclass(frozen=True)
class FlagRule:
    """Options whose value is secret."""

    name: str
    flags: tuple[str, ...]  # as written on the command line: "-p", "--requirepass"
    hides: str  # what it hides, for the docs
    programs: str | None = None  # regular expression over the program's base name; None: any
    value: str = "all"  # "all"; "after-colon": USER:SECRET keeps USER; "unless-path"
    attached: bool = False  # short flags: also -xVALUE
    separate: bool = True  # also -x VALUE (7-Zip's -p alone prompts: attached only)


FLAG_RULES: tuple[FlagRule, ...] = (
    FlagRule("mysql-p", ("-p",), "MySQL/MariaDB clients' -pSECRET and -p SECRET (mysql would "
             "read -p DB as 'prompt, database DB': a database name may be hidden)",
             programs=r"(?:mysql|mariadb)[\w\-]*", attached=True),
    FlagRule("sshpass-p", ("-p",), "sshpass -p SECRET", programs=r"sshpass", attached=True),
    FlagRule("redis-cli-a", ("-a",), "redis-cli -a SECRET", programs=r"redis-cli",
             attached=True),
    FlagRule("mongo-p", ("-p",), "the MongoDB shell and tools' -p SECRET",
             programs=r"mongo(?:sh|dump|restore|export|import|stat|top|files)?"),
    FlagRule("7z-p", ("-p",), "7-Zip's -pSECRET", programs=r"7z[ar]?", separate=False,
             attached=True),
    FlagRule("zip-P", ("-P",), "zip/unzip -P SECRET", programs=r"(?:un)?zip(?:cloak)?"),
    FlagRule("ldap-w", ("-w",), "OpenLDAP tools' -w SECRET (bind password)",
             programs=r"ldap\w+"),
    FlagRule("sqlcmd-P", ("-P",), "sqlcmd/bcp -P SECRET", programs=r"sqlcmd|bcp"),
    FlagRule("curl-user", ("-u", "--user", "-U", "--proxy-user"),
             "curl's USER:SECRET (the user is kept)", programs=r"curl",
             value="after-colon", attached=True),
    FlagRule("wget-user", ("--user", "--proxy-user"), "wget's --user USER:SECRET",
             programs=r"wget", value="after-colon"),
    FlagRule("pwd", ("--pwd", "-pwd"), "--pwd SECRET (a PWD=... argument is the working "
             "directory and is kept)"),
    FlagRule("key", ("--key", "-key"), "--key SECRET, unless the value is a file path "
             "(--key /etc/ssl/key.pem is kept)", value="unless-path"),
)


@dataclass(frozen=True)
class TokenRule:
    """A token whose shape gives it away, hidden wherever it appears."""

    name: str
    pattern: str
    hides: str


TOKEN_RULES: tuple[TokenRule, ...] = (
    TokenRule("aws-key-id", r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b",
              "AWS access key ids (AKIA..., ASIA...)"),
    TokenRule("github", r"\bgh[pousr]_[A-Za-z0-9]{30,}\b", "GitHub tokens (ghp_, gho_, "
              "ghu_, ghs_, ghr_)"),
    TokenRule("github-pat", r"\bgithub_pat_[A-Za-z0-9_]{20,}\b",
              "GitHub fine-grained tokens (github_pat_)"),
    TokenRule("gitlab", r"\bgl(?:pat|dt|rt|ptt|cbt|oas|ft)-[A-Za-z0-9_\-]{20,}\b",
              "GitLab tokens (glpat-, gldt-, glrt-...)"),
    TokenRule("slack", r"\bxox[abposr]-[A-Za-z0-9\-]{10,}\b", "Slack tokens (xoxb-, xoxp-...)"),
    TokenRule("stripe", r"\b[sr]k_(?:live|test)_[A-Za-z0-9]{16,}\b",
              "Stripe keys (sk_live_, rk_live_...)"),
    TokenRule("sk-key", r"(?<![\w\-])sk-(?=[\w\-]*\d)(?=[\w\-]*[A-Za-z][\w\-]*[A-Za-z])"
              r"[A-Za-z0-9_\-]{20,}",
              "API keys of the sk- kind (OpenAI sk-, sk-proj-, Anthropic sk-ant-): sk- then "
              "20 or more letters, digits, - or _, with a digit"),
    TokenRule("google-api-key", r"\bAIza[0-9A-Za-z_\-]{35}\b", "Google API keys (AIza...)"),
    TokenRule("jwt", r"\beyJ[A-Za-z0-9_\-]{5,}\.eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]+",
              "JSON Web Tokens (eyJ....eyJ....)"),
    TokenRule("npm", r"\bnpm_[A-Za-z0-9]{36}\b", "npm tokens (npm_)"),
    TokenRule("pypi", r"\bpypi-AgE[A-Za-z0-9_\-]{50,}", "PyPI tokens (pypi-AgE...)"),
    TokenRule("huggingface", r"\bhf_[A-Za-z0-9]{30,}\b", "Hugging Face tokens (hf_)"),
)

#: The text rules, by name, with what each hides (``TOKEN_RULES`` come on top).
TEXT_RULES: dict[str, str] = {
    "url-password": "the password of a URL: scheme://user:SECRET@host (the user is kept)",
    "url-token-user": "a token used as a URL's user: https://TOKEN@github.com/x (a user name "
                      "of 16 characters or more; git@, bob@ are kept)",
    "secret-pair": "KEY=VALUE, \"KEY\": \"VALUE\" and KEY: VALUE with a secret KEY "
                   "(PASSWORD=..., api_key=..., ?access_token=..., -Dx.keyStorePassword=...)",
    "auth-header": "Authorization/Proxy-Authorization header values (the scheme is kept: "
                   "Bearer ***)",
    "cookie-header": "Cookie/Set-Cookie header values",
    "bearer": "a bare Bearer TOKEN",
    "pem-private-key": "PEM private key blocks",
}

#: Every rule by name, with what it hides.
RULES: dict[str, str] = {
    **{r.name: r.hides for r in FLAG_RULES},
    "secret-name": "--NAME SECRET, --NAME=SECRET and -NAME SECRET when NAME names a secret: "
                   "password, passwd, passphrase, secret, credential(s), api key, access key, "
                   "private key... anywhere in it; token, pass, pwd, auth, signature as its "
                   "last word; requirepass, masterauth, storepass, keypass, passin, passout "
                   "(not --password-file, --token-url, --no-password, --ask-pass)",
    **TEXT_RULES,
    **{r.name: r.hides for r in TOKEN_RULES},
    "shell-string": "an argument holding a command line (sh -c \"mysql -pX db\"), up to "
                    "16 KiB: its words go through the flag and name rules too",
}

# --- secret names -----------------------------------------------------------------------

#: Words that make a name secret wherever they appear in it (``db_password``,
#: ``client_secret``, ``aws_secret_access_key``, ``keyStorePassword``).
_STRONG_WORDS = frozenset(
    {"password", "passwd", "passphrase", "secret", "secrets", "credential", "credentials"}
)
#: Whole names, one word each, that hold a secret: Redis (``requirepass``,
#: ``masterauth``), Java's keytool (``storepass``...), openssl (``passin``/``passout``).
_SECRET_WORDS = frozenset(
    {"requirepass", "masterauth", "storepass", "keypass", "srcstorepass", "deststorepass",
     "srckeypass", "destkeypass", "passin", "passout"}
)
#: Two adjacent words that together make a name secret (``api_key``, ``apiKey``, ``API-KEY``).
_STRONG_PAIRS = frozenset(
    {"apikey", "accesskey", "secretkey", "privatekey", "authkey", "signingkey", "masterkey"}
)
#: Words that make a name secret only as its last word: ``--token``, ``--github-token``,
#: ``auth_token``, ``--db-pass``, ``--basic-auth`` are secret; ``--token-file``,
#: ``--pass-through``, ``--auth-type`` are not.
_LAST_WORDS = frozenset(
    {"token", "pass", "pwd", "auth", "apikey", "secretkey", "signature", "sessionid", "csrftoken"}
)
#: A last word that says the value is not the secret itself but where or how to get it.
_NOT_A_VALUE = frozenset(
    {"file", "files", "path", "dir", "directory", "stdin", "env", "var", "cmd", "command",
     "prompt", "type", "mode", "method", "plugin", "policy", "length", "len", "min", "max",
     "ttl", "timeout", "expiry", "expires", "url", "uri", "endpoint", "name", "ref"}
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
    credential(s) or a one-word secret name (requirepass, masterauth, storepass...), or two
    adjacent words form api key/access key/secret key/private key/..., or its last word is
    token/pass/pwd/auth/signature/...; unless its last word names a place or a kind
    (``--password-file``, ``--token-url``, ``--auth-type``) or its first word makes it a
    switch (``--no-password``, ``--ask-pass``).
    """
    words = _words(name)
    if not words:
        return False
    if words[-1] in _NOT_A_VALUE or (len(words) > 1 and words[0] in _SWITCH_PREFIX):
        return False
    if any(w in _STRONG_WORDS or w in _SECRET_WORDS for w in words):
        return True
    if any(a + b in _STRONG_PAIRS for a, b in itertools.pairwise(words)):
        return True
    if words[-1] == "pwd":  # DB_PWD is a password, a lone PWD is the working directory
        return len(words) > 1
    return words[-1] in _LAST_WORDS or (len(words) > 1 and words[-2] + words[-1] in _LAST_WORDS)


# --- free text --------------------------------------------------------------------------

# the scheme is bounded: an unbounded one makes a long "a-a-a-..." quadratic
_SCHEME = r"\b[A-Za-z][A-Za-z0-9+.\-]{0,31}://"
_URL_CREDENTIALS = re.compile(rf"(?P<head>{_SCHEME}[^/\s:@?#]*):(?P<pw>[^/\s?#]*)@")
_URL_TOKEN_USER = re.compile(rf"(?P<head>{_SCHEME})(?P<user>[^/\s:@?#*]{{16,}})@")
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
_TOKEN_SHAPES = re.compile("|".join(f"(?:{r.pattern})" for r in TOKEN_RULES))
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
    """Hide secrets in one string (an argument, a log line, a header): the text rules.

    Idempotent: redacting twice gives the same result as once.
    """
    if not s:
        return s
    s = _PEM_KEY.sub(rf"\1{REDACTED}\2", s)
    s = _AUTH_HEADER.sub(lambda m: m["head"] + (m["scheme"] or "") + REDACTED, s)
    s = _COOKIE_HEADER.sub(lambda m: m["head"] + REDACTED, s)
    s = _BEARER.sub(lambda m: m["head"] + REDACTED, s)
    s = _URL_CREDENTIALS.sub(lambda m: f"{m['head']}:{REDACTED}@", s)
    s = _URL_TOKEN_USER.sub(lambda m: f"{m['head']}{REDACTED}@", s)
    s = _redact_pairs(s)
    return _TOKEN_SHAPES.sub(REDACTED, s)


# --- argument lists ---------------------------------------------------------------------

_LONG = re.compile(r"^(?P<dashes>--?)(?P<name>[A-Za-z][\w.\-]*)(?:=(?P<value>.*))?$", re.DOTALL)
_PROGRAMS = [(re.compile(rf"(?:{r.programs})"), r) for r in FLAG_RULES if r.programs]
_ANY_PROGRAM = tuple(r for r in FLAG_RULES if r.programs is None)
#: A value ``unless-path`` keeps: a file path or a file name with an extension.
_PATH_LIKE = re.compile(r"^(?:[~.]?/|\.{1,2}$)|/|\.(?:pem|key|crt|cer|der|p12|pfx|jks|json|"
                        r"ya?ml|txt|asc|gpg|pub)$", re.IGNORECASE)
#: An argument holding words to split: whitespace, quoted strings kept whole.
_SHELL_WORD = re.compile(r"""(?:[^\s"']+|"[^"]*"|'[^']*')+|["']""")
SHELL_STRING_MAX = 16 * 1024


def _tool(arg: str) -> str:
    return os.path.basename(arg) if "/" in arg else arg


def _user_colon(value: str) -> str:
    user, colon, _ = value.partition(":")
    return f"{user}:{REDACTED}" if colon else value


def _hide(value: str, how: str) -> str:
    if how == "after-colon":
        return redact_text(_user_colon(value))
    if how == "unless-path" and (value == REDACTED or _PATH_LIKE.search(value)):
        return redact_text(value)
    return REDACTED


def _flag_rule(arg: str, rules: tuple[FlagRule, ...]) -> tuple[FlagRule, str, str | None] | None:
    """(rule, flag, attached value or None) when ``arg`` is one of the rules' flags."""
    for r in rules:
        for flag in r.flags:
            if arg == flag:
                if r.separate:
                    return r, flag, None
                continue
            if arg.startswith(flag + "=") and flag.startswith("--"):
                return r, flag + "=", arg[len(flag) + 1 :]
            if r.attached and len(flag) == 2 and arg.startswith(flag) and len(arg) > 2:
                return r, flag, arg[2:]
    return None


def redact_argv(argv: list[str], _split_shell: bool = True) -> list[str]:
    """A copy of ``argv`` with secrets replaced by ``***`` (option names kept).

    See the module docstring for the rules. The list keeps its length, so argument
    positions stay meaningful.
    """
    out = list(argv)
    rules: tuple[FlagRule, ...] = _ANY_PROGRAM
    hide_next: str | None = None  # how to hide the argument after an option
    for i, arg in enumerate(argv):
        if hide_next is not None:
            how, hide_next = hide_next, None
            if not arg.startswith("-") or arg == "-":
                out[i] = _hide(arg, how)
                continue
        tool = _tool(arg)
        for pattern, r in _PROGRAMS:  # the program is named: its rules apply from here on
            if r not in rules and pattern.fullmatch(tool):
                rules += (r,)

        found = _flag_rule(arg, rules)
        if found is not None:
            r, flag, value = found
            if value is None:
                hide_next = r.value
            else:
                out[i] = flag + _hide(value, r.value)
            continue
        m = _LONG.match(arg)
        if m and (m["dashes"] == "--" or len(m["name"]) >= 2) and is_secret_name(m["name"]):
            if m["value"] is None:
                hide_next = "all"
                continue
            out[i] = f"{m['dashes']}{m['name']}={REDACTED}"
            continue
        text = redact_text(arg)
        if _split_shell and len(text) <= SHELL_STRING_MAX and any(c.isspace() for c in text):
            text = _redact_words(text)
        out[i] = text
    return out


def _redact_words(s: str) -> str:
    """The flag and name rules over the words of a command held in one argument."""
    words = list(_SHELL_WORD.finditer(s))
    if len(words) < 2:
        return s
    texts = [_unquote(w.group(0)) for w in words]
    new = redact_argv(texts, _split_shell=False)
    if new == texts:
        return s
    out: list[str] = []
    pos = 0
    for w, before, after in zip(words, texts, new, strict=True):
        out.append(s[pos : w.start()])
        out.append(w.group(0) if after == before else after)
        pos = w.end()
    out.append(s[pos:])
    return "".join(out)


def _unquote(word: str) -> str:
    """A shell word as the program would see it (quotes of whole or partial words removed)."""
    if "'" not in word and '"' not in word:
        return word
    return re.sub(r""""([^"]*)"|'([^']*)'""", lambda m: m[1] if m[1] is not None else m[2], word)
