"""Strict loading of configuration sections into frozen dataclasses.

Every config section is a frozen dataclass with defaults. :func:`load_section`
builds one from a mapping (parsed TOML/JSON), checking types and rejecting
unknown keys *by name and path*, e.g. ``unknown key 'mqtt.brokr'``. Range
checks live in each dataclass's ``__post_init__`` and raise :class:`ConfigError`
via :func:`require`. Every problem of a tree is collected (:class:`ConfigErrors`
lists them, each starting with its dotted key), so one run of ``bodycam
check-config`` shows them all. No I/O happens here: files are read by ``device.config``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from bodycam.device.errors import ConfigError

T = TypeVar("T")

#: config keys whose values are secrets: never echoed in messages or by ``bodycam check-config``
SECRET_KEYS = frozenset({"password", "secret", "token", "passphrase"})


def require(condition: bool, where: str, message: str) -> None:
    """Raise ConfigError(``where: message``) unless ``condition`` holds."""
    if not condition:
        raise ConfigError(f"{where}: {message}")


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is typing.Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(repr(a) for a in allowed)}")
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{where}: must not be null")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} has the wrong type")
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table, got {type(value).__name__}")
        return load_section(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
        item = args[0] if args else Any
        converted = [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(converted) if origin is tuple else converted
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table, got {type(value).__name__}")
        k_tp, v_tp = get_args(tp) or (str, Any)
        return {_convert(k, k_tp, where): _convert(v, v_tp, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported setting type {tp!r}")


class ConfigErrors(ConfigError):
    """Several configuration problems at once, each a line that starts with its dotted key."""

    def __init__(self, problems: list[str], source: str = "") -> None:
        self.problems = list(problems)
        self.source = source  # the file they come from, if any
        n = len(self.problems)
        body = self.problems[0] if n == 1 else f"{n} problems: " + "; ".join(self.problems)
        super().__init__(f"{source}: {body}" if source else body)


def problems_of(exc: ConfigError) -> list[str]:
    """Every problem ``exc`` reports (one for a plain ConfigError)."""
    return list(exc.problems) if isinstance(exc, ConfigErrors) else [str(exc)]


def _field_of(problem: str, where: str, names: set[str]) -> str | None:
    """The field of this section a problem message is about (``"mqtt.url: ..."`` -> ``url``)."""
    for name in names:
        key = _join(where, name)
        if problem.startswith((f"{key}:", f"{key}.", f"{key}[")):
            return name
    return None


def load_section(cls: type[T], data: Mapping[str, Any] | None, where: str) -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys, wrong types and bad values are ConfigErrors.

    ``where`` is the dotted path of the section (``"mqtt"``), used in messages. Every problem
    is collected, not just the first: a value that fails its type or range check is reported
    and replaced by its default so the checks of the other keys still run; several problems
    raise one :class:`ConfigErrors` listing them all.
    """
    if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
        raise TypeError(f"{cls!r} is not a dataclass")
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a table, got {type(data).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    problems: list[str] = []
    for key in data:
        if key not in fields:
            known = ", ".join(sorted(fields)) or "none"
            problems.append(f"unknown key '{_join(where, str(key))}' (known keys: {known})")
    kwargs: dict[str, Any] = {}
    defaulted: set[str] = set()
    for name in fields:
        if name in data:
            try:
                kwargs[name] = _convert(data[name], hints[name], _join(where, name))
            except ConfigError as exc:
                if name in SECRET_KEYS:  # the message would quote the value
                    problems.append(f"{_join(where, name)}: has the wrong type (a secret: value not shown)")
                else:
                    problems += problems_of(exc)
                defaulted.add(name)
    result: T | None = None
    for _ in range(len(fields) + 1):  # each round defaults one more failing field
        try:
            result = cls(**kwargs)
            break
        except TypeError as exc:  # a missing required field
            problems.append(f"{where or 'config'}: {exc}")
            break
        except ConfigError as exc:
            found = problems_of(exc)
            bad = _field_of(found[0], where, set(fields))
            if bad in defaulted:  # a check tripped over a default standing in for a bad value
                break
            problems += found
            if bad is None or bad not in kwargs:  # a rule about the whole section: nothing to default
                break
            del kwargs[bad]
            defaulted.add(bad)
    if problems or result is None:
        raise ConfigErrors(problems)
    return result


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
