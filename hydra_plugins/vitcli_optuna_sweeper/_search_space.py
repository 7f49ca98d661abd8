"""hydra.sweeper.params and sweep overrides -> optuna distributions, and trial params -> overrides.

The grammar is Hydra's (https://hydra.cc/docs/advanced/override_grammar/extended/):

    choice(a, b, c) or a,b,c        categorical
    range(start, stop[, step])      stepped ints (floats if any bound is a float); stop excluded
    interval(low, high)             uniform float
    tag(log, interval(low, high))   log-uniform; tag(int, ...) samples integers
    value                           fixed: passed to every trial unchanged
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
    Transformer,
)
from hydra.errors import HydraException
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from ._errors import SweeperConfigError

KNOWN_TAGS = {"log", "int"}
PRIMITIVES = (type(None), bool, int, float, str)


@dataclass
class Param:
    """One searched key: its distribution and, for choices, the override text of each choice."""

    name: str
    distribution: BaseDistribution
    choice_texts: list[str] | None = None

    def override(self, value: Any) -> str:
        if self.choice_texts is not None:
            assert isinstance(self.distribution, CategoricalDistribution)
            return f"{self.name}={self.choice_texts[self.distribution.to_internal_repr(value)]}"
        return f"{self.name}={format_value(value)}"

    def grid_values(self) -> list[Any] | None:
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            return list(d.choices)
        if isinstance(d, IntDistribution) and not d.log:
            return list(range(d.low, d.high + 1, d.step))
        if isinstance(d, FloatDistribution) and d.step is not None:
            n = int(round((d.high - d.low) / d.step))
            return [round(d.low + i * d.step, 12) for i in range(n + 1)]
        return None


@dataclass
class SearchSpace:
    params: dict[str, Param] = field(default_factory=dict)
    fixed: dict[str, str] = field(default_factory=dict)  # key -> its override line, unchanged

    @property
    def distributions(self) -> dict[str, BaseDistribution]:
        return {name: p.distribution for name, p in self.params.items()}

    def grid(self) -> dict[str, list[Any]] | None:
        """Every param's values, or None when one of them is continuous."""
        values = {name: p.grid_values() for name, p in self.params.items()}
        return None if any(v is None for v in values.values()) else values  # type: ignore[misc]

    def overrides(self, trial_params: dict[str, Any]) -> list[str]:
        lines = [self.params[k].override(v) if k in self.params else f"{k}={format_value(v)}"
                 for k, v in trial_params.items()]
        return [*lines, *self.fixed.values()]


def parse_search_space(params: dict[str, str] | None, arguments: list[str]) -> SearchSpace:
    """hydra.sweeper.params first, then the command line's overrides (which win on a key)."""
    lines = [f"{k}={v}" for k, v in (params or {}).items()]
    parser = OverridesParser.create()
    space = SearchSpace()
    for line, source in [*((x, "hydra.sweeper.params") for x in lines), *((x, "the command line") for x in arguments)]:
        try:
            override = parser.parse_override(line)
        except HydraException as err:
            raise SweeperConfigError(f"{source}: cannot parse '{line}': {_first_line(err)}") from err
        key = override.get_key_element()
        space.params.pop(key, None)
        space.fixed.pop(key, None)
        if override.is_sweep_override():
            space.params[key] = _param(key, override, line, source)
        else:
            space.fixed[key] = line
    return space


def _param(key: str, override: Override, line: str, source: str) -> Param:
    value = override.value()
    where = f"{source}: '{line}'"
    tags = set(getattr(value, "tags", set()) or set())
    unknown = tags - KNOWN_TAGS
    if unknown:
        raise SweeperConfigError(f"{where}: unknown tag {', '.join(sorted(unknown))} (tags: log, int)")
    try:
        if isinstance(value, IntervalSweep):
            return Param(key, _interval(value, tags, where))
        if isinstance(value, RangeSweep) and not value.shuffle:
            return Param(key, _range(override, value, tags, where))
        if isinstance(value, (ChoiceSweep, RangeSweep)):  # shuffle(range(...)) is a set of choices
            if "log" in tags or "int" in tags:
                raise SweeperConfigError(f"{where}: tag(log/int, ...) applies to interval() and range() only")
            return _choices(key, override)
    except ValueError as err:  # optuna's checks on bounds and steps
        if isinstance(err, SweeperConfigError):
            raise
        raise SweeperConfigError(f"{where}: {err}") from err
    raise SweeperConfigError(f"{where}: {type(value).__name__} is not supported; use interval(), range() "
                             "or choice()")


def _interval(value: IntervalSweep, tags: set[str], where: str) -> BaseDistribution:
    low, high, log = value.start, value.end, "log" in tags
    if low is None or high is None or not low < high:
        raise SweeperConfigError(f"{where}: interval(low, high) needs low < high")
    if log and low <= 0:
        raise SweeperConfigError(f"{where}: tag(log, ...) needs a positive lower bound")
    if "int" in tags:
        if low != int(low) or high != int(high):
            raise SweeperConfigError(f"{where}: tag(int, interval(low, high)) needs whole-number bounds")
        return IntDistribution(int(low), int(high), log=log)
    return FloatDistribution(float(low), float(high), log=log)


def _range(override: Override, value: RangeSweep, tags: set[str], where: str) -> BaseDistribution:
    values = list(override.sweep_iterator(transformer=Transformer.identity))
    if not values:
        raise SweeperConfigError(f"{where}: the range is empty")
    step = value.step if value.step is not None else 1
    if step <= 0:
        raise SweeperConfigError(f"{where}: range() needs a positive step")
    log = "log" in tags
    if all(isinstance(v, int) for v in (value.start, value.stop, step)):
        if log and step != 1:
            raise SweeperConfigError(f"{where}: tag(log, range(...)) needs step 1")
        return IntDistribution(min(values), max(values), log=log, step=int(step))
    if log:
        raise SweeperConfigError(f"{where}: tag(log, ...) does not take a float range; use tag(log, interval(...))")
    return FloatDistribution(float(min(values)), float(max(values)), step=float(step))


def _choices(key: str, override: Override) -> Param:
    raw = list(override.sweep_iterator(transformer=Transformer.identity))
    # optuna stores primitives only: lists/dicts are kept as their override text
    choices = [v if isinstance(v, PRIMITIVES) else Transformer.str(v) for v in raw]
    if len(set(map(repr, choices))) != len(choices):
        raise SweeperConfigError(f"{key}: choice() lists a value twice")
    return Param(key, CategoricalDistribution(choices), [format_value(v) for v in raw])


def format_value(value: Any) -> str:
    """A value as override text that Hydra parses back to the same value and type."""
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    text = Transformer.str(value)
    if isinstance(value, str) and _parses_as(text) != value:
        escaped = value.replace("\\", "\\\\").replace("'", "\\'")
        return f"'{escaped}'"
    return text


def _parses_as(text: str) -> Any:
    try:
        return OverridesParser.create().parse_override(f"k={text}").value()
    except HydraException:
        return None


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
