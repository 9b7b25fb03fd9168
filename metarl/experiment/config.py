"""Experiment configuration: YAML files validated by pydantic, with ``key=value`` overrides.

Every field is checked when a run starts; a bad value gives one line per problem naming the
field, the value and what is allowed. See the README's config reference for every field.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

import envs


class ConfigError(ValueError):
    """A configuration problem, with a message meant for the user."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False, strict=True)


class EnvConfig(_Section):
    family: str = "navigation2d"
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("family")
    @classmethod
    def _known_family(cls, family: str) -> str:
        if family not in envs.FAMILIES:
            raise ValueError(f"unknown task family; known: {', '.join(sorted(envs.FAMILIES))}")
        return family

    @model_validator(mode="after")
    def _family_accepts_kwargs(self) -> EnvConfig:
        try:
            envs.make_family(self.family, **self.kwargs)
        except (TypeError, ValueError) as error:
            raise ValueError(f"env.kwargs {self.kwargs} rejected by task family {self.family!r}: {error}") from None
        return self


class PolicyConfig(_Section):
    hidden_sizes: list[int] = Field(default_factory=lambda: [100, 100], min_length=1)
    activation: Literal["relu", "tanh", "elu"] = "relu"
    init_std: float = Field(1.0, gt=0)
    weight_init: Literal["xavier", "small_output"] = "xavier"
    init_from: str | None = None  # an SB3 PPO/A2C model whose actor gives the initial parameters

    @model_validator(mode="after")
    def _positive_sizes(self) -> PolicyConfig:
        if any(size < 1 for size in self.hidden_sizes):
            raise ValueError(f"hidden_sizes = {self.hidden_sizes}: every size must be >= 1")
        return self


class MetaConfig(_Section):
    """The meta-gradient estimator and its inner loop."""

    method: Literal["maml", "fomaml", "hfmaml", "pretrain"] = "maml"
    batch_tasks: int = Field(20, ge=1)
    episodes_per_task: int = Field(20, ge=1)
    # how they are collected, as evaluation.protocol: "workers" is Finn et al.'s later locomotion launchers
    # (rllab's parallel sampler, n_parallel=8): at least episodes_per_task x horizon steps, episodes under way kept
    protocol: Literal["episodes", "steps", "workers"] = "episodes"
    workers: int = Field(8, ge=1)
    inner_lr: float = Field(1e-4, gt=0)  # in units of the summed-over-time surrogate (see README)
    inner_steps: int = Field(1, ge=1)
    inner_step_rule: Literal["constant", "inverse_steps"] = "constant"
    hessian_batch: Literal["shared", "independent"] = "shared"
    hf_delta: float = Field(1e-3, gt=0)
    hf_delta_rule: Literal["scaled", "theory"] = "scaled"
    hf_difference: Literal["central", "forward"] = "central"
    rho: float | None = Field(None, gt=0)


class SurrogateConfig(_Section):
    kind: Literal["dice", "reinforce", "lvc"] = "dice"
    gamma: float = Field(0.99, gt=0, le=1)
    gae_lambda: float = Field(1.0, ge=0, le=1)
    normalize_advantages: bool = False
    per_step_units: bool = False
    discount_scores: bool = True  # weight the score at step t by gamma^t (False: as Finn et al.'s code)
    baseline_ridge: Literal["relative", "absolute"] = "relative"  # "absolute": rllab's 1e-5 (Finn et al.'s code)

    @model_validator(mode="after")
    def _dice_discounts_scores(self) -> SurrogateConfig:
        if self.kind == "dice" and not self.discount_scores:
            raise ValueError(
                "surrogate.kind = 'dice' with discount_scores = false: DiCE is the discounted return's own "
                "estimate, its scores are always weighted by gamma^t; use 'reinforce' or 'lvc'"
            )
        return self


class OuterConfig(_Section):
    kind: Literal["sgd", "adaptive_sgd", "adam", "trpo"] = "adam"
    lr: float = Field(1e-3, gt=0)
    anneal: bool = False
    max_grad_norm: float | None = Field(None, gt=0)
    c: float | None = Field(None, gt=0)
    smoothness: float | None = Field(None, gt=0)
    rho: float | None = Field(None, gt=0)
    lipschitz: Literal["given", "online"] = "given"
    max_kl: float = Field(0.01, gt=0)
    cg_iterations: int = Field(10, ge=1)
    cg_damping: float = Field(1e-5, ge=0)
    line_search_steps: int = Field(15, ge=1)
    line_search_ratio: float = Field(0.8, gt=0, lt=1)
    line_search: Literal["predicted", "plain"] = "predicted"
    metric: Literal["post", "adapted"] = "post"
    metric_episodes: int | None = Field(1, ge=1)
    metric_tasks: int | None = Field(None, ge=1)
    metric_task_chunk: int | None = Field(None, ge=1)
    replay: Literal["dice", "ratio"] = "dice"
    direction: Literal["natural", "gradient"] = "natural"
    probe_radius: float = Field(1e-2, gt=0)
    max_nonfinite: int = Field(5, ge=1)

    @model_validator(mode="after")
    def _adaptive_needs_constants(self) -> OuterConfig:
        if self.kind == "adaptive_sgd" and self.lipschitz == "given" and (self.smoothness is None or self.rho is None):
            raise ValueError(
                "kind = 'adaptive_sgd' with lipschitz = 'given' needs outer.smoothness (L) and outer.rho, both > 0; "
                "or set outer.lipschitz = 'online' to estimate them"
            )
        return self

    @property
    def estimates_online(self) -> bool:
        return self.kind == "adaptive_sgd" and self.lipschitz == "online"


