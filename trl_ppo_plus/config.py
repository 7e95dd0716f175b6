"""PPOConfig: TRL's GRPOConfig plus the PPO fields (critic, GAE, clipping, KL control), every field documented."""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field

from trl import GRPOConfig

from trl_ppo_plus.cpu_memory import MMAP_THRESHOLD_MAX
from trl_ppo_plus.grpo_fields import LOSS_TYPE_TO_AGGREGATION, refuse_unsupported
from trl_ppo_plus.kl_control import PID_KD, PID_KI, PID_KL_COEF_MAX, PID_KL_COEF_MIN, PID_KP
from trl_ppo_plus.ppo_math import LOSS_AGGREGATIONS
from trl_ppo_plus.reward_norm import REWARD_NORMALIZATIONS


KL_ESTIMATORS = ("k1", "k2", "k3")
KL_PENALTIES = ("reward", "loss")

logger = logging.getLogger(__name__)


class _Derived:
    """Marks a value that `PPOConfig.__post_init__` derived rather than read from the user (a GRPO name mirroring its
    PPO field, a batching field computed from the others). The mark survives `dataclasses.replace`, `copy.deepcopy`
    and pickling, so a re-initialised config derives the value again instead of reading a stale copy as the user's."""


class _DerivedInt(_Derived, int):
    pass


class _DerivedFloat(_Derived, float):
    pass


class _DerivedStr(_Derived, str):
    pass


def _derived(value):
    if value is None or isinstance(value, (_Derived, bool)):
        return value
    kind = {int: _DerivedInt, float: _DerivedFloat, str: _DerivedStr}.get(type(value))
    return value if kind is None else kind(value)


# Re-derived on every __post_init__ when marked: the value a field returns to ("unset") before deriving it again.
_RE_DERIVED = {
    "num_iterations": None,
    "epsilon": None,
    "epsilon_high": None,
    "delta": None,
    "loss_type": None,
    "generation_batch_size": None,
    "steps_per_generation": None,
    "num_mini_batches": None,
    "max_steps": -1,
}


def _cuda_bf16() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


