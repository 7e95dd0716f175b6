"""PPOTrainer on the batches real runs produce: gaps, empty rows, bad rewards, dropout, resumes, crashes (issue 17)."""

import json
import logging
import math
import shutil

import pytest
import torch
from ppo_helpers import DigitReward, fast_args, logged, prompts_dataset
from transformers import AutoTokenizer, TrainerCallback

from trl_ppo_plus import PPOTrainer, ppo_math
from trl_ppo_plus.checkpointing import KL_CONTROLLER_FILE, VALUE_MODEL_DIR
from trl_ppo_plus.rollout import pad_rollout
from trl_ppo_plus.value import SeparateCritic


def _trainer(model_path, tmp_path, reward=None, dataset=None, **overrides):
    return PPOTrainer(
        model=model_path,
        reward_funcs=reward or DigitReward(model_path),
        args=fast_args(tmp_path, **overrides),
        train_dataset=dataset or prompts_dataset(16),
    )


def _capture_rollouts(trainer) -> list[dict]:
    """Record (a copy of) every rollout batch the trainer builds; the trainer keeps using the original."""
    batches, rollout = [], trainer._generate_and_score_completions

    def recording(inputs):
        batch = rollout(inputs)
        batches.append({k: v.detach().clone() for k, v in batch.items()})
        return batch

    trainer._generate_and_score_completions = recording
    return batches


def _capture_trained_batches(trainer) -> list[dict]:
    """Record (a copy of) every micro-batch after its loss: with the rewards, advantages and rollout log-probs that
    the rollout's forwards (or, on the fast path, this loss forward) filled in."""
    batches, compute_loss = [], trainer._compute_loss

    def recording(model, inputs):
        loss = compute_loss(model, inputs)
        batches.append({k: v.detach().clone() for k, v in inputs.items()})
        return loss

    trainer._compute_loss = recording
    return batches


def _params(trainer):
    return {k: v.detach().clone() for k, v in trainer.model.named_parameters()}