class TrainConfig(_Section):
    iterations: int = Field(200, ge=0)
    dtype: Literal["float32", "float64"] = "float32"
    threads: int | None = Field(None, ge=1)
    device: str = "cpu"  # policy, meta-gradient and outer step: cpu, cuda, cuda:N or auto (rollouts stay on the CPU)
    reuse_freed_memory: bool = True  # keep freed tensor memory in the process (metarl.experiment.allocator; glibc only)

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not re.fullmatch(r"cpu|auto|cuda(:\d+)?", value):
            raise ValueError(f"train.device {value!r} is unknown; allowed: cpu, cuda, cuda:N, auto")
        return value


class EvaluationConfig(_Section):
    tasks: int = Field(40, ge=2)
    steps: int = Field(3, ge=0)
    episodes_per_task: int | None = Field(None, ge=1)
    seed: int = Field(20171, ge=0, lt=2**63)
    at_end: bool = True
    protocol: Literal["episodes", "steps", "workers"] = "episodes"
    workers: int = Field(4, ge=1)  # the "workers" protocol's parallel workers (Finn et al.'s test scripts: 4)
    task_set: str | None = None
    later_step_scale: float = Field(1.0, gt=0)  # steps after the first at this multiple of the inner step
    first_step_scale: float = Field(1.0, gt=0)  # the first step at this multiple of the inner step


class CheckpointConfig(_Section):
    """Checkpoints every ``every`` meta-iterations (and at the end), the newest ``keep`` kept."""

    every: int = Field(10, ge=1)
    keep: int = Field(3, ge=1)


class WandbConfig(_Section):
    """Weights & Biases. ``auto``: the ``WANDB_MODE`` environment variable if set, else ``online``
    when an API key is configured (``wandb login`` or ``WANDB_API_KEY``), else ``offline`` (a local
    run directory that ``wandb sync`` uploads later)."""

    mode: Literal["auto", "offline", "online", "disabled"] = "auto"
    project: str = "metarl"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = Field(default_factory=list)
    name: str | None = None


class SamplerConfig(_Section):
    """Where rollouts run: ``vector`` (this process), ``subprocess`` (``workers`` processes of this
    machine) or ``ray`` (``workers`` Ray actors; a local Ray instance, or the cluster at ``address``).
    A worker that crashes or gives no reply within ``timeout`` seconds is restarted and its share
    sampled again, up to ``max_restarts`` times in one sampling call; then the run stops."""

    kind: Literal["vector", "subprocess", "ray"] = "vector"
    workers: int = Field(2, ge=1)
    address: str | None = Field(None, min_length=1)
    timeout: float = Field(300.0, gt=0)
    max_restarts: int = Field(3, ge=0)

    @model_validator(mode="after")
    def _address_needs_ray(self) -> SamplerConfig:
        if self.address is not None and self.kind != "ray":
            raise ValueError(f"address = {self.address!r} with kind = {self.kind!r}: an address is a Ray cluster's, "
                             "used only with kind = 'ray'")
        return self


class LoggingConfig(_Section):
    wandb: WandbConfig = Field(default_factory=WandbConfig)


class RunConfig(_Section):
    dir: str | None = None


