"""Checkpoints, the model card and the Hub for `PPOTrainer`: a mixin placed before `GRPOTrainer` in its bases.

The critic, the KL controller, the score normaliser and the rollout being trained on travel with every checkpoint,
beside GRPO's policy, optimizer and scheduler. PPO's files are written under a temporary name and renamed into place;
`kl_controller.json`, written last, marks a checkpoint complete, and resume refuses one without it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil

import torch
from accelerate.utils import send_to_device


logger = logging.getLogger(__name__)

CRITIC_ATTR = "ppo_critic"  # the critic is a submodule of the policy, so DDP, the optimizer and `.to()` see it
VALUE_MODEL_DIR = "value_model"
KL_CONTROLLER_FILE = "kl_controller.json"  # written last by `_save`: a checkpoint without it is incomplete
# A saved rollout continues only under the same: `step` counts micro-batches of `steps_per_generation` per epoch.
ROLLOUT_SCHEDULE_FIELDS = ("num_ppo_epochs", "num_mini_batches", "steps_per_generation")
ROLLOUT_STATE_FILE = "ppo_rollout_rank{}.pt"  # each process's rollout being trained on: a mid-rollout resume is exact


class PPOCheckpointing:
    """`PPOTrainer`'s overrides of GRPOTrainer's save, load, card and Hub hooks (`tests/test_upstream_hooks.py`)."""

    def create_model_card(self, model_name=None, dataset_name=None, tags=None):
        """Render our template (`model_cards/ppo_model_card.md`) into `output_dir/README.md`."""
        if not self.is_world_process_zero():
            return
        from trl_ppo_plus.model_card import RUN_INFO_FILE, render_model_card
        from trl_ppo_plus.run_info import run_info_from_trainer

        info = run_info_from_trainer(self, model_name, dataset_name)
        os.makedirs(self.args.output_dir, exist_ok=True)
        info.to_json(os.path.join(self.args.output_dir, RUN_INFO_FILE))
        render_model_card(info, self.args.output_dir).save(os.path.join(self.args.output_dir, "README.md"))

    def push_to_hub(self, commit_message=None, blocking=True, token=None, revision=None, **kwargs):
        """Save, render the card and upload policy, critic, card and curves in one commit (`trl_ppo_plus.hub`)."""
        from trl_ppo_plus.hub import publish

        self.save_model()
        self.create_model_card(model_name=kwargs.get("model_name"), dataset_name=kwargs.get("dataset_name"))
        if not self.is_world_process_zero():
            return None
        repo_id = self.args.hub_model_id or os.path.basename(os.path.normpath(self.args.output_dir))
        return publish(
            self.args.output_dir,
            repo_id,
            private=self.args.hub_private_repo,
            revision=revision or self.args.hub_revision,
            token=token or self.args.hub_token,
        )

    # ------------------------------------------------------------------ checkpoints
    def _save(self, output_dir: str | None = None, state_dict=None):
        """The policy (GRPO's `_save`), the critic in `value_model/`, the run info and curves (for the card), then
        `kl_controller.json` last.

        PPO's files are written under a temporary name and renamed into place, and the KL controller file, written
        last, marks the checkpoint complete: a crash mid-save leaves a checkpoint that resume refuses.
        """
        from trl_ppo_plus.modeling import is_policy_and_value, save_policy_and_value

        output_dir = output_dir or self.args.output_dir
        kl_file = os.path.join(output_dir, KL_CONTROLLER_FILE)
        if os.path.exists(kl_file):  # overwriting a checkpoint: it is incomplete until the new marker lands
            os.remove(kl_file)
        if state_dict is not None:
            state_dict = {k: v for k, v in state_dict.items() if f"{CRITIC_ATTR}." not in k}
        with self._without_critic() as critic:
            super()._save(output_dir, state_dict=state_dict)
        if is_policy_and_value(self._policy):  # policy adapter at the root, value adapter + head in value_model/
            save_policy_and_value(self._policy, output_dir, critic)
        else:
            critic_dir = os.path.join(output_dir, VALUE_MODEL_DIR)
            critic.save(critic_dir + ".tmp", self.processing_class)
            if os.path.isdir(critic_dir):
                shutil.rmtree(critic_dir)
            os.replace(critic_dir + ".tmp", critic_dir)
        self._write_run_info(output_dir)
        state = {"kind": self.args.kl_controller, "state": self.kl_ctl.state_dict(), "episodes": self._episodes}
        state.update(score_normalizer=self.score_normalizer.state_dict(), train_rollouts=self._train_rollouts)
        with open(kl_file + ".tmp", "w") as f:
            json.dump(state, f, indent=2)
        os.replace(kl_file + ".tmp", kl_file)

    def _save_optimizer_and_scheduler(self, output_dir):
        """Checkpoints also hold the rollout being trained on, so a resume mid-rollout continues it exactly."""
        super()._save_optimizer_and_scheduler(output_dir)
        state = {  # every process saves its own part of the rollout
            "step": self._step,  # GRPO's micro-batch counter: where in the rollout's update we are
            "buffered_inputs": self._buffered_inputs,
            "rollout_kl_coef": self._rollout_kl_coef,
            "update_stopped_early": self._update_stopped_early,
            "rollout_is_empty": self._rollout_is_empty,
            "num_processes": self.accelerator.num_processes,  # the rollout is split over this many processes
            "schedule": self._rollout_schedule(),  # how many steps train on it: `step` counts within this
        }
        os.makedirs(output_dir, exist_ok=True)  # other ranks may get here before rank 0 has created it
        path = os.path.join(output_dir, ROLLOUT_STATE_FILE.format(self.accelerator.process_index))
        torch.save(state, path + ".tmp")
        os.replace(path + ".tmp", path)

    def _write_run_info(self, output_dir: str) -> None:
        """The run description and curves beside the weights, so `publish(output_dir)` renders the full card
        (`model-index` from the logged eval metrics, β, the rewards, the curves) for any saved folder."""
        from trl_ppo_plus.callbacks.training_curves import PNG_NAME, plot_training_curves
        from trl_ppo_plus.model_card import RUN_INFO_FILE
        from trl_ppo_plus.run_info import run_info_from_trainer

        run_info_from_trainer(self).to_json(os.path.join(output_dir, RUN_INFO_FILE))
        plot_training_curves(self.state.log_history, os.path.join(output_dir, PNG_NAME))  # False: nothing logged yet

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        from trl_ppo_plus.modeling import is_policy_and_value, load_policy_and_value_weights

        check_checkpoint_is_complete(resume_from_checkpoint)
        if is_policy_and_value(self._policy):  # both adapters and the head, into the live parameters
            load_policy_and_value_weights(self._policy, resume_from_checkpoint)
            return
        with self._without_critic():
            super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_optimizer_and_scheduler(self, checkpoint):
        try:
            super()._load_optimizer_and_scheduler(checkpoint)
        except ValueError as error:  # torch: "loaded state dict has a different number of parameter groups"
            if "parameter groups" not in str(error):
                raise
            raise ValueError(
                f"{checkpoint}: its optimizer has a different number of parameter groups than this run's: was it "
                f"saved with PPOConfig.value_learning_rate {'unset' if self.args.value_learning_rate else 'set'} "
                f"(now {self.args.value_learning_rate!r}; the critic's own groups exist only with it), or with another "
                "critic layout? Resume with the settings it was saved with."
            ) from error
        if checkpoint is not None:
            self.load_ppo_state(checkpoint)
            self._load_rollout_state(checkpoint)

    def load_ppo_state(self, checkpoint: str) -> None:
        """Restore the critic weights and the KL controller saved in `checkpoint` (runs on resume).

        Raises:
            FileNotFoundError: `value_model/` or `kl_controller.json` is missing (a fresh critic or the initial β
                would resume silently otherwise).
        """
        check_checkpoint_is_complete(checkpoint)
        self.critic.load(os.path.join(checkpoint, VALUE_MODEL_DIR))
        with open(os.path.join(checkpoint, KL_CONTROLLER_FILE)) as f:
            saved = json.load(f)
        self.kl_ctl.load_state_dict(saved["state"])
        self._episodes = saved.get("episodes", 0)
        if "score_normalizer" in saved:
            self.score_normalizer.load_state_dict(saved["score_normalizer"])
        self._train_rollouts = saved.get("train_rollouts", 0)
        self._rollout_kl_coef = self.kl_ctl.value

    def _rollout_schedule(self) -> dict:
        """How many optimizer steps train on one rollout: a saved rollout's position (`step`) means nothing under
        another schedule (e.g. a checkpoint saved under an older default of `num_ppo_epochs`)."""
        return {name: int(getattr(self.args, name)) for name in ROLLOUT_SCHEDULE_FIELDS}

    def _load_rollout_state(self, checkpoint: str) -> None:
        """Continue the saved rollout, or, on every process alike, start a fresh one.

        All processes must make the same choice: one that generates a new rollout while another continues its
        buffer would enter different collectives and hang (a rollout file missing on one rank, e.g. after resuming
        on more processes than saved). A rollout saved by a different number of processes is not continued either.
        """
        path = os.path.join(checkpoint, ROLLOUT_STATE_FILE.format(self.accelerator.process_index))
        # Loaded on the CPU, then moved: torch.load cannot map to a device such as "cpu:0" (multi-process CPU runs).
        state = torch.load(path, map_location="cpu", weights_only=True) if os.path.exists(path) else None
        world = self.accelerator.num_processes
        saved = None if state is None else state.get("schedule") or _schedule_in_run_info(checkpoint)
        if state is None:
            reason = "no rollout saved for this process"
        elif state.get("num_processes", world) != world:  # older files: assume the same
            reason = f"saved by {state['num_processes']} processes, resumed on {world}"
        elif saved != self._rollout_schedule():  # unknown (older files, no run description) counts as different
            reason = f"trained with {saved}, this run trains with {self._rollout_schedule()}"
        else:
            reason = None
        # One gather on every path: each process decides alone what it can read, and all follow the least.
        flag = torch.tensor([float(reason is None)], device=self.accelerator.device)
        if not bool(self.accelerator.gather(flag).min() > 0):
            logger.warning(
                "%s: the saved rollout cannot be continued on every one of the %d processes (here: %s): resuming "
                "starts a fresh rollout.",
                checkpoint,
                world,
                reason or "continuable, but another process's is not",
            )
            return
        self._step = state["step"]
        self._buffered_inputs = send_to_device(state["buffered_inputs"], self.accelerator.device)
        self._rollout_kl_coef = state["rollout_kl_coef"]
        self._update_stopped_early = state["update_stopped_early"]
        self._rollout_is_empty = state["rollout_is_empty"]


def _schedule_in_run_info(checkpoint: str) -> dict | None:
    """`_rollout_schedule()` as the checkpoint's run description recorded it (rollout files saved before the schedule
    was), or None when there is none to read."""
    from trl_ppo_plus.model_card import RUN_INFO_FILE

    try:
        with open(os.path.join(checkpoint, RUN_INFO_FILE)) as f:
            config = json.load(f)["ppo_config"]
        micro_batches = config["num_mini_batches"] * config["gradient_accumulation_steps"]
        return {"num_ppo_epochs": config["num_ppo_epochs"], "num_mini_batches": config["num_mini_batches"],
                "steps_per_generation": micro_batches}  # fmt: skip
    except (OSError, KeyError, TypeError, ValueError):
        return None


def check_checkpoint_is_complete(checkpoint: str) -> None:
    """Raise if `checkpoint` lacks the critic or the KL controller file (written last by `PPOTrainer._save`)."""
    for name in (VALUE_MODEL_DIR, KL_CONTROLLER_FILE):
        path = os.path.join(checkpoint, name)
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"Incomplete PPO checkpoint: {path} is missing (the save was interrupted, or the checkpoint was not "
                "written by PPOTrainer). Resuming would restart the critic or the KL controller silently; resume "
                "from an earlier checkpoint."
            )
