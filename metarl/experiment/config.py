"""Experiment configuration: YAML files validated by pydantic, with ``key=value`` overrides.

Every field is checked when a run starts; a bad value gives one line per problem naming the
field, the value and what is allowed. docs/configuration.md lists every field.
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
    # Each field's docstring is its description: docs/configuration.md is generated from them.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False, strict=True,
                              use_attribute_docstrings=True)


class EnvConfig(_Section):
    family: str = "navigation2d"
    """task family (`envs.FAMILIES`; see [Task families](task-families.md))"""
    kwargs: dict[str, Any] = Field(default_factory=dict)
    """arguments of the family, e.g. `{horizon: 100, goal_low: -0.5, goal_high: 0.5}`"""

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
    """MLP widths (Gaussian policy for Box actions, categorical for Discrete)"""
    activation: Literal["relu", "tanh", "elu"] = "relu"
    """`relu`, `tanh` or `elu`"""
    init_std: float = Field(1.0, gt=0)
    """initial standard deviation of the Gaussian policy (log-std is learned, state-independent)"""
    weight_init: Literal["xavier", "small_output"] = "xavier"
    """`xavier`: Xavier-uniform weights, zero biases (Finn et al.'s code, pytorch-maml-rl); `small_output`: PyTorch's
    default with the output layer scaled by 0.01 (the PPO convention)"""
    init_from: str | None = None
    """an SB3 `PPO`/`A2C` model file (path relative to the working directory) whose actor gives the initial
    parameters; its architecture must match `policy.hidden_sizes` and `policy.activation` (see
    [Stable-Baselines3](sb3.md))"""

    @model_validator(mode="after")
    def _positive_sizes(self) -> PolicyConfig:
        if any(size < 1 for size in self.hidden_sizes):
            raise ValueError(f"hidden_sizes = {self.hidden_sizes}: every size must be >= 1")
        return self


class MetaConfig(_Section):
    """The meta-gradient estimator and its inner loop."""

    method: Literal["maml", "fomaml", "hfmaml", "pretrain"] = "maml"
    """`maml`, `fomaml` or `hfmaml`; `pretrain` trains with the plain policy gradient, no adaptation (the pretrained
    and oracle baselines)"""
    batch_tasks: int = Field(20, ge=1)
    """tasks per meta-iteration"""
    episodes_per_task: int = Field(20, ge=1)
    """episodes per task in every phase (each inner step and the outer batch)"""
    protocol: Literal["episodes", "steps", "workers"] = "episodes"
    """how those episodes are collected, as `evaluation.protocol`: `episodes` (independent), `steps` or `workers` (at
    least `episodes_per_task` x horizon steps, as rllab's samplers collect; Finn et al.'s later locomotion
    launchers run the parallel sampler on 8 workers, so 27 HalfCheetah episodes where the budget says 20; their
    published runs had the vectorised one, exactly 20)"""
    workers: int = Field(8, ge=1)
    """the `workers` collection's parallel workers (Finn et al.'s locomotion launchers: 8)"""
    inner_lr: float = Field(0.1, gt=0)
    """inner step alpha_0, in the surrogate's units: Finn et al.'s 0.1 with `surrogate.per_step_units` (the
    default); without it the surrogate is summed over time and the step is much smaller (2D navigation: 0.0001)"""
    inner_steps: int = Field(1, ge=1)
    """N >= 1 inner policy-gradient steps"""
    inner_step_rule: Literal["constant", "inverse_steps"] = "constant"
    """`constant` (alpha = alpha_0) or `inverse_steps` (alpha = alpha_0 / N)"""
    hessian_batch: Literal["shared", "independent"] = "shared"
    """curvature from the inner step's batch (`shared`) or a fresh batch (`independent`)"""
    hf_delta: float = Field(0.1, gt=0)
    """HF-MAML's delta_0 in `delta = delta_0 / ||u||`. On ReLU policies the difference crosses kinks and its
    variance grows as delta shrinks; at 0.1 its part of the meta-gradient agrees with MAML's (cosine 0.97 on
    HalfCheetah rollouts, 0.9998 on navigation), and with a smooth policy it errs by under 1e-3 (see
    [algorithms](algorithms.md))"""
    hf_delta_rule: Literal["scaled", "theory"] = "scaled"
    """`scaled` or `theory` (`delta = 1 / (6 rho alpha ||u||)`, needs `meta.rho` or the online estimate of
    `outer.lipschitz: online`)"""
    hf_difference: Literal["central", "forward"] = "central"
    """HF-MAML's finite difference: `central` (Fallah et al.'s; error O(delta^2)) or `forward` (error O(delta); one
    gradient per inner step instead of two on a shared batch)"""
    rho: float | None = Field(None, gt=0)
    """Hessian Lipschitz constant for the theory delta rule"""


