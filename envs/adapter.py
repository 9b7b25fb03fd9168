"""Any Gymnasium environment whose behaviour is set by parameters, as a task family, from plain data.

A *parameter* is something that makes one task differ from another: a constructor argument
(Pendulum's ``g``) or an attribute of ``env.unwrapped`` (a MuJoCo model's
``model.opt.gravity[2]``, ``model.body_mass``, ``model.geom_friction[0, 0]``). A task is a
dict of parameter values, drawn from per-parameter distributions. From a metarl config::

    env:
      family: gym_params
      kwargs:
        env_id: Pendulum-v1
        horizon: 200
        params:
          g: {low: 8, high: 12}                            # uniform; constructor argument g
          m: {distribution: log_uniform, low: 0.5, high: 2, attribute: m}
        env_kwargs: {}                                     # fixed constructor arguments

Parameter fields:

* ``distribution``: ``uniform`` (default; ``low``, ``high``), ``log_uniform`` (``low``,
  ``high`` > 0, uniform in log space), ``normal`` (``mean``, ``std`` > 0) or ``choice``
  (``values``: a non-empty list, each drawn with equal probability). Bounds, means and
  values may be lists: the parameter is then a vector of that shape.
* Where it is applied: ``kwarg: NAME`` (a constructor argument of ``gym.make``; the default,
  with the parameter's own name) or ``attribute: PATH`` (a dotted attribute path on
  ``env.unwrapped``, optionally indexed: ``model.opt.gravity[2]``).
* ``scale: true`` (attributes only): the drawn value multiplies the environment's own
  value (for example every body mass by one factor) instead of replacing it.

Attributes are set right after the environment is built and whenever the task changes; they
must keep their value across ``reset`` (true of MuJoCo model fields and of most physical
constants). A task change that alters a constructor argument rebuilds the environment.
Every spec is checked when the family is built, by building one environment: an unknown env
id, distribution or field, ``low >= high``, a constructor argument the environment rejects
or an attribute that does not exist gives a ``ValueError`` naming the field.
"""

from __future__ import annotations

import difflib
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from envs.base import Task, TaskFamily, _check_horizon
from envs.locomotion import MissingDependencyError

Value = float | np.ndarray


# ---------------------------------------------------------------- distributions


def _numbers(value: Any, field: str) -> np.ndarray:
    """A finite number or a (nested) list of them, as a float64 array."""
    try:
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{field} must be a number or a list of numbers, got {value!r}") from None
    if isinstance(value, bool) or array.dtype == object or not np.all(np.isfinite(array)):
        raise ValueError(f"{field} must be finite numbers, got {value!r}")
    return array


def _as_value(array: np.ndarray) -> Value:
    return float(array) if array.ndim == 0 else array


class Distribution(ABC):
    """A distribution of one parameter's value (a float, or an array of a fixed shape)."""

    shape: tuple[int, ...]

    @abstractmethod
    def sample(self, rng: np.random.Generator) -> Value:
        """One draw using only ``rng``."""

    @abstractmethod
    def center(self) -> Value:
        """A typical value: the default task's."""


class Uniform(Distribution):
    """Uniform on ``[low, high)`` (element-wise for arrays)."""

    def __init__(self, low: Any, high: Any, field: str) -> None:
        self.low, self.high = _numbers(low, f"{field}.low"), _numbers(high, f"{field}.high")
        if self.low.shape != self.high.shape:
            raise ValueError(f"{field}: low and high must have the same shape, got {low!r} and {high!r}")
        if not np.all(self.low < self.high):
            raise ValueError(f"{field}: low must be < high, got low={low!r}, high={high!r}")
        self.shape = self.low.shape

    def sample(self, rng: np.random.Generator) -> Value:
        return _as_value(rng.uniform(self.low, self.high, size=self.shape))

    def center(self) -> Value:
        return _as_value((self.low + self.high) / 2)


class LogUniform(Uniform):
    """``exp(U[log low, log high))``: uniform in log space, for scales such as masses."""

    def __init__(self, low: Any, high: Any, field: str) -> None:
        super().__init__(low, high, field)
        if not np.all(self.low > 0):
            raise ValueError(f"{field}.low must be > 0 for a log_uniform distribution, got {low!r}")

    def sample(self, rng: np.random.Generator) -> Value:
        return _as_value(np.exp(rng.uniform(np.log(self.low), np.log(self.high), size=self.shape)))

    def center(self) -> Value:
        return _as_value(np.sqrt(self.low * self.high))


