"""Names of the input-transformation defences: parse, check and print them, without torch.

A defence name is ``KIND`` or ``KIND:key=value,key=value`` (``jpeg:quality=75``,
``median:size=3``). Producers check a name the user typed before torch is loaded
(a typo should fail in a fraction of a second, not after a model is read), so this
module imports nothing but the standard library; the implementations live in the
sibling modules and are imported by :func:`shared.transforms.apply` when it runs.

Parsed options are a flat dict, ``{"transform": KIND, param: value, ...}``, with
every parameter present (defaults filled in) and of its declared type, so that two
spellings of one defence compare equal and :func:`name_of` prints one canonical name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class _Param:
    """One parameter of a kind: its type, default and admissible range.

    ``low``/``high`` are inclusive bounds unless ``low_open`` (then ``low`` itself is
    excluded); ``high`` None means unbounded. ``rule`` is the phrase the error
    messages use, so that a message says what would be accepted.
    """

    type: type
    default: int | float
    low: int | float
    high: int | float | None
    rule: str
    low_open: bool = False

    def admits(self, value) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        return above and (self.high is None or value <= self.high)


#: Each kind's parameters. The defaults are the papers' settings: JPEG quality 75 (Guo
#: et al. 2018), 5 bits and a 2 x 2 median (Xu et al.'s CIFAR-10 squeezers), a shrink
#: of 10 % (Xie et al. place a 299..330-pixel image on a 331-pixel canvas).
_KINDS: dict[str, dict[str, _Param]] = {
    "bit-depth": {"bits": _Param(int, 5, 1, 8, "an integer in 1..8")},
    "jpeg": {"quality": _Param(int, 75, 1, 100, "an integer in 1..100")},
    "median": {"size": _Param(int, 2, 2, 9, "an integer in 2..9")},
    "resize-pad": {"seed": _Param(int, 0, 0, None, "an integer >= 0"),
                   "shrink": _Param(float, 0.1, 0.0, 0.5, "a number in (0, 0.5]", low_open=True)},
}

#: The kind names, sorted.
KINDS: tuple[str, ...] = tuple(sorted(_KINDS))

# resize-pad draws a size and an offset: its output is a random variable, which an
# attacker has to average over (EOT) rather than differentiate once.
_RANDOMISED = frozenset({"resize-pad"})


def is_transform(name) -> bool:
    """Whether ``name`` names an input transformation (its part before the first ``:`` is a kind).

    Parameters
    ----------
    name : str
        A defence name such as ``"jpeg:quality=50"``; anything else (a DWT
        defence name, a non-string) gives False.

    Returns
    -------
    bool
    """
    return isinstance(name, str) and name.split(":", 1)[0].strip() in _KINDS


def parse(name: str) -> dict:
    """The options a defence name stands for, every parameter filled with its default.

    Parameters
    ----------
    name : str
        ``KIND`` or ``KIND:key=value,key=value``, e.g. ``"jpeg:quality=75"``.

    Returns
    -------
    dict
        ``{"transform": KIND, param: value, ...}``; e.g. ``{"transform": "jpeg", "quality": 75}``.

    Raises
    ------
    ValueError
        One line naming the problem and what exists: an unknown kind (the kinds
        are listed), an unknown or repeated parameter (the valid ones are listed),
        a missing ``=``, or a value of the wrong type or out of range.
    """
    if not isinstance(name, str):
        raise ValueError(f"a defence name is a string, got {name!r}")
    kind, _, rest = name.partition(":")
    kind = kind.strip()
    params = _params_of(kind)
    given: dict = {}
    if _:  # "jpeg:" with nothing after the colon is a slip worth naming, not "no parameters"
        for item in rest.split(","):
            key, eq, value = item.partition("=")
            key = key.strip()
            if not eq or not key:
                raise ValueError(f"{kind}: expected key=value, got {item.strip()!r}; valid: {', '.join(params)}")
            if key in given:
                raise ValueError(f"{kind}: parameter {key!r} given twice")
            given[key] = value.strip()
    return _checked(kind, params, given)


def validate(options: dict) -> dict:
    """Check an options dict (read from a file, say) as :func:`parse` checks a name.

    Parameters
    ----------
    options : dict
        ``{"transform": KIND, param: value, ...}``; missing parameters take their
        defaults. A value may be of the parameter's type or a string that
        converts to it (as in a name); an int is accepted for a float parameter.

    Returns
    -------
    dict
        A new, complete dict in canonical types (what :func:`parse` returns).

    Raises
    ------
    ValueError
        As :func:`parse`, and if ``options`` is not a dict or has no ``"transform"``.
    """
    if not isinstance(options, dict) or "transform" not in options:
        raise ValueError(f"defence options are a dict with a 'transform' key (one of {', '.join(KINDS)}), "
                         f"got {options!r}")
    kind = options["transform"]
    params = _params_of(kind)
    return _checked(kind, params, {k: v for k, v in options.items() if k != "transform"})


def name_of(options: dict) -> str:
    """The canonical name of a defence: every parameter, sorted by key.

    Parameters
    ----------
    options : dict
        Options as :func:`parse` or :func:`validate` return them (a partial dict is
        completed with defaults first).

    Returns
    -------
    str
        E.g. ``"jpeg:quality=75"``; ``parse(name_of(o)) == validate(o)``.

    Raises
    ------
    ValueError
        If the options are invalid (see :func:`validate`).
    """
    options = validate(options)
    # repr() of a float round-trips exactly (float(repr(x)) == x), so the name parses back to the same options.
    parts = [f"{key}={options[key]!r}" for key in sorted(_KINDS[options["transform"]])]
    return f"{options['transform']}:{','.join(parts)}"


def is_randomised(options: dict) -> bool:
    """Whether the transformation draws random numbers (resize-pad), so an attack on it needs EOT.

    Parameters
    ----------
    options : dict
        Options with a ``"transform"`` key.

    Returns
    -------
    bool
    """
    return options.get("transform") in _RANDOMISED


def _params_of(kind) -> dict[str, _Param]:
    if kind not in _KINDS:
        raise ValueError(f"unknown defence kind {kind!r}; input transformations: {', '.join(KINDS)}")
    return _KINDS[kind]


def _checked(kind: str, params: dict[str, _Param], given: dict) -> dict:
    """Complete ``given`` with defaults, each value converted to its parameter's type and range-checked."""
    unknown = sorted(set(given) - set(params), key=str)
    if unknown:
        raise ValueError(f"{kind}: unknown parameter {unknown[0]!r}; valid: {', '.join(sorted(params))}")
    options = {"transform": kind}
    for key, param in params.items():
        value = _converted(given[key], param) if key in given else param.default
        if value is None:  # not of the type at all: show what was given, quoted if it was text
            raise ValueError(f"{kind}: {key} is {param.rule}, got {given[key]!r}")
        if not param.admits(value):
            raise ValueError(f"{kind}: {key} is {param.rule}, got {value!r}")
        options[key] = value
    return options


def _converted(value, param: _Param):
    """``value`` as ``param.type``, or None when it is not one.

    Strings convert (they come from a name); a bool is never a number here (True
    would silently be 1); an int parameter refuses 7.5 rather than truncating it.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            return param.type(value.strip())
        except ValueError:
            return None
    if param.type is int:
        return value if isinstance(value, int) else None
    return float(value) if isinstance(value, (int, float)) else None
