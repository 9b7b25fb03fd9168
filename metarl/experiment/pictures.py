"""What an adapted policy does: 2D-navigation paths and videos, before and after adaptation.

Both adapt a run's meta-parameters as ``metarl evaluate`` does (:func:`metarl.experiment.evaluation.adapt_to_tasks`:
the run's inner step, ``evaluation.episodes_per_task`` episodes per step, rollouts from a seed).
:func:`navigation_paths` keeps a few of the episodes each step was computed from;
:func:`write_video` then runs the deterministic policy (the Gaussian's mean) of every step for one
episode and renders it, the steps side by side, into a GIF.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from envs import Task
from envs.navigation import displacement
from metarl.experiment.build import build_family_and_policy
from metarl.experiment.config import Config
from metarl.experiment.evaluation import adapt_to_tasks
from metarl.params import Params

FRAME_STRIDE = 2  # render every second env step
PANEL_HEIGHT = 240  # pixels of each adaptation step's picture in a video (the width keeps the frame's aspect)


@dataclass
class NavigationPaths:
    """Positions of a few episodes per held-out goal after 0..K adaptation steps.

    ``positions[k][i]`` is a list of (T_e + 1, 2) arrays, one per episode of goal ``i`` sampled with the
    parameters after ``k`` steps (from the start at the origin until the episode ended)."""

    goals: np.ndarray  # (tasks, 2)
    positions: list[list[list[np.ndarray]]]


def navigation_paths(config: Config, params: Params, tasks: list[Task], *, steps: int, seed: int,
                     episodes: int = 3) -> NavigationPaths:
    """The paths of ``episodes`` episodes per task of the batches each adaptation step drew."""
    if config.env.family != "navigation2d":
        raise ValueError(f"paths are drawn for the 2D navigation family, not {config.env.family!r}; "
                         "for a locomotion run: metarl video")
    _, batches = adapt_to_tasks(config, params, tasks, steps=steps, seed=seed)
    positions = []
    for batch in batches:
        observations, mask = batch.episodes.observations[..., :2], batch.episodes.mask  # (T, B, M, 2), (T, B, M)
        per_task = []
        for i in range(len(tasks)):
            kept = [e for e in range(observations.shape[2]) if mask[:, i, e].any()][:episodes]
            per_task.append([_with_last_move(observations[:, i, e], batch.episodes.actions[:, i, e], mask[:, i, e])
                             for e in kept])
        positions.append(per_task)
    goals = np.array([np.asarray(task["goal"], dtype=float) for task in tasks])
    return NavigationPaths(goals, positions)


def _with_last_move(observations: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """An episode's positions from the start to where its last action took it (T_e + 1, 2)."""
    length = int(mask.sum())
    path = observations[:length].double().cpu().numpy()
    last = path[-1] + displacement(actions[length - 1].double().cpu().numpy())
    return np.vstack([path, last])


def write_video(config: Config, params: Params, task: Task, path: str | Path, *, steps: int, seed: int) -> Path:
    """A GIF of one episode of the deterministic policy on ``task`` before adaptation and after each
    of ``steps`` steps, side by side; returns the file written (``.gif`` added when it has no suffix)."""
    from PIL import Image, ImageDraw

    path = Path(path)
    path = path if path.suffix else path.with_suffix(".gif")
    if path.suffix.lower() != ".gif":
        raise ValueError(f"videos are written as GIF: give a .gif file, not {str(path)!r}")
    family, policy = build_family_and_policy(config)
    thetas, _ = adapt_to_tasks(config, params, [task], steps=steps, seed=seed)
    episodes, dt = [], 0.0
    for theta in thetas:
        try:
            env = family.make_env(task, render_mode="rgb_array")
        except (TypeError, ValueError) as error:
            raise ValueError(f"family {config.env.family!r} cannot render frames: {error}") from None
        dt = getattr(env, "dt", 0.02)  # seconds per env step
        episodes.append(_rendered_episode(env, policy, {k: v[0].cpu() for k, v in theta.items()}, seed))
    height, width = episodes[0][0].shape[:2]
    size = (round(PANEL_HEIGHT * width / height), PANEL_HEIGHT)
    frames = []
    for t in range(max(len(episode) for episode in episodes)):
        row = Image.new("RGB", (size[0] * len(episodes), size[1]))
        for k, episode in enumerate(episodes):
            panel = Image.fromarray(episode[min(t, len(episode) - 1)]).resize(size)
            ImageDraw.Draw(panel).text((8, 6), "before adaptation" if k == 0 else f"after {k} step{'s' * (k > 1)}",
                                       fill=(0, 0, 0))
            row.paste(panel, (size[0] * k, 0))
        frames.append(row)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(round(1000 * dt * FRAME_STRIDE)), loop=0)
    return path


def _rendered_episode(env, policy, params: Params, seed: int) -> list[np.ndarray]:
    """Frames of one episode of ``policy``'s deterministic action, every :data:`FRAME_STRIDE` steps."""
    dtype = next(policy.parameters()).dtype
    try:
        obs, _ = env.reset(seed=seed)
        frames, done, t = [_frame(env)], False, 0
        while not done:
            with torch.no_grad():
                mode = policy.mode(params, torch.as_tensor(obs, dtype=dtype))
            action = int(mode) if isinstance(env.action_space, gym.spaces.Discrete) else mode.double().numpy()
            obs, _, terminated, truncated, _ = env.step(action)
            done, t = terminated or truncated, t + 1
            if t % FRAME_STRIDE == 0 or done:
                frames.append(_frame(env))
        return frames
    finally:
        env.close()


def _frame(env) -> np.ndarray:
    """``env.render()`` as an RGB array, or a ``ValueError`` saying why there is none."""
    try:
        frame = env.render()
    except Exception as error:  # noqa: BLE001  (MuJoCo's GL back-ends fail with several kinds of error)
        hint = "" if "MUJOCO_GL" in str(error) else " (MuJoCo needs an OpenGL back-end: MUJOCO_GL=egl or osmesa)"
        raise ValueError(f"cannot render: {error}{hint}") from None
    if not isinstance(frame, np.ndarray) or frame.ndim != 3:
        raise ValueError(f"cannot render: the environment gave {type(frame).__name__}, not an RGB array")
    return frame