class Normal(Distribution):
    """Normal with ``mean`` and standard deviation ``std`` (element-wise for arrays)."""

    def __init__(self, mean: Any, std: Any, field: str) -> None:
        self.mean, self.std = _numbers(mean, f"{field}.mean"), _numbers(std, f"{field}.std")
        if self.mean.shape != self.std.shape:
            raise ValueError(f"{field}: mean and std must have the same shape, got {mean!r} and {std!r}")
        if not np.all(self.std > 0):
            raise ValueError(f"{field}.std must be > 0, got {std!r}")
        self.shape = self.mean.shape

    def sample(self, rng: np.random.Generator) -> Value:
        return _as_value(rng.normal(self.mean, self.std, size=self.shape))

    def center(self) -> Value:
        return _as_value(self.mean.copy())


class Choice(Distribution):
    """One of ``values``, each with probability ``1 / len(values)``."""

    def __init__(self, values: Any, field: str) -> None:
        if not isinstance(values, Sequence) or isinstance(values, str) or len(values) == 0:
            raise ValueError(f"{field}.values must be a non-empty list, got {values!r}")
        arrays = [_numbers(v, f"{field}.values[{i}]") for i, v in enumerate(values)]
        if len({a.shape for a in arrays}) != 1:
            raise ValueError(f"{field}.values must all have the same shape, got {values!r}")
        self.values, self.shape = arrays, arrays[0].shape

    def sample(self, rng: np.random.Generator) -> Value:
        return _as_value(self.values[int(rng.integers(len(self.values)))].copy())

    def center(self) -> Value:
        return _as_value(self.values[0].copy())


# Distribution name -> (class, the fields it takes).
DISTRIBUTIONS: dict[str, tuple[type[Distribution], tuple[str, ...]]] = {
    "uniform": (Uniform, ("low", "high")),
    "log_uniform": (LogUniform, ("low", "high")),
    "normal": (Normal, ("mean", "std")),
    "choice": (Choice, ("values",)),
}


# ---------------------------------------------------------------- attribute paths

_PATH = re.compile(r"^([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)(?:\[\s*(-?\d+(?:\s*,\s*-?\d+)*)\s*\])?$")


@dataclass(frozen=True)
class AttributePath:
    """``a.b.c`` or ``a.b.c[i, j]`` on ``env.unwrapped``."""

    text: str
    names: tuple[str, ...]
    index: tuple[int, ...] | None

    @classmethod
    def parse(cls, text: Any, field: str) -> AttributePath:
        match = _PATH.match(text) if isinstance(text, str) else None
        if match is None:
            raise ValueError(f"{field} = {text!r} is not an attribute path like 'model.opt.gravity[2]'")
        index = None if match.group(2) is None else tuple(int(i) for i in match.group(2).split(","))
        return cls(text, tuple(match.group(1).split(".")), index)

    def _parent(self, env: gym.Env) -> Any:
        obj: Any = env.unwrapped
        for name in self.names[:-1]:
            obj = getattr(obj, name)
        return obj

    def get(self, env: gym.Env) -> Value:
        """The current value (a copy)."""
        value = getattr(self._parent(env), self.names[-1])
        if self.index is not None:
            value = np.asarray(value)[self.index]
        return _as_value(np.array(value, dtype=np.float64)) if np.ndim(value) else float(value)

    def set(self, env: gym.Env, value: Value) -> None:
        """Set the value: in place for arrays (MuJoCo model fields), by assignment otherwise."""
        parent = self._parent(env)
        current = getattr(parent, self.names[-1])
        if self.index is not None:
            current[self.index] = value
        elif isinstance(current, np.ndarray):
            current[...] = value
        else:
            setattr(parent, self.names[-1], value)


# ---------------------------------------------------------------- parameters

_PARAM_FIELDS = {"distribution", "low", "high", "mean", "std", "values", "kwarg", "attribute", "scale"}


