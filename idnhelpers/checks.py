"""Input checks: each error names the parameter, the value given and what is allowed."""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import os

import torch


class Refused(ValueError):
    """A value not allowed: ``name``, the value as shown and what is allowed (``fail``)."""

    def __init__(self, name: str, shown: str, allowed: str):
        super().__init__(f"{name}={shown} is not allowed: {allowed}")
        self.name, self.shown, self.allowed = name, shown, allowed

    def __reduce__(self):  # a refusal in a worker process reaches the caller as itself
        return type(self), (self.name, self.shown, self.allowed)

    def renamed(self, names: dict[str, str]) -> "Refused":
        """The same refusal naming ``names[name]`` (a command's option for a setting), if given."""
        return type(self)(names.get(self.name, self.name), self.shown, self.allowed)


class UnreachableRate(Refused):
    """A noise rate a family cannot give on these inputs (PMD's factor reaches a range of rates only)."""


def fail(name: str, value, allowed: str, error: type[Refused] = Refused):
    """Raise ``error`` naming ``name``, the value given (a long one cut, but a string or path in full: a
    cut path would hide the file meant) and what is allowed."""
    shown = repr(str(value) if isinstance(value, os.PathLike) else value)
    if len(shown) > 80 and not isinstance(value, (str, os.PathLike)):
        shown = shown[:77] + "..."
    raise error(name, shown, allowed)


def check_int(value, name: str, *, minimum: int | None = None, maximum: int | None = None,
              none_ok: bool = False) -> int | None:
    """An integer (not a bool, float or string) in [minimum, maximum]."""
    if value is None and none_ok:
        return None
    bounds = (f" >= {minimum}" if minimum is not None else "") + (f" and <= {maximum}" if maximum is not None else "")
    allowed = f"an integer{bounds}" + (" or None" if none_ok else "")
    if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
            or (minimum is not None and value < minimum) or (maximum is not None and value > maximum)):
        fail(name, value, allowed)
    return int(value)


def check_float(value, name: str, *, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False, none_ok: bool = False) -> float | None:
    """A finite real number in the interval given by ``low``/``high`` (closed unless ``*_open``)."""
    if value is None and none_ok:
        return None
    interval = ("(" if low_open else "[") + f"{'-inf' if low is None else low}, " \
        f"{'inf' if high is None else high}" + (")" if high_open else "]")
    allowed = f"a finite number in {interval}" + (" or None" if none_ok else "")
    if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value)
            or (low is not None and (value < low or (low_open and value == low)))
            or (high is not None and (value > high or (high_open and value == high)))):
        fail(name, value, allowed)
    return float(value)


def check_rate(value, name: str = "noise_rate") -> float:
    return check_float(value, name, low=0.0, high=1.0, high_open=True)


def check_list(values, name: str, check, example: str, what: str) -> list:
    """A non-empty list (any iterable but a string) of ``example``, each value ``check(value, name)``ed and
    distinct (``what``: the values, and why one may appear once)."""
    items = [] if isinstance(values, (str, bytes, numbers.Number)) or not hasattr(values, "__iter__") else list(values)
    if not items:
        fail(name, values, f"a non-empty list of {example}")
    items = [check(v, name) for v in items]
    check_distinct(items, name, what)
    return items


def check_rates(values, name: str = "noise_rates") -> list[float]:
    """A non-empty list of distinct noise rates."""
    return check_list(values, name, check_rate, "numbers in [0, 1), e.g. [0.1, 0.2]",
                      "noise rates (each is one set of labels)")


def check_distinct(values, name: str, what: str) -> None:
    """Refuse a list that holds a value twice (a grid cell, a label set or a run counted twice)."""
    if len(set(values)) < len(values):
        fail(name, list(values), f"distinct {what}")


def check_choice(value, name: str, choices) -> str:
    choices = list(choices)
    if not isinstance(value, str) or value not in choices:
        fail(name, value, f"one of {choices}")
    return value


def check_bool(value, name: str) -> bool:
    """True or False (not 0, 1 or a string)."""
    if not isinstance(value, bool):
        fail(name, value, "True or False")
    return value


def check_seed(value, name: str = "seed", none_ok: bool = False) -> int:
    return check_int(value, name, minimum=0, maximum=2 ** 63 - 1, none_ok=none_ok)


def check_noise_seed(value, name: str = "noise_seed", none_ok: bool = False) -> int:
    """A seed of numpy's RandomState, which the authors' noise generators draw from: 0 to 2**32 - 1."""
    return check_int(value, name, minimum=0, maximum=2 ** 32 - 1, none_ok=none_ok)


def check_seeds(values, name: str = "seeds") -> tuple[int, ...]:
    """A non-empty list of distinct seeds."""
    return tuple(check_list(values, name, check_seed, "seeds, e.g. [0, 1, 2]",
                            "seeds (a mean over a repeated seed would count one run twice)"))


def check_n_classes(value, name: str = "n_classes") -> int:
    return check_int(value, name, minimum=2)


