"""Held-out accuracy during training: generate on an eval set with the current policy and score it with the
verifiable reward functions used for training. Logs `eval/accuracy`, `eval/pass@k`, `eval/maj@k`, `eval/mean_length`.

How it plugs into a trainer (numbered, because the order matters):
1. The callback is a `transformers.TrainerCallback`, but callbacks do not receive the trainer, and logging into
   `state.log_history` *and* the `report_to` backends needs `trainer.log`. So the callback is bound to its trainer.
   `PPOTrainer(..., callbacks=[VerifiableEvalCallback(...)])` binds it at construction, the ordinary HF way. Other
   trainers take TRL's `trainer=` convention: `VerifiableEvalCallback(..., trainer=trainer)` (which also registers
   it), or `VerifiableEvalCallback(...).bind(trainer)`.
2. `on_train_begin` evaluates once (the baseline, at step 0 for a fresh run); `on_step_end` every `eval_steps` and at
   the last step. `on_step_end` runs before the trainer's own logging and checkpointing of that step.
3. Results go through `transformers.Trainer.log`, not through `trainer.log`: `GRPOTrainer.log` (and PPOTrainer's)
   would merge the trainer's buffered training metrics into our eval entry and clear that buffer, and would prefix
   everything with `eval_` while the model is in eval mode. The base `Trainer.log` appends one entry to
   `state.log_history` and fires `on_log` for every callback (wandb, trackio, tensorboard, ...), so both trainers
   behave the same.
4. The last results stay on the callback (`last_results`) for `CompletionSamplesCallback`: one source of truth.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import transformers
from transformers import GenerationConfig, TrainerCallback
from transformers.utils import logging

from trl_ppo_plus.metrics.estimators import mean_maj_at_k, mean_pass_at_k


logger = logging.get_logger(__name__)

RewardFunc = Callable[..., list[float | None]]


@dataclass
class EvalResults:
    """One evaluation: the logged metrics and one record per completion (prompt, completion, rewards, correctness)."""

    step: int
    metrics: dict[str, float]
    records: list[dict[str, Any]] = field(default_factory=list)
    reward_names: list[str] = field(default_factory=list)


def _reward_name(func) -> str:
    # TRL's naming: functions by `__name__`, callable objects by their class name.
    return getattr(func, "__name__", None) or type(func).__name__


def _default_answer_extractor() -> Callable[[str], Any]:
    try:
        from trl_ppo_plus.rewards import extract_answer  # lazy: the math rewards pull in math-verify

        return extract_answer
    except (ImportError, AttributeError):
        return str.strip


class VerifiableEvalCallback(TrainerCallback):
    """Evaluate the policy on a held-out set with verifiable rewards, before training and every `eval_steps`.

    A completion counts as **correct** when the reward of `reward_funcs[accuracy_reward_index]` (the first function by
    default, so list the accuracy reward first and format rewards after it) is `>= correct_threshold` (default `1.0`,
    what `accuracy_reward`-style functions give a right answer). `None` rewards count as wrong. The other functions
    are still scored, logged as `eval/rewards/<name>/mean` and shown by `CompletionSamplesCallback`.

    Logged metrics (step = the trainer's `global_step`):
    - `eval/accuracy`: pass@1; from the greedy completion when `greedy=True`, else the mean over the samples.
    - `eval/pass@<k>` for each k in `pass_k` (defaults to `(num_samples,)`; only when `num_samples > 1`): the unbiased
      estimator of Chen et al. 2021, 1 - C(n - c, k) / C(n, k), averaged over prompts.
    - `eval/maj@<n>` (`num_samples > 1`): majority vote over the answers extracted from the n samples.
    - `eval/mean_length`: mean completion length in tokens (EOS included), same completions as `eval/accuracy`.
    - `eval/rewards/<name>/mean`: mean of each reward function.

    Args:
        eval_dataset: a `datasets.Dataset` (or list of dicts) with a `prompt` column, plain text or conversational,
            plus the columns the reward functions need (e.g. `solution`). Keep it small: it is generated on in full.
        reward_funcs: a reward function or a list of them, with TRL's signature
            `f(prompts=, completions=, completion_ids=, **columns) -> list[float | None]`. Usually the training ones.
        num_samples: samples per prompt for pass@k and maj@k (`temperature`-sampled). `1` with `greedy=True`: greedy
            only.
        eval_steps: evaluate every this many optimizer steps (and at the last step).
        max_new_tokens: completion budget; match the training `max_completion_length`.
        temperature: sampling temperature for the k samples. 0.6 to 1.0 is usual (Chen et al. 2021 use 0.8).
        top_p: nucleus sampling for the k samples.
        batch_size: prompts per `generate` call (each expands to `num_samples` sequences when sampling).
        greedy: also decode greedily, and report `eval/accuracy` from it.
        correct_threshold: reward at or above which a completion is correct.
        accuracy_reward_index: which reward function decides correctness.
        answer_extractor: `str -> answer` for maj@k voting. Defaults to `trl_ppo_plus.rewards.extract_answer`, or the
            stripped completion when that is not available.
        pass_k: the k values to report pass@k for; each must be `<= num_samples`.
        eval_on_start: run the baseline evaluation before the first step.
        seed: seeds the sampling; the training RNG streams are left untouched (`torch.random.fork_rng`).
        trainer: the trainer to log through (TRL's convention); or call `bind(trainer)` later. `PPOTrainer` binds
            the callbacks it is given in `callbacks=[...]` itself.

    Usage:
    ```python
    from trl import GRPOConfig, GRPOTrainer
    from trl.rewards import accuracy_reward
    from trl_ppo_plus import PPOConfig, PPOTrainer
    from trl_ppo_plus.callbacks import VerifiableEvalCallback

    # PPOTrainer: the ordinary HF way, bound at construction
    evaluator = VerifiableEvalCallback(test, [accuracy_reward], num_samples=8, eval_steps=50)
    trainer = PPOTrainer(model=..., reward_funcs=[accuracy_reward], args=PPOConfig(...), train_dataset=train,
                         callbacks=[evaluator])

    # Other trainers: TRL's `trainer=` convention (registers the callback too)
    trainer = GRPOTrainer(model=..., reward_funcs=[accuracy_reward], args=GRPOConfig(...), train_dataset=train)
    VerifiableEvalCallback(test, [accuracy_reward], num_samples=8, eval_steps=50, trainer=trainer)
    trainer.train()  # log_history gets eval/accuracy, eval/pass@8, eval/maj@8, eval/mean_length at step 0, 50, ...
    ```
    """

    def __init__(
        self,
        eval_dataset,
        reward_funcs: RewardFunc | Sequence[RewardFunc],
        num_samples: int = 1,
        eval_steps: int = 50,
        max_new_tokens: int = 256,
        temperature: float = 0.8,
        top_p: float = 1.0,
        batch_size: int = 8,
        greedy: bool = True,
        correct_threshold: float = 1.0,
        accuracy_reward_index: int = 0,
        answer_extractor: Callable[[str], Any] | None = None,
        pass_k: Sequence[int] | None = None,
        eval_on_start: bool = True,
        seed: int = 0,
        trainer: transformers.Trainer | None = None,
    ):
        self.reward_funcs = [reward_funcs] if callable(reward_funcs) else list(reward_funcs)
        if not self.reward_funcs or not all(callable(f) for f in self.reward_funcs):
            raise TypeError("reward_funcs must be one or more callables with TRL's reward-function signature")
        if not 0 <= accuracy_reward_index < len(self.reward_funcs):
            raise ValueError(f"accuracy_reward_index={accuracy_reward_index} but {len(self.reward_funcs)} functions")
        if num_samples < 1 or eval_steps < 1 or batch_size < 1:
            raise ValueError("num_samples, eval_steps and batch_size must be >= 1")
        self.pass_k = tuple(pass_k) if pass_k is not None else ((num_samples,) if num_samples > 1 else ())
        if any(not 1 <= k <= num_samples for k in self.pass_k):
            raise ValueError(f"every k in pass_k={self.pass_k} must be in [1, num_samples={num_samples}]")
        self.examples = [dict(row) for row in eval_dataset]
        if not self.examples or "prompt" not in self.examples[0]:
            raise ValueError("eval_dataset must be non-empty and have a 'prompt' column")
        self.reward_names = [_reward_name(f) for f in self.reward_funcs]
        self.num_samples = num_samples
        self.eval_steps = eval_steps
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.batch_size = batch_size
        self.greedy = greedy
        self.correct_threshold = correct_threshold
        self.accuracy_reward_index = accuracy_reward_index
        self.answer_extractor = answer_extractor
        self.eval_on_start = eval_on_start
        self.seed = seed
        self.trainer = None
        self.last_results: EvalResults | None = None
        self._last_eval_step = -1
        if trainer is not None:
            self.bind(trainer)

    def bind(self, trainer: transformers.Trainer) -> VerifiableEvalCallback:
        """Log through `trainer`, and register with it if it does not hold this callback yet. Returns `self`."""
        self.trainer = trainer
        if self not in trainer.callback_handler.callbacks:
            trainer.add_callback(self)
        return self

    # ---- hooks -------------------------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, **kwargs):
        if self.trainer is None:
            raise RuntimeError(
                "VerifiableEvalCallback is not bound to a trainer: pass it to PPOTrainer(callbacks=[...]), or, for "
                "other trainers, construct it with `trainer=trainer` (or call `callback.bind(trainer)`) before `train()`"
            )
        if self.eval_on_start:
            self._evaluate_and_log(state)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.eval_steps == 0 or state.global_step >= state.max_steps:
            self._evaluate_and_log(state)

    def _evaluate_and_log(self, state) -> None:
        if state.global_step == self._last_eval_step:
            return
        self._last_eval_step = state.global_step
        results = self.evaluate(step=state.global_step)
        # `CallbackHandler.on_log` clears `control.should_log`, which `DefaultFlowCallback.on_step_end` may just have
        # set for this step's training log: keep it, or the trainer would skip (and merge away) that entry.
        should_log = self.trainer.control.should_log
        # Trainer.log itself runs on every rank (backends report from rank 0 only); so do we.
        transformers.Trainer.log(self.trainer, dict(results.metrics))  # see the module docstring, point 3
        self.trainer.control.should_log = should_log or self.trainer.control.should_log

    # ---- evaluation ----------------------------------------------------------------------------------------------
    def evaluate(self, step: int | None = None) -> EvalResults:
        """Generate, score and aggregate on the whole eval set; store and return the results (no logging)."""
        trainer = self.trainer
        if trainer is None:
            raise RuntimeError("bind the callback to a trainer first: `callback.bind(trainer)`")
        step = trainer.state.global_step if step is None else step
        accelerator = trainer.accelerator
        indices, is_pad = self._shard(len(self.examples), accelerator.num_processes, accelerator.process_index)

        modes = [("greedy", 1)] if self.greedy else []
        if self.num_samples > 1 or not self.greedy:  # with greedy=True, one sample adds nothing
            modes.append(("sample", self.num_samples))
        records = []
        for mode, n in modes:
            records += self._generate_and_score(indices, is_pad, mode, n, step, state=trainer.state)
        if accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            records = gather_object(records)
        records = sorted((r for r in records if not r.pop("_pad")), key=lambda r: (r["kind"], r["index"], r["sample"]))

        self.last_results = EvalResults(step, self._aggregate(records), records, list(self.reward_names))
        return self.last_results

    @staticmethod
    def _shard(n: int, world: int, rank: int) -> tuple[list[int], list[bool]]:
        # Equal-length shards (padded by repeating the last index) so that every rank calls `generate` as often as the
        # others: ZeRO-3 generation is collective. Padding rows are dropped after the gather.
        per_rank = math.ceil(n / world)
        own = list(range(rank * per_rank, min(n, (rank + 1) * per_rank)))
        return own + [n - 1] * (per_rank - len(own)), [False] * len(own) + [True] * (per_rank - len(own))

    def _generate_and_score(self, indices, is_pad, mode, n, step, state) -> list[dict[str, Any]]:
        trainer = self.trainer
        tokenizer = getattr(trainer.processing_class, "tokenizer", trainer.processing_class)
        examples = [self.examples[i] for i in indices]
        chat_kwargs = getattr(trainer.args, "chat_template_kwargs", None) or {}
        completion_ids = self._generate([ex["prompt"] for ex in examples], tokenizer, n, mode, chat_kwargs)

        # One row per completion: prompt i's samples are rows i*n ... i*n + n - 1, TRL's layout.
        rows = [ex for ex in examples for _ in range(n)]
        conversational = isinstance(rows[0]["prompt"], list)
        texts = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
        completions = [[{"role": "assistant", "content": t}] for t in texts] if conversational else texts
        prompts = [r["prompt"] for r in rows]
        columns = {key: [r[key] for r in rows] for key in rows[0] if key not in ("prompt", "completion")}
        rewards = [
            self._call_reward(f, prompts, completions, completion_ids, columns, state) for f in self.reward_funcs
        ]
        extract = self.answer_extractor or _default_answer_extractor()

        records = []
        for j, text in enumerate(texts):
            per_func = {name: rewards[i][j] for i, name in enumerate(self.reward_names)}
            decisive = rewards[self.accuracy_reward_index][j]
            records.append(
                {
                    "step": step,
                    "kind": mode,
                    "index": indices[j // n],
                    "sample": j % n,
                    "prompt": prompts[j],
                    "completion": text,
                    "rewards": per_func,
                    "correct": decisive is not None and decisive >= self.correct_threshold,
                    "answer": extract(text),
                    "length": len(completion_ids[j]),
                    "_pad": is_pad[j // n],
                }
            )
        return records

    def _call_reward(self, func, prompts, completions, completion_ids, columns, state) -> list[float | None]:
        kwargs = dict(columns, trainer_state=state, log_extra=lambda *a, **k: None, log_metric=lambda *a, **k: None)
        out = func(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs)
        if inspect.isawaitable(out):  # async reward functions, as GRPOTrainer allows: on its event loop if it has one
            loop = getattr(self.trainer, "async_loop", None)
            out = asyncio.run_coroutine_threadsafe(out, loop).result() if loop is not None else asyncio.run(out)
        out = list(out)
        if len(out) != len(prompts):
            raise ValueError(f"reward function {_reward_name(func)!r} returned {len(out)} rewards for {len(prompts)}")
        return [None if r is None or (isinstance(r, float) and math.isnan(r)) else float(r) for r in out]

    def _generate(self, prompts, tokenizer, n, mode, chat_kwargs) -> list[list[int]]:
        from trl.models import unwrap_model_for_generation

        trainer = self.trainer
        if isinstance(prompts[0], list):
            texts = [
                tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False, **chat_kwargs)
                for p in prompts
            ]
            add_special_tokens = False  # the template already has them
        else:
            texts, add_special_tokens = list(prompts), True

        with unwrap_model_for_generation(
            trainer.model_wrapped,
            trainer.accelerator,
            gather_deepspeed3_params=getattr(trainer.args, "ds3_gather_for_generation", True),
        ) as model:
            eos = model.generation_config.eos_token_id if model.generation_config is not None else None
            eos_ids = {tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos])} - {None}
            sampling = {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "top_k": 0}
            gen_config = GenerationConfig(
                max_new_tokens=self.max_new_tokens,
                num_return_sequences=n,
                pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos_ids),
                eos_token_id=sorted(eos_ids),
                **(sampling if mode == "sample" else {"do_sample": False}),
            )
            device = next(model.parameters()).device
            fork_devices = [device.index or 0] if device.type == "cuda" else []
            was_training, padding_side = model.training, tokenizer.padding_side
            tokenizer.padding_side = "left"  # decoder-only generation continues from the right edge
            model.eval()
            out = []
            try:
                with torch.no_grad(), torch.random.fork_rng(devices=fork_devices):
                    torch.manual_seed(self.seed)
                    for start in range(0, len(texts), self.batch_size):
                        batch = tokenizer(
                            texts[start : start + self.batch_size],
                            return_tensors="pt",
                            padding=True,
                            add_special_tokens=add_special_tokens,
                        ).to(device)
                        seqs = model.generate(**batch, generation_config=gen_config)
                        completion = seqs[:, batch["input_ids"].shape[1] :].cpu()  # (B*n, T)
                        for row in completion.tolist():
                            cut = next((t + 1 for t, tok in enumerate(row) if tok in eos_ids), len(row))
                            out.append(row[:cut])  # up to and including the first EOS, as GRPOTrainer does
            finally:
                tokenizer.padding_side = padding_side
                model.train(was_training)
        return out

    def _aggregate(self, records) -> dict[str, float]:
        metrics = {}
        head_kind = "greedy" if self.greedy else "sample"
        head = [r for r in records if r["kind"] == head_kind]
        metrics["eval/accuracy"] = sum(r["correct"] for r in head) / len(head)
        metrics["eval/mean_length"] = sum(r["length"] for r in head) / len(head)
        samples = [r for r in records if r["kind"] == "sample"]
        if self.num_samples > 1 and samples:
            by_prompt: dict[int, list[dict]] = {}
            for r in samples:
                by_prompt.setdefault(r["index"], []).append(r)
            groups = list(by_prompt.values())
            num_correct = [sum(r["correct"] for r in g) for g in groups]
            for k in self.pass_k:
                metrics[f"eval/pass@{k}"] = mean_pass_at_k([len(g) for g in groups], num_correct, k)
            answers = [[r["answer"] for r in g] for g in groups]
            metrics[f"eval/maj@{self.num_samples}"] = mean_maj_at_k(
                answers, [[r["correct"] for r in g] for g in groups]
            )
        for name in self.reward_names:
            values = [r["rewards"][name] for r in head if r["rewards"][name] is not None]
            if values:
                metrics[f"eval/rewards/{name}/mean"] = sum(values) / len(values)
        return metrics
