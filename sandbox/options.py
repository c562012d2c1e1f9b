"""One validated options object: ``torch.compile(..., options=...)`` + ``SANDBOX_*`` env.

Precedence: ``options=`` beats the environment, which beats the default. Keys that
are not the sandbox's own must be Inductor config keys and pass through to
Inductor, exactly as with ``backend="inductor"``; ``mode=`` (or ``options["mode"]``, since
``torch.compile`` refuses both arguments at once) maps through ``torch._inductor.list_mode_options``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from sandbox.env import VARIABLES


class OptionError(ValueError):
    """An unknown option or a bad value; the message names it and what is valid."""


def _positive_int(v: Any) -> int:
    if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
        raise ValueError
    n = int(v.strip()) if isinstance(v, str) else int(v)
    if n < 1:
        raise ValueError
    return n


def _positive_float_or_none(v: Any) -> float | None:
    if v is None or (isinstance(v, str) and v.strip().lower() in ("", "none", "0", "off")):
        return None
    f = float(v)
    if f <= 0:
        raise ValueError
    return f


def _positive_int_or_none(v: Any) -> int | None:
    if v is None or (isinstance(v, str) and v.strip().lower() in ("", "none", "0", "off")):
        return None
    n = int(v)
    if n <= 0:
        raise ValueError
    return n


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off", ""):
        return False
    raise ValueError


def _store(v: Any) -> str | None:
    """A path or postgresql:// URL; False/off/none disables the store; None/"" means the default."""
    if v is False:
        return "off"
    if v is None or v is True:
        return None
    s = str(v).strip()
    if s.lower() in ("0", "false", "off", "no", "none", "disabled"):
        return "off"
    return s or None


def _tags(v: Any) -> tuple[str, ...]:
    if isinstance(v, (list, tuple, set)):
        items = [str(x).strip() for x in v]
    else:
        items = [x.strip() for x in str(v).split(",")]
    return tuple(x for x in items if x)


def _name(v: Any) -> str | None:
    s = str(v).strip() if v is not None else ""
    return s or None


def _port_or_none(v: Any) -> int | None:
    """A TCP port; None/0/off means no metrics endpoint."""
    if v is None or v is False or (isinstance(v, str) and v.strip().lower() in ("", "none", "0", "off", "false")):
        return None
    if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
        raise ValueError
    n = int(v.strip()) if isinstance(v, str) else int(v)
    if n == 0:
        return None
    if not 0 < n < 65536:
        raise ValueError
    return n


def _address(v: Any) -> str:
    s = str(v).strip() if v is not None else ""
    if not s or any(c.isspace() for c in s):
        raise ValueError
    return s


MAX_PROFILE_STEPS = 64


def _steps(v: Any) -> tuple[int, ...]:
    """Calls of each compiled graph to profile, 1-based: ``3``, ``"3,10"``, ``"3-5"``, ``[3, 10]``;
    None, ``""``, ``0`` or ``off``: none. At most ``MAX_PROFILE_STEPS`` of them."""
    if v is None or v is False or (isinstance(v, str) and v.strip().lower() in ("", "none", "0", "off", "false")):
        return ()
    if isinstance(v, bool) or isinstance(v, float):
        raise ValueError
    if isinstance(v, int):
        items: list[Any] = [v]
    elif isinstance(v, (list, tuple, set, frozenset)):
        items = list(v)
    else:
        items = [x.strip() for x in str(v).split(",")]
    steps: set[int] = set()
    for item in items:
        if isinstance(item, str) and "-" in item.strip()[1:]:
            low, _, high = item.strip().partition("-")
            first, last = _positive_int(low), _positive_int(high)
            if last < first or last - first >= MAX_PROFILE_STEPS:
                raise ValueError
            steps.update(range(first, last + 1))
        else:
            steps.add(_positive_int(item))
    if len(steps) > MAX_PROFILE_STEPS:
        raise ValueError
    return tuple(sorted(steps))


def _choice(*allowed: str) -> Callable[[Any], str]:
    def parse(v: Any) -> str:
        s = str(v).strip().lower().replace("-", "_")
        if s not in allowed:
            raise ValueError
        return s

    parse.allowed = allowed  # type: ignore[attr-defined]
    return parse


@dataclass(frozen=True)
class _Spec:
    parse: Callable[[Any], Any]
    default: Any
    expects: str
    # The Python types accepted through ``options=`` (None: any): ``{"workers": "2"}`` is a mistake
    # there, while the environment only has strings and parses them.
    types: tuple[type, ...] | None = None


# Each option's environment variable, declared in the one registry (sandbox/env.py).
VARIABLE_OF = {v.option: v.name for v in VARIABLES.values() if v.option}