class SurrogateConfig(_Section):
    kind: Literal["dice", "reinforce", "lvc"] = "reinforce"
    """`dice`, `reinforce` or `lvc`"""
    gamma: float = Field(0.99, gt=0, le=1)
    """discount factor"""
    gae_lambda: float = Field(1.0, ge=0, le=1)
    """GAE lambda"""
    normalize_advantages: bool = True
    """standardise advantages per task (`reinforce`, `lvc`)"""
    per_step_units: bool = True
    """multiply each task's surrogate by `1 / (mean episode length * std of its advantages)`, a constant of the
    batch: the units of Finn et al.'s code (mean over steps, standardised advantages), where the inner step is
    0.1; gradient and Hessian estimates are scaled by the same constant"""
    discount_scores: bool = False
    """weight the score at step t by gamma^t, as the discounted return's gradient does; `false` weights every step
    alike, as Finn et al.'s code does (`reinforce` and `lvc` only; unset, `true` for `dice`)"""
    baseline_ridge: Literal["relative", "absolute"] = "relative"
    """the linear value baseline's ridge: `relative` (`1e-5` times the mean diagonal of the normal matrix) or
    `absolute` (`1e-5`, as rllab and pytorch-maml-rl fit it, Finn et al.'s code); `scripts/baseline_ridge.py`
    compares the two fits on a run's rollouts"""

    @model_validator(mode="before")
    @classmethod
    def _dice_discounts_scores_unless_told(cls, data: Any) -> Any:
        if isinstance(data, dict) and "discount_scores" not in data and data.get("kind") == "dice":
            return {**data, "discount_scores": True}
        return data

    @model_validator(mode="after")
    def _dice_discounts_scores(self) -> SurrogateConfig:
        if self.kind == "dice" and not self.discount_scores:
            raise ValueError(
                "surrogate.kind = 'dice' with discount_scores = false: DiCE is the discounted return's own "
                "estimate, its scores are always weighted by gamma^t; use 'reinforce' or 'lvc'"
            )
        return self