class Config(_Section):
    """A whole experiment."""

    name: str = "experiment"
    seed: int = Field(0, ge=0, lt=2**63)
    env: EnvConfig = Field(default_factory=EnvConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    meta: MetaConfig = Field(default_factory=MetaConfig)
    surrogate: SurrogateConfig = Field(default_factory=SurrogateConfig)
    outer: OuterConfig = Field(default_factory=OuterConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    @model_validator(mode="after")
    def _pretrain_adaptive_step_needs_c(self) -> Config:
        if self.meta.method == "pretrain" and self.outer.kind == "adaptive_sgd" and self.outer.c is None:
            raise ValueError("meta.method = 'pretrain' with outer.kind = 'adaptive_sgd' needs outer.c (no default)")
        return self

    @model_validator(mode="after")
    def _theory_delta_needs_rho(self) -> Config:
        if self.meta.hf_delta_rule == "theory" and self.meta.rho is None and not self.outer.estimates_online:
            raise ValueError(
                "meta.hf_delta_rule = 'theory' needs meta.rho (the Hessian Lipschitz constant) > 0, "
                "or outer.kind = 'adaptive_sgd' with outer.lipschitz = 'online' to use the online estimate"
            )
        return self

    @model_validator(mode="after")
    def _online_estimates_need_importance_weights(self) -> Config:
        if self.outer.estimates_online and self.surrogate.kind != "dice":
            raise ValueError(
                f"outer.lipschitz = 'online' with surrogate.kind = {self.surrogate.kind!r}: the secants evaluate the "
                "surrogate at the previous iterate on data drawn at the current one, which needs 'dice'"
            )
        return self

    @model_validator(mode="after")
    def _evaluation_seed_differs(self) -> Config:
        if self.evaluation.seed == self.seed:
            raise ValueError(
                f"evaluation.seed = {self.evaluation.seed} equals seed: held-out tasks need their own seed"
            )
        return self


def _allowed_fields(loc: tuple[Any, ...]) -> list[str]:
    """Field names of the section at ``loc`` (for 'unknown field' messages)."""
    model: Any = Config
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            break
        model = field.annotation
    return list(model.model_fields)


def _format_errors(error: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "config"
        message = item["msg"].removeprefix("Value error, ")
        value = item.get("input")
        if item["type"] == "extra_forbidden":
            allowed = ", ".join(_allowed_fields(item["loc"][:-1]))
            lines.append(f"  {field}: unknown field; allowed here: {allowed}")
        elif item["type"] == "missing":
            lines.append(f"  {field}: required field is missing")
        elif isinstance(value, dict):  # a check across fields: its message names them
            lines.append(f"  {field}: {message}")
        else:
            lines.append(f"  {field} = {value!r}: {message}")
    return "\n".join(lines)


class _Loader(yaml.SafeLoader):
    """YAML 1.1 loader that also reads ``1e-3`` (no dot) as a float, as people write it."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(text: str, what: str) -> Any:
    """``text`` read as YAML (``1e-3`` is a float), or a :class:`ConfigError` naming ``what``."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as error:
        raise ConfigError(f"{what} is not valid YAML: {error}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"meta.inner_lr=0.05"`` -> (["meta", "inner_lr"], 0.05); the value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} is not of the form dotted.key=value")
    return key.split("."), load_yaml(raw, f"override {text!r}") if raw else None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set every ``dotted.key=value`` in a nested dict (a copy)."""
    result = yaml.safe_load(yaml.safe_dump(data)) or {}
    for text in overrides:
        path, value = parse_override(text)
        node = result
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part!r} is not a section")
            node = child
        node[path[-1]] = value
    return result


def validate(data: dict[str, Any], source: str = "") -> Config:
    """A :class:`Config` from plain data, or a :class:`ConfigError` listing every problem."""
    try:
        return Config.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_errors(error, source)) from None


BASE_KEY = "base"
MAX_BASE_DEPTH = 8


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``update`` laid over ``base``: sections merge key by key, any other value replaces the base's."""
    merged = dict(base)
    for key, value in update.items():
        both_sections = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = merge(merged[key], value) if both_sections else value
    return merged


def read_config_file(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file's data with its bases resolved.

    ``base:`` names one file or a list of files (relative to this one), read the same way and merged in
    order; this file's own sections are laid over them. A missing base, a circle of bases or a chain
    deeper than :data:`MAX_BASE_DEPTH` is a :class:`ConfigError` naming the files.
    """
    path = Path(path)
    where = " -> ".join(str(p) for p in (*_chain, path))
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist" + (f" ({where})" if _chain else ""))
    if path.resolve() in {p.resolve() for p in _chain}:
        raise ConfigError(f"config files name each other as base: {where}")
    if len(_chain) >= MAX_BASE_DEPTH:
        raise ConfigError(f"config bases nest deeper than {MAX_BASE_DEPTH}: {where}")
    data = load_yaml(path.read_text(), f"config file {str(path)!r}") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections")
    bases = data.pop(BASE_KEY, None)
    if bases is None:
        return data
    names = [bases] if isinstance(bases, str) else bases
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"config file {str(path)!r}: base = {bases!r}; give a file name or a list of file names")
    resolved: dict[str, Any] = {}
    for name in names:
        resolved = merge(resolved, read_config_file(path.parent / name, (*_chain, path)))
    return merge(resolved, data)


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML config file (and its bases), apply ``key=value`` overrides and validate."""
    return validate(apply_overrides(read_config_file(path), overrides or []), str(path))


def dump_config(config: Config) -> str:
    """The resolved config as YAML."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