SPECS: dict[str, _Spec] = {
    "workers": _Spec(_positive_int, 1, "a whole number >= 1", (int,)),
    "timeout_s": _Spec(_positive_float_or_none, 1800.0, "seconds > 0, or None for no limit", (int, float, type(None))),
    "memory_limit_mb": _Spec(_positive_int_or_none, None, "MiB > 0, or None for no limit", (int, type(None))),
    "on_failure": _Spec(_choice("eager", "in_process", "raise"), "eager", "one of 'eager', 'in_process', 'raise'"),
    "unpicklable": _Spec(_choice("in_process", "error"), "in_process", "one of 'in_process', 'error'"),
    "trace": _Spec(_bool, False, "true or false (1/0, yes/no, on/off)", (bool,)),
    "store": _Spec(_store, None, "a file path, a postgresql:// URL, or False to disable"),
    "run_name": _Spec(_name, None, "a name for this run"),
    "tags": _Spec(_tags, (), "comma-separated tags, or a list of strings"),
    "metrics_port": _Spec(
        _port_or_none,
        None,
        "a TCP port 1-65535 (local rank N serves on port + N), or None/0 for no endpoint",
        (int, type(None)),
    ),
    "metrics_addr": _Spec(
        _address,
        "127.0.0.1",
        "an address to bind the metrics endpoint to, e.g. 127.0.0.1 or 0.0.0.0",
    ),
    "pushgateway": _Spec(_name, None, "a Pushgateway address, host:port or http(s)://host:port"),
    "job": _Spec(_name, None, "a job id shared by every rank of the job (default: torchrun's TORCHELASTIC_RUN_ID)"),
    "async": _Spec(_bool, False, "true or false (1/0, yes/no, on/off)", (bool,)),
    "service": _Spec(_choice("auto", "on", "off"), "auto", "one of 'auto', 'on', 'off'"),
    "profile_steps": _Spec(
        _steps,
        (),
        f"calls of each compiled graph to profile, counted from 1: a number, a comma-separated list or a range "
        f"(3, '3,10', '3-5'; at most {MAX_PROFILE_STEPS}), or None/'off'",
        (int, str, list, tuple, type(None)),
    ),
}

# Option names that are Python keywords: the field of ``Options`` that holds them.
_FIELDS = {"async": "async_"}


@dataclass(frozen=True)
class Options:
    workers: int = 1
    timeout_s: float | None = 1800.0
    memory_limit_mb: int | None = None
    on_failure: str = "eager"
    unpicklable: str = "in_process"
    trace: bool = False
    store: str | None = None  # None: the default location; "off": disabled
    run_name: str | None = None
    tags: tuple[str, ...] = ()
    metrics_port: int | None = None  # the base port: local rank N serves on metrics_port + N
    metrics_addr: str = "127.0.0.1"
    pushgateway: str | None = None
    job: str | None = None  # groups the ranks' runs; None: TORCHELASTIC_RUN_ID when torchrun set it
    async_: bool = False  # option "async": run new graphs eagerly until their compile is done
    service: str = "auto"  # one compile service per host: auto (several torchrun ranks here) | on | off
    profile_steps: tuple[int, ...] = ()  # calls of each compiled graph profiled for kernel runtimes; () is off
    mode: str | None = None
    inductor: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def resolve(
        cls,
        mode: str | None = None,
        options: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Options:
        environ = os.environ if env is None else env
        values: dict[str, Any] = {}
        for name, spec in SPECS.items():
            variable = VARIABLE_OF[name]
            if name in (options or {}):
                value = options[name]  # type: ignore[index]
                if spec.types is not None and not isinstance(value, spec.types):
                    raise OptionError(
                        f"option {name!r} has a bad value {value!r} ({type(value).__name__}): expected {spec.expects}"
                    )
                values[name] = _parse(name, spec, value, f"option {name!r}")
            elif variable in environ:
                values[name] = _parse(name, spec, environ[variable], f"environment variable {variable}")
            else:
                values[name] = spec.default

        from sandbox.torch_adapter import seam  # imports torch: only once options are resolved

        # torch.compile takes mode= or options=, not both: with options, the mode goes in as options["mode"].
        if "mode" in (options or {}):
            given = options["mode"]  # type: ignore[index]
            if not isinstance(given, str):
                kind = type(given).__name__
                raise OptionError(f"option 'mode' has a bad value {given!r} ({kind}): expected a mode name")
            if mode not in (None, given):
                raise OptionError(f"mode={mode!r} and option 'mode' {given!r} disagree: give the mode once")
            mode = given
        inductor: dict[str, Any] = {}
        if mode not in (None, "default"):
            names = seam.mode_names()
            if mode not in names:
                raise OptionError(f"unknown mode {mode!r} for backend 'sandbox'; valid modes: {', '.join(names)}")
            inductor.update(seam.list_mode_options(mode))
        unknown = [k for k in (options or {}) if k not in SPECS and k != "mode"]
        if unknown:
            valid = seam.inductor_option_names()
            for key in unknown:
                if key not in valid:
                    raise OptionError(
                        f"unknown option {key!r} for backend 'sandbox'. Sandbox options: "
                        f"{', '.join(sorted(SPECS))}, mode; any Inductor config key is accepted too "
                        f"(torch._inductor.list_options() lists them)"
                    )
                inductor[key] = options[key]  # type: ignore[index]
        return cls(mode=mode, inductor=inductor, **{_FIELDS.get(k, k): v for k, v in values.items()})

    def describe(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "inductor"} | {
            "inductor": dict(self.inductor)
        }


def _parse(name: str, spec: _Spec, value: Any, where: str) -> Any:
    try:
        return spec.parse(value)
    except (TypeError, ValueError):
        raise OptionError(f"{where} has a bad value {value!r}: expected {spec.expects}") from None


def variables_table() -> str:
    """Every ``SANDBOX_*`` variable as a Markdown table (docs/CONFIGURATION.md is this text):
    name, what it is, its default and meaning, from the one registry in ``sandbox/env.py``."""
    rows = ["| variable | kind | default | meaning |", "|---|---|---|---|"]
    for v in VARIABLES.values():
        if v.option:
            spec = SPECS[v.option]
            default = "none" if spec.default in (None, ()) else str(spec.default).lower()
            kind = f"option `{v.option}`"
        else:
            default = v.default or "unset"
            kind = v.kind
        rows.append(f"| `{v.name}` | {kind} | `{default}` | {v.meaning} |")
    return "\n".join(rows) + "\n"
