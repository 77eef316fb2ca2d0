"""Any torchattacks attack by name: ``torchattacks:CLASSNAME`` behind the registry's contract.

``attack("AutoAttack")`` is ``fn(model, images, labels, **params) -> adversarial``
like the project's own attacks: it builds ``torchattacks.AutoAttack(model, **params)``
and runs it on the batch in eval mode (every submodule's train/eval flag
restored after), returning detached images in [0, 1] on the images' device.
The class name is matched exactly, else case-insensitively.

Filled in where the class accepts them and the caller did not give them:

* ``n_classes``: the logits' width, from one forward pass of the model on
  one image (torchattacks defaults to 10 whatever the model);
* ``seed``: 0. AutoAttack's default (None) seeds from the clock, so two runs
  on the same images would differ.

Reproducibility: the attack runs on a forked torch RNG (CPU and the CUDA
devices in use; restored after, so the caller's random stream is untouched)
seeded with ``torch.manual_seed(seed)``. Every attack here therefore accepts
``seed`` (default 0): for APGD, APGDT, FAB, Square and AutoAttack it is also
the class's own seed; for the others (PGD's random start, EOTPGD, GN, ...)
it only seeds the forked RNG. ``seed=None`` leaves the forked RNG unseeded
(and lets AutoAttack/Square seed from the clock): a fresh draw each run.

What torchattacks does of its own that the adapter undoes: its ``__call__``
restores a model that was training with ``model.train()``, which puts every
submodule in training mode (a frozen norm layer, or the eval-mode classifier
inside a new :class:`~shared.attacks.BPDA` wrapper); APGD, APGDT, FAB and
Square reseed the global RNG (``torch.manual_seed``) and leave it so; APGD,
APGDT and AutoAttack return images that still require grad; a model without
parameters makes the constructor print and leave the device unset. Outputs
are clamped to [0, 1] (a no-op for every attack seen).

torchattacks (and the scipy it pulls in, about a second) is imported only
when such an attack is asked for: the producers import the registry and must
start fast. Parameter values from a command line are text: :func:`parse_value`.

Shapes: images (N, C, H, W) float in [0, 1]; labels (N,) int; output like images.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import inspect
import io
import numbers
import re

import torch

from shared.attacks._base import check_inputs, eval_mode

PREFIX = "torchattacks:"
# Classes of torchattacks that are no attack on (model, images, labels): MultiAttack combines
# attack objects, LGV first trains copies of the model on a training set it is handed.
EXCLUDED = frozenset({"Attack", "MultiAttack", "LGV"})
# L2 attacks of torchattacks without a ``norm`` parameter: their eps is an L2 radius, not a [0, 1] pixel budget.
L2_CLASSES = frozenset({"PGDL2", "PGDRSL2"})

_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"


def _torchattacks():
    try:
        import torchattacks
    except ImportError:
        raise ValueError("torchattacks:NAME attacks need torchattacks: pip install 'torchattacks>=3.5'") from None
    return torchattacks


@functools.cache
def _classes() -> dict:
    """Name -> class of every torchattacks attack that can run as ``cls(model, **params)(images, labels)``."""
    torchattacks = _torchattacks()
    from torchattacks.attack import Attack

    found = {}
    for name in dir(torchattacks):
        cls = getattr(torchattacks, name)
        if inspect.isclass(cls) and issubclass(cls, Attack) and cls.__name__ not in EXCLUDED:
            found[cls.__name__] = cls
    return found


def available() -> list[str]:
    """The torchattacks attacks ``torchattacks:NAME`` can name, sorted (imports torchattacks)."""
    return sorted(_classes(), key=str.lower)


def resolve(name: str) -> str:
    """The torchattacks class name meant by ``name`` (exact, else case-insensitive when unambiguous).

    Raises
    ------
    ValueError
        For no such attack, or a case-insensitive match to several; the message lists them.
    """
    classes = _classes()
    if name in classes:
        return name
    matches = [c for c in classes if c.lower() == str(name).lower()]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ValueError(f"torchattacks attack {name!r} is ambiguous: {', '.join(matches)}; give the exact class name")
    raise ValueError(f"unknown torchattacks attack {name!r}; valid: {', '.join(available())}")


def _class_parameters(cls) -> dict[str, inspect.Parameter]:
    """The constructor's parameters after ``self`` and ``model``."""
    params = list(inspect.signature(cls.__init__).parameters.values())[2:]
    return {p.name: p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def parameters(name: str) -> list[str]:
    """The parameters ``attack(name)`` accepts, sorted: the class's own plus ``seed``."""
    return sorted(set(_class_parameters(_classes()[resolve(name)])) | {"seed"})


def _is_linf(cls_name: str, params: dict, defaults: dict[str, inspect.Parameter]) -> bool:
    """Whether the attack's eps is an L-inf budget in [0, 1] pixel units (and so is checked as one)."""
    if cls_name in L2_CLASSES:
        return False
    if "norm" in defaults:
        return params.get("norm", defaults["norm"].default) == "Linf"
    return True


def _check_types(cls_name: str, params: dict, defaults: dict[str, inspect.Parameter]) -> None:
    """A value of the wrong kind (text for a number, say: a command line's value not parsed) is one clear line.

    The kind is the default's: a number, a bool or a name; a parameter whose default is None takes anything.
    """
    for key, value in params.items():
        default = None if key == "seed" else defaults[key].default
        if key == "seed":
            integer = isinstance(value, numbers.Integral) and not isinstance(value, bool)
            expected, ok = "an integer or None", value is None or integer
        elif isinstance(default, bool):
            expected, ok = "true or false", isinstance(value, bool)
        elif isinstance(default, int | float):
            expected, ok = "a number", isinstance(value, numbers.Real) and not isinstance(value, bool)
        elif isinstance(default, str):
            expected, ok = "a name", isinstance(value, str)
        else:
            continue
        if not ok:
            hint = " (text from a command line? see shared.attacks.parse_value)" if isinstance(value, str) else ""
            raise ValueError(f"{PREFIX}{cls_name}: {key} must be {expected}, got {value!r}{hint}")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _model_device(model, fallback: torch.device) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return fallback


@contextlib.contextmanager
def seeded_rng(seed: int | None, *devices: torch.device):
    """A forked torch RNG, seeded with ``torch.manual_seed(seed)`` unless seed is None; restored after.

    The CUDA generators of every visible device are forked once CUDA is in use:
    torchattacks' APGD and Square call ``torch.manual_seed``, which reseeds all of them.
    """
    cuda = [d for d in devices if d.type == "cuda"]
    forked = list(range(torch.cuda.device_count())) if cuda else []
    with torch.random.fork_rng(devices=forked):
        if seed is not None:
            torch.manual_seed(int(seed))
        yield


def attack(name: str):
    """The registry function for the torchattacks attack ``name`` (a class name, without the prefix).

    The function's signature lists the class's parameters with their defaults
    (``seed`` 0, ``n_classes`` None: from the model), so that
    ``inspect.signature`` validates a plan's parameters.

    Raises
    ------
    ValueError
        If torchattacks has no such attack (the message lists those it has).
    """
    return _adapter(resolve(name))


@functools.cache
def _adapter(cls_name: str):
    cls = _classes()[cls_name]
    defaults = _class_parameters(cls)
    accepted = sorted(set(defaults) | {"seed"})

    def run(model, images: torch.Tensor, labels: torch.Tensor, **params) -> torch.Tensor:
        unknown = sorted(set(params) - set(accepted))
        if unknown:
            raise ValueError(f"{PREFIX}{cls_name}: unknown parameter(s) {', '.join(unknown)}; "
                             f"valid: {', '.join(accepted)}")
        _check_types(cls_name, params, defaults)
        linf = _is_linf(cls_name, params, defaults)
        eps = float(params["eps"]) if linf and "eps" in params else None
        try:
            images, labels = check_inputs(images, labels, eps)
        except ValueError as exc:
            raise ValueError(f"{PREFIX}{cls_name}: {exc}") from None
        device = _model_device(model, images.device)
        seed = params.get("seed", 0)
        if "seed" in defaults:
            params.setdefault("seed", 0)
        else:
            params.pop("seed", None)
        with eval_mode(model):
            if "n_classes" in defaults and "n_classes" not in params:
                with torch.no_grad():
                    params["n_classes"] = int(model(images[:1].to(device)).shape[-1])
            described = ", ".join(f"{k}={v!r}" for k, v in sorted(params.items()))
            try:
                # The constructor prints (and leaves device None) for a model without parameters: set below.
                with contextlib.redirect_stdout(io.StringIO()):
                    instance = cls(model, **params)
            except (TypeError, ValueError, AssertionError) as exc:
                raise ValueError(f"{PREFIX}{cls_name} rejected its parameters ({described}): "
                                 f"{_one_line(exc)}") from None
            if instance.device is None:
                instance.set_device(device)
            with seeded_rng(seed, images.device, device):
                try:
                    adversarial = instance(images, labels)
                except AssertionError as exc:  # torchattacks checks some parameters only when it attacks
                    raise ValueError(f"{PREFIX}{cls_name} rejected its parameters ({described}): "
                                     f"{_one_line(exc)}") from exc
        return adversarial.detach().to(images.device).clamp_(0, 1)

    keyword = [inspect.Parameter(p.name, inspect.Parameter.KEYWORD_ONLY, default=p.default)
               for p in defaults.values()]
    keyword = [p.replace(default=0) if p.name == "seed" else p.replace(default=None) if p.name == "n_classes" else p
               for p in keyword]
    if "seed" not in defaults:
        keyword.append(inspect.Parameter("seed", inspect.Parameter.KEYWORD_ONLY, default=0))
    positional = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in ("model", "images", "labels")]
    run.__signature__ = inspect.Signature(positional + keyword)
    run.__name__ = run.__qualname__ = f"{PREFIX}{cls_name}"
    summary = (cls.__doc__ or "").strip().splitlines()
    run.__doc__ = f"torchattacks.{cls_name} through the registry's contract (see shared.attacks.external)." + (
        f"\n\n{summary[0].strip()}" if summary else "")
    return run


