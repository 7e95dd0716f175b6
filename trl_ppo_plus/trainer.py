"""PPOTrainer: TRL's GRPOTrainer with a learned critic, GAE, the clipped PPO objective and KL control.

Everything about data, generation (transformers or vLLM), reward functions, PEFT, logging and checkpoints is
inherited from `trl.GRPOTrainer`. This class overrides a small, named set of its hooks
(`tests/test_upstream_hooks.py` fails loudly if upstream changes them):

- `_generate_and_score_completions`: one PPO rollout. Generate with GRPO's `_generate`, score with GRPO's
  `_calculate_rewards`, then compute policy / reference log-probs and values, the per-token rewards
  (−β·KL + score on the last token), GAE advantages and returns, whitening, and the KL-controller update.
- `_compute_loss`: the clipped policy loss + vf_coef × clipped value loss (− entropy bonus, + β·KL in loss mode).
  When one optimizer step consumes the rollout, its forward also supplies the rollout's log-probs and values, and
  the rollout's steps after scoring run there instead (`fast_path.py`: two no-grad forwards fewer per rollout).
- `_prepare_inputs`: reshuffles the rollout's mini-batches at the start of every PPO epoch after the first.
- `training_step`: skips an update with no token to train on, and the rest of an update after a
  `target_kl_early_stop` trigger (the step that tripped it included).
- `_save`, `_save_optimizer_and_scheduler`, `_load_from_checkpoint`, `_load_optimizer_and_scheduler`: the critic,
  the KL controller and the current rollout travel with every checkpoint; incomplete checkpoints are refused.
  `create_model_card`: our template from `model_cards/`; `push_to_hub`: one commit. These live in the
  `PPOCheckpointing` mixin (`trl_ppo_plus/checkpointing.py`).

GRPO's batching maps onto PPO's as: rollout batch = `generation_batch_size`; `num_ppo_epochs` = `num_iterations`;
a mini-batch = one optimizer step = `gradient_accumulation_steps` micro-batches of `per_device_train_batch_size`.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings

import torch
from accelerate.utils import is_peft_model
from torch import nn
from transformers import AutoModelForSequenceClassification
from trl import GRPOTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import (
    add_fused_lm_head,
    disable_dropout_in_model,
    pad,
    shuffle_sequence_dict,
    split_tensor_dict,
    use_adapter,
)

from trl_ppo_plus import fast_path, ppo_math
from trl_ppo_plus.checkpointing import (  # noqa: F401 - re-exported: the names' old home
    CRITIC_ATTR,
    KL_CONTROLLER_FILE,
    ROLLOUT_STATE_FILE,
    VALUE_MODEL_DIR,
    PPOCheckpointing,
    check_checkpoint_is_complete,
)
from trl_ppo_plus.config import PPOConfig
from trl_ppo_plus.cpu_memory import set_malloc_mmap_threshold
from trl_ppo_plus.kl_control import build_kl_controller
from trl_ppo_plus.reward_norm import ScoreNormalizer
from trl_ppo_plus.validation import check_models_before_loading
from trl_ppo_plus.value import AdapterCritic, SeparateCritic, SharedTrunkCritic, critic_parameters


logger = logging.getLogger(__name__)


def _refuse_tool_calling(kwargs) -> None:
    """Tools and environments: GRPO's tool loop needs per-rollout setup our rollout does not run. Refuse them early.

    A `rollout_func` that returns an `env_mask` is supported: GAE runs over the agent's tokens only
    (`ppo_math.gae_advantages`), and the environment's tokens carry no loss.
    """
    for name in ("tools", "environment_factory"):
        if kwargs.get(name):
            raise ValueError(
                f"PPOTrainer does not support `{name}=` (got {kwargs[name]!r}): its rollout does not run GRPO's tool "
                "loop. Generate multi-turn rollouts with a `rollout_func` that returns an `env_mask` instead."
            )


def _warn_k1_in_loss(args) -> None:
    if args is not None and args.kl_penalty == "loss" and args.kl_estimator == "k1":
        warnings.warn(
            'kl_penalty="loss" with kl_estimator="k1": the k1 term has zero expected gradient (E[grad log pi] = 0), '
            'so it adds noise and no pull toward the reference. Use kl_estimator="k3" (GRPO\'s choice) in loss mode, '
            'or k1 with kl_penalty="reward".',
            UserWarning,
            stacklevel=3,
        )


def disable_all_dropout(model: nn.Module) -> None:
    """Dropout off everywhere, as TRL <= 1.12's PPOTrainer did: `nn.Dropout` modules (LoRA's included) and the
    attention dropout that HF attention layers read from a float attribute (`attention_dropout` from the config).
    With dropout the rollout's log-probs and the loss's differ, and the first mini-batch's ratio is not 1."""
    disable_dropout_in_model(model)
    for module in model.modules():
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0


