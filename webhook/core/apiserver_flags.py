"""How kube-apiserver's flag parser (spf13/pflag) reads a container's command line. Pure.

Kubernetes first expands `$(NAME)` references from the container's environment; pflag then reads
the result.

pflag gives a non-boolean flag written without `=` the next token as its value, whatever that
token looks like: `--external-hostname --audit-policy-file=/p` sets the hostname to
`--audit-policy-file=/p` and no policy at all. Injection and `report` therefore read flags the way
pflag does, and injection refuses a Pod in which one of its flags would not reach kube-apiserver.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from webhook.core.defaults import load_data


@cache
def _known() -> tuple[frozenset[str], frozenset[str]]:
    data = load_data("kube-apiserver-flags.yaml")
    return frozenset(data["booleanFlags"]), frozenset(data["valueShorthands"])


def bool_flags() -> frozenset[str]:
    """kube-apiserver's boolean flags, `--name` form."""
    return _known()[0]


def normalized(name: str) -> str:
    """A flag's name as kube-apiserver matches it: `_` is `-` (its word-separator normalisation)."""
    return name.replace("_", "-")


# Kubernetes expands `$(NAME)` in command and args from the container's environment; `$$` is `$`.
_REFERENCE = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")


def _environment(container: Mapping[str, Any]) -> tuple[dict[str, str], bool]:
    """The container's variables with a value known now, and whether others are known only at run
    time (`valueFrom`, `envFrom`, or a value that refers to another variable)."""
    known: dict[str, str] = {}
    unknown = bool(container.get("envFrom"))
    for var in container.get("env") or []:
        if not isinstance(var, dict) or not isinstance(var.get("name"), str):
            continue
        value = var.get("value", "")
        if "valueFrom" in var or not isinstance(value, str) or "$(" in value:
            known.pop(var["name"], None)
            unknown = True
        else:
            known[var["name"]] = value
    return known, unknown


def _expand(token: Any, known: Mapping[str, str]) -> Any:
    if not isinstance(token, str) or "$" not in token:
        return token
    return _REFERENCE.sub(lambda m: "$" if m.group(0) == "$$" else known.get(m.group(1), m.group(0)), token)


def _command_and_args(container: Mapping[str, Any]) -> tuple[list[Any], list[Any]]:
    command, args = container.get("command"), container.get("args")
    return (command if isinstance(command, list) else []), (args if isinstance(args, list) else [])


def tokens_of(container: Mapping[str, Any]) -> list[Any]:
    """The arguments kube-apiserver gets: `command` after the program, then `args`, with the
    `$(NAME)` references Kubernetes expands from values known now expanded."""
    command, args = _command_and_args(container)
    known, _ = _environment(container)
    return [_expand(t, known) for t in (*command[1:], *args)]


def run_time_references(container: Mapping[str, Any]) -> str:
    """A reference in the command line whose value only exists at run time ("" when none): it could
    turn into a flag of its own after we have looked."""
    known, unknown = _environment(container)
    if not unknown:
        return ""
    command, args = _command_and_args(container)
    for token in (*command, *args):
        if isinstance(token, str):
            for match in _REFERENCE.finditer(token):
                if match.group(1) is not None and match.group(1) not in known:
                    return match.group(0)
    return ""


@dataclass
class Parsed:
    """What pflag makes of a command line."""

    values: dict[str, str] = field(default_factory=dict)  # `--name`: the last value given
    # Token position -> the flag that takes that token as its value.
    taken_by: dict[int, str] = field(default_factory=dict)


def parse(tokens: list[Any]) -> Parsed:
    """Read `tokens` as pflag does (interspersed arguments, `--` ends the flags)."""
    bools, shorthands = _known()
    out = Parsed()
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not isinstance(token, str) or len(token) < 2 or not token.startswith("-"):
            i += 1
            continue
        if token == "--":
            break
        if token.startswith("--"):
            raw, sep, value = token[2:].partition("=")
            name = "--" + normalized(raw)
            if not sep and name not in bools:
                if i + 1 < len(tokens):
                    value = str(tokens[i + 1])
                    out.taken_by[i + 1] = name
                    i += 1
            elif not sep:
                value = "true"
            out.values[name] = value
        elif token[1] in shorthands and len(token) == 2 and i + 1 < len(tokens):
            out.taken_by[i + 1] = token  # `-v 4`
            i += 1
        i += 1
    return out


def unreached(container: Mapping[str, Any], wanted: Mapping[str, str]) -> str:
    """Why a flag of `wanted` would not reach kube-apiserver with its value ("" when all do)."""
    reference = run_time_references(container)
    if reference:
        return (f'"{reference}" in its command line is filled in from the environment at run time, where it '
                "could become a flag of its own")
    tokens = tokens_of(container)
    parsed = parse(tokens)
    for position, taker in sorted(parsed.taken_by.items()):
        token = tokens[position]
        if isinstance(token, str) and normalized(token.partition("=")[0]) in wanted:
            return f'"{token}" would be read as the value of {taker}'
    for flag, value in wanted.items():
        if parsed.values.get(flag) != value:
            return f"{flag} would be {parsed.values.get(flag, '(unset)')!r}, not {value!r}"
    return ""
