"""The reinforcement-learning task oracle: rollouts and a policy-gradient surrogate.

:class:`PolicyGradientOracle` implements the task-oracle protocol of :mod:`metarl.estimators.meta_gradient` for a
whole meta-batch at once (``task_axis = True``): parameters carry one set per task, ``sample``
rolls out every task's episodes in one vectorised loop, and ``objective`` is the sum over tasks
of each task's surrogate.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from envs import Task
from metarl.params import Params
from metarl.rl.policies import Policy
from metarl.rl.returns import LinearFeatureBaseline, discount_weights, discounted_returns, gae
from metarl.rl.sampling import Episodes, Sampler
from metarl.rl.surrogates import SURROGATES, PolicyGradientBatch, lvc


def episode_log_probs(policy: Policy, params: Params, episodes: Episodes) -> Tensor:
    """log pi(a_t|s_t) for every step, shape (T, B, M); ``params`` shared or task-batched."""
    if not policy.is_task_batched(params):
        return policy.log_prob(params, episodes.observations, episodes.actions)
    obs = episodes.observations.movedim(1, 0)
    actions = episodes.actions.movedim(1, 0)
    return policy.log_prob(params, obs, actions).movedim(0, 1)


class PolicyGradientOracle:
    """Task oracle over B tasks: fresh rollouts at the given parameters and a surrogate.

    Args:
        sampler: collects the episodes.
        tasks: the B tasks of the meta-batch.
        surrogate: ``"dice"``, ``"reinforce"`` or ``"lvc"`` (see :mod:`metarl.rl.surrogates`).
        gamma: discount factor.
        gae_lambda: GAE lambda (1.0: Monte-Carlo advantages).
        normalize_advantages: standardise ``A_t`` per task (not used by ``dice``, which
            works with rewards and the baseline directly).
        per_step_units: multiply each task's surrogate by ``1 / (mean episode length * std of
            its advantages)``, a constant of the batch: the surrogate then has the units of a mean
            over steps with standardised advantages (Finn et al.'s inner step 0.1 applies as is).
        discount_scores: ``Psi_t = gamma^t A_t`` (the discounted return's gradient); False: ``Psi_t = A_t``,
            every step's score weighted alike, as in Finn et al.'s code (``reinforce`` and ``lvc`` only:
            DiCE is the discounted return's own estimate).
        key: integers identifying this oracle's draws (for example the iteration); its
            k-th call to ``sample`` uses the sampler key ``(*key, k)``.
    """

    task_axis = True

    def __init__(
        self,
        sampler: Sampler,
        tasks: Sequence[Task],
        *,
        surrogate: str = "dice",
        gamma: float = 0.99,
        gae_lambda: float = 1.0,
        normalize_advantages: bool = False,
        per_step_units: bool = False,
        discount_scores: bool = True,
        key: Sequence[int] = (0,),
        baseline: LinearFeatureBaseline | None = None,
    ) -> None:
        if surrogate not in SURROGATES:
            raise ValueError(f"surrogate {surrogate!r} is unknown; allowed: {', '.join(SURROGATES)}")
        self.sampler, self.policy, self.tasks = sampler, sampler.policy, list(tasks)
        self.surrogate = SURROGATES[surrogate]
        self.gamma, self.gae_lambda = gamma, gae_lambda
        if surrogate == "dice" and not discount_scores:
            raise ValueError("the 'dice' surrogate always weights scores by gamma^t (discount_scores=False needs "
                             "'reinforce' or 'lvc')")
        self.normalize_advantages, self.per_step_units = normalize_advantages, per_step_units
        self.discount_scores = discount_scores
        self.key = tuple(key)
        self.baseline = baseline or LinearFeatureBaseline()
        self.draws = 0
        self.env_steps = 0

    def sample(self, params: Params) -> PolicyGradientBatch:
        """Roll out every task at its parameters and compute advantages with a fitted baseline.

        Rollouts run on the CPU; the batch lives on the parameters' device."""
        device = next(iter(params.values())).device
        on_cpu = {k: v.detach().cpu() for k, v in params.items()}
        episodes = self.sampler.sample(self.tasks, on_cpu, (*self.key, self.draws)).to(device=device)
        self.draws += 1
        self.env_steps += episodes.num_steps
        mask = episodes.mask
        returns = discounted_returns(episodes.rewards, mask, self.gamma)
        values = self.baseline.fit_predict(episodes.observations, returns, mask)
        advantages = gae(episodes.rewards, values, mask, self.gamma, self.gae_lambda)
        if self.normalize_advantages:
            advantages = _standardise_per_task(advantages, mask)
        discounts = discount_weights(episodes.horizon, self.gamma, episodes.rewards.dtype, device).view(-1, 1, 1)
        scale = per_step_scale(advantages, mask) if self.per_step_units else None
        counts = episodes.episode_counts()
        if bool((counts < episodes.episodes_per_task).any()):  # a collection dropped episodes: mean over the rest
            over_present = episodes.episodes_per_task / counts.clamp_min(1)
            scale = over_present if scale is None else scale * over_present
        scores = advantages * discounts if self.discount_scores else advantages
        return PolicyGradientBatch(episodes, episodes.log_probs, scores, values, discounts, scale)

    def mean_return(self, batch: PolicyGradientBatch) -> float:
        """The batch's mean episode return over all tasks (what the trainer logs)."""
        return batch.episodes.mean_return()

    def objective(self, params: Params, batch: PolicyGradientBatch) -> Tensor:
        """Sum over tasks of each task's surrogate at ``params``."""
        return self.surrogate(episode_log_probs(self.policy, params, batch.episodes), batch)

    def distributions(self, params: Params, batch: PolicyGradientBatch) -> tuple[Tensor, ...]:
        """The policy's distribution parameters at every step of the batch (task-batched params),
        each (B, T, M, ...)."""
        return self.policy.forward_with(params, batch.episodes.observations.movedim(1, 0))

    def ratio_objective(self, params: Params, batch: PolicyGradientBatch,
                        outputs: tuple[Tensor, ...] | None = None) -> Tensor:
        """``sum_t exp(l_t - l_t^b) Psi_t`` summed over tasks: the per-step importance-ratio surrogate
        that trust-region methods improve (low variance; its gradient at theta_b is the policy gradient).
        ``outputs``: the distributions at ``params`` if already computed."""
        outputs = self.distributions(params, batch) if outputs is None else outputs
        log_probs = self.policy.log_prob_from(outputs, batch.episodes.actions.movedim(1, 0)).movedim(0, 1)
        return lvc(log_probs, batch)

    def kl(self, old: Params | tuple[Tensor, ...], new: Params | tuple[Tensor, ...],
           batch: PolicyGradientBatch) -> Tensor:
        """Mean KL(pi_old || pi_new) over each task's steps, shape (B,). Either side is task-batched
        params or their :meth:`distributions` on this batch."""
        old, new = (x if isinstance(x, tuple) else self.distributions(x, batch) for x in (old, new))
        per_step = self.policy.kl_from(old, new).movedim(0, 1)
        mask = batch.episodes.mask
        return (per_step * mask).sum((0, 2)) / mask.sum((0, 2)).clamp_min(1)


def per_step_scale(advantages: Tensor, mask: Tensor) -> Tensor:
    """``1 / (mean episode length * std of A)`` per task, shape (B,)."""
    mean_length = mask.sum((0, 2)) / mask[0].sum(1).clamp_min(1)
    _, std = _per_task_moments(advantages, mask)
    return 1.0 / (mean_length.clamp_min(1) * (std.view(-1) + 1e-8))


def _standardise_per_task(values: Tensor, mask: Tensor) -> Tensor:
    mean, std = _per_task_moments(values, mask)
    return (values - mean) / (std + 1e-8) * mask


def _per_task_moments(values: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation over each task's valid steps, both (1, B, 1)."""
    count = mask.sum((0, 2), keepdim=True).clamp_min(1)
    mean = (values * mask).sum((0, 2), keepdim=True) / count
    var = ((values - mean).pow(2) * mask).sum((0, 2), keepdim=True) / count
    return mean, var.sqrt()