class PPOTrainer(PPOCheckpointing, GRPOTrainer):
    """Proximal Policy Optimization (Schulman et al. 2017, arXiv:1707.06347) for language models, on TRL 1.16.

    A drop-in for `GRPOTrainer` (swap the class and config names) and for TRL ≤ 1.12's `PPOTrainer`:

    ```python
    >>> from trl_ppo_plus import PPOConfig, PPOTrainer
    >>> from trl_ppo_plus.rewards import math_accuracy_reward
    >>> trainer = PPOTrainer(
    ...     model="Qwen/Qwen2.5-0.5B-Instruct",
    ...     reward_funcs=math_accuracy_reward,
    ...     args=PPOConfig(output_dir="ppo-gsm8k", kl_controller="adaptive"),
    ...     train_dataset=dataset,
    ... )
    >>> trainer.train()
    ```

    Args:
        model: policy, as for `GRPOTrainer` (id, path, `PreTrainedModel` or `PeftModel`; the QLoRA policy and value
            adapters of `trl_ppo_plus.modeling.load_policy_and_value` are recognised).
        reward_funcs: as for `GRPOTrainer` (callables, reward-model ids/objects, async functions), weighted by
            `args.reward_weights`. May be omitted when `reward_model` or `args.reward_model_path` is given.
        value_model: a `AutoModelForSequenceClassification(num_labels=1)` critic (object, id or path). `None`
            (and no `args.value_model_path`): a value head on the policy's trunk, or the model's own QLoRA critic.
        ref_model: the reference policy. `None`: the policy with its adapters disabled under PEFT, else a frozen
            copy of the initial policy; none at all at a fixed `kl_coef=0` (GRPO at `beta=0` builds none either).
        reward_model: TRL ≤ 1.12's name for a reward model; appended to `reward_funcs`.
        Everything else is passed to `GRPOTrainer`.
    """

    _tag_names = ["trl", "ppo", "rlhf", "trl-ppo-plus"]
    _name = "PPO"
    _paper = {
        "title": "Proximal Policy Optimization Algorithms",
        "id": "1707.06347",
        "citation": "@article{schulman2017proximal, title={Proximal Policy Optimization Algorithms}, "
        "author={Schulman, John and Wolski, Filip and Dhariwal, Prafulla and Radford, Alec and Klimov, Oleg}, "
        "journal={arXiv preprint arXiv:1707.06347}, year={2017}}",
    }

    def __init__(
        self,
        model=None,
        reward_funcs=None,
        args: PPOConfig | None = None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        value_model=None,
        ref_model=None,
        callbacks=None,
        peft_config=None,
        reward_model=None,
        data_collator=None,
        optimizers=(None, None),
        reward_processing_classes=None,
        quantization_config=None,
        **kwargs,
    ):
        from trl_ppo_plus.legacy import adapt_legacy_call, prompts_from_input_ids, reward_processing_classes_for

        call = adapt_legacy_call(dict(locals()))  # TRL <= 1.12 positional order: (args, processing_class, model, ...)
        model, reward_funcs, args, processing_class = (
            call["model"],
            call["reward_funcs"],
            call["args"],
            call["processing_class"],
        )
        train_dataset, eval_dataset, value_model = call["train_dataset"], call["eval_dataset"], call["value_model"]
        ref_model, reward_model = call["ref_model"], call["reward_model"]
        num_proc = getattr(args, "dataset_num_proc", None)
        train_dataset = prompts_from_input_ids(train_dataset, processing_class, num_proc)
        eval_dataset = prompts_from_input_ids(eval_dataset, processing_class, num_proc)
        if args is None:
            name = model if isinstance(model, str) else getattr(model.config, "_name_or_path", "model")
            args = PPOConfig(f"{str(name).rstrip('/').split('/')[-1]}-PPO")
        if not isinstance(args, PPOConfig):
            raise TypeError(f"PPOTrainer needs a PPOConfig, got args of type {type(args).__name__}")
        if data_collator is not None:
            raise ValueError("PPOTrainer builds its own rollout batches; `data_collator` must be None.")
        _refuse_tool_calling(kwargs)
        _warn_k1_in_loss(args)
        if args.value_learning_rate is not None and call.get("optimizers", (None, None))[0] is not None:
            raise ValueError(
                f"PPOConfig.value_learning_rate={args.value_learning_rate!r} applies to the optimizer PPOTrainer "
                "builds, but `optimizers` passes one: give the critic's parameter group its rate there instead."
            )

        # Rewards: reward_funcs + TRL <= 1.12's reward_model + args.reward_model_path.
        reward_funcs = (
            [] if reward_funcs is None else list(reward_funcs) if isinstance(reward_funcs, list) else [reward_funcs]
        )
        if reward_model is not None:
            reward_funcs.append(reward_model)
        if args.reward_model_path is not None and reward_model is None:  # old scripts pass both: load it once
            reward_funcs.append(args.reward_model_path)
        if value_model is None:
            value_model = args.value_model_path
        if model is None:
            model = args.sft_model_path
        # Bad input fails here, before any model loads.
        check_models_before_loading(model, reward_funcs, value_model, processing_class, kwargs)
        reward_processing_classes = reward_processing_classes_for(
            reward_funcs, reward_processing_classes, processing_class
        )

        super().__init__(
            model=model,
            reward_funcs=reward_funcs,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            reward_processing_classes=reward_processing_classes,
            callbacks=callbacks,
            optimizers=optimizers,
            quantization_config=quantization_config,
            peft_config=peft_config,
            **kwargs,
        )
        if args.stop_token_id is not None and args.stop_token_id not in self.eos_token_ids:
            self.eos_token_ids = [*self.eos_token_ids, args.stop_token_id]
            if hasattr(self, "generation_config"):
                self.generation_config.eos_token_id = self.eos_token_ids

        if args.cpu_malloc_mmap_threshold is not None and self.accelerator.device.type == "cpu":
            set_malloc_mmap_threshold(args.cpu_malloc_mmap_threshold)  # freed activations go back to the OS
        self._setup_critic(value_model)
        if args.disable_dropout:
            disable_all_dropout(self._policy)  # critic included: the ratio is exactly 1 at the first mini-batch
        else:
            warnings.warn(
                "PPOConfig(disable_dropout=False): dropout stays on, so log-probs and values are noisy, and with "
                "num_ppo_epochs > 1 or num_mini_batches > 1 the rollout's log-probs and the loss's differ: the PPO "
                "ratio is not 1 at the first mini-batch (clipping and approxkl see dropout noise).",
                stacklevel=2,
            )
        self._setup_reference(ref_model)
        self.kl_ctl = build_kl_controller(
            args.kl_controller,
            kl_coef=args.kl_coef,
            kl_target=args.kl_target,
            kl_horizon=args.kl_horizon,
            kl_pid_kp=args.kl_pid_kp,
            kl_pid_ki=args.kl_pid_ki,
            kl_pid_kd=args.kl_pid_kd,
            kl_coef_min=args.kl_coef_min,
            kl_coef_max=args.kl_coef_max,
        )
        self.init_kl_coef = self.kl_ctl.value
        self._rollout_kl_coef = self.kl_ctl.value  # β of the rollout being trained on
        self._update_stopped_early = False
        self._rollout_is_empty = False  # no token of the rollout carries a loss: its update is skipped
        self._fast_path = fast_path.applies(args)  # the loss forward completes the rollout (`fast_path`)
        self._fast_rollout_stats: list[dict] = []  # its micro-batches' rollout tensors, until the last one
        self._episodes = 0
        self.score_normalizer = ScoreNormalizer(args.reward_normalization)
        self._train_rollouts = 0  # rollouts generated in training so far (critic warmup counts them)
        self._never_embed_pad()
        self._apply_model_adapter()
        self._bind_callbacks()
        self._set_legacy_attributes()

    # ------------------------------------------------------------------ models
    @property
    def _policy(self) -> nn.Module:
        return self.accelerator.unwrap_model(self.model)

    @property
    def critic(self) -> nn.Module:
        return getattr(self._policy, CRITIC_ATTR)

    def _setup_critic(self, value_model) -> None:
        policy = self._policy
        if getattr(policy, CRITIC_ATTR, None) is not None:  # e.g. trl_ppo_plus.modeling.load_policy_and_value
            from trl_ppo_plus.modeling import restore_trainable_dtypes

            critic = getattr(policy, CRITIC_ATTR)
            restore_trainable_dtypes(policy)  # GRPO cast a 4-bit model's trainables to bf16: the head stays fp32
        elif value_model is not None:
            if isinstance(value_model, str):
                init_kwargs = {k: v for k, v in (self.args.model_init_kwargs or {}).items() if k != "device_map"}
                value_model = AutoModelForSequenceClassification.from_pretrained(
                    value_model, num_labels=1, **init_kwargs
                )
            critic = SeparateCritic(value_model)  # its dropout goes with the policy's, below
        else:
            critic = SharedTrunkCritic(policy.config.get_text_config().hidden_size)
        if CRITIC_ATTR not in policy._modules:
            policy.add_module(CRITIC_ATTR, critic)
        critic.to(self.accelerator.device)
        (critic.head if isinstance(critic, AdapterCritic) else critic).requires_grad_(True)

    def create_optimizer(self, *args, **kwargs):
        """TRL's optimizer; with `value_learning_rate`, the critic's own parameters move to groups of their own at
        that rate (OpenRLHF's `critic_learning_rate`). The scheduler, built next, scales every group alike."""
        optimizer = super().create_optimizer(*args, **kwargs)
        if self.args.value_learning_rate is None or getattr(self, "_critic_groups_split_in", None) is optimizer:
            return optimizer  # Trainer returns the optimizer it built before: split once per optimizer
        critic_ids = {id(p) for p in critic_parameters(self._policy, self.critic)}
        if not critic_ids & {id(p) for group in optimizer.param_groups for p in group["params"]}:
            raise ValueError(
                f"PPOConfig.value_learning_rate={self.args.value_learning_rate!r}: the optimizer holds none of the "
                "critic's parameters (an optimizer built elsewhere, e.g. by a DeepSpeed config?), so it cannot apply."
            )
        for group in list(optimizer.param_groups):
            own = [p for p in group["params"] if id(p) in critic_ids]
            if own:
                group["params"] = [p for p in group["params"] if id(p) not in critic_ids]
                optimizer.add_param_group({**group, "params": own, "lr": self.args.value_learning_rate})
        optimizer.param_groups[:] = [g for g in optimizer.param_groups if g["params"]]
        self._critic_groups_split_in = optimizer
        return optimizer

    def _setup_reference(self, ref_model) -> None:
        """The reference: a given model; the adapters switched off under PEFT; or a frozen copy of the policy."""
        self._ref_adapter = self.args.ref_adapter_name
        if isinstance(ref_model, str):
            ref_model = self._load_like_policy(ref_model)
        if ref_model is None and (is_peft_model(self._policy) or not self._needs_reference()):
            self.ref_model = None
            return
        if ref_model is None:
            with self._without_critic() as _:
                ref_model = copy.deepcopy(self._policy)
            ref_model.__dict__.pop("forward", None)  # drop the copied fused-head patch; re-added below
        ref_model.eval().requires_grad_(False)
        add_fused_lm_head(ref_model, temperature=self.temperature, cast_lm_head_to_fp32=self.args.cast_lm_head_to_fp32)
        self.ref_model = self.accelerator.prepare_model(ref_model, evaluation_mode=True)

    def _load_like_policy(self, path: str) -> nn.Module:
        from trl.trainer.utils import create_model_from_path

        init_kwargs = dict(self.args.model_init_kwargs or {})
        init_kwargs.setdefault("trust_remote_code", self.args.trust_remote_code)
        return create_model_from_path(path, **init_kwargs)

    def _needs_reference(self) -> bool:
        return not (self.args.kl_controller == "fixed" and self.args.kl_coef == 0.0)

    @contextlib.contextmanager
    def _without_critic(self):
        """Temporarily detach the critic from the policy (to save / load / copy the policy alone)."""
        policy = self._policy
        critic = policy._modules.pop(CRITIC_ATTR, None)
        try:
            yield critic
        finally:
            if critic is not None:
                policy._modules[CRITIC_ATTR] = critic

    # ------------------------------------------------------------------ TRL <= 1.12 scripts and HF conventions
    def _never_embed_pad(self) -> None:
        """A pad token added at run time has no embedding row: map it to a valid one in every model (TRL <= 1.12)."""
        from trl_ppo_plus.legacy import embeddable_pad_id, never_embed_pad

        pad_token_id = self._tokenizer.pad_token_id
        models = [self._policy, self.critic.model if isinstance(self.critic, SeparateCritic) else None]
        models.append(self.accelerator.unwrap_model(self.ref_model) if self.ref_model is not None else None)
        for model in filter(None, models):
            never_embed_pad(model, pad_token_id)
        for func, tokenizer in zip(self.reward_funcs, self.reward_processing_classes):
            if isinstance(func, nn.Module) and tokenizer is not None:
                never_embed_pad(self.accelerator.unwrap_model(func), tokenizer.pad_token_id)
        self._pad_id = embeddable_pad_id(self._tokenizer, self._policy)  # pads the rollout's token ids

    def _apply_model_adapter(self) -> None:
        """TRL <= 1.12's `model_adapter_name`: train that adapter of a multi-adapter PEFT policy."""
        name = self.args.model_adapter_name
        if name is None:
            return
        adapters = list(getattr(self._policy, "peft_config", {}) or {})
        if name not in adapters:
            raise ValueError(
                f"PPOConfig.model_adapter_name={name!r} is not an adapter of the policy (its adapters: {adapters}); "
                f"pass a PEFT model that has it, or leave model_adapter_name=None."
            )
        self._policy.set_adapter(name)

    def _bind_callbacks(self) -> None:
        """Bind callbacks that log through their trainer (`VerifiableEvalCallback`, ...), the HF `callbacks=[...]` way.

        A callback reused from an earlier trainer (a sweep passing the same instance to each run) is bound again: the
        trainer whose `callbacks` hold it is the one it evaluates and logs into."""
        for callback in list(self.callback_handler.callbacks):
            for needs_trainer in (callback, getattr(callback, "eval_callback", None)):  # CompletionSamplesCallback's
                if hasattr(needs_trainer, "bind") and getattr(needs_trainer, "trainer", None) is not self:
                    needs_trainer.bind(self)  # also registers it when it was not in `callbacks`

    def _set_legacy_attributes(self) -> None:
        """`trainer.model.policy` and `trainer.model.value_model`, which TRL <= 1.12 scripts and tests read."""
        from trl_ppo_plus.legacy import set_legacy_attributes

        critic = self.critic
        set_legacy_attributes(self._policy, critic.model if isinstance(critic, SeparateCritic) else critic)

    # ------------------------------------------------------------------ forward passes
    def _policy_logps_and_values(
        self, model, input_ids, attention_mask, logits_to_keep, batch_size, entropy=False, detach_trunk=False
    ):
        """Per-token log-probs `(B, C)`, entropies `(B, C)` or None, and values `(B, C)` of the completion.
        `detach_trunk`: a value head on the policy's trunk reads it without passing gradients into it."""
        critic = self.critic
        if critic.shares_policy_forward:  # one pass: the head reads the trunk's hidden states
            with critic.capture(self._policy) as captured:
                logps, ent, _ = self._get_per_token_logps_and_entropies(
                    model, input_ids, attention_mask, logits_to_keep, batch_size, compute_entropy=entropy
                )
            if detach_trunk:
                captured = [hidden.detach() for hidden in captured]
            return logps, ent, critic.values_from_capture(captured, logits_to_keep)
        logps, ent, _ = self._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, logits_to_keep, batch_size, compute_entropy=entropy
        )
        step = batch_size or input_ids.size(0)
        values = torch.cat(
            [
                critic(self._policy, input_ids[i : i + step], attention_mask[i : i + step], logits_to_keep)
                for i in range(0, input_ids.size(0), step)
            ]
        )
        return logps, ent, values

    def _reference_logps(self, input_ids, attention_mask, logits_to_keep, batch_size):
        if self.ref_model is not None:
            model, ctx = self.ref_model, contextlib.nullcontext()
        elif is_peft_model(self._policy) and self._needs_reference():  # at a fixed β = 0, no KL: no forward (GRPO)
            model, ctx = self.model, use_adapter(self._policy, adapter_name=self._ref_adapter)
        else:
            return None
        with ctx:
            logps, _, _ = self._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size
            )
        return logps

    # ------------------------------------------------------------------ rollout
    def _generate_and_score_completions(self, inputs):
        """One PPO rollout (issue #3, steps 1–7), returning the tensors `_compute_loss` trains on.

        On the fast path (`trl_ppo_plus.fast_path`) it returns after scoring: the loss forward completes it."""
        from trl_ppo_plus.rollout import pad_rollout, score_and_log

        device = self.accelerator.device
        mode = "train" if self.model.training else "eval"
        prompts = [x["prompt"] for x in inputs]
        prompt_ids_list, completion_ids_list, tool_mask_list, completions, _, extra, _, _ = self._generate(prompts)

        prompt_ids, prompt_mask, completion_ids, completion_mask = (
            t.to(device) for t in pad_rollout(prompt_ids_list, completion_ids_list, self._pad_id)
        )
        self._check_context_length(prompt_ids.size(1), completion_ids.size(1))
        ended = torch.tensor([len(c) > 0 and c[-1] in self.eos_token_ids for c in completion_ids_list], device=device)
        if self.mask_truncated_completions:
            completion_mask = completion_mask * ended.unsqueeze(1).long()
        loss_mask = completion_mask.float()
        if tool_mask_list is not None:  # a rollout_func's env_mask: environment tokens carry no loss
            env_mask = pad([torch.tensor(m, dtype=torch.long) for m in tool_mask_list], 1)
            loss_mask = loss_mask * env_mask.to(device).float()

        for i, example in enumerate(inputs):  # fields returned by a rollout_func reach the reward functions
            for key, value in extra.items():
                example[key] = value[i] if isinstance(value, list) else value
        rewards_per_func = self._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        local = slice(
            self.accelerator.process_index * len(prompts), (self.accelerator.process_index + 1) * len(prompts)
        )
        scores, scorable = score_and_log(self, mode, rewards_per_func, local, prompts, completions)
        if self.args.missing_eos_penalty is not None:
            scores = scores - self.args.missing_eos_penalty * (~ended).float()  # TRL's missing_eos_penalty
        loss_mask = loss_mask * scorable.unsqueeze(1).float()  # completions no reward function scored: no signal
        batch = {
            "prompt_ids": prompt_ids,
            "prompt_mask": prompt_mask,
            "completion_ids": completion_ids,
            "completion_mask": completion_mask,
            "loss_mask": loss_mask,
            "scores": scores,  # (B,) the three per-row entries leave the batch when its tokens are scored
            "rl_scores": self._normalize_scores(mode, scores, scorable),
            "ended": ended,
        }
        if mode == "train":
            self._rollout_kl_coef = self.kl_ctl.value  # this rollout's β: the controller's value at rollout time
            self._update_stopped_early = False
            self._fast_rollout_stats = []  # none left over from a rollout cut short (interrupted, then resumed)
            self._train_rollouts += 1
            if self._fast_path and self.accelerator.gather(loss_mask.any(dim=1).sum().view(1)).sum() > 0:
                self._rollout_is_empty = False
                return batch  # `fast_path.complete_rollout` finishes it from the loss forward

        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)  # (B, P+C)
        attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)  # (B, P+C)
        logits_to_keep = completion_ids.size(1)
        forward_bs = self.args.local_rollout_forward_batch_size or (
            self.args.per_device_train_batch_size if mode == "train" else self.args.per_device_eval_batch_size
        )
        with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            old_logps, entropies, values = self._policy_logps_and_values(
                self.model, input_ids, attention_mask, logits_to_keep, forward_bs, entropy=True
            )
            ref_logps = self._reference_logps(input_ids, attention_mask, logits_to_keep, forward_bs)
        beta = self.kl_ctl.value  # not updated yet: `_log_rollout` updates it
        self._log_rollout(mode, beta, **self._score_tokens(batch, old_logps, entropies, values, ref_logps, beta))
        return batch

    def _score_tokens(self, batch, old_logps, entropies, values, ref_logps, beta) -> dict:
        """Steps 4–6 on `batch` (a rollout, or one micro-batch of it on the fast path), in place: the KL, per-token
        rewards, GAE advantages and returns. Returns the tensors the rollout's metrics are computed from."""
        loss_mask = batch["loss_mask"]
        ref_logps = old_logps if ref_logps is None else ref_logps
        kl = ppo_math.kl_estimate(old_logps, ref_logps, self.args.kl_estimator) * loss_mask  # (B, C)
        rewards, non_score_reward, advantages, returns = self._advantages_and_returns(
            batch.pop("rl_scores"), kl, values, loss_mask, beta
        )
        batch.update(old_per_token_logps=old_logps, ref_per_token_logps=ref_logps, old_values=values)
        batch.update(rewards=rewards, advantages=advantages, returns=returns)
        return {
            "scores": batch.pop("scores"),
            "kl": kl,
            "non_score_reward": non_score_reward,
            "entropies": entropies,
            "mask": loss_mask,
            "ended": batch.pop("ended"),
            "values": values,
            "returns": returns,
        }

    def _check_context_length(self, prompt_length: int, completion_length: int) -> None:
        """A prompt that does not fit the model's context with its completion: a clear error, not silent garbage."""
        limit = getattr(self._policy.config.get_text_config(), "max_position_embeddings", None)
        if limit is not None and prompt_length + completion_length > limit:
            raise ValueError(
                f"The longest prompt of this batch has {prompt_length} tokens; with completions of up to "
                f"{completion_length} tokens (max_completion_length={self.args.max_completion_length}) that exceeds "
                f"the model's context, max_position_embeddings={limit}. Shorten or filter the prompts, or lower "
                "max_completion_length."
            )

    def _normalize_scores(self, mode, scores, scorable):
        """Scores on the scale β is calibrated for (`reward_normalization`, Ziegler et al. 2019 arXiv:1909.08593)."""
        if self.args.reward_normalization == "none":
            return scores
        if mode == "train":  # statistics from every process's scored completions: the same gain on every rank
            gathered = self.accelerator.gather(scores.masked_fill(~scorable, float("nan")))
            self.score_normalizer.update(gathered[~torch.isnan(gathered)])
        self._metrics[mode]["objective/score_gain"].append(self.score_normalizer.gain)
        return self.score_normalizer(scores, update=False)

    def _advantages_and_returns(self, scores, kl, values, loss_mask, beta):
        """Per-token rewards (−β·KL in reward mode, + the score), GAE and whitening. All `(B, C)`."""
        reward_beta = beta if self.args.kl_penalty == "reward" else 0.0
        rewards, non_score_reward = ppo_math.per_token_rewards(scores, kl, loss_mask, reward_beta)
        has_tokens = bool(loss_mask.any())  # whitening nothing is undefined; the update is then skipped
        if self.args.whiten_rewards and has_tokens:
            rewards = ppo_math.masked_whiten(rewards, loss_mask, shift_mean=False)
        advantages, returns = self._gae(rewards, values, loss_mask)
        if self.args.whiten_advantages and has_tokens:
            advantages = ppo_math.masked_whiten(advantages, loss_mask)
        return rewards, non_score_reward, advantages, returns

    def _gae(self, rewards, values, mask):
        """GAE advantages with the policy's λ (`lam`, or VAPO's length-adaptive λ) and returns with the critic's."""
        args = self.args
        lam_actor = args.lam
        if args.lam_actor_length_alpha is not None:  # VAPO length-adaptive λ: arXiv:2504.05118
            lam_actor = ppo_math.length_adaptive_lam(mask, args.lam_actor_length_alpha)
        advantages, returns = ppo_math.gae_advantages(rewards, values, mask, args.gamma, lam_actor)
        lam_critic = args.lam if args.lam_critic is None else args.lam_critic
        if args.lam_actor_length_alpha is not None or lam_critic != lam_actor:  # decoupled λ: VAPO
            _, returns = ppo_math.gae_advantages(rewards, values, mask, args.gamma, lam_critic)
        return advantages, returns

    def _in_critic_warmup(self, mode: str) -> bool:
        """The first `critic_warmup_rollouts` training rollouts update the critic only (OpenRLHF, veRL)."""
        return mode == "train" and self._train_rollouts <= self.args.critic_warmup_rollouts

    def _log_rollout(self, mode, beta, scores, kl, non_score_reward, entropies, mask, ended, values, returns) -> None:
        """Rollout metrics, and the KL controller's update. KL, entropy, scores and non-score reward are averaged over
        the rows that carry a loss: unscored or masked (truncated) rows have KL 0 by construction and would dilute
        what the controller sees, and one set of rows keeps `objective/rlhf_reward` = `objective/scores` +
        `objective/non_score_reward`."""
        gather = self.accelerator.gather
        explained = ppo_math.explained_variance(values, returns, mask)  # critic health, as veRL / CleanRL
        self._metrics[mode]["val/explained_variance"].append(gather(explained).nanmean().item())
        rows = mask.any(dim=1).float()  # (B,) rows with at least one token in the loss
        per_row = torch.stack([kl.sum(1), (entropies * mask).sum(1), non_score_reward.sum(1), scores])  # (4, B)
        totals = gather(torch.cat([(per_row * rows).sum(1), rows.sum().view(1)]).unsqueeze(0)).sum(0)  # sum ranks
        n_rows = int(totals[-1].item())
        seq_kl, entropy, non_score, score = (totals[:4] / max(n_rows, 1)).tolist()
        metrics = self._metrics[mode]
        metrics["objective/kl"].append(seq_kl)  # KL summed over each completion, the controllers' measure
        metrics["objective/entropy"].append(entropy)
        metrics["objective/non_score_reward"].append(non_score)
        metrics["objective/rlhf_reward"].append(score + non_score)
        metrics["objective/scores"].append(score)
        metrics["objective/kl_coef"].append(beta)
        metrics["val/num_eos_tokens"].append(gather(ended.float()).sum().item())
        if mode == "train":
            n_steps = int(gather(torch.tensor([ended.numel()], device=ended.device)).sum())  # episodes, all ranks
            self._episodes += n_steps
            metrics["episode"] = [self._episodes]  # a running count, not averaged over the logging window
            self._rollout_is_empty = n_rows == 0
            metrics["policy/skipped_update"].append(float(self._rollout_is_empty))
            if self._rollout_is_empty:  # nothing to learn from, and no KL to steer β with
                logger.warning(
                    "Step %d: no completion of this rollout carries a loss (all unscored, or all truncated under "
                    "mask_truncated_completions); its update is skipped.",
                    self.state.global_step,
                )
                return
            self.kl_ctl.update(seq_kl, n_steps)  # same value on every rank: β stays in sync
            metrics["objective/kl_error"].append(float(self.kl_ctl.error))

    # ------------------------------------------------------------------ loss
    def _prepare_inputs(self, generation_batch):
        """GRPO's rollout buffer, with the mini-batch partition reshuffled at the start of every PPO epoch."""
        steps = self.args.steps_per_generation  # micro-batches per PPO epoch
        position = self._step % (steps * self.num_iterations)  # micro-batch index within this rollout's update
        if self.model.training and self._buffered_inputs is not None and position > 0 and position % steps == 0:
            self._buffered_inputs = self._reshuffled(self._buffered_inputs)  # a new epoch over the same rollout
        return super()._prepare_inputs(generation_batch)

    @staticmethod
    def _reshuffled(micro_batches: list[dict]) -> list[dict]:
        """The same rows, in a new random order, split into as many micro-batches (as TRL <= 1.12 did per epoch)."""
        rollout = {key: torch.cat([mb[key] for mb in micro_batches]) for key in micro_batches[0]}
        return split_tensor_dict(shuffle_sequence_dict(rollout), len(micro_batches))

    def training_step(self, model, inputs, num_items_in_batch):
        if self.model.training and self._update_is_skipped() and not self._starts_a_rollout():
            self._step += 1  # keep GRPO's rollout bookkeeping moving; no forward, no gradient
            return torch.tensor(0.0, device=self.accelerator.device)
        loss = super().training_step(model, inputs, num_items_in_batch)  # may generate a new rollout first
        if self.model.training and self._update_is_skipped():  # nothing to train on, or target_kl_early_stop tripped
            model.zero_grad(set_to_none=True)  # drop this mini-batch's gradients: the optimizer step skips them
        return loss

    def _update_is_skipped(self) -> bool:
        return self._update_stopped_early or self._rollout_is_empty

    def _starts_a_rollout(self) -> bool:
        """GRPO's `_prepare_inputs` generates a new rollout at this micro-batch."""
        generate_every = self.args.steps_per_generation * self.num_iterations
        return self._step % generate_every == 0 or self._buffered_inputs is None

    def _compute_loss(self, model, inputs):
        """Clipped policy loss + vf_coef · clipped value loss − entropy_coef · entropy (+ β·KL in loss mode)."""
        mode = "train" if self.model.training else "eval"
        args = self.args
        input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        logits_to_keep = inputs["completion_ids"].size(1)
        mask = inputs["loss_mask"]
        warmup = self._in_critic_warmup(mode)  # the value loss alone, and it must not move a shared trunk either

        completes_rollout = "advantages" not in inputs  # the fast path: this forward is also the rollout's
        if completes_rollout:  # the reference first: nothing may change the model between this forward and backward
            ref_logps = fast_path.reference_logps(self, input_ids, attention_mask, logits_to_keep)
        logps, entropies, values = self._policy_logps_and_values(
            model, input_ids, attention_mask, logits_to_keep, None, entropy=True, detach_trunk=warmup
        )
        if completes_rollout:
            fast_path.complete_rollout(self, inputs, logps, entropies, values, ref_logps)
        pg_loss, pg_info = ppo_math.policy_loss(
            logps,
            inputs["old_per_token_logps"],
            inputs["advantages"],
            mask,
            args.cliprange,
            cliprange_high=args.cliprange_high,
            dual_clip=args.dual_clip,
            loss_aggregation=args.loss_aggregation,
        )
        vf_loss, vf_info = ppo_math.value_loss(
            values,
            inputs["old_values"],
            inputs["returns"],
            mask,
            args.cliprange_value,
            clip=args.clip_value_loss,
            huber_delta=args.value_huber_delta,
        )
        entropy = ppo_math.masked_mean(entropies, mask)
        loss = pg_loss + args.vf_coef * vf_loss
        if args.entropy_coef:  # keep the entropy out of the graph when it has no weight
            loss = loss - args.entropy_coef * entropy
        if args.kl_penalty == "loss":
            kl_loss = ppo_math.kl_penalty_loss(logps, inputs["ref_per_token_logps"], mask, args.kl_estimator)
            loss = loss + self._rollout_kl_coef * kl_loss
        if warmup:
            loss = args.vf_coef * vf_loss  # critic warmup: value-only updates, the policy frozen (OpenRLHF, veRL)
        if mode == "train":
            loss = loss / self.current_gradient_accumulation_steps  # GRPO scales for gradient accumulation itself

        def mean_over_ranks(x) -> float:
            return self.accelerator.gather(torch.as_tensor(x, device=self.accelerator.device).float()).mean().item()

        metrics = self._metrics[mode]
        approxkl = mean_over_ranks(pg_info["approxkl"])
        metrics["policy/approxkl_avg"].append(approxkl)
        metrics["policy/clipfrac_avg"].append(mean_over_ranks(pg_info["clipfrac"]))
        metrics["policy/entropy_avg"].append(mean_over_ranks(entropy.detach()))
        metrics["loss/policy_avg"].append(mean_over_ranks(pg_loss.detach()))
        metrics["loss/value_avg"].append(mean_over_ranks(vf_loss.detach()))
        metrics["val/clipfrac_avg"].append(mean_over_ranks(vf_info["vf_clipfrac"]))
        metrics["val/ratio"].append(mean_over_ranks(pg_info["ratio"]))
        metrics["val/ratio_var"].append(mean_over_ranks(pg_info["ratio_var"]))
        if mode == "train" and args.target_kl_early_stop is not None and approxkl > 1.5 * args.target_kl_early_stop:
            # Spinning Up: stop the update *before* the step whose KL is too large. `training_step` drops the
            # gradients; the zero here keeps every parameter in the graph (DDP expects a backward through all).
            self._update_stopped_early = True
            metrics["policy/early_stop"].append(1.0)
            return loss * 0.0
        return loss

    def generate_completions(self, sampling: bool = False) -> list[dict]:
        """TRL <= 1.12's API: complete a few eval prompts with the current policy, score and print them."""
        from trl_ppo_plus.legacy import generate_completions

        return generate_completions(self, sampling=sampling)