class OuterConfig(_Section):
    kind: Literal["sgd", "adaptive_sgd", "adam", "trpo"] = "trpo"
    """`adam`, `sgd`, `adaptive_sgd` (beta = c / L~, Fallah et al.) or `trpo`"""
    lr: float = Field(1e-3, gt=0)
    """outer step size for `adam` and `sgd`"""
    anneal: bool = False
    """decay Adam's step size linearly to 0 over `train.iterations`"""
    max_grad_norm: float | None = Field(None, gt=0)
    """rescale the averaged meta-gradient to at most this norm before the outer step (`meta_grad_norm` is logged
    before rescaling)"""
    c: float | None = Field(None, gt=0)
    """constant of `adaptive_sgd` (default 1/12 MAML, 1/18 FO-MAML, 1/25 HF-MAML)"""
    smoothness: float | None = Field(None, gt=0)
    """L, the task gradients' Lipschitz constant, in `L~ = 4 L + 2 rho alpha mean_j ||grad S_j||` (required by
    `adaptive_sgd` with `lipschitz: given`; a starting lower bound with `online`)"""
    rho: float | None = Field(None, gt=0)
    """rho, the task Hessians' Lipschitz constant, in the same `L~` (required by `adaptive_sgd` with `lipschitz:
    given`; a starting lower bound with `online`)"""
    lipschitz: Literal["given", "online"] = "given"
    """`given` (use `outer.smoothness`, `outer.rho`) or `online`: estimate L and rho as running maxima of secants
    `||grad S(theta) - grad S(theta')|| / ||theta - theta'||` and `||H(theta) u - H(theta') u|| / ||theta -
    theta'||` on one independent batch (needs `dice`; see `metarl/outer/lipschitz.py`)"""
    max_kl: float = Field(0.01, gt=0)
    """TRPO: trust-region radius in mean KL of the post-adaptation policies"""
    cg_iterations: int = Field(10, ge=1)
    """TRPO: conjugate-gradient iterations"""
    cg_damping: float = Field(1e-5, ge=0)
    """TRPO: damping added to the metric"""
    line_search_steps: int = Field(15, ge=1)
    """TRPO: the line search tries candidates `ratio^j * step`, j < steps"""
    line_search_ratio: float = Field(0.8, gt=0, lt=1)
    """TRPO: the line search's ratio (see `line_search_steps`)"""
    line_search: Literal["predicted", "plain"] = "predicted"
    """TRPO: `predicted` starts at the candidate the KL model (rescaled by the last accepted step's
    measured/predicted KL) puts within `max_kl` and skips candidates predicted over it; `plain` tries every
    candidate from the full step, as Finn et al.'s code (rllab) does"""
    metric: Literal["post", "adapted"] = "post"
    """TRPO metric: `post` (Fisher of the adapted policies) or `adapted` (`J^T F J` through the adaptation, Finn et
    al.'s)"""
    metric_episodes: int | None = Field(1, ge=1)
    """TRPO: episodes per task of the outer batch in the Fisher part (`null`: all)"""
    metric_tasks: int | None = Field(None, ge=1)
    """TRPO: the metric on the first this many tasks of the meta-batch only, at about that share of a product's cost
    (none: all); the line search still measures the KL on every task (`scripts/trpo_metric_tasks.py` measures what
    a subset keeps)"""
    metric_task_chunk: int | None = Field(None, ge=1)
    """TRPO: the metric's graphs built for this many tasks at a time (none: all in one graph): the same products up
    to float rounding, faster for large meta-batches (see [TRPO](trpo.md)); rounding differences grow into a
    different run over a long training, so the default keeps the results pages' runs"""
    replay: Literal["dice", "ratio"] = "dice"
    """TRPO line search's re-adaptation: `dice` (the oracle's surrogate) or `ratio` (per-step importance ratio,
    bounded where DiCE's weights overflow)"""
    direction: Literal["natural", "gradient"] = "natural"
    """TRPO step direction: `natural` (conjugate gradient on the metric) or `gradient` (the meta-gradient itself, its
    length from the metric; an ablation)"""
    probe_radius: float = Field(1e-2, gt=0)
    """length of the probe segment for the first online estimate"""
    max_nonfinite: int = Field(5, ge=1)
    """a NaN/Inf meta-gradient skips the update; this many in a row stop the run"""

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
    """meta-iterations"""
    dtype: Literal["float32", "float64"] = "float32"
    """`float32` or `float64`"""
    threads: int | None = Field(None, ge=1)
    """torch threads (default: torch's choice)"""
    device: str = "cpu"
    """where the policy, the meta-gradient and the outer step run: `cpu`, `cuda`, `cuda:N`, or `auto` (CUDA where
    torch sees a GPU); rollouts always run on the CPU; checkpoints and `params.pt` hold CPU tensors, and
    evaluation (at the end of a run and `metarl evaluate`) runs on the CPU, so a run trained on a GPU is evaluated
    anywhere, to the same numbers; `--resume RUN train.device=cpu` continues it without one. Tested on the CPU;
    the CUDA test skips without a GPU"""
    reuse_freed_memory: bool = True
    """keep freed tensor memory in the process for the next tensors (glibc's allocator otherwise returns large blocks
    to the kernel, and every new one page-faults; see `metarl/experiment/allocator.py`); the process keeps its
    peak memory"""

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not re.fullmatch(r"cpu|auto|cuda(:\d+)?", value):
            raise ValueError(f"train.device {value!r} is unknown; allowed: cpu, cuda, cuda:N, auto")
        return value


