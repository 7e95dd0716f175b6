# /// script
# dependencies = [
#     "trl-ppo-plus",
#     "peft",
#     "bitsandbytes",
# ]
# ///
"""PPO with a code-execution reward on MBPP- or HumanEval-style data: a 4-bit QLoRA policy and value adapter.

Usage (one consumer GPU; see the YAML for the memory budget):

    python examples/ppo_code_qlora.py --config examples/ppo_code_qlora.yaml

HumanEval-style data (`prompt` = a function signature + docstring, `test` defines `check(candidate)`, `entry_point`),
e.g. on a local file:

    python examples/ppo_code_qlora.py --config examples/ppo_code_qlora.yaml --dataset_name humaneval.jsonl

What happens:
1. Each row becomes a conversational prompt asking for a fenced ```python block. MBPP rows (`text` or `prompt`,
   `test_list`, optional `test_setup_code`) show their first test so the model learns the function's name;
   HumanEval rows (`prompt`, `test`, `entry_point`) show the signature to complete.
2. `--load_in_4bit --use_peft`: policy + value adapters on one NF4 base, the reference is the base adapters-off.
3. The reward runs the extracted program against the row's tests in the local sandbox (`trl_ppo_plus.rewards.code`):
   the fraction passed (`partial_credit`, on by default), or 1.0 only when all pass with `--partial_credit false`.
4. `VerifiableEvalCallback` reports held-out `eval/accuracy` (all tests pass: pass@1) on the test split.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field


@dataclass
class CodeArguments:
    """Reward and held-out evaluation for this example."""

    partial_credit: bool = field(
        default=True, metadata={"help": "Reward the fraction of tests passed (denser signal) instead of 0/1."}
    )
    test_timeout: float = field(default=5.0, metadata={"help": "Wall-clock seconds per program, all its tests."})
    shown_tests: int = field(default=1, metadata={"help": "MBPP: how many of the tests the prompt shows."})
    accuracy_eval_steps: int = field(
        default=50, metadata={"help": "Held-out accuracy every N steps (and before the first); 0 turns it off."}
    )
    accuracy_eval_examples: int = field(default=100, metadata={"help": "Test problems per evaluation."})


MBPP_TEMPLATE = "{task}\nYour code should pass these tests:\n{tests}\nWrite the function in a ```python code block."
HUMANEVAL_TEMPLATE = (
    "Complete this Python function. Reply with the whole function in a ```python code block.\n```python\n{code}```"
)


def to_prompt(example: dict, shown_tests: int) -> dict:
    """An MBPP or HumanEval row → a conversational prompt; the test columns stay for the reward."""
    if example.get("test_list"):  # MBPP: `text` (config "full") or `prompt` (config "sanitized")
        task = example.get("text") or example["prompt"]
        content = MBPP_TEMPLATE.format(task=task, tests="\n".join(example["test_list"][:shown_tests]))
    else:  # HumanEval: the prompt is code to complete
        content = HUMANEVAL_TEMPLATE.format(code=example["prompt"])
    return {"prompt": [{"role": "user", "content": content}]}


TEST_COLUMNS = ("test_list", "test_setup_code", "test", "entry_point")


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
    from trl_ppo_plus.rewards import make_code_reward

    parser = TrlParser((ScriptArguments, PPOConfig, ModelConfig, CodeArguments))
    script_args, training_args, model_args, code_args = parser.parse_args_and_config(args=argv)

    dataset = load_prompts(script_args)
    columns = next(iter(dataset.values())).column_names
    dataset = dataset.map(
        to_prompt,
        fn_kwargs={"shown_tests": code_args.shown_tests},
        remove_columns=[c for c in columns if c not in TEST_COLUMNS],  # keep only what the reward reads
    )
    train, test = train_and_eval_splits(
        dataset, script_args, eval_size=code_args.accuracy_eval_examples, seed=training_args.seed
    )

    model, peft_config = build_model(model_args, training_args)  # QLoRA: policy + value adapters on one 4-bit base
    reward = make_code_reward(partial_credit=code_args.partial_credit, timeout=code_args.test_timeout)
    trainer = PPOTrainer(
        model=model,
        reward_funcs=[reward],
        args=training_args,
        train_dataset=train,
        peft_config=peft_config,
    )
    add_accuracy_eval(trainer, test, reward, code_args.accuracy_eval_steps)  # correct = reward 1.0
    train_save_publish(trainer, script_args.dataset_name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
