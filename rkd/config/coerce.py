"""Field types of the config schema: how a YAML or command-line value becomes the declared type.

pydantic does the structure (sections, unknown keys, lists, null, ``Literal`` choices); these
validators keep rkd's own scalar rules, stricter than pydantic's lax mode: a bool is not a number,
a number must be finite, and YAML 1.1's bare ``no`` (read as False) is the word "no". Every failure
carries the accepted form, which ``rkd.config.loading`` puts into the ConfigError with the field.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Any, NoReturn

import yaml
from pydantic import AfterValidator, BeforeValidator, PlainValidator
from pydantic_core import PydanticCustomError

from rkd.config.yaml_io import load_yaml


def reject(accepted: str) -> NoReturn:
    """Fail validation of the current value; ``accepted`` says what would have been accepted."""
    raise PydanticCustomError("config", "{accepted}", {"accepted": accepted})


def accepts(accepted: str, ok: Callable[[Any], bool]) -> AfterValidator:
    """A range or shape check on an already-typed value, failing with ``accepted``."""

    def check(value: Any) -> Any:
        if not ok(value):
            reject(accepted)
        return value

    return AfterValidator(check)


def _to_int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    reject("an integer")


def _finite(value: Any) -> float | None:
    """``value`` as a finite float (numbers, numeric strings), else None."""
    number = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            pass
    return number if number is not None and math.isfinite(number) else None


def _to_float(value: Any) -> float:
    number = _finite(value)
    if number is None:
        reject("a finite number")
    return number


def _to_number(value: Any) -> int | float:
    """A list entry such as an SNR or a weight: an int or a float kept as written (hashes see it so)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        reject("a finite number")
    return value


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.lower() in ("true", "yes", "1")
    reject("true or false")


def _to_str(value: Any) -> Any:
    if isinstance(value, bool):  # YAML 1.1 reads a bare `no`/`yes` (e.g. mixed_precision: no) as a bool
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return str(value)
    return value


def _str(value: Any) -> str:
    value = _to_str(value)
    if not isinstance(value, str):
        reject("a string")
    return value


def _yaml_list(value: Any) -> list:
    """A list, also when a command line or YAML string spells it (``"[8, 16]"``)."""
    if isinstance(value, str):
        try:
            value = load_yaml(value)
        except yaml.YAMLError:
            reject("a list, e.g. [8, 16, 32]")
    if not isinstance(value, list):
        reject("a list, e.g. [8, 16, 32]")
    return list(value)


def _null_text(value: Any) -> Any:
    return None if isinstance(value, str) and value.lower() in ("null", "none") else value


Int = Annotated[int, PlainValidator(_to_int)]
Float = Annotated[float, PlainValidator(_to_float)]
Number = Annotated[int | float, PlainValidator(_to_number)]
Bool = Annotated[bool, PlainValidator(_to_bool)]
Str = Annotated[str, PlainValidator(_str)]
YamlList = BeforeValidator(_yaml_list)  # metadata for a list field: Annotated[list[Int], YamlList]
Word = BeforeValidator(_to_str)  # metadata for a Literal field: a YAML bool or number compared as text


NullText = BeforeValidator(_null_text)  # metadata for an optional field: Annotated[Int | None, NullText] reads 'null'


NonNegInt = Annotated[Int, accepts("an integer >= 0", lambda v: v >= 0)]
PosInt = Annotated[Int, accepts("an integer >= 1", lambda v: v >= 1)]
NonNegFloat = Annotated[Float, accepts("a number >= 0", lambda v: v >= 0)]
Weight = Annotated[Float, accepts("a weight >= 0", lambda v: v >= 0)]
LearningRate = Annotated[Float, accepts("a learning rate > 0", lambda v: v > 0)]
Probability = Annotated[Float, accepts("a probability in [0, 1)", lambda v: 0 <= v < 1)]
Stride = Annotated[Int, accepts("1, 2 or 4", lambda v: v in (1, 2, 4))]
ImageSize = Annotated[Int, accepts("an integer in [8, 1024]", lambda v: 8 <= v <= 1024)]


def distinct(values: list) -> bool:
    return len(set(values)) == len(values)


NonEmptyInts = Annotated[
    list[Int], YamlList, accepts("a non-empty list of positive integers", lambda v: bool(v) and all(k >= 1 for k in v))
]
Numbers = Annotated[list[Number], YamlList]
PositiveOrNull = Annotated[
    Annotated[Float, accepts("a number > 0, or null for none", lambda v: v > 0)] | None, NullText
]
SplitCap = Annotated[
    Annotated[Int, accepts("an integer >= 1, or null for the whole split", lambda v: v >= 1)] | None, NullText
]