class EvaluationConfig(_Section):
    tasks: int = Field(40, ge=2)
    """held-out tasks"""
    steps: int = Field(3, ge=0)
    """adaptation steps K (returns reported after 0..K)"""
    episodes_per_task: int | None = Field(None, ge=1)
    """episodes per task and step (none: `meta.episodes_per_task`)"""
    seed: int = Field(20171, ge=0, lt=2**63)
    """seed of the held-out tasks and their rollouts; must differ from `seed`"""
    at_end: bool = True
    """evaluate when training ends (the table `metarl train` prints)"""
    protocol: Literal["episodes", "steps", "workers"] = "episodes"
    """`episodes`: that many independent episodes per task and step (unbiased); `steps`: as many environments per
    task run until their finished episodes hold that many horizons of steps, episodes still running dropped
    (rllab's vectorised sampler); `workers`: `evaluation.workers` workers run whole episodes until the finished
    ones hold that many horizons of steps, episodes under way kept (rllab's parallel sampler, which Finn et al.'s
    later test scripts run; see [Evaluation protocols](evaluation-protocols.md))"""
    workers: int = Field(4, ge=1)
    """the `workers` protocol's parallel workers (Finn et al.'s test scripts: 4)"""
    task_set: str | None = None
    """evaluate on a fixed task set of the family instead of tasks drawn from `evaluation.seed` (navigation:
    `finn2017`, the 40 test goals of Finn et al.)"""
    later_step_scale: float = Field(1.0, gt=0)
    """adaptation steps after the first are taken at this multiple of the inner step (Finn et al.'s test code: `0.5`)"""
    first_step_scale: float = Field(1.0, gt=0)
    """the first adaptation step is taken at this multiple of the inner step (Finn et al.'s test code from February
    to April 2017: `0.5`)"""


class CheckpointConfig(_Section):
    """Checkpoints every ``every`` meta-iterations (and at the end), the newest ``keep`` kept."""

    every: int = Field(10, ge=1)
    """meta-iterations between checkpoints (one is always written at the end)"""
    keep: int = Field(3, ge=1)
    """newest checkpoints kept"""


class WandbConfig(_Section):
    """Weights & Biases. ``auto``: the ``WANDB_MODE`` environment variable if set, else ``online``
    when an API key is configured (``wandb login`` or ``WANDB_API_KEY``), else ``offline`` (a local
    run directory that ``wandb sync`` uploads later)."""

    mode: Literal["auto", "offline", "online", "disabled"] = "auto"
    """`auto` (`WANDB_MODE` if set, else `online` when logged in, else `offline`), `offline`, `online` or `disabled`"""
    project: str = "metarl"
    """the W&B run's project"""
    entity: str | None = None
    """the W&B run's entity"""
    group: str | None = None
    """the W&B run's group"""
    tags: list[str] = Field(default_factory=list)
    """the W&B run's tags"""
    name: str | None = None
    """the W&B run's name (none: W&B picks one)"""


class SamplerConfig(_Section):
    """Where rollouts run: ``vector`` (this process), ``subprocess`` (``workers`` processes of this
    machine) or ``ray`` (``workers`` Ray actors; a local Ray instance, or the cluster at ``address``).
    A worker that crashes or gives no reply within ``timeout`` seconds is restarted and its share
    sampled again, up to ``max_restarts`` times in one sampling call; then the run stops."""

    kind: Literal["vector", "subprocess", "ray"] = "vector"
    """where rollouts run: `vector` (this process), `subprocess` (worker processes of this machine) or `ray` (Ray
    actors); see [Sampling on more cores](sampling.md)"""
    workers: int = Field(2, ge=1)
    """worker processes (`subprocess`) or actors (`ray`)"""
    address: str | None = Field(None, min_length=1)
    """`ray` only: the cluster to connect to (`ray.init(address=...)`: `auto`, `ray://head:10001`, ...); none starts
    a local Ray instance"""
    timeout: float = Field(300.0, gt=0)
    """seconds a worker may take to start, or to sample its share of one call, before it counts as hung"""
    max_restarts: int = Field(3, ge=0)
    """restarts of crashed or hung workers allowed within one sampling call"""

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
    """the run directory (default `runs/<name>-<YYYYmmdd-HHMMSS>`); an existing run there is never overwritten"""


class Config(_Section):
    """A whole experiment."""

    name: str = "experiment"
    """run name (default run directory `runs/<name>-<time>`)"""
    seed: int = Field(0, ge=0, lt=2**63)
    """seeds the policy initialisation, the training tasks and every rollout"""
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
    of more than :data:`MAX_BASE_DEPTH` files is a :class:`ConfigError` naming the files.
    """
    path = Path(path)
    where = " -> ".join(str(p) for p in (*_chain, path))
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist" + (f" ({where})" if _chain else ""))
    if path.resolve() in {p.resolve() for p in _chain}:
        raise ConfigError(f"config files name each other as base: {where}")
    if len(_chain) >= MAX_BASE_DEPTH:
        raise ConfigError(f"config bases chain more than {MAX_BASE_DEPTH} files: {where}")
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
