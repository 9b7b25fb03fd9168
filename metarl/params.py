"""Parameter dicts: the one representation of a policy's (or any oracle's) parameters.

A ``Params`` maps names to tensors. With a task axis, every tensor has a leading dimension of B
tasks and the helpers act per task.
"""

from __future__ import annotations

import torch
from torch import Tensor

Params = dict[str, Tensor]


def tree_norm(tree: Params, task_axis: bool = False) -> Tensor:
    """Euclidean norm over all tensors (per leading index when ``task_axis``)."""
    if task_axis:
        return torch.sqrt(sum(v.pow(2).reshape(v.shape[0], -1).sum(1) for v in tree.values()))
    return torch.sqrt(sum(v.pow(2).sum() for v in tree.values()))


def tree_scale(tree: Params, scale: Tensor | float, task_axis: bool) -> Params:
    """``scale * tree``; a per-task ``scale`` of shape (B,) multiplies each task's slice."""
    if task_axis and isinstance(scale, Tensor) and scale.dim() == 1:
        return {k: v * scale.view(-1, *([1] * (v.dim() - 1))) for k, v in tree.items()}
    return {k: v * scale for k, v in tree.items()}


def tree_axpy(x: Params, a: Tensor | float, y: Params, task_axis: bool) -> Params:
    """``x + a * y``."""
    ay = tree_scale(y, a, task_axis)
    return {k: x[k] + ay[k] for k in x}


def as_leaves(params: Params) -> Params:
    """Detached copies that require grad: the inputs of a fresh autograd graph."""
    return {k: v.detach().requires_grad_(True) for k, v in params.items()}


def detached(params: Params) -> Params:
    return {k: v.detach() for k, v in params.items()}


def stack_params(params: Params, num_tasks: int) -> Params:
    """One copy of ``params`` per task (a task-batched parameter dict)."""
    return {k: v.detach().unsqueeze(0).expand(num_tasks, *v.shape).clone() for k, v in params.items()}


def flatten(tree: Params) -> Tensor:
    """All tensors of a parameter dict as one vector."""
    return torch.cat([v.reshape(-1) for v in tree.values()])


def unflatten(flat: Tensor, like: Params) -> Params:
    """The inverse of :func:`flatten` for the shapes of ``like``."""
    out, start = {}, 0
    for k, v in like.items():
        out[k] = flat[start:start + v.numel()].view_as(v)
        start += v.numel()
    return out
