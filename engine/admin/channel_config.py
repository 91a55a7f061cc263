"""A channel's configuration as the channel page shows it: its file as TOML, comments and layout
kept (tomlkit), every secret masked; and its filter and transform steps by name.

Masked: the value of any key named like a secret (token, password, passphrase, secret,
authorization, api key, private key) -- the ``${VAR}`` references in it stay, every other part
becomes ``•••``, an auth scheme word (``Bearer``, ``Basic``) excepted -- and the user part of any
URL (``https://user:pw@host`` -> ``https://•••@host``); a variable's default (``${PW:-x}``) is
masked too.  ``${VAR}`` elsewhere is shown as written:
the page reads the file, never the environment, so a variable's value is never shown.
"""

from __future__ import annotations

import re
from pathlib import Path

import tomlkit
from tomlkit.exceptions import TOMLKitError

SECRET_KEY = re.compile(r"token|password|passphrase|secret|authori[sz]ation|api[_-]?key|private[_-]?key|credential", re.I)
VARIABLE = re.compile(r"(\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\})")
SCHEME_WORD = re.compile(r"\s*(Bearer|Basic|Token|Digest)\s*", re.I)
URL_USER = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s\"']+@")
MASK = "•••"
MAX_FILE = 256 * 1024


def mask_value(value: str) -> str:
    """A secret's text: its ``${VAR}`` references kept, the rest masked."""
    parts = VARIABLE.split(value)
    shown = []
    for part in parts:
        if not part:
            continue
        if VARIABLE.fullmatch(part):
            name, sep, _default = part[2:-1].partition(":-")
            shown.append(f"${{{name}{':-' + MASK if sep else ''}}}")
        elif SCHEME_WORD.fullmatch(part):
            shown.append(part)
        else:
            shown.append(MASK)
    return "".join(shown) or MASK


def _mask(container, secret: bool = False) -> None:
    """In place; ``secret``: everything under a key named like a secret is masked."""
    items = container.items() if hasattr(container, "items") else enumerate(container)
    for key, value in list(items):
        hidden = secret or (isinstance(key, str) and bool(SECRET_KEY.search(key)))
        if isinstance(value, (dict, list)):
            _mask(value, hidden)
        elif hidden:
            container[key] = mask_value(value) if isinstance(value, str) else MASK
        elif isinstance(value, str) and URL_USER.search(value):
            container[key] = URL_USER.sub(lambda m: f"{m.group(1)}{MASK}@", value)


def masked_toml(path: Path) -> str:
    """The channel file as TOML with its secrets masked; a sentence when it cannot be read (the
    channel running is the last good version: its problems are listed on the page)."""
    try:
        text = Path(path).read_text(encoding="utf-8")[:MAX_FILE]
        document = tomlkit.parse(text)
    except (OSError, UnicodeDecodeError, TOMLKitError) as error:
        return f"# {Path(path).name} could not be read as TOML now ({type(error).__name__})"
    _mask(document)
    return tomlkit.dumps(document)


def filter_steps(filters, prefix: str = "") -> list[dict]:
    """``[{"name", "kind", "what"}]`` of a channel's (or destination's) filters, named as the
    message page and ``switchboard show`` name them (``name`` key, else the plugin, else filter[N])."""
    steps = []
    for index, spec in enumerate(filters, 1):
        name = spec.label or (spec.use if spec.when is None else None) or f"{prefix}filter[{index}]"
        steps.append({"name": name, "kind": "when" if spec.when is not None else "plugin",
                      "what": spec.when if spec.when is not None else spec.use})
    return steps


def transform_steps(transforms) -> list[dict]:
    """``[{"name", "kind", "ops", "outbound"}]``: an edit step lists its operations
    (``set MSH.5 value=LAB``), a template or plugin its name."""
    steps = []
    for spec in transforms:
        kind = "edit" if spec.edit is not None else "plugin" if spec.use else "template" if spec.template else "inline"
        ops = []
        for op in spec.edit or ():
            op = dict(op)
            if not op:
                continue
            verb, target = next(iter(op.items()))
            rest = " ".join(f"{key}={value}" for key, value in list(op.items())[1:])
            ops.append(f"{verb} {target}{' ' + rest if rest else ''}")
        steps.append({"name": spec.name, "kind": kind, "ops": ops, "outbound": spec.outbound})
    return steps