def parse_value(text: str) -> object:
    """A parameter value given as text, as the attack takes it.

    ``"8/255"`` -> 8/255 (float); ``"0.01"``, ``"1e-3"`` -> float; ``"1000"`` -> int;
    ``"true"``/``"false"`` -> bool and ``"none"``/``"null"`` -> None (any case);
    ``"(2, 10)"`` or ``"[1, 2]"`` -> tuple or list; anything else (``"Linf"``,
    ``"standard"``) -> the text itself.

    Raises
    ------
    ValueError
        For empty text, a fraction over zero, or a bracketed value that is not a Python literal.
    """
    value = str(text).strip()
    lowered = value.lower()
    if not value:
        raise ValueError("an empty parameter value; give a number, true/false or a name")
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    if re.fullmatch(r"[+-]?\d+", value):
        return int(value)
    if re.fullmatch(_NUMBER, value):
        return float(value)
    fraction = re.fullmatch(rf"\s*({_NUMBER})\s*/\s*({_NUMBER})\s*", value)
    if fraction:
        denominator = float(fraction.group(2))
        if denominator == 0:
            raise ValueError(f"{value!r} divides by zero")
        return float(fraction.group(1)) / denominator
    if value[0] in "([":
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise ValueError(f"{value!r} is not a tuple or list of numbers and names in Python's syntax") from None
    return value
