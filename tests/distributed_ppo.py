"""Run by tests/test_distributed.py under `accelerate launch --cpu --num_processes 2`: a few PPO steps, then each
rank writes its β, controller state and a checksum of every trainable weight."""

import hashlib
import json
import sys

import torch
from ppo_helpers import DigitReward, fast_args, prompts_dataset

from trl_ppo_plus import PPOTrainer


def text_length(completions, **kwargs):
    return [len(c) / 20 for c in completions]  # a reward that differs between completions on every rank


def checksum(module) -> str:
    digest = hashlib.sha256()
    for name, param in sorted(module.named_parameters()):
        digest.update(name.encode())
        digest.update(param.detach().to(torch.float32).numpy().tobytes())
    return digest.hexdigest()


def main(model_path: str, output_dir: str, num_ppo_epochs: int) -> None:
    args = fast_args(
        output_dir,
        per_device_train_batch_size=4,
        max_steps=4,
        num_ppo_epochs=num_ppo_epochs,  # 1: the fast path (`trl_ppo_plus.fast_path`)
        kl_controller="adaptive",
        kl_target=1e-3,
        kl_horizon=50,
        learning_rate=1e-2,
    )
    trainer = PPOTrainer(
        model=model_path,
        reward_funcs=[DigitReward(model_path), text_length],
        args=args,
        train_dataset=prompts_dataset(32),
    )
    policy = trainer.accelerator.unwrap_model(trainer.model)
    before = checksum(policy)
    trainer.train()
    rank = trainer.accelerator.process_index
    result = {
        "rank": rank,
        "world": trainer.accelerator.num_processes,
        "beta": trainer.kl_ctl.value,
        "state": trainer.kl_ctl.state_dict(),
        "weights": checksum(policy),
        "initial_weights": before,
        "steps": trainer.state.global_step,
        "fast_path": trainer._fast_path,
    }
    with open(f"{output_dir}/rank{rank}.json", "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 2)
