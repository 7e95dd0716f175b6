"""The `trl-ppo-plus` command: `ppo` (train from a YAML config, like `trl grpo`), `demo` and `push`."""

from __future__ import annotations

import sys


USAGE = """usage: trl-ppo-plus <command> [options]

commands:
  ppo    train with PPO: trl-ppo-plus ppo --config cfg.yaml [--any_field value ...]
         (PPOConfig, ModelConfig and script fields; --reward math|code|format|<reward model path>|module:function ...)
  demo   the offline CPU demo: SFT then PPO on synthetic arithmetic, with before/after held-out accuracy;
         `demo --model smollm2`: QLoRA PPO of SmolLM2-135M-Instruct on GSM8K (`make install` installs it)
  push   publish a run to the Hugging Face Hub: trl-ppo-plus push OUTPUT_DIR REPO_ID [--merge] [--dry-run]

Run `trl-ppo-plus <command> --help` for the options of a command."""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command == "demo":
        from trl_ppo_plus.demo import main as demo_main

        return demo_main(rest)
    if command == "push":
        from trl_ppo_plus.hub import push_cli

        return push_cli(rest)
    if command == "ppo":
        from trl_ppo_plus.ppo_cli import main as ppo_main

        return ppo_main(rest)
    print(f"trl-ppo-plus: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
