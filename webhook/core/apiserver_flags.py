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
from itertools import compress, repeat
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


def _expand(token: str, known: Mapping[str, str]) -> str:
    return _REFERENCE.sub(lambda m: "$" if m.group(0) == "$$" else known.get(m.group(1), m.group(0)), token)


def _command_and_args(container: Mapping[str, Any]) -> tuple[list[Any], list[Any]]:
    command, args = container.get("command"), container.get("args")
    return (command if isinstance(command, list) else []), (args if isinstance(args, list) else [])


def tokens_of(container: Mapping[str, Any]) -> list[Any]:
    """The arguments kube-apiserver gets: `command` after the program, then `args`, with the
    `$(NAME)` references Kubernetes expands from values known now expanded."""
    command, args = _command_and_args(container)
    known, _ = _environment(container)
    # Most tokens hold no reference: they are kept without a call (this runs on every admission).
    return [_expand(t, known) if type(t) is str and "$" in t else t for t in (*command[1:], *args)]


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


def starting_with(tokens: list[Any], prefix: str) -> list[int]:
    """Positions of the string tokens that start with `prefix`, in order."""
    try:
        # The scan runs in C: a kube-apiserver has dozens of flags and this is the hot path.
        return list(compress(range(len(tokens)), map(str.startswith, tokens, repeat(prefix))))
    except TypeError:  # a token that is not a string: kube-apiserver never sends one, a fuzzer does
        return [i for i, token in enumerate(tokens) if isinstance(token, str) and token.startswith(prefix)]


def parse(tokens: list[Any]) -> Parsed:
    """Read `tokens` as pflag does (interspersed arguments, `--` ends the flags)."""
    bools, shorthands = _known()
    values: dict[str, str] = {}
    taken_by: dict[int, str] = {}
    taken = -1  # the position of the last token read as a flag's value
    for i in starting_with(tokens, "-"):  # only these can be flags
        token = tokens[i]
        if i == taken or len(token) < 2:
            continue
        if token[1] == "-":
            if token == "--":
                break
            name, sep, value = token.partition("=")
            if "_" in name:
                name = normalized(name)
            if not sep:
                if name in bools:
                    value = "true"
                elif i + 1 < len(tokens):
                    taken = i + 1
                    value = str(tokens[taken])
                    taken_by[taken] = name
            values[name] = value
        elif len(token) == 2 and token[1] in shorthands and i + 1 < len(tokens):
            taken = i + 1
            taken_by[taken] = token  # `-v 4`
    return Parsed(values, taken_by)


def unreached(container: Mapping[str, Any], wanted: Mapping[str, str]) -> str:
    """Why a flag of `wanted` (`--name`: value) would not reach kube-apiserver with its value ("" when all do)."""
    reference = run_time_references(container)
    if reference:
        return (f'"{reference}" in its command line is filled in from the environment at run time, where it '
                "could become a flag of its own")
    tokens = tokens_of(container)
    parsed = parse(tokens)
    for position, taker in parsed.taken_by.items():  # in order
        token = tokens[position]
        # A flag's name starts with `-`, or `_` that kube-apiserver reads as `-`; most values do not.
        if isinstance(token, str) and token[:1] in ("-", "_") and normalized(token.partition("=")[0]) in wanted:
            return f'"{token}" would be read as the value of {taker}'
    for flag, value in wanted.items():
        if parsed.values.get(flag) != value:
            return f"{flag} would be {parsed.values.get(flag, '(unset)')!r}, not {value!r}"
    return ""