@dataclass(frozen=True)
class Param:
    """One task parameter: its distribution and where it is applied (a kwarg or an attribute)."""

    name: str
    distribution: Distribution
    kwarg: str | None
    attribute: AttributePath | None
    scale: bool

    @classmethod
    def from_spec(cls, name: str, spec: Any) -> Param:
        field = f"params.{name}"
        if not isinstance(spec, Mapping):
            raise ValueError(f"{field} must be a mapping of fields (distribution, low, high, ...), got {spec!r}")
        unknown = sorted(set(spec) - _PARAM_FIELDS)
        if unknown:
            raise ValueError(f"{field}: unknown field(s) {', '.join(unknown)}; "
                             f"allowed: {', '.join(sorted(_PARAM_FIELDS))}")
        kind = spec.get("distribution", "uniform")
        if kind not in DISTRIBUTIONS:
            raise ValueError(f"{field}.distribution = {kind!r} is unknown; allowed: {', '.join(DISTRIBUTIONS)}")
        dist_cls, dist_fields = DISTRIBUTIONS[kind]
        stray = sorted({"low", "high", "mean", "std", "values"} & set(spec) - set(dist_fields))
        missing = [f for f in dist_fields if f not in spec]
        if stray or missing:
            raise ValueError(f"{field}: a {kind} distribution takes {', '.join(dist_fields)}"
                             + (f"; missing {', '.join(missing)}" if missing else "")
                             + (f"; not {', '.join(stray)}" if stray else ""))
        distribution = dist_cls(*(spec[f] for f in dist_fields), field)  # type: ignore[call-arg]
        return cls(name, distribution, *cls._target(name, spec, field))

    @staticmethod
    def _target(name: str, spec: Mapping[str, Any], field: str) -> tuple[str | None, AttributePath | None, bool]:
        if "kwarg" in spec and "attribute" in spec:
            raise ValueError(f"{field}: give kwarg or attribute, not both")
        scale = spec.get("scale", False)
        if not isinstance(scale, bool):
            raise ValueError(f"{field}.scale must be true or false, got {scale!r}")
        if "attribute" in spec:
            return None, AttributePath.parse(spec["attribute"], f"{field}.attribute"), scale
        if scale:
            raise ValueError(f"{field}.scale needs an attribute (the value it multiplies)")
        kwarg = spec.get("kwarg", name)
        if not isinstance(kwarg, str) or not kwarg.isidentifier():
            raise ValueError(f"{field}.kwarg must be an argument name, got {kwarg!r}")
        return kwarg, None, False

    def check_value(self, value: Any) -> Value:
        """``value`` as this parameter's type (float or array of its shape), or ``ValueError``."""
        array = _numbers(value, f"task[{self.name!r}]")
        if array.shape != self.distribution.shape:
            raise ValueError(f"task[{self.name!r}] must have shape {self.distribution.shape}, got {value!r}")
        return _as_value(array)


# ---------------------------------------------------------------- env and family


class GymParamsEnv(gym.Wrapper):
    """A Gymnasium env built and set to a task of a :class:`GymParamsFamily`.

    ``set_task(task)`` or ``reset(options={"task": task})`` change the task; a change of a
    constructor argument rebuilds the wrapped env.

    :param family: the family (env id, parameters, horizon, fixed constructor arguments).
    :param task: a dict of parameter values (the family's default task when ``None``).
    :param make_kwargs: more arguments of ``gym.make`` (for example ``render_mode``).
    """

    def __init__(self, family: GymParamsFamily, task: Task | None = None, **make_kwargs: Any) -> None:
        self.family, self._make_kwargs = family, make_kwargs
        self._task = family.check_task(family.default_task() if task is None else task)
        super().__init__(self._build())
        self._apply_attributes()

    def _constructor_values(self, task: Task) -> dict[str, Any]:
        return {p.kwarg: task[p.name] for p in self.family.params if p.kwarg is not None}

    def _build(self) -> gym.Env:
        family = self.family
        kwargs = {**family.env_kwargs, **self._make_kwargs, **self._constructor_values(self._task)}
        env = gym.make(family.env_id, max_episode_steps=family.horizon, **kwargs)
        self._nominal = {p.name: p.attribute.get(env) for p in family.params if p.attribute is not None and p.scale}
        return env

    def _apply_attributes(self) -> None:
        for p in self.family.params:
            if p.attribute is not None:
                value = self._task[p.name]
                p.attribute.set(self.env, self._nominal[p.name] * value if p.scale else value)

    def set_task(self, task: Task) -> None:
        """Set the task (rebuilding the env when a constructor argument changes)."""
        task = self.family.check_task(task)
        old = self._constructor_values(self._task)
        self._task = task
        if any(not np.array_equal(v, old[k]) for k, v in self._constructor_values(task).items()):
            self.env.close()
            self.env = self._build()
        self._apply_attributes()

    def get_task(self) -> Task:
        """The current task (a copy)."""
        return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in self._task.items()}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        """Reset the wrapped env; ``options={"task": task}`` sets the task first (other options pass on)."""
        if options is not None and "task" in options:
            self.set_task(options["task"])
            options = {k: v for k, v in options.items() if k != "task"} or None
        return self.env.reset(seed=seed, options=options)


