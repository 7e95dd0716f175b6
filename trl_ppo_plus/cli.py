"""The `trl-ppo-plus` command."""

from __future__ import annotations

import argparse
import sys


def _demo(argv: list[str]) -> int:
    # Placeholder until the demo lands: the smallest end-to-end thing that exists is the offline tiny-model kit.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_ppo_plus.tiny import tiny_model_dir

    print("trl-ppo-plus demo (preliminary): building and loading a tiny local model; PPO training is not wired yet.")
    path = tiny_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    ids = tokenizer("What is 2 plus 3?", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    print(f"model dir: {path}\nsample: {tokenizer.decode(out[0][ids.shape[1]:])!r}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="trl-ppo-plus", description="PPO for RLHF/RLVR on TRL.")
    parser.add_argument("command", choices=["demo"], help="what to run")
    args, rest = parser.parse_known_args(argv)
    return {"demo": _demo}[args.command](rest)


if __name__ == "__main__":
    sys.exit(main())