def check_labels(y, n_classes: int | None, name: str = "y", n: int | None = None) -> torch.Tensor:
    """Class indices in [0, n_classes) (``None``: any >= 0) as a 1-D int64 tensor (of length ``n``)."""
    if n_classes is not None:
        n_classes = check_n_classes(n_classes)
    if isinstance(y, (str, bytes)) or not isinstance(y, (torch.Tensor, list, tuple)) and not hasattr(y, "__array__"):
        fail(name, y, "a 1-D integer tensor, array or list of class indices")
    y = torch.as_tensor(y)
    if y.dim() != 1 or y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        fail(name, f"a {y.dtype} tensor of shape {tuple(y.shape)}", "a 1-D integer tensor of class indices")
    y = y.long()  # uint16 to uint64 too, whose min and max torch lacks (values above 2**63 turn negative: refused)
    if n is not None and len(y) != n:
        fail(name, f"{len(y)} labels", f"one label per instance: {n}")
    if len(y) and (int(y.min()) < 0 or (n_classes is not None and int(y.max()) >= n_classes)):
        fail(name, f"labels in [{int(y.min())}, {int(y.max())}], some outside [0, {n_classes or 'inf'})",
             f"class indices in [0, {n_classes}) (n_classes={n_classes})" if n_classes else "class indices >= 0")
    return y


def check_softmax(S, n: int | None = None, name: str = "S", n_classes: int | None = None) -> torch.Tensor:
    """An n x c matrix whose rows are probability vectors."""
    S = torch.as_tensor(S)
    if S.dim() != 2 or (n is not None and len(S) != n) or (n_classes is not None and S.shape[1] != n_classes):
        fail(name, f"a tensor of shape {tuple(S.shape)}",
             f"an n x c matrix ({'any number of' if n is None else n} rows, one per label; "
             f"{'any number of' if n_classes is None else n_classes} columns, one per class)")
    if not S.dtype.is_floating_point or not torch.isfinite(S).all() or (S < 0).any() or not torch.allclose(
            S.sum(1).double(), torch.ones(len(S), dtype=torch.float64), atol=1e-3):
        fail(name, "a matrix whose rows are not probability vectors", "rows non-negative and summing to 1")
    return S


def check_labels_softmax(y, S, n_classes: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels ``y`` below ``n_classes`` (default: S's columns) and their softmax ``S``, a row per label."""
    S = check_softmax(S, len(check_labels(y, n_classes)), n_classes=n_classes)
    return check_labels(y, S.shape[1]), S


def check_same_length(**tensors) -> int:
    """The common length of the named tensors; an error names each length otherwise."""
    lengths = {name: len(t) for name, t in tensors.items() if t is not None}
    if len(set(lengths.values())) > 1:
        first = next(iter(lengths.values()))
        other = next(k for k, v in lengths.items() if v != first)
        fail(other, f"{lengths[other]} rows", "one row per instance, as many as "
             + ", ".join(f"{k} ({v})" for k, v in lengths.items() if k != other))
    return next(iter(lengths.values()))


def check_transition_matrix(M, name: str = "M") -> torch.Tensor:
    """A c x c row-stochastic matrix (c >= 2) as float64."""
    try:
        M = torch.as_tensor(M, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        fail(name, M, "a c x c matrix of numbers")
    if M.dim() != 2 or M.shape[0] != M.shape[1] or len(M) < 2:
        fail(name, f"a matrix of shape {tuple(M.shape)}", "a square c x c matrix, c >= 2")
    if not torch.isfinite(M).all() or (M < 0).any() or not torch.allclose(
            M.sum(1), torch.ones(len(M), dtype=M.dtype), atol=1e-6):
        fail(name, "a matrix whose rows are not probability vectors", "a row-stochastic matrix: rows "
             "non-negative and summing to 1 (M_pq = P(noisy q | true p))")
    return M


def check_assignments(items: list[str], option: str, allowed, example: str) -> dict:
    """``NAME=VALUE`` items (YAML values) of a repeatable command-line option, each name once and allowed."""
    import yaml

    values = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            fail(option, item, f"NAME=VALUE, e.g. {example}")
        if name not in allowed:
            fail(option, name, f"one of {list(allowed)}" if allowed else "nothing: there are no settings to give here")
        if name in values:
            fail(option, item, f"each name once ({name} is given twice)")
        try:
            values[name] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            fail(option, item, f"NAME=VALUE with a YAML value ({type(error).__name__}), e.g. {example}")
    return values


def check_new_name(registry: dict, name, what: str, replace: bool, identifier: bool = True) -> str:
    """A name to register (an identifier, or any string without spaces), new unless ``replace``."""
    check_bool(replace, "replace")
    if not isinstance(name, str) or not name or (identifier and not name.isidentifier()) or any(
            c.isspace() for c in name):
        fail("name", name, f"a {what} name: " + ("letters, digits and underscores, not starting with a digit"
                                                  if identifier else "a non-empty string without spaces"))
    if name in registry and not replace:
        fail("name", name, f"a {what} name not registered yet ({name!r} is; pass replace=True to replace it)")
    return name


def checked(default, check, **limits):
    """A dataclass field that ``check_fields`` checks by ``check(value, name, **limits)``
    (``dataclasses.MISSING``: a field without a default)."""
    return dataclasses.field(default=default, metadata={"check": functools.partial(check, **limits)})


def check_fields(obj) -> None:
    """Check each ``checked`` field of dataclass ``obj`` (an objective's or a step's options)."""
    for f in dataclasses.fields(obj):
        if "check" in f.metadata:
            f.metadata["check"](getattr(obj, f.name), f.name)