@dataclass
class PPOConfig(GRPOConfig):
    r"""
    Configuration for [`PPOTrainer`]: everything [`trl.GRPOConfig`] has (generation, vLLM, PEFT, logging), plus PPO.

    One *rollout* generates `generation_batch_size` completions (all processes: `per_device_train_batch_size ×
    processes × gradient_accumulation_steps × num_mini_batches`), scores them, estimates advantages with GAE against
    the critic, then runs `num_ppo_epochs` passes over it, each split into `num_mini_batches` optimizer steps of
    `gradient_accumulation_steps` micro-batches. GRPO's `generation_batch_size` or `steps_per_generation` may set the
    rollout size instead; `num_mini_batches` must then agree (or be left unset, and it is derived), so every
    micro-batch of a rollout is trained on.

    Every field inherited from `GRPOConfig` is honoured, mapped to its PPO name (`beta` → `kl_coef`,
    `num_iterations` → `num_ppo_epochs`, `epsilon` → `cliprange`, `epsilon_high` → `cliprange_high`, `delta` →
    `dual_clip`, `loss_type` → `loss_aggregation`) or refused when set: the table is `trl_ppo_plus.grpo_fields` (and the README).

    Parameters:
        > PPO objective

        cliprange (`float`, *optional*, defaults to `0.2`):
            Clip range ε of the surrogate objective: how far the new policy may move from the rollout policy per
            update. Usually 0.1–0.3 (Schulman et al. 2017).
        cliprange_value (`float`, *optional*, defaults to `0.2`):
            Clip range of the value prediction around the rollout-time value.
        vf_coef (`float`, *optional*, defaults to `0.5`):
            Weight of the value loss in the total loss. 0.5 as CleanRL and Stable-Baselines3 (TRL ≤ 1.12 used 0.1):
            the critic is PPO's only baseline, and at 0.1 a fresh value head lags the mean score for tens of rollouts,
            every advantage carrying that mean meanwhile (`benchmarks/learning_suite.py`, dense task).
        clip_value_loss (`bool`, *optional*, defaults to `True`):
            Use the clipped value loss 0.5·max((V−R)², (clip(V)−R)²); `False` gives the unclipped one (either is Huber's
            loss instead with `value_huber_delta`).
        value_huber_delta (`float` or `None`, *optional*, defaults to `None`):
            If set, the value loss is the Huber loss with this threshold δ (in the units of the normalised scores)
            instead of 0.5·(V−R)² (Huber 1964; DQN's error clipping, Mnih et al. 2015). A rare large return (a first
            success under a sparse reward, ÷ a small running std) then moves the critic by at most δ's gradient, not
            by its size, so the critic does not overshoot for every state and push every later failure down
            (`benchmarks/learning_suite.py`: sparse terminal at lr 1e-2, 16 seeds, one epoch, 0.512 → 0.576). Off by default:
            it costs the demo's arithmetic at lr 1e-3 (6 seeds, 0.101 → 0.075) and the demo (+28.9 → +25.0 pts).
        gamma (`float`, *optional*, defaults to `1.0`):
            Discount factor of GAE, in (0, 1]. 1.0 is the RLHF convention (episodes are short and finite).
        lam (`float`, *optional*, defaults to `1.0`):
            GAE λ in [0, 1]: 0 is one-step TD (low variance, biased), 1 is Monte-Carlo returns (unbiased, noisy).
            1.0 as veRL's `algorithm.lam` (TRL ≤ 1.12 used 0.95): with one terminal score per completion, λ < 1 only
            bootstraps from a critic that is still learning.
        whiten_rewards (`bool`, *optional*, defaults to `False`):
            Whiten the per-token rewards (scale only, mean kept) before GAE.
        whiten_advantages (`bool`, *optional*, defaults to `False`):
            Whiten the advantages over the rollout batch (masked mean and variance). Off by default: with
            `reward_normalization` the advantages already have the scale of the scores, and whitening a rollout with
            no signal (all scores equal, common with sparse rewards) blows its KL and critic noise up to unit size,
            where GRPO gives such a group zero advantage (`benchmarks/learning_suite.py`; Dr. GRPO, arXiv:2503.20783,
            also drops the std division).
        num_ppo_epochs (`int`, *optional*, defaults to `4`):
            Passes over each rollout batch; a GRPO script's `num_iterations`, when set, is read as this. 4, as TRL ≤
            1.12 and CleanRL (Schulman et al. 2017, arXiv:1707.06347, ran 3–15 epochs): at equal generated completions
            and equal lr, four optimizer steps per rollout under the clipped objective learned faster than one or two
            on the three random-init tasks of `benchmarks/learning_suite.py` (README, issue 18, 16 seeds). `max_steps`
            counts optimizer steps, as GRPO's does with `num_iterations`: a rollout takes `num_ppo_epochs ×
            num_mini_batches` of them, so at a fixed `max_steps` four epochs generate a quarter of the completions of
            one and learn less per step (a warning says so; `total_episodes` fixes a completion budget instead). 1 is
            veRL's and OpenRLHF's default and enables the fast path below.
        num_mini_batches (`int` or `None`, *optional*, defaults to `None`):
            Optimizer steps per epoch: the rollout batch is split into this many mini-batches. `None`: derived from
            `generation_batch_size` / `steps_per_generation` when one is set, else `1`. With `num_ppo_epochs=1` and
            one mini-batch (and no `target_kl_early_stop`, no whitening over several micro-batches), the loss
            forward also gives the rollout's log-probs and values (`fast_path.py`: two no-grad forwards fewer per
            rollout, the same result).
        target_kl_early_stop (`float` or `None`, *optional*, defaults to `None`):
            When set, skip the remaining mini-batches and epochs of an update once the approximate KL between the
            rollout policy and the current policy exceeds `1.5 × target_kl_early_stop` (OpenAI baselines, Spinning
            Up). Usually 0.01–0.05. `None` disables it.

        > PPO tricks (the switches OpenRLHF, veRL and NeMo-RL ship; compared in `benchmarks/learning_suite.py --ablation`)

        reward_normalization (`str`, *optional*, defaults to `"running"`):
            Rescale the scores before the per-token KL penalty, so that β means the same for any reward scale
            (Ziegler et al. 2019, arXiv:1909.08593): `"none"`, `"running"` (divide by the running std of all scores,
            sign kept) or `"initial"` (gain and bias fitted on the first rollout whose scores vary, to mean 0 and
            std 1, as lm-human-preferences). See `trl_ppo_plus.reward_norm`. On by default: with `"none"` a reward
            of scale 0.01 is drowned by the default β (`benchmarks/learning_suite.py`, issue 18).
        critic_warmup_rollouts (`int`, *optional*, defaults to `0`):
            For the first N rollouts, train the critic only (the policy loss is dropped), so that the first policy
            updates see a critic that already fits the returns (OpenRLHF, veRL `critic_warmup`). The policy does not
            move: a value head on the policy's trunk trains on the trunk's detached hidden states meanwhile. The
            learning-rate schedule still advances during the warmup (one optimizer for policy and critic).
        value_learning_rate (`float` or `None`, *optional*, defaults to `None`):
            AdamW learning rate of the critic's own parameters (its value head, its value adapter, or a separate
            critic model), in a parameter group of its own that follows the same schedule. OpenRLHF's
            `critic_learning_rate` and veRL's `critic.optim.lr` run the critic at 10–18× the actor's rate. A trunk
            shared with the policy keeps `learning_rate`. `None`: `learning_rate`.
        dual_clip (`float` or `None`, *optional*, defaults to `None`):
            Dual-clip constant c > 1: the loss of a negative-advantage token is capped at −c·A (Ye et al. 2020,
            arXiv:1912.09729). Usually 3. `None` disables it.
        cliprange_high (`float` or `None`, *optional*, defaults to `None`):
            Upper clip range: the ratio is clipped to [1 − cliprange, 1 + cliprange_high] ("clip-higher", DAPO,
            arXiv:2503.14476, uses 0.28 with cliprange 0.2). `None`: symmetric.
        loss_aggregation (`str`, *optional*, defaults to `"token-mean"`):
            How token losses make the policy loss: `"token-mean"` (every token weighs the same; DAPO),
            `"seq-mean-token-mean"` (every completion weighs the same; the original GRPO) or `"seq-mean-token-sum"`
            (no length normalisation; Dr. GRPO, arXiv:2503.20783). See `ppo_math.aggregate_loss`.
        lam_critic (`float` or `None`, *optional*, defaults to `None`):
            GAE λ of the critic's returns, when it should differ from the policy's `lam` (VAPO, arXiv:2504.05118,
            uses 1.0 for the critic: unbiased targets). `None`: `lam`.
        lam_actor_length_alpha (`float` or `None`, *optional*, defaults to `None`):
            Length-adaptive λ of the policy's advantages, per completion of length l: λ = 1 − 1/(α·l), clamped to
            [0, 1] (VAPO, α = 0.05). Replaces `lam` for the advantages. `None` disables it.

        > Rewards and the KL penalty

        kl_coef (`float`, *optional*, defaults to `0.01`):
            Initial KL coefficient β. A GRPO script's non-zero `beta` is read as `kl_coef`. 0.01 as OpenRLHF's
            `init_kl_coef` (TRL ≤ 1.12 used 0.05): on unit-variance scores (`reward_normalization`), 0.05 per token
            summed over a drifted completion costs up to 1.5 score standard deviations (issue 18, lr 1e-2).
        kl_estimator (`str`, *optional*, defaults to `"k1"`):
            Per-token KL estimator between policy and reference: `"k1"` (−log r), `"k2"` (½(log r)²) or `"k3"`
            ((r−1)−log r), http://joschu.net/blog/kl-approx.html.
        kl_penalty (`str`, *optional*, defaults to `"reward"`):
            `"reward"`: −β·KL per token inside the reward (InstructGPT, Ziegler et al. 2019). `"loss"`: β·KL added
            to the loss (L_total = L_CLIP − β·KL, as in GRPO).
        kl_controller (`str`, *optional*, defaults to `"fixed"`):
            How β evolves: `"fixed"`, `"adaptive"` (Ziegler et al. 2019) or `"pid"`.
        kl_target (`float`, *optional*, defaults to `6.0`):
            Target KL (nats per sequence, summed over tokens) of the adaptive and PID controllers.
        kl_horizon (`int`, *optional*, defaults to `10000`):
            Horizon of the adaptive controller, in episodes: larger moves β more slowly.
        kl_pid_kp, kl_pid_ki, kl_pid_kd (`float`, *optional*, defaults to `0.2`, `0.02`, `0.0`):
            Gains of the PID controller on the error log(KL/target), acting on log β
            (`trl_ppo_plus.kl_control.PIDKLController`). Tuned with `benchmarks/kl_controllers.py`: the fastest
            gains with ≤ 10% overshoot across plant lags and slopes.
        kl_coef_min, kl_coef_max (`float`, *optional*, defaults to `1e-4`, `10.0`):
            Bounds of β for the PID controller (anti-windup keeps its integral inside them).
        missing_eos_penalty (`float` or `None`, *optional*, defaults to `None`):
            Subtracted from the score of completions that end without an EOS token.
        entropy_coef (`float`, *optional*, defaults to `0.0`):
            Weight of the entropy bonus in the loss.

        > Models

        value_model_path (`str` or `None`, *optional*, defaults to `None`):
            Path or Hub id of a `AutoModelForSequenceClassification(num_labels=1)` critic. `None`: a value head on
            the policy (or the QLoRA value adapter from `trl_ppo_plus.modeling`).
        reward_model_path (`str` or `None`, *optional*, defaults to `None`):
            Path or Hub id of a reward model, added to `reward_funcs`.
        local_rollout_forward_batch_size (`int` or `None`, *optional*, defaults to `None`):
            Batch size of the no-grad forward passes of a rollout (policy, reference, critic). `None`:
            `per_device_train_batch_size`.
        cpu_malloc_mmap_threshold (`int` or `None`, *optional*, defaults to `None`):
            When training on the CPU under glibc, allocations of at least this many bytes get their own `mmap` and
            go back to the OS when freed (`trl_ppo_plus.cpu_memory`). Without it glibc keeps freed activations in
            its heap: at the `benchmarks/memory.py` shape that free heap was 2.5 of 3.9 GiB after one backward.
            Costs CPU time (page faults on every large allocation: 1 MiB made the demo's PPO steps 1.8× slower), so
            set it (e.g. `1048576`) only when memory is the limit. Process-wide; glibc's `MALLOC_MMAP_THRESHOLD_`
            environment variable wins. At most 32 MiB; `None` leaves glibc's default.

        > GRPOConfig fields with a PPO default (the full table: `trl_ppo_plus.grpo_fields`)

        learning_rate (`float`, *optional*, defaults to `3e-6`):
            Initial learning rate (AdamW), TRL ≤ 1.12's PPO default (GRPOConfig: `1e-6`).
        num_generations (`int`, *optional*, defaults to `1`):
            Completions per prompt. PPO's baseline is the critic, so 1 is enough (GRPOConfig: `8`, and at least 2);
            groups are allowed.
        temperature (`float`, *optional*, defaults to `0.7`):
            Sampling temperature, TRL ≤ 1.12's PPO default (GRPOConfig: `1.0`).
        disable_dropout (`bool`, *optional*, defaults to `True`):
            Turn dropout off in the policy, the critic and the reference: PPO's probability ratios need it off
            (GRPOConfig: `False`).
        num_iterations, epsilon, loss_type (`int`, `float`, `str` or `None`, *optional*, default to `None`):
            GRPO's names of `num_ppo_epochs`, `cliprange` and `loss_aggregation`; read as those when set
            (`loss_type`: `dapo`, `bnpo` → `token-mean`, `grpo` → `seq-mean-token-mean`, `dr_grpo` →
            `seq-mean-token-sum`; other loss types are refused). Setting both names to different values raises.
        scale_rewards (`str`, *optional*, defaults to `"none"`):
            GRPO's group-advantage scaling; PPO's advantages come from GAE, so any other value is refused.
        vllm_importance_sampling_correction (`bool`, *optional*, defaults to `False`):
            Refused when `True`: PPO recomputes the rollout log-probs with the training policy, so vLLM's sampling
            log-probs are not used.
        use_bias_correction_kl (`bool`, *optional*, defaults to `False`):
            Refused when `True`: the KL term is not reweighted by the ratio.

        > Old TRL (≤ 1.12) names, accepted so that stranded scripts keep running

        total_episodes (`int` or `None`): episodes to train on; sets `max_steps`.
        response_length (`int` or `None`): alias of `max_completion_length`.
        stop_token (`str` or `None`): `"eos"` stops completions at the EOS token (always the case here).
        stop_token_id (`int` or `None`): an extra token id that ends completions.
        num_sample_generations (`int`): accepted for compatibility; use the evaluation callbacks instead.
        sft_model_path (`str` or `None`): the policy to start from when the trainer gets no `model`.
        model_adapter_name / ref_adapter_name (`str` or `None`): PEFT adapters used as policy / reference.
        dataset_num_proc (`int` or `None`): processes for dataset preprocessing (`datasets.Dataset.map`), such as
            decoding a pre-tokenized `input_ids` dataset.
    """

    # Overridden GRPO / Trainer defaults: PPO conventions (TRL ≤ 1.12).
    learning_rate: float = field(default=3e-6, metadata={"help": "Initial learning rate (AdamW)."})
    num_generations: int = field(
        default=1,
        metadata={"help": "Completions per prompt. PPO's baseline is the critic, so 1 is enough; groups allowed."},
    )
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature (TRL PPO's default)."})
    disable_dropout: bool = field(default=True, metadata={"help": "Turn dropout off (PPO ratios need it off)."})
    entropy_coef: float = field(default=0.0, metadata={"help": "Weight of the entropy bonus in the loss."})
    # GRPO names read as PPO fields (trl_ppo_plus.grpo_fields.MAPPED): None means "not set by the user".
    num_iterations: int | None = field(default=None, metadata={"help": "GRPO's name of num_ppo_epochs."})
    epsilon: float | None = field(default=None, metadata={"help": "GRPO's name of cliprange."})
    loss_type: str | None = field(
        default=None, metadata={"help": "GRPO's loss type, read as loss_aggregation (dapo, bnpo, grpo, dr_grpo)."}
    )
    # GRPO settings PPO does not implement: defaults that switch them off (trl_ppo_plus.grpo_fields.REFUSED).
    scale_rewards: str = field(default="none", metadata={"help": "Refused: PPO's advantages come from GAE."})
    vllm_importance_sampling_correction: bool = field(
        default=False, metadata={"help": "Refused: PPO recomputes the rollout log-probs with the training policy."}
    )
    use_bias_correction_kl: bool = field(default=False, metadata={"help": "Refused: the KL is not reweighted."})

    # PPO objective
    cliprange: float = field(default=0.2, metadata={"help": "Clip range ε of the surrogate objective (0.1–0.3)."})
    cliprange_value: float = field(default=0.2, metadata={"help": "Clip range of the value prediction."})
    # 0.5 (was 0.1): a value head at 0.1 lags the mean score for tens of rollouts; the advantages carry that mean.
    vf_coef: float = field(default=0.5, metadata={"help": "Weight of the value loss (CleanRL, SB3: 0.5; TRL: 0.1)."})
    clip_value_loss: bool = field(default=True, metadata={"help": "Use the clipped value loss 0.5·max(...)."})
    value_huber_delta: float | None = field(
        default=None, metadata={"help": "Huber value loss with this threshold δ instead of 0.5·(V−R)² (Huber 1964)."}
    )
    gamma: float = field(default=1.0, metadata={"help": "GAE discount γ in (0, 1]."})
    # 1.0 (was 0.95): one terminal score per completion; λ < 1 bootstraps from a critic still learning (veRL: 1.0).
    lam: float = field(default=1.0, metadata={"help": "GAE λ in [0, 1] (veRL: 1.0; TRL ≤ 1.12: 0.95)."})
    whiten_rewards: bool = field(default=False, metadata={"help": "Whiten per-token rewards before GAE."})
    # False (was True): whitening a signal-free sparse rollout turns KL and critic noise into unit-size advantages.
    whiten_advantages: bool = field(default=False, metadata={"help": "Whiten advantages over the rollout batch."})
    # 4 (was 1): at equal completions and lr, four clipped passes learned faster than one or two on the learning
    # suite's random-init tasks (README, issue 18); TRL <= 1.12 and CleanRL use 4, veRL and OpenRLHF 1.
    # Marked as a default (`_Derived`): an explicit 4 still conflicts with GRPO's `num_iterations`, and only the
    # default draws the max_steps warning (a GRPO script's drop-in), not a script that chose its epochs.
    num_ppo_epochs: int = field(
        default=_derived(4),
        metadata={"help": "Passes over each rollout batch (TRL <= 1.12, CleanRL: 4; veRL, OpenRLHF: 1)."},
    )
    num_mini_batches: int | None = field(
        default=None, metadata={"help": "Optimizer steps per epoch over a rollout (None: derived, else 1)."}
    )
    target_kl_early_stop: float | None = field(
        default=None,
        metadata={"help": "Stop an update early when approx KL to the rollout policy exceeds 1.5× this (0.01–0.05)."},
    )

    # PPO tricks (benchmarks/learning_suite.py --ablation)
    # "running" (was "none"): with raw scores, a small reward (~0.01) is outweighed by β·KL summed over the tokens.
    reward_normalization: str = field(
        default="running",
        metadata={"help": "Scale scores before the KL penalty: 'none', 'running' or 'initial' (Ziegler et al. 2019)."},
    )
    critic_warmup_rollouts: int = field(
        default=0, metadata={"help": "Train only the critic for the first N rollouts (OpenRLHF, veRL)."}
    )
    value_learning_rate: float | None = field(
        default=None,
        metadata={"help": "Learning rate of the critic's own parameters (OpenRLHF, veRL); None: learning_rate."},
    )
    dual_clip: float | None = field(
        default=None, metadata={"help": "Dual-clip c > 1: cap negative-advantage losses at -c·A (arXiv:1912.09729)."}
    )
    cliprange_high: float | None = field(
        default=None, metadata={"help": "Upper clip range (clip-higher, DAPO arXiv:2503.14476); None: symmetric."}
    )
    loss_aggregation: str = field(
        default="token-mean",
        metadata={"help": "Policy loss reduction: 'token-mean', 'seq-mean-token-mean' or 'seq-mean-token-sum'."},
    )
    lam_critic: float | None = field(
        default=None, metadata={"help": "GAE λ of the critic's returns (VAPO arXiv:2504.05118); None: lam."}
    )
    lam_actor_length_alpha: float | None = field(
        default=None, metadata={"help": "Length-adaptive policy λ = 1 − 1/(α·l) (VAPO, α = 0.05); None: off."}
    )

    # Rewards and the KL penalty
    # 0.01 (was 0.05): on unit-variance scores, β = 0.05 summed over a drifted completion costs up to 1.5 score stds.
    kl_coef: float = field(default=0.01, metadata={"help": "Initial KL coefficient β (OpenRLHF: 0.01; TRL: 0.05)."})
    kl_estimator: str = field(default="k1", metadata={"help": "Per-token KL estimator: k1, k2 or k3."})
    kl_penalty: str = field(default="reward", metadata={"help": "Where the KL goes: 'reward' (per token) or 'loss'."})
    kl_controller: str = field(default="fixed", metadata={"help": "β schedule: 'fixed', 'adaptive' or 'pid'."})
    kl_target: float = field(default=6.0, metadata={"help": "Target summed KL per sequence (adaptive, pid)."})
    kl_horizon: int = field(default=10000, metadata={"help": "Adaptive controller horizon, in episodes."})
    # PID defaults tuned by benchmarks/kl_controllers.py: fastest gains with <= 10% overshoot across plant lags/slopes.
    kl_pid_kp: float = field(default=PID_KP, metadata={"help": "PID proportional gain on log(KL/target)."})
    kl_pid_ki: float = field(default=PID_KI, metadata={"help": "PID integral gain on log(KL/target)."})
    kl_pid_kd: float = field(default=PID_KD, metadata={"help": "PID derivative gain on log(KL/target)."})
    kl_coef_min: float = field(default=PID_KL_COEF_MIN, metadata={"help": "Lower bound of β (pid)."})
    kl_coef_max: float = field(default=PID_KL_COEF_MAX, metadata={"help": "Upper bound of β (pid)."})
    missing_eos_penalty: float | None = field(
        default=None, metadata={"help": "Subtracted from the score of completions without an EOS token."}
    )

    # Models
    value_model_path: str | None = field(default=None, metadata={"help": "Path/id of a seq-cls critic model."})
    reward_model_path: str | None = field(default=None, metadata={"help": "Path/id of a reward model."})
    local_rollout_forward_batch_size: int | None = field(
        default=None, metadata={"help": "Batch size of the no-grad rollout forwards (default: per-device batch)."}
    )
    cpu_malloc_mmap_threshold: int | None = field(
        default=None,
        metadata={"help": "On the CPU (glibc): allocations of at least this many bytes are unmapped when freed."},
    )

    # Old TRL (<= 1.12) PPOConfig names
    total_episodes: int | None = field(default=None, metadata={"help": "Episodes to train on; sets max_steps."})
    response_length: int | None = field(default=None, metadata={"help": "Alias of max_completion_length."})
    stop_token: str | None = field(default=None, metadata={"help": "'eos': completions stop at EOS."})
    stop_token_id: int | None = field(default=None, metadata={"help": "Extra token id that ends completions."})
    num_sample_generations: int = field(default=10, metadata={"help": "Accepted for compatibility (TRL ≤ 1.12)."})
    sft_model_path: str | None = field(default=None, metadata={"help": "Policy to start from when none is given."})
    model_adapter_name: str | None = field(default=None, metadata={"help": "PEFT adapter used as the policy."})
    ref_adapter_name: str | None = field(default=None, metadata={"help": "PEFT adapter used as the reference."})
    dataset_num_proc: int | None = field(default=None, metadata={"help": "Processes for dataset preprocessing."})

    def __post_init__(self):
        for name, unset in _RE_DERIVED.items():  # a re-init (dataclasses.replace, ...) derives these again
            if isinstance(getattr(self, name), _Derived):
                setattr(self, name, unset)
        batching = ("generation_batch_size", "steps_per_generation", "num_mini_batches")
        user_set = {name for name in batching if getattr(self, name) is not None}
        self._validate_ppo_fields()  # before anything heavy: bad input fails first, naming the field
        refuse_unsupported(self, _PPO_DEFAULTS)
        self._map_grpo_names()
        if self.response_length is not None:
            self.max_completion_length = self.response_length
        if self.bf16 is None:  # TRL defaults to bf16, which fails on CPU-only machines: bf16 on a GPU, fp32 on CPU
            self.bf16 = not self.fp16 and _cuda_bf16()
        if self.generation_batch_size is None and self.steps_per_generation is None:
            self.steps_per_generation = self.gradient_accumulation_steps * (self.num_mini_batches or 1)

        # GRPOConfig refuses num_generations < 2 (its baseline is the group mean); PPO's baseline is the critic, so
        # we accept 1. That check is GRPOConfig.__post_init__'s last but the vLLM sampling-correction checks, which
        # `_after_group_size_check` re-runs (tests/test_upstream_hooks.py pins the upstream source we rely on).
        try:
            super().__post_init__()
        except ValueError as err:
            if self.num_generations != 1 or "at least 2 generations" not in str(err):
                raise
            self._after_group_size_check()
        self._check_batching()
        for name in set(batching) - user_set:
            setattr(self, name, _derived(getattr(self, name)))

    def to_sanitized_dict(self) -> dict:
        """TrainingArguments' TensorBoard hparams (plain `int`/`float`/`str` only), derived values unmarked."""
        sanitized = super().to_sanitized_dict()
        for name in _RE_DERIVED:
            value = getattr(self, name)
            if isinstance(value, _Derived):
                sanitized[name] = type(value).__bases__[1](value)  # _DerivedInt(1) -> int(1)
        return sanitized

    def _map_grpo_names(self):
        """GRPO's names for PPO settings (`grpo_fields.MAPPED`) onto the PPO fields; a conflict raises."""

        def take(grpo_name, grpo_value, ppo_name, ppo_value):
            ppo_default = _PPO_DEFAULTS[ppo_name]
            # An explicit value equal to a marked default (num_ppo_epochs=4) is the user's too.
            explicit = ppo_value != ppo_default or (
                isinstance(ppo_default, _Derived) and not isinstance(ppo_value, _Derived)
            )
            if explicit and ppo_value != grpo_value:
                raise ValueError(
                    f"PPOConfig.{grpo_name}={grpo_value!r} and PPOConfig.{ppo_name}={ppo_value!r} disagree: "
                    f"{grpo_name} is GRPO's name of {ppo_name}; set one of them."
                )
            setattr(self, ppo_name, grpo_value)

        if self.beta:  # a GRPO script's `beta` becomes PPO's initial β; GRPO's own KL term stays off
            take("beta", self.beta, "kl_coef", self.kl_coef)
            self.beta = 0.0
        if self.num_iterations is not None:
            take("num_iterations", self.num_iterations, "num_ppo_epochs", self.num_ppo_epochs)
        if self.epsilon is not None:
            take("epsilon", self.epsilon, "cliprange", self.cliprange)
        if self.epsilon_high is not None:
            take("epsilon_high", self.epsilon_high, "cliprange_high", self.cliprange_high)
        if self.delta is not None:
            upper = 1 + (self.cliprange if self.cliprange_high is None else self.cliprange_high)
            if self.delta < upper:  # GRPO's clamp then also stops positive-advantage ratios in (delta, 1 + ε]
                raise ValueError(
                    f"PPOConfig.delta={self.delta!r} is below 1 + epsilon_high = {upper!r}: GRPO's delta then also "
                    f"caps positive-advantage ratios, which dual-clip PPO does not. Set delta >= {upper!r} (INTELLECT-2 "
                    f"recommends > 1 + ε) or dual_clip instead."
                )
            take("delta", self.delta, "dual_clip", self.dual_clip)
        if self.loss_type is not None:
            if self.loss_type not in LOSS_TYPE_TO_AGGREGATION:
                raise ValueError(
                    f"PPOConfig.loss_type={self.loss_type!r} is not supported by PPOTrainer: it is not the clipped "
                    f"PPO objective. GRPO's loss types read as a PPO loss aggregation: {LOSS_TYPE_TO_AGGREGATION}."
                )
            take("loss_type", LOSS_TYPE_TO_AGGREGATION[self.loss_type], "loss_aggregation", self.loss_aggregation)
        self._validate_ppo_fields()  # the mapped values obey the PPO fields' bounds
        # GRPOTrainer reads these names: they hold the PPO values from here on.
        self.num_iterations, self.epsilon = _derived(self.num_ppo_epochs), _derived(self.cliprange)
        self.epsilon_high, self.delta = _derived(self.cliprange_high), _derived(self.dual_clip)
        self.loss_type = _derived(self.loss_type)

    def _check_batching(self):
        """A rollout is `steps_per_generation` micro-batches: `num_mini_batches` × `gradient_accumulation_steps`."""
        micro_batches, accumulation = self.steps_per_generation, self.gradient_accumulation_steps
        if micro_batches % accumulation:
            raise ValueError(
                f"steps_per_generation={micro_batches} (generation_batch_size={self.generation_batch_size}) must be a "
                f"multiple of gradient_accumulation_steps={accumulation}: a rollout splits into mini-batches of "
                f"gradient_accumulation_steps micro-batches of per_device_train_batch_size × processes."
            )
        if self.num_mini_batches is None:
            self.num_mini_batches = micro_batches // accumulation
        elif self.num_mini_batches * accumulation != micro_batches:
            raise ValueError(
                f"num_mini_batches={self.num_mini_batches} disagrees with generation_batch_size="
                f"{self.generation_batch_size} (steps_per_generation={micro_batches}): a rollout of "
                f"{micro_batches} micro-batches makes {micro_batches // accumulation} mini-batches of "
                f"gradient_accumulation_steps={accumulation}. Set num_mini_batches={micro_batches // accumulation} "
                f"(or leave it unset){self._accumulation_hint(micro_batches)}."
            )
        if self.total_episodes is not None:
            updates = math.ceil(self.total_episodes / self.generation_batch_size)
            steps = updates * self.num_ppo_epochs * self.num_mini_batches
            if self.max_steps not in (-1, steps):
                raise ValueError(
                    f"total_episodes={self.total_episodes} gives max_steps={steps} ({updates} rollouts of "
                    f"{self.generation_batch_size} × {self.num_ppo_epochs} epochs × {self.num_mini_batches} "
                    f"mini-batches), but max_steps={self.max_steps} was set: set one of them."
                )
            if self.total_episodes % self.generation_batch_size:
                logger.warning(
                    "total_episodes=%d is not a multiple of generation_batch_size=%d: training on %d episodes.",
                    self.total_episodes,
                    self.generation_batch_size,
                    updates * self.generation_batch_size,
                )
            self.max_steps = _derived(steps)
        elif self.max_steps > 0 and isinstance(self.num_ppo_epochs, _Derived):
            # The default's epochs under a GRPO script's max_steps, which keeps counting optimizer steps: issue 18
            # measured what that costs a drop-in. A script that sets num_ppo_epochs (or num_iterations) chose it.
            per_rollout = self.num_ppo_epochs * self.num_mini_batches
            rollouts, partial = math.ceil(self.max_steps / per_rollout), self.max_steps % per_rollout
            grpo_rollouts = math.ceil(self.max_steps / self.num_mini_batches)  # the same batching, one pass each
            logger.warning(
                "max_steps=%d counts optimizer steps, %d per rollout (num_ppo_epochs=%d × num_mini_batches=%d): "
                "%d completions in %d rollout(s), where GRPO's default (num_iterations=1) generates %d.%s For a budget "
                "of completions set total_episodes instead of max_steps (or num_ppo_epochs=1 for GRPO's count).",
                self.max_steps,
                per_rollout,
                self.num_ppo_epochs,
                self.num_mini_batches,
                rollouts * self.generation_batch_size,
                rollouts,
                grpo_rollouts * self.generation_batch_size,
                f" The last rollout is trained for {partial} of its {per_rollout} steps." if partial else "",
            )

    def _accumulation_hint(self, micro_batches: int) -> str:
        if micro_batches % self.num_mini_batches:
            return ""
        return f", or gradient_accumulation_steps={micro_batches // self.num_mini_batches}"

    def _after_group_size_check(self):
        """The checks GRPOConfig.__post_init__ runs after its group-size check (vLLM importance sampling)."""
        if self.vllm_importance_sampling_cap is not None:
            self.vllm_importance_sampling_clip_max = self.vllm_importance_sampling_cap
        low, high = self.vllm_importance_sampling_clip_min, self.vllm_importance_sampling_clip_max
        if low is not None and high is not None and low >= high:
            raise ValueError(f"vllm_importance_sampling_clip_min ({low}) must be less than clip_max ({high}).")
        truncating = self.vllm_importance_sampling_mode in ("token_truncate", "sequence_truncate")
        if self.vllm_importance_sampling_correction and truncating and low is None and high is None:
            raise ValueError("Set vllm_importance_sampling_clip_min or _clip_max with a *_truncate sampling mode.")

    def _validate_ppo_fields(self):
        from trl_ppo_plus.kl_control import validate_kl_control_args

        def bad(name, value, why):
            raise ValueError(f"PPOConfig.{name}={value!r} is invalid: {why}")

        if not self.cliprange > 0:
            bad("cliprange", self.cliprange, "it must be > 0 (usually 0.1–0.3)")
        if self.dataset_num_proc is not None and self.dataset_num_proc < 1:
            bad("dataset_num_proc", self.dataset_num_proc, "it must be >= 1 or None")
        if not self.cliprange_value > 0:
            bad("cliprange_value", self.cliprange_value, "it must be > 0")
        if self.value_huber_delta is not None and not self.value_huber_delta > 0:
            bad("value_huber_delta", self.value_huber_delta, "it must be > 0, or None for the squared error")
        if not 0 < self.gamma <= 1:
            bad("gamma", self.gamma, "it must be in (0, 1]")
        if not 0 <= self.lam <= 1:
            bad("lam", self.lam, "it must be in [0, 1]")
        if self.vf_coef < 0:
            bad("vf_coef", self.vf_coef, "it must be >= 0")
        if self.kl_estimator not in KL_ESTIMATORS:
            bad("kl_estimator", self.kl_estimator, f"expected one of {KL_ESTIMATORS}")
        if self.kl_penalty not in KL_PENALTIES:
            bad("kl_penalty", self.kl_penalty, f"expected one of {KL_PENALTIES}")
        if self.num_ppo_epochs < 1:
            bad("num_ppo_epochs", self.num_ppo_epochs, "it must be >= 1")
        if self.num_mini_batches is not None and self.num_mini_batches < 1:
            bad("num_mini_batches", self.num_mini_batches, "it must be >= 1 or None")
        if self.num_generations < 1:
            bad("num_generations", self.num_generations, "it must be >= 1")
        if self.target_kl_early_stop is not None and not self.target_kl_early_stop > 0:
            bad("target_kl_early_stop", self.target_kl_early_stop, "it must be > 0 or None")
        if self.reward_normalization not in REWARD_NORMALIZATIONS:
            bad("reward_normalization", self.reward_normalization, f"expected one of {REWARD_NORMALIZATIONS}")
        if self.critic_warmup_rollouts < 0:
            bad("critic_warmup_rollouts", self.critic_warmup_rollouts, "it must be >= 0")
        if self.value_learning_rate is not None and not self.value_learning_rate > 0:
            bad("value_learning_rate", self.value_learning_rate, "it must be > 0 or None")
        if self.dual_clip is not None and not self.dual_clip > 1:
            bad("dual_clip", self.dual_clip, "it must be > 1 (usually 3) or None")
        if self.cliprange_high is not None and not self.cliprange_high > 0:
            bad("cliprange_high", self.cliprange_high, "it must be > 0 or None")
        if self.loss_aggregation not in LOSS_AGGREGATIONS:
            bad("loss_aggregation", self.loss_aggregation, f"expected one of {LOSS_AGGREGATIONS}")
        if self.lam_critic is not None and not 0 <= self.lam_critic <= 1:
            bad("lam_critic", self.lam_critic, "it must be in [0, 1] or None")
        if self.lam_actor_length_alpha is not None and not self.lam_actor_length_alpha > 0:
            bad("lam_actor_length_alpha", self.lam_actor_length_alpha, "it must be > 0 or None")
        if self.missing_eos_penalty is not None and self.missing_eos_penalty < 0:
            bad("missing_eos_penalty", self.missing_eos_penalty, "it is subtracted from the score, so it must be >= 0")
        threshold = self.cpu_malloc_mmap_threshold
        if threshold is not None and not 0 <= threshold <= MMAP_THRESHOLD_MAX:
            bad("cpu_malloc_mmap_threshold", threshold, f"glibc accepts 0 to {MMAP_THRESHOLD_MAX} bytes, or None")
        if self.stop_token not in (None, "eos"):
            bad("stop_token", self.stop_token, "only 'eos' is supported (use stop_token_id for another token)")
        validate_kl_control_args(
            self.kl_controller,
            self.kl_coef if not self.beta else self.beta,
            self.kl_target,
            self.kl_horizon,
            self.kl_pid_kp,
            self.kl_pid_ki,
            self.kl_pid_kd,
            self.kl_coef_min,
            self.kl_coef_max,
        )


_PPO_DEFAULTS = {f.name: f.default for f in dataclasses.fields(PPOConfig) if f.default is not dataclasses.MISSING}
