"""The meta-training loop.

Each meta-iteration samples a batch of tasks, adapts to each with ``inner_steps`` policy-gradient
steps on fresh episodes, samples post-adaptation episodes, estimates every task's meta-gradient
(MAML, FO-MAML or HF-MAML, all tasks at once through one task-batched oracle) and updates the
meta-parameters with the outer optimiser on the average.

Data flows one way: the trainer draws the tasks and builds the oracle (which samples through the
sampler), the estimator gets the oracle, and the outer step gets the direction with what it needs
(:class:`~metarl.outer.optimizers.StepInputs`: the estimate, its oracle, independent tasks for the
adaptive step size); nothing calls back into the trainer. One iteration, file by file:
``experiment/trainer.py`` -> ``rl/oracles.py`` (rollouts from ``rl/sampling/vector.py``) ->
``estimators/meta_gradient.py`` -> ``outer/trpo.py``.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from metarl.estimators.meta_gradient import estimate_meta_gradient, policy_gradient_estimate
from metarl.experiment.allocator import reuse_freed_memory
from metarl.experiment.build import (
    build_collection,
    build_family_and_policy,
    build_oracle,
    build_outer,
    initial_params,
    on_device,
    resolve_device,
)
from metarl.experiment.checkpoint import (
    atomic_write_text,
    list_checkpoints,
    load_latest_checkpoint,
    save_checkpoint,
)
from metarl.experiment.config import Config, dump_config, load_config
from metarl.experiment.evaluation import LATEST_EVALUATION, EvaluationResult, evaluate, held_out_tasks, save_evaluation
from metarl.experiment.metrics import MetricsWriter, read_metrics
from metarl.experiment.plotting import plot_adaptation, plot_training_curves
from metarl.experiment.run_dir import PARAMS_FILE, check_new_run_dir, create_run_dir, locked_run_dir, save_params
from metarl.experiment.tracking import Tracker, make_tracker
from metarl.outer.optimizers import AdaptiveSGD, StepInputs
from metarl.params import Params, stack_params, tree_norm
from metarl.rl.oracles import PolicyGradientOracle
from metarl.signals import exit_status, signal_name, signals_ignored, stop_on_signals

TRAINING_TASK_STREAM = 0
TRAINING_ROLLOUT_STREAM = 1
STEP_SIZE_TASK_STREAM = 4
STEP_SIZE_ROLLOUT_STREAM = 5
# What ``metarl train --resume RUN key=value`` may change: a run continued with them is the run it
# would have been had it been started with them (an Adam step size annealed over train.iterations is not).
RESUME_OVERRIDES = ("train.iterations", "train.device", "checkpoint.every", "checkpoint.keep", "evaluation.at_end")
STATE_KEYS = ("params", "outer", "iteration", "env_steps", "nonfinite_in_a_row", "torch_rng")
# An update that leaves a parameter beyond this in absolute value has diverged: it is undone, like a NaN.
PARAMETER_LIMIT = 1e6


class NonFiniteError(RuntimeError):
    """Raised when too many meta-iterations in a row produced NaN or Inf."""


class MetaTrainer:
    """Meta-trains a policy on a task family as the config says.

    Args:
        config: the validated experiment config.
        params: starting meta-parameters (default: the actor of the SB3 model ``policy.init_from``
            when set, else the policy's seeded initialisation).
        params_source: what ``params`` are, for the error when they do not fit the policy.
    """

    def __init__(self, config: Config, params: Params | None = None,
                 params_source: str | None = None) -> None:
        if config.train.threads is not None:
            torch.set_num_threads(config.train.threads)
        if config.train.reuse_freed_memory:
            reuse_freed_memory()
        self.config = config
        self.family, self.policy = build_family_and_policy(config)
        dtype = next(self.policy.parameters()).dtype
        initial = initial_params(config, self.policy) if params is None else params
        self.policy.check_params(initial, params_source or "the starting parameters")
        self.device = resolve_device(config.train.device)
        self.params: Params = {k: v.detach().clone().to(device=self.device, dtype=dtype) for k, v in initial.items()}
        self.outer = build_outer(config, self.params)
        self.iteration = 0
        self.env_steps = 0
        self.nonfinite_in_a_row = 0
        self._in_progress: dict[str, Any] | None = None  # the state before the iteration train() is running
        # evaluation.task_set and evaluation.tasks are checked now, not after the whole run
        held_out_tasks(config, config.evaluation.tasks, config.evaluation.seed)
        # Last: a worker back-end starts its workers here, and close() stops them.
        self.sampler = build_collection(config, self.family, self.policy, config.seed, config.meta.episodes_per_task,
                                        config.meta.protocol, config.meta.workers)

    def close(self) -> None:
        """Stop the sampler's workers (if any); safe to call twice."""
        self.sampler.close()

    def __enter__(self) -> MetaTrainer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def sample_tasks(self, iteration: int) -> list[dict[str, Any]]:
        """The meta-batch of ``iteration`` (a pure function of the seed and the iteration)."""
        seq = np.random.SeedSequence(self.config.seed, spawn_key=(TRAINING_TASK_STREAM, iteration))
        return self.family.sample_tasks(self.config.meta.batch_tasks, np.random.default_rng(seq))

    def independent_tasks(self, iteration: int) -> tuple[PolicyGradientOracle, Params]:
        """An oracle over tasks drawn independently of the meta-gradient's (the B' batch of the
        adaptive step size), with the parameters stacked for it."""
        seq = np.random.SeedSequence(self.config.seed, spawn_key=(STEP_SIZE_TASK_STREAM, iteration, 0))
        tasks = self.family.sample_tasks(self.config.meta.batch_tasks, np.random.default_rng(seq))
        oracle = build_oracle(self.config, self.sampler, tasks, (STEP_SIZE_ROLLOUT_STREAM, iteration, 0))
        return oracle, stack_params(self.params, len(tasks))

    def step(self) -> dict[str, Any]:
        """One meta-iteration; returns its metrics."""
        start = time.perf_counter()
        before = self._model_state()  # to undo a diverging update
        meta = self.config.meta
        tasks = self.sample_tasks(self.iteration)
        oracle = build_oracle(self.config, self.sampler, tasks, (TRAINING_ROLLOUT_STREAM, self.iteration))
        stacked = stack_params(self.params, len(tasks))
        independent = self.independent_tasks(self.iteration) if self.outer.uses_independent_tasks else None
        if meta.method == "pretrain":  # the pretrained baseline: plain policy gradient, no adaptation
            estimate = policy_gradient_estimate(oracle, stacked)
        else:
            rho = meta.rho  # HF-MAML's theory delta rule needs rho: given, or the adaptive step's online estimate
            if rho is None and meta.hf_delta_rule == "theory" and isinstance(self.outer, AdaptiveSGD):
                rho = self.outer.constants(independent)[1]
            estimate = estimate_meta_gradient(
                meta.method, oracle, stacked, inner_lr=meta.inner_lr, inner_steps=meta.inner_steps,
                step_rule=meta.inner_step_rule, hessian_batch=meta.hessian_batch, delta=meta.hf_delta,
                delta_rule=meta.hf_delta_rule, rho=rho, difference=meta.hf_difference,
            )
        direction = {k: v.mean(0) for k, v in estimate.direction.items()}
        grad_norm = float(tree_norm(direction))
        record: dict[str, Any] = {
            "iteration": self.iteration,
            "return_pre": oracle.mean_return(estimate.inner_batches[0]),
            "return_post": oracle.mean_return(estimate.outer_batch),
            "meta_grad_norm": grad_norm,
        }
        if "log_std" in self.params:  # Gaussian policies: the sampling policy's std, mean over actions
            record["policy_std"] = float(self.params["log_std"].exp().mean())
        if np.isfinite(grad_norm):
            max_norm = self.config.outer.max_grad_norm
            if max_norm is not None and grad_norm > max_norm:
                direction = {k: v * (max_norm / grad_norm) for k, v in direction.items()}
            update_start = time.perf_counter()
            stats = self.outer.step(self.params, direction, StepInputs(estimate, oracle, independent))
            record.update(stats, skipped=bool(stats.pop("skipped", False)))
            record["time_update_s"] = time.perf_counter() - update_start
            if not record["skipped"] and _diverged(self.params):
                self._restore(before)
                record.update(skipped=True, diverged=True)
        else:
            record.update(step_size=0.0, skipped=True, time_update_s=0.0)
        self.nonfinite_in_a_row = self.nonfinite_in_a_row + 1 if record["skipped"] else 0
        self.env_steps += oracle.env_steps + (independent[0].env_steps if independent is not None else 0)
        record["env_steps"] = self.env_steps
        record["time_s"] = time.perf_counter() - start
        for phase, seconds in estimate.timings.items():
            record[f"time_{phase}_s"] = seconds
        self.iteration += 1
        return record

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this run exactly: parameters, outer optimiser state,
        counters, the global RNG state (training draws its randomness from keyed streams) and the
        config (as YAML). The linear baseline is refitted on every batch, so it has no state."""
        return {
            "params": {k: v.detach().cpu().clone() for k, v in self.params.items()},
            "outer": on_device(self.outer.state_dict(), torch.device("cpu")),
            "iteration": self.iteration,
            "env_steps": self.env_steps,
            "nonfinite_in_a_row": self.nonfinite_in_a_row,
            "torch_rng": torch.get_rng_state(),
            "config": dump_config(self.config),
        }

    def _model_state(self) -> dict[str, Any]:
        """Copies of the parameters and the outer optimiser's state (what :meth:`_restore` takes)."""
        return {"params": {k: v.detach().clone() for k, v in self.params.items()},
                "outer": copy.deepcopy(self.outer.state_dict())}

    def committed_state(self) -> dict[str, Any]:
        """The state after the last iteration that :meth:`train` completed and handed on: an iteration
        interrupted part-way leaves nothing of itself (its update, its metrics) in it."""
        return self._in_progress if self._in_progress is not None else self.state_dict()

    def _restore(self, state: dict[str, Any]) -> None:
        """The parameters and the outer optimiser's state of ``state``."""
        with torch.no_grad():
            for k, v in state["params"].items():
                self.params[k].copy_(v)
        self.outer.load_state_dict(state["outer"])  # Adam moves its moments to the parameters' device

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.check_params(state["params"], "the checkpoint's parameters")
        self._restore(state)
        self.iteration, self.env_steps = int(state["iteration"]), int(state["env_steps"])
        self.nonfinite_in_a_row = int(state["nonfinite_in_a_row"])
        torch.set_rng_state(state["torch_rng"])

    def check_finite(self) -> None:
        """Raise :class:`NonFiniteError` once ``outer.max_nonfinite`` iterations in a row were skipped."""
        if self.nonfinite_in_a_row >= self.config.outer.max_nonfinite:
            raise NonFiniteError(
                f"NaN or Inf in the meta-gradient or the outer step in {self.nonfinite_in_a_row} iterations in a row "
                f"(last: iteration {self.iteration - 1}; updates with NaN, Inf or a parameter beyond "
                f"{PARAMETER_LIMIT:g} are skipped); lower meta.inner_lr or outer.lr"
            )

    def train(self, iterations: int | None = None, on_metrics: Callable[[dict[str, Any]], None] | None = None,
              progress: bool = True) -> Params:
        """Run ``iterations`` meta-iterations (default: up to ``train.iterations``); returns the parameters."""
        total = self.config.train.iterations - self.iteration if iterations is None else iterations
        # disable=None: tqdm stays quiet when stderr is not a terminal.
        bar = tqdm(range(self.iteration, self.iteration + total), desc="meta-train", unit="it",
                   disable=None if progress else True, dynamic_ncols=True,
                   initial=self.iteration, total=self.iteration + total)
        first, end = self.iteration, self.iteration + total
        report_every, start, steps_at_start = max(1, -(-total // 10)), time.perf_counter(), self.env_steps
        for _ in bar:
            self._in_progress = copy.deepcopy(self.state_dict())
            record = self.step()
            if on_metrics is not None:
                on_metrics(record)
            self._in_progress = None
            if record["skipped"]:
                cause = f"parameters beyond {PARAMETER_LIMIT:g}" if record.get("diverged") else "NaN or Inf"
                tqdm.write(f"iteration {record['iteration']}: {cause} (meta-gradient or outer step), update skipped")
            self.check_finite()
            elapsed = max(time.perf_counter() - start, 1e-9)
            steps_per_s = (self.env_steps - steps_at_start) / elapsed
            bar.set_postfix(pre=f"{record['return_pre']:.1f}", post=f"{record['return_post']:.1f}",
                            steps_per_s=f"{steps_per_s:.0f}")
            done = self.iteration - first
            if progress and bar.disable and (done == 1 or done % report_every == 0 or self.iteration == end):
                # Off a terminal (logs, CI) the bar is silent: a plain line after the first iteration and every
                # tenth of the run, counting completed iterations as checkpoint names do.
                print(f"{self.iteration}/{end} iterations done: return {record['return_pre']:.1f} -> "
                      f"{record['return_post']:.1f} after adaptation, {steps_per_s:.0f} env steps/s, "
                      f"{elapsed / done * (end - self.iteration):.0f} s left", flush=True)
        return self.params


def _diverged(params: Params) -> bool:
    """Whether a parameter is NaN, Inf or beyond :data:`PARAMETER_LIMIT` in absolute value."""
    return not all(bool((v.abs() <= PARAMETER_LIMIT).all()) for v in params.values())  # NaN compares False


class Interrupted(RuntimeError):
    """Training was stopped by Ctrl-C, SIGTERM or SIGUSR1 (:mod:`metarl.signals`); what it reached was
    saved. ``exit_status``: what the command exits with (128 + the signal's number)."""

    def __init__(self, message: str, exit_status: int) -> None:
        super().__init__(message)
        self.exit_status = exit_status


def run_training(config: Config, progress: bool = True, resume: str | Path | None = None,
                 on_run_dir: Callable[[Path], None] | None = None) -> tuple[Path, EvaluationResult | None]:
    """Train as the config says into a new run directory, or continue the run in ``resume`` from
    its newest usable checkpoint; evaluate at the end if asked.

    The run directory holds ``config.yaml`` (resolved), ``metrics.jsonl``, ``checkpoints/``
    (every ``checkpoint.every`` iterations and at the end), ``params.pt``, after evaluation
    ``evaluation.json`` and ``adaptation.png``, the W&B run (``wandb/``) unless disabled, and
    ``run.lock``: the run holds the directory's lock throughout, so a second run on it fails at once.
    On Ctrl-C, SIGTERM or SIGUSR1 the last completed iteration is checkpointed, its parameters
    saved and :class:`Interrupted` raised. A resumed run continues exactly where the checkpoint
    left off: ``metrics.jsonl`` loses the records after it and gets them again, with the same
    numbers, and W&B continues the same run.
    ``on_run_dir(run_dir)`` is called once the run directory is known, before training starts.
    """
    with stop_on_signals(), ExitStack() as stack:
        resume_id, logged, latest = None, [], None
        if resume is not None:
            stack.enter_context(locked_run_dir(resume))
            latest = _resume_point(Path(resume))
        # Built before anything is written, so that a bad setting fails first; on resume, from the
        # checkpoint's parameters, not policy.init_from (the SB3 file may be gone). Leaving the block
        # stops the sampler's workers, however the run ends.
        trainer = stack.enter_context(MetaTrainer(config, None if latest is None else latest.state["params"],
                                                  None if latest is None else f"the parameters of {latest.path}"))
        if latest is None:
            run_dir = create_run_dir(config)
            stack.enter_context(locked_run_dir(run_dir))
            check_new_run_dir(run_dir)  # again, under the lock: another run may have written meanwhile
            (run_dir / "config.yaml").write_text(dump_config(config))
        else:
            run_dir = Path(resume)
            try:
                trainer.load_state_dict(latest.state)
            except (KeyError, TypeError, ValueError, RuntimeError) as error:
                raise ValueError(f"checkpoint {latest.path} does not fit the run's config.yaml: {error!r}") from None
            if not _continue_with(config, run_dir, trainer.iteration, latest.path):
                return run_dir, None
            resume_id = latest.state.get("wandb_run_id")
            logged = _truncate_metrics(run_dir / "metrics.jsonl", trainer.iteration)
        if on_run_dir is not None:
            on_run_dir(run_dir)
        settings = config.logging.wandb
        tracker = stack.enter_context(make_tracker(settings, run_dir, config.model_dump(mode="json"),
                                                   resume_id=resume_id))
        # A killed run's W&B log may lack its last seconds: send what it has not seen yet again
        # (the tracker skips the steps already in the run).
        for record in logged:
            tracker.log_metrics(record)
        return run_dir, _train_and_evaluate(trainer, run_dir, tracker, progress)


def _continue_with(config: Config, run_dir: Path, done: int, checkpoint: Path) -> bool:
    """Check the resumed run's (possibly changed) config against its checkpoint and record it in
    ``config.yaml``; ``False`` when the run has nothing left to do (said on stderr)."""
    stored = load_config(run_dir / "config.yaml")
    refused = [key for key in _changed_keys(stored.model_dump(mode="json"), config.model_dump(mode="json"))
               if key not in RESUME_OVERRIDES]
    if refused:
        raise ValueError(f"a resumed run keeps its config.yaml; only {', '.join(RESUME_OVERRIDES)} may change "
                         f"(not {', '.join(refused)})")
    iterations = config.train.iterations
    if iterations < done:
        raise ValueError(f"train.iterations={iterations} is below the {done} iterations the run has done")
    if iterations != stored.train.iterations and config.outer.kind == "adam" and config.outer.anneal:
        raise ValueError("train.iterations cannot change on resume with outer.anneal: Adam's step size is annealed "
                         "over the run's planned iterations")
    params, evaluation = run_dir / PARAMS_FILE, run_dir / LATEST_EVALUATION
    complete = (_written_after(params, checkpoint)
                and (not config.evaluation.at_end or _written_after(evaluation, params)))
    if iterations == done and complete:
        print(f"the run in {run_dir} has finished its {done} iterations; to train it further: metarl train --resume "
              f"{run_dir} train.iterations=N", file=sys.stderr, flush=True)
        return False
    if config != stored:
        atomic_write_text(dump_config(config), run_dir / "config.yaml")
    return True


def _changed_keys(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two nested config dicts."""
    changed = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += _changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            changed.append(prefix + key)
    return changed


def _written_after(path: Path, other: Path) -> bool:
    """Whether ``path`` exists and was last written no earlier than ``other``."""
    return path.exists() and path.stat().st_mtime >= other.stat().st_mtime


def _resume_point(run_dir: Path) -> Any:
    """The newest usable checkpoint of ``run_dir``, saying which damaged files it passed over."""
    latest = load_latest_checkpoint(run_dir, STATE_KEYS)
    if latest is None:
        raise ValueError(f"{str(run_dir)!r} holds no checkpoint to resume from (a run writes one every "
                         "checkpoint.every iterations, at the end and when stopped)")
    for path, why in latest.damaged:
        print(f"checkpoint {path} is damaged ({why}); passed over", file=sys.stderr, flush=True)
    if latest.damaged:
        print(f"resuming from {latest.path} (iteration {latest.iteration})", file=sys.stderr, flush=True)
    return latest


def _train_and_evaluate(trainer: MetaTrainer, run_dir: Path, tracker: Tracker, progress: bool
                        ) -> EvaluationResult | None:
    config = trainer.config
    writer = MetricsWriter(run_dir / "metrics.jsonl")
    every, keep = config.checkpoint.every, config.checkpoint.keep

    def record(metrics: dict[str, Any]) -> None:
        writer.write(metrics)
        tracker.log_metrics(metrics)
        if trainer.iteration % every == 0 and trainer.iteration < config.train.iterations:
            checkpoint_unless_skipped(trainer.state_dict(), run_dir, keep, tracker.run_id)

    try:
        params = trainer.train(on_metrics=record, progress=progress)
    except KeyboardInterrupt as interrupt:  # Ctrl-C, or a stop signal (metarl.signals.Stopped)
        raise _save_stopped_run(trainer, run_dir, keep, tracker.run_id, interrupt) from None
    finally:
        writer.close()
        trainer.close()  # before evaluation starts workers of its own
    final = checkpoint_unless_skipped(trainer.state_dict(), run_dir, keep, tracker.run_id)
    save_params(params, run_dir / PARAMS_FILE)
    try:
        if final is not None:
            tracker.log_checkpoint(final, trainer.iteration)
        _draw_curves(run_dir, config.name, tracker)
        if not config.evaluation.at_end:
            return None
        result = evaluate(config, {k: v.cpu() for k, v in params.items()}, progress=progress)  # as metarl evaluate
    except KeyboardInterrupt as interrupt:  # training is finished and saved: say so, and what is left
        left = f"; evaluate it with: metarl evaluate {run_dir}" if config.evaluation.at_end else ""
        raise Interrupted(f"training finished ({trainer.iteration} iterations, parameters in {run_dir / PARAMS_FILE}); "
                          f"stopped by {signal_name(interrupt)} before the end of the run{left}",
                          exit_status(interrupt)) from None
    save_evaluation(result, run_dir)
    plot = plot_adaptation({config.name: result}, run_dir / "adaptation.png", title=config.name)
    tracker.log_evaluation(result, plot)
    return result


def _draw_curves(run_dir: Path, name: str, tracker: Tracker) -> None:
    """``curves.png`` from the run's metrics, also to W&B; a failure is said and passed over (a figure
    must not cost the run its evaluation)."""
    try:
        metrics = run_dir / "metrics.jsonl"
        records = read_metrics(metrics, skip_damaged=True) if metrics.exists() else []
        if records:
            tracker.log_figure("training/curves", plot_training_curves({name: records}, run_dir / "curves.png",
                                                                       title=name))
    except (ValueError, OSError) as error:
        tqdm.write(f"training curves not drawn: {error}")


def _save_stopped_run(trainer: MetaTrainer, run_dir: Path, keep: int, wandb_run_id: str | None,
                      interrupt: BaseException) -> Interrupted:
    """Checkpoint the last completed iteration of a stopped run and save its parameters."""
    state = trainer.committed_state()
    with signals_ignored():  # a second signal must not cut these writes short
        checkpoint_unless_skipped(state, run_dir, keep, wandb_run_id)
        save_params(state["params"], run_dir / PARAMS_FILE)
    latest = list_checkpoints(run_dir)
    resume = (f"; continue from the checkpoint of iteration {latest[-1][0]} with: metarl train --resume {run_dir}"
              if latest else "")
    return Interrupted(f"stopped by {signal_name(interrupt)} after {state['iteration']} iterations; parameters saved "
                       f"in {run_dir / PARAMS_FILE}{resume}", exit_status(interrupt))


def checkpoint_unless_skipped(state: dict[str, Any], run_dir: Path, keep: int,
                              wandb_run_id: str | None = None) -> Path | None:
    """Checkpoint ``state`` unless its last update was skipped or its parameters are non-finite: the
    newest checkpoint then stays the one before, and a run of skipped updates never rotates it out."""
    if state["nonfinite_in_a_row"] > 0:
        tqdm.write(f"checkpoint of iteration {state['iteration']} not written: its update was skipped")
        return None
    try:
        return save_checkpoint(run_dir, state["iteration"], {**state, "wandb_run_id": wandb_run_id}, keep=keep)
    except ValueError as error:
        tqdm.write(f"checkpoint skipped: {error}")
        return None


def _truncate_metrics(path: Path, iterations: int) -> list[dict[str, Any]]:
    """Keep the records of the first ``iterations`` iterations (a killed run may have written more,
    and a last line cut short), rewriting the file atomically; return the records kept."""
    if not path.exists():
        return []
    kept, records = [], []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("iteration", iterations) < iterations:
            kept.append(line)
            records.append(record)
    atomic_write_text("".join(line + "\n" for line in kept), path)
    return records