def _assert_same_params(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ---------------------------------------------------------------------------------------------- 1, 9: env gaps, empty
def test_tools_and_environments_are_refused_before_loading(tmp_path):
    def get_weather(city: str) -> str:
        """Weather.

        Args:
            city: the city.
        """
        return "sunny"

    for kwargs in ({"tools": [get_weather]}, {"environment_factory": object}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            PPOTrainer(model=str(tmp_path / "no-such-model"), reward_funcs=lambda **k: [], **kwargs)


def test_empty_first_completion_pads_to_integer_tensors():
    prompt_ids, prompt_mask, completion_ids, completion_mask = pad_rollout([[5, 6], [7]], [[], [8, 9, 2]], 0)
    assert all(t.dtype == torch.long for t in (prompt_ids, prompt_mask, completion_ids, completion_mask))
    assert completion_ids.tolist() == [[0, 0, 0], [8, 9, 2]] and completion_mask.tolist() == [[0, 0, 0], [1, 1, 1]]
    assert prompt_ids.tolist() == [[5, 6], [0, 7]] and prompt_mask.tolist() == [[1, 1], [0, 1]]


def test_rollout_func_env_mask_gaps_are_skipped_by_gae(tiny_model_path, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    digits = tokenizer.convert_tokens_to_ids(list("1234"))

    def rollout_func(prompts, trainer):  # each completion: agent, environment, environment, agent, agent (EOS)
        prompt_ids = [tokenizer(p)["input_ids"] for p in prompts]
        completion_ids = [[*digits, tokenizer.eos_token_id]] * len(prompts)
        return {
            "prompt_ids": prompt_ids,
            "completion_ids": completion_ids,
            "logprobs": [[0.0] * 5] * len(prompts),
            "env_mask": [[1, 0, 0, 1, 1]] * len(prompts),
        }

    trainer = PPOTrainer(
        model=tiny_model_path,
        reward_funcs=DigitReward(tiny_model_path),
        # λ < 1: at λ = γ = 1 GAE telescopes, and skipping the gaps or not would give the same advantages.
        args=fast_args(tmp_path, max_steps=1, whiten_advantages=False, kl_coef=0.5, lam=0.95),
        train_dataset=prompts_dataset(8),
        rollout_func=rollout_func,
    )
    batches = _capture_trained_batches(trainer)  # one micro-batch: the whole rollout
    trainer.train()
    batch = batches[0]
    torch.testing.assert_close(batch["loss_mask"], torch.tensor([[1.0, 0, 0, 1, 1]]).expand(8, 5))
    # GAE ran over the agent tokens only: the same as GAE on the compacted tokens 0, 3, 4.
    keep = [0, 3, 4]
    adv, _ = ppo_math.gae_advantages(
        batch["rewards"][:, keep], batch["old_values"][:, keep], torch.ones(8, 3), 1, 0.95
    )
    torch.testing.assert_close(batch["advantages"][:, keep], adv)
    assert batch["advantages"][:, [1, 2]].abs().sum() == 0


# ---------------------------------------------------------------------------------------------- 2: KL of loss rows
def test_kl_for_the_controller_averages_rows_that_carry_a_loss(tiny_model_path, tmp_path):
    def odd_rows_unscored(completion_ids, **kwargs):
        return [None if i % 2 else len(ids) / 6 for i, ids in enumerate(completion_ids)]

    trainer = _trainer(
        tiny_model_path,
        tmp_path,
        reward=odd_rows_unscored,
        reward_normalization="none",  # so each row's rewards sum to its logged score + non-score reward
        kl_controller="adaptive",
        kl_estimator="k3",
        max_steps=2,  # the second rollout has KL > 0
        learning_rate=3e-2,
    )
    batches = _capture_trained_batches(trainer)  # one micro-batch per rollout
    seen, update = [], trainer.kl_ctl.update
    trainer.kl_ctl.update = lambda kl, n: seen.append(kl) or update(kl, n)
    trainer.train()
    expected, diluted = [], []
    for b in batches:
        seq_kl = (ppo_math.kl_estimate(b["old_per_token_logps"], b["ref_per_token_logps"], "k3") * b["loss_mask"]).sum(
            1
        )
        rows = b["loss_mask"].any(1)
        assert 0 < rows.sum() < len(rows)  # some rows are unscored
        expected.append(seq_kl[rows].mean().item())
        diluted.append(seq_kl.mean().item())
    assert max(expected) > 1e-4 and expected != pytest.approx(diluted)
    assert seen == pytest.approx(expected, rel=1e-5)
    assert logged(trainer, "objective/kl") == pytest.approx(expected, rel=1e-5)
    # The reward metrics use the same rows: rlhf_reward = scores + non_score_reward, as the README's glossary says.
    rlhf = [b["rewards"].sum(1)[b["loss_mask"].any(1)].mean().item() for b in batches]  # score + -β·KL per row
    assert logged(trainer, "objective/rlhf_reward") == pytest.approx(rlhf, rel=1e-5)
    scores, non_score = logged(trainer, "objective/scores"), logged(trainer, "objective/non_score_reward")
    assert [s + n for s, n in zip(scores, non_score)] == pytest.approx(rlhf, rel=1e-5)


# ---------------------------------------------------------------------------------------------- 3: dropout
def test_first_minibatch_ratio_is_one_with_attention_dropout_in_the_config(tiny_model_path, tmp_path):
    model_dir = tmp_path / "dropout-model"
    shutil.copytree(tiny_model_path, model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "attention_dropout": 0.5}))
    trainer = _trainer(str(model_dir), tmp_path / "out", max_steps=1)
    trainer._fast_path = False  # separate rollout and loss forwards: dropout left on would make the ratio differ
    trainer.train()
    assert logged(trainer, "policy/approxkl_avg") == [0.0]
    assert logged(trainer, "val/ratio") == [1.0]


# ---------------------------------------------------------------------------------------------- 4: reshuffle
def test_minibatches_are_reshuffled_between_ppo_epochs(tiny_model_path, tmp_path):
    trainer = _trainer(
        tiny_model_path, tmp_path, per_device_train_batch_size=4, num_mini_batches=2, num_ppo_epochs=2, max_steps=4
    )
    seen, compute_loss = [], trainer._compute_loss

    def recording(model, inputs):
        ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        seen.append([tuple(row.tolist()) for row in ids])
        return compute_loss(model, inputs)

    trainer._compute_loss = recording
    trainer.train()
    assert len(seen) == 4  # one rollout: 2 epochs x 2 mini-batches
    first_epoch, second_epoch = seen[0] + seen[1], seen[2] + seen[3]
    assert sorted(first_epoch) == sorted(second_epoch)  # the same rollout, every row once per epoch
    assert first_epoch != second_epoch  # in a new order


# ---------------------------------------------------------------------------------------------- 5: early stop
class _SnapshotEachStep(TrainerCallback):
    def __init__(self, trainer):
        self.trainer, self.params = trainer, {0: _params(trainer)}

    def on_step_end(self, args, state, control, **kwargs):
        self.params[state.global_step] = _params(self.trainer)


def test_target_kl_early_stop_does_not_apply_the_step_that_tripped_it(tiny_model_path, tmp_path):
    trainer = _trainer(
        tiny_model_path, tmp_path, num_ppo_epochs=2, max_steps=4, target_kl_early_stop=1e-9, learning_rate=1e-2
    )
    snapshots = _SnapshotEachStep(trainer)
    trainer.add_callback(snapshots)
    trainer.train()
    params = snapshots.params
    # Two rollouts of two epochs each. The first epoch's ratio is 1 (approxkl 0): it never trips. The second does.
    assert logged(trainer, "policy/approxkl_avg")[0] == 0.0
    assert logged(trainer, "policy/early_stop") == [1.0, 1.0]

    def changed(a, b):
        return any(not torch.equal(params[a][k], params[b][k]) for k in params[a])

    assert changed(0, 1) and changed(2, 3)  # each rollout's first step was applied (training resumes after a trip)
    _assert_same_params(params[1], params[2])  # the step that tripped was not
    _assert_same_params(params[3], params[4])


# ---------------------------------------------------------------------------------------------- 6: mid-rollout resume
def _train_saving_every_step(model_path, out, resume=None, **overrides):
    """Train with a checkpoint after every optimizer step, from `resume` when given; returns the trainer."""
    trainer = _trainer(model_path, out, save_strategy="steps", save_steps=1, **overrides)
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def test_resume_from_a_mid_rollout_checkpoint_continues_exactly(tiny_model_path, tmp_path):
    def run(out, resume=None):
        return _train_saving_every_step(
            tiny_model_path,
            out,
            resume,
            kl_controller="adaptive",
            kl_target=1e-3,
            kl_horizon=100,
            num_ppo_epochs=2,
            max_steps=3,  # rollout 1: steps 1-2, rollout 2: step 3
            learning_rate=1e-2,
        )

    full = run(tmp_path / "full")
    resumed = run(tmp_path / "resumed", resume=str(tmp_path / "full" / "checkpoint-1"))  # inside rollout 1
    assert resumed._episodes == full._episodes == 16  # 2 rollouts of 8, no extra rollout
    assert resumed.kl_ctl.state_dict() == full.kl_ctl.state_dict()
    _assert_same_params(_params(resumed), _params(full))


@pytest.mark.parametrize("saved_by", ["this version", "an older version", "a version before run descriptions"])
def test_resume_under_another_epoch_count_starts_a_fresh_rollout(tiny_model_path, tmp_path, caplog, saved_by):
    # A checkpoint saved with one epoch per rollout (the default before issue 18's fourth round) and resumed with two:
    # its rollout's position means nothing under the new schedule, so the resumed run generates at once. A file that
    # does not say how it was trained (no schedule, no run description) is not continued either.
    _train_saving_every_step(tiny_model_path, tmp_path / "saved", num_ppo_epochs=1, max_steps=2)
    checkpoint = tmp_path / "saved" / "checkpoint-1"
    if saved_by != "this version":  # rollout files without the schedule: the run description tells it, if any
        rollout_file = checkpoint / "ppo_rollout_rank0.pt"
        state = torch.load(rollout_file, weights_only=True)
        del state["schedule"]
        torch.save(state, rollout_file)
    if saved_by == "a version before run descriptions":
        (checkpoint / "trl_ppo_plus_run.json").unlink()
    with caplog.at_level(logging.WARNING, logger="trl_ppo_plus.checkpointing"):
        resumed = _train_saving_every_step(
            tiny_model_path, tmp_path / "resumed", str(checkpoint), num_ppo_epochs=2, max_steps=4
        )
    # Fresh: steps 2 and 4 generate (8 + 16 episodes). Continuing the old rollout would have trained on it at step 2
    # and generated only at step 3: 16.
    assert resumed._episodes == 24
    assert any("resuming starts a fresh rollout" in r.getMessage() for r in caplog.records)


def test_resume_with_another_accumulation_starts_a_fresh_rollout(tiny_model_path, tmp_path):
    # Same epochs and mini-batches, but the rollout was saved in 1 micro-batch and is resumed in micro-batches of 4
    # × 2: continuing it indexed a micro-batch that does not exist (IndexError in GRPO's buffer).
    _train_saving_every_step(
        tiny_model_path, tmp_path / "saved", num_ppo_epochs=2, max_steps=2,
        per_device_train_batch_size=8, gradient_accumulation_steps=1,
    )  # fmt: skip
    resumed = _train_saving_every_step(
        tiny_model_path, tmp_path / "resumed", str(tmp_path / "saved" / "checkpoint-1"), num_ppo_epochs=2,
        max_steps=4, per_device_train_batch_size=4, gradient_accumulation_steps=2,
    )  # fmt: skip
    assert resumed.state.global_step == 4 and resumed._episodes == 24  # 8 saved + 2 fresh rollouts of 8


# ---------------------------------------------------------------------------------------------- 7, 8: empty, bad rewards
def _never_scored(completions, **kwargs):
    return [None] * len(completions)


def _nan_reward(completions, **kwargs):
    return [math.nan] * len(completions)


@pytest.mark.parametrize("case", ["unscored", "nan", "all_truncated"])
def test_rollout_with_nothing_to_train_on_is_skipped(tiny_model_path, tmp_path, caplog, case):
    overrides = {"unscored": {}, "nan": {}, "all_truncated": {"mask_truncated_completions": True}}[case]
    reward = {"unscored": _never_scored, "nan": _nan_reward, "all_truncated": None}[case]
    if case == "all_truncated":  # the model may never end a completion: every one is truncated
        eos = AutoTokenizer.from_pretrained(tiny_model_path).eos_token_id
        overrides["generation_kwargs"] = {"suppress_tokens": [eos]}
    trainer = _trainer(tiny_model_path, tmp_path, reward=reward, max_steps=2, **overrides)
    before = _params(trainer)
    with caplog.at_level(logging.WARNING, logger="trl_ppo_plus.trainer"):
        trainer.train()
    assert trainer.state.global_step == 2
    assert logged(trainer, "policy/skipped_update") == [1.0, 1.0]
    assert "update is skipped" in caplog.text
    _assert_same_params(before, _params(trainer))


def test_infinite_reward_is_rejected_naming_the_function(tiny_model_path, tmp_path):
    def overflowing_reward(completions, **kwargs):
        return [math.inf] + [1.0] * (len(completions) - 1)

    trainer = _trainer(tiny_model_path, tmp_path, reward=overflowing_reward, max_steps=1)
    with pytest.raises(ValueError, match="'overflowing_reward' returned inf"):
        trainer.train()


def test_nan_reward_rows_carry_no_loss_and_weights_stay_finite(tiny_model_path, tmp_path):
    def half_nan(completion_ids, **kwargs):
        return [math.nan if i % 2 else len(ids) / 6 for i, ids in enumerate(completion_ids)]

    trainer = _trainer(tiny_model_path, tmp_path, reward=half_nan, max_steps=2, learning_rate=1e-2)
    batches = _capture_rollouts(trainer)
    trainer.train()
    for batch in batches:
        assert batch["loss_mask"][1::2].sum() == 0 and batch["loss_mask"][::2].sum() > 0
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


# ---------------------------------------------------------------------------------------------- 11: long prompts
def test_prompt_longer_than_the_context_is_a_clear_error(tiny_model_path, tmp_path):
    from datasets import Dataset

    long_prompt = " ".join(["7"] * 600)  # digits are one token each: > max_position_embeddings = 512
    dataset = Dataset.from_dict({"prompt": [long_prompt] + [f"{i} apples" for i in range(7)]})
    trainer = _trainer(tiny_model_path, tmp_path, dataset=dataset, max_steps=1, shuffle_dataset=False)
    with pytest.raises(ValueError, match="max_position_embeddings=512"):
        trainer.train()


# ---------------------------------------------------------------------------------------------- 10, 12: checkpoints
@pytest.fixture(scope="module")
def saved_run(tiny_model_path, tmp_path_factory):
    """A one-step run with a separate value model, checkpointed."""
    out = tmp_path_factory.mktemp("saved-run")
    trainer = PPOTrainer(
        model=tiny_model_path,
        reward_funcs=DigitReward(tiny_model_path),
        args=fast_args(out, max_steps=1, save_strategy="steps", save_steps=1),
        train_dataset=prompts_dataset(8),
        value_model=f"{tiny_model_path}/reward",
    )
    trainer.train()
    return trainer, out / "checkpoint-1"


def test_checkpoint_has_no_temporary_files(saved_run):
    _, checkpoint = saved_run
    assert (checkpoint / KL_CONTROLLER_FILE).exists() and (checkpoint / VALUE_MODEL_DIR / "config.json").exists()
    assert (checkpoint / "ppo_rollout_rank0.pt").exists()
    assert not [p.name for p in checkpoint.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("missing", [VALUE_MODEL_DIR, KL_CONTROLLER_FILE])
def test_resume_refuses_a_checkpoint_without_critic_or_controller(saved_run, tmp_path, missing):
    trainer, checkpoint = saved_run
    broken = tmp_path / "checkpoint-1"
    shutil.copytree(checkpoint, broken)
    path = broken / missing
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    with pytest.raises(FileNotFoundError, match=str(path)):
        trainer.load_ppo_state(str(broken))
    with pytest.raises(FileNotFoundError, match=str(path)):
        trainer.train(resume_from_checkpoint=str(broken))


def test_separate_critic_load_refuses_weights_that_do_not_fit(saved_run, tiny_model_path, tmp_path):
    trainer, checkpoint = saved_run
    assert isinstance(trainer.critic, SeparateCritic)
    trainer.critic.load(str(checkpoint / VALUE_MODEL_DIR))  # its own checkpoint loads
    other = tmp_path / "other"
    shutil.copytree(checkpoint / VALUE_MODEL_DIR, other)
    for f in other.glob("*.safetensors"):
        f.unlink()
    with pytest.raises(ValueError, match="missing"):
        trainer.critic.load(str(other))


def test_a_crash_mid_save_leaves_a_checkpoint_that_resume_refuses(saved_run, tmp_path, monkeypatch):
    trainer, checkpoint = saved_run
    target = tmp_path / "checkpoint-1"
    shutil.copytree(checkpoint, target)  # a complete checkpoint, about to be overwritten

    import transformers.modeling_utils as modeling_utils

    calls, save_file = [], modeling_utils.safe_save_file

    def disk_full_on_second_file(*args, **kwargs):  # the policy's weights are written, the critic's are not
        calls.append(args[1])
        if len(calls) > 1:
            raise OSError("No space left on device")
        return save_file(*args, **kwargs)

    monkeypatch.setattr(modeling_utils, "safe_save_file", disk_full_on_second_file)
    with pytest.raises(OSError, match="No space"):
        trainer._save(str(target))
    monkeypatch.undo()
    with pytest.raises(FileNotFoundError, match="Incomplete PPO checkpoint"):
        trainer.train(resume_from_checkpoint=str(target))


def test_a_rollout_saved_by_another_number_of_processes_is_not_continued(saved_run, tmp_path, caplog):
    trainer, checkpoint = saved_run
    copy = tmp_path / "checkpoint-1"
    shutil.copytree(checkpoint, copy)
    rollout_file = copy / "ppo_rollout_rank0.pt"
    state = torch.load(rollout_file, weights_only=True)
    assert state["num_processes"] == 1 and state["step"] > 0
    saved = trainer._step, trainer._buffered_inputs

    trainer._step, trainer._buffered_inputs = 0, None
    trainer._load_rollout_state(str(copy))
    assert trainer._step == state["step"] and trainer._buffered_inputs is not None  # its own rollout: continued
    torch.save({**state, "num_processes": 2}, rollout_file)  # as if two processes had each saved half of it
    trainer._step, trainer._buffered_inputs = 0, None
    with caplog.at_level(logging.WARNING, logger="trl_ppo_plus.trainer"):
        trainer._load_rollout_state(str(copy))
    assert trainer._step == 0 and trainer._buffered_inputs is None  # every process starts a fresh rollout
    assert "fresh rollout" in caplog.text
    trainer._step, trainer._buffered_inputs = saved


def test_rollout_loads_when_the_device_is_cpu_with_an_index(saved_run, monkeypatch):
    # Under `accelerate launch` on CPU each process's device is `cpu:<rank>`; torch.load cannot map storages to it.
    trainer, checkpoint = saved_run
    saved = trainer._step, trainer._buffered_inputs
    monkeypatch.setattr(type(trainer.accelerator), "device", property(lambda self: torch.device("cpu", 0)))
    trainer._step, trainer._buffered_inputs = 0, None
    trainer._load_rollout_state(str(checkpoint))
    assert trainer._step > 0 and trainer._buffered_inputs[0]["advantages"].device.type == "cpu"
    trainer._step, trainer._buffered_inputs = saved


# ---------------------------------------------------------------------------------------------- 16: k1 in the loss
def test_k1_in_loss_mode_warns(tmp_path):
    with pytest.warns(UserWarning, match="zero expected gradient"), pytest.raises(OSError):
        PPOTrainer(
            model=str(tmp_path / "no-such-model"),
            reward_funcs=_never_scored,
            args=fast_args(tmp_path, kl_penalty="loss", kl_estimator="k1"),
            train_dataset=prompts_dataset(4),
        )


def test_disable_dropout_false_is_honoured_with_a_warning(tiny_model_path, tmp_path):
    model_dir = tmp_path / "dropout-model"
    shutil.copytree(tiny_model_path, model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "attention_dropout": 0.5}))
    with pytest.warns(UserWarning, match="disable_dropout=False"):
        trainer = _trainer(str(model_dir), tmp_path / "out", max_steps=1, disable_dropout=False)
    rates = [
        m.attention_dropout
        for m in trainer.model.modules()
        if isinstance(getattr(m, "attention_dropout", None), float)
    ]
    assert rates and all(rate == 0.5 for rate in rates)  # the user's setting stands
