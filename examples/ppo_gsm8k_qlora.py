# /// script
# dependencies = [
#     "trl-ppo-plus",
#     "peft",
#     "bitsandbytes",
# ]
# ///
"""PPO with a verifiable math reward on GSM8K: a 4-bit QLoRA policy and value adapter on one base, on one GPU.

Usage (one consumer GPU; see the YAML for the memory budget):

    python examples/ppo_gsm8k_qlora.py --config examples/ppo_gsm8k_qlora.yaml

Any field can be overridden on the command line, e.g. the 1.5B model:

    python examples/ppo_gsm8k_qlora.py --config examples/ppo_gsm8k_qlora.yaml \
        --model_name_or_path Qwen/Qwen2.5-1.5B-Instruct --output_dir runs/ppo-gsm8k-qwen2.5-1.5b-qlora

Offline, on a local JSONL file with GSM8K's columns (`question`, `answer` ending in `#### N`):

    python examples/ppo_gsm8k_qlora.py --config examples/ppo_gsm8k_qlora.yaml \
        --model_name_or_path path/to/model --dataset_name gsm8k.jsonl

What happens:
1. GSM8K rows become conversational prompts (`question` → `prompt`); `answer` → `solution`, which the math reward
   parses after `####`.
2. `--load_in_4bit --use_peft`: one NF4 base holds the policy adapter, the value adapter (the critic) and, with the
   adapters off, the reference policy (`trl_ppo_plus.modeling`).
3. PPO with the math accuracy reward and the adaptive KL controller (Ziegler et al. 2019).
4. `VerifiableEvalCallback` reports held-out `eval/accuracy` on the test split, before training and every
   `accuracy_eval_steps` steps.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field


INSTRUCTION = "Solve the problem step by step. Write the final answer on the last line as '#### <number>'."


@dataclass
class GSM8KArguments:
    """Prompting and held-out evaluation for this example."""

    instruction: str = field(default=INSTRUCTION, metadata={"help": "Appended to every question."})
    accuracy_eval_steps: int = field(
        default=50, metadata={"help": "Held-out accuracy every N steps (and before the first); 0 turns it off."}
    )
    accuracy_eval_examples: int = field(
        default=200, metadata={"help": "Test problems per evaluation (all 1,319 are slow to generate on)."}
    )
    strict_answer: bool = field(
        default=True,
        metadata={
            "help": "Only explicit answers count ('####', \\boxed{}, 'the answer is', 'Answer:', <answer> tags, a bare "
            "answer, a closing $...$; see trl_ppo_plus.rewards.math_extract); false: also the last number."
        },
    )


def to_prompt(example: dict, instruction: str) -> dict:
    """A GSM8K row → a conversational prompt and the gold `solution` (its reasoning ends in `#### N`)."""
    return {
        "prompt": [{"role": "user", "content": f"{example['question']}\n\n{instruction}"}],
        "solution": example["answer"],
    }


def main(argv: list[str] | None = None) -> int:
    from trl import ModelConfig, ScriptArguments, TrlParser

    from trl_ppo_plus import PPOConfig, PPOTrainer
    from trl_ppo_plus.ppo_cli import (
        add_accuracy_eval,
        build_model,
        load_prompts,
        train_and_eval_splits,
        train_save_publish,
    )
    from trl_ppo_plus.rewards import make_math_reward

    parser = TrlParser((ScriptArguments, PPOConfig, ModelConfig, GSM8KArguments))
    script_args, training_args, model_args, gsm8k_args = parser.parse_args_and_config(args=argv)

    dataset = load_prompts(script_args)
    dataset = dataset.map(
        to_prompt, fn_kwargs={"instruction": gsm8k_args.instruction}, remove_columns=["question", "answer"]
    )
    train, test = train_and_eval_splits(
        dataset, script_args, eval_size=gsm8k_args.accuracy_eval_examples, seed=training_args.seed
    )

    model, peft_config = build_model(model_args, training_args)  # QLoRA: policy + value adapters on one 4-bit base
    reward = make_math_reward(strict=gsm8k_args.strict_answer)
    trainer = PPOTrainer(
        model=model,
        reward_funcs=[reward],
        args=training_args,
        train_dataset=train,
        peft_config=peft_config,
    )
    add_accuracy_eval(trainer, test, reward, gsm8k_args.accuracy_eval_steps)  # correct = reward 1.0
    train_save_publish(trainer, script_args.dataset_name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