class GymParamsFamily(TaskFamily):
    """A task family over any registered Gymnasium env, with tasks set by parameters.

    :param env_id: a registered Gymnasium id (``Pendulum-v1``, ``HalfCheetah-v5``, ...).
    :param params: parameter name -> spec (see the module docstring).
    :param horizon: steps per episode (``gym.make``'s ``max_episode_steps``).
    :param env_kwargs: constructor arguments common to every task.
    """

    name = "gym_params"

    def __init__(self, env_id: str, params: Mapping[str, Any], horizon: int = 200,
                 env_kwargs: Mapping[str, Any] | None = None) -> None:
        _check_horizon(horizon)
        self.env_id = _check_env_id(env_id)
        if not isinstance(params, Mapping) or len(params) == 0:
            raise ValueError(f"params must be a non-empty mapping of parameter name -> spec, got {params!r}")
        if env_kwargs is not None and not isinstance(env_kwargs, Mapping):
            raise ValueError(f"env_kwargs must be a mapping of constructor arguments, got {env_kwargs!r}")
        self.params = [Param.from_spec(str(name), spec) for name, spec in params.items()]
        self.horizon = int(horizon)
        self.env_kwargs = dict(env_kwargs or {})
        clash = sorted({p.kwarg for p in self.params if p.kwarg} & set(self.env_kwargs))
        if clash:
            raise ValueError(f"env_kwargs and params both set constructor argument(s) {', '.join(clash)}")
        self._probe()

    def _probe(self) -> None:
        """Build one env with the default task: a rejected argument or a missing attribute fails here."""
        kwargs = {p.kwarg: p.distribution.center() for p in self.params if p.kwarg is not None}
        try:
            env = gym.make(self.env_id, max_episode_steps=self.horizon, **self.env_kwargs, **kwargs)
        except gym.error.DependencyNotInstalled as error:
            raise MissingDependencyError(f"env_id {self.env_id!r} needs a missing dependency: {error}") from None
        except TypeError as error:
            given = [f"params.{p.name} sets {p.kwarg}" for p in self.params if p.kwarg is not None]
            given += [f"env_kwargs sets {name}" for name in self.env_kwargs]
            raise ValueError(f"{self.env_id} rejected a constructor argument ({'; '.join(given)}): {error}") from None
        try:
            for p in self.params:
                if p.attribute is not None:
                    self._check_attribute(env, p)
        finally:
            env.close()

    @staticmethod
    def _check_attribute(env: gym.Env, p: Param) -> None:
        assert p.attribute is not None
        field = f"params.{p.name}.attribute = {p.attribute.text!r}"
        try:
            current = p.attribute.get(env)
        except (AttributeError, IndexError, TypeError) as error:
            raise ValueError(f"{field} does not exist on {type(env.unwrapped).__name__}: {error}") from None
        try:
            np.broadcast_to(p.distribution.center(), np.shape(current))
        except ValueError:
            raise ValueError(f"{field} has shape {np.shape(current)}; the parameter's shape "
                             f"{p.distribution.shape} does not fit it") from None

    def default_task(self) -> Task:
        """Each parameter at the centre of its distribution (the mean, the middle of the range, the first choice)."""
        return {p.name: p.distribution.center() for p in self.params}

    def check_task(self, task: Any) -> Task:
        """A validated copy of ``task`` (exactly the family's parameter names, values of the right shape)."""
        names = [p.name for p in self.params]
        if not isinstance(task, Mapping) or set(task) != set(names):
            raise ValueError(f"task must be a dict with keys {names}, got {task!r}")
        return {p.name: p.check_value(task[p.name]) for p in self.params}

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[Task]:
        """Draw ``n`` tasks from ``rng`` only: every parameter in the order of the spec, task by task."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n must be an integer >= 0, got {n!r}")
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        return [{p.name: p.distribution.sample(rng) for p in self.params} for _ in range(int(n))]

    def make_env(self, task: Task | None = None, **kwargs: Any) -> GymParamsEnv:
        """A :class:`GymParamsEnv` set to ``task``; ``kwargs`` go to ``gym.make``."""
        return GymParamsEnv(self, task, **kwargs)


def _check_env_id(env_id: Any) -> str:
    if not isinstance(env_id, str) or env_id not in gym.envs.registry:
        close = difflib.get_close_matches(str(env_id), list(gym.envs.registry), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"env_id = {env_id!r} is not a registered Gymnasium environment{hint}")
    return env_id
