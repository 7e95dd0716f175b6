"""Evaluation callbacks (`trl_ppo_plus.callbacks`) and estimators (`trl_ppo_plus.metrics`), on tiny local models."""

import math
import os

import pytest
from transformers import TrainerControl, TrainerState, TrainingArguments

from trl_ppo_plus.callbacks import (
    CompletionSamplesCallback,
    KLGuardCallback,
    RewardHackingCallback,
    TrainingCurvesCallback,
    VerifiableEvalCallback,
    plot_training_curves,
)
from trl_ppo_plus.metrics import maj_at_k, mean_pass_at_k, pass_at_k


# ---- estimators -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2)
        (5, 1, 2, 1 - 6 / 10),  # 1 - C(4,2)/C(5,2)
        (6, 2, 3, 1 - 4 / 20),  # 1 - C(4,3)/C(6,3)
        (10, 3, 1, 0.3),  # pass@1 is the fraction correct
        (4, 0, 1, 0.0),  # c = 0
        (4, 0, 4, 0.0),  # c = 0 and n = k
        (4, 1, 4, 1.0),  # n = k: solved iff any sample is correct
        (3, 3, 3, 1.0),
        (8, 5, 4, 1.0),  # n - c < k: every draw holds a correct one
    ],
)
def test_pass_at_k_matches_hand_computed(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_binomial_formula_and_rejects_bad_input():
    for n in range(1, 12):
        for c in range(n + 1):
            for k in range(1, n + 1):
                ref = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(ref, abs=1e-12)
    assert mean_pass_at_k([4, 4], [0, 4], 2) == pytest.approx(0.5)
    for n, c, k in [(3, 1, 4), (3, 4, 1), (3, 1, 0)]:
        with pytest.raises(ValueError):
            pass_at_k(n, c, k)


@pytest.mark.parametrize(
    "answers, correct, expected",
    [
        (["4", "5", "4", None], [True, False, True, False], True),  # majority right
        (["5", "5", "4", "4"], [False, False, True, True], False),  # tie: first-seen answer wins
        (["4"], [True], True),  # k = 1
        ([None, "", None], [False, False, False], False),  # nothing extractable
        (["7", "7", "7"], [False, False, False], False),  # c = 0
        (["3", "8", "8", "9"], [True, False, False, False], False),  # the right answer is a minority
    ],
)
def test_maj_at_k_matches_hand_computed(answers, correct, expected):
    assert maj_at_k(answers, correct) is expected


def test_eval_aggregation_matches_hand_computed():
    evaluator = VerifiableEvalCallback(
        [{"prompt": "p", "solution": "1"}], [contains_solution], num_samples=3, pass_k=(1, 3)
    )
    correct = {0: [True, False, False], 1: [False, False, False]}  # prompt 0: c = 1 of n = 3; prompt 1: c = 0
    answers = {0: ["7", "5", "5"], 1: ["2", None, "3"]}
    records = [
        {
            "kind": "greedy",
            "index": i,
            "sample": 0,
            "correct": i == 0,
            "length": 4 + i,
            "rewards": {"contains_solution": float(i == 0)},
        }
        for i in (0, 1)
    ]
    records += [
        {"kind": "sample", "index": i, "sample": j, "correct": correct[i][j], "answer": answers[i][j], "length": 9,
         "rewards": {"contains_solution": float(correct[i][j])}}
        for i in (0, 1) for j in range(3)
    ]  # fmt: skip
    metrics = evaluator._aggregate(records)
    assert metrics == {
        "eval/accuracy": 0.5,  # greedy: prompt 0 right, prompt 1 wrong
        "eval/mean_length": 4.5,
        "eval/pass@1": pytest.approx((1 / 3 + 0) / 2),
        "eval/pass@3": 0.5,  # n = k: any correct sample
        "eval/maj@3": 0.0,  # prompt 0 votes "5" (wrong), prompt 1 votes "2" (wrong)
        "eval/rewards/contains_solution/mean": 0.5,
    }


# ---- scripted logs: guards --------------------------------------------------------------------------------------
def _scripted(tmp_path, **kwargs):
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", **kwargs)
    return args, TrainerState(), TrainerControl()


def test_kl_guard_patience_and_nan(tmp_path):
    args, state, control = _scripted(tmp_path)
    guard = KLGuardCallback(max_kl=1.0, patience=2)
    for step, kl in enumerate([5.0, 0.1, 5.0], start=1):
        state.global_step = step
        guard.on_log(args, state, control, logs={"loss": 0.1, "objective/kl": kl})
        assert not control.should_training_stop  # never two in a row yet
    state.global_step = 4
    guard.on_log(args, state, control, logs={"loss": 0.1, "objective/kl": 5.0})
    assert control.should_training_stop and control.should_save
    assert "objective/kl" in guard.stop_reason and "step 4" in guard.stop_reason

    for logs in [{"loss": float("nan")}, {"loss": 0.1, "kl": float("inf")}]:
        guard, control = KLGuardCallback(max_kl=1.0, patience=5), TrainerControl()
        guard.on_log(args, state, control, logs=logs)
        assert control.should_training_stop and control.should_save, logs
        assert "not finite" in guard.stop_reason


def test_reward_hacking_flags_scripted_divergence(tmp_path):
    args, state, control = _scripted(tmp_path)
    monitor = RewardHackingCallback(window=3)
    script = [(0, {"eval/accuracy": 0.50})]
    script += [(s, {"reward": 0.1 * s, "completions/mean_length": 20.0}) for s in range(1, 11)]
    script.insert(6, (5, {"eval/accuracy": 0.40}))
    script.append((10, {"eval/accuracy": 0.20}))
    for step, logs in script:
        state.global_step = step
        monitor.on_log(args, state, control, logs=logs)
    # Flagged at step 5 (reward up, accuracy 0.5 -> 0.4); still true at step 10, but warned once per episode.
    assert [(a["kind"], a["step"]) for a in monitor.alerts] == [("divergence", 5)]
    assert "0.500 -> 0.400" in monitor.alerts[0]["message"]
    assert not control.should_training_stop  # warn only by default


def test_reward_hacking_quiet_when_accuracy_follows_reward_and_stops_on_length_collapse(tmp_path):
    args, state, control = _scripted(tmp_path)
    monitor = RewardHackingCallback(window=2, stop=True, min_length=3.0)
    for step, logs in [
        (0, {"eval/accuracy": 0.2}),
        (1, {"reward": 0.1}),
        (2, {"reward": 0.5}),
        (2, {"eval/accuracy": 0.4}),
    ]:
        state.global_step = step
        monitor.on_log(args, state, control, logs=logs)
    assert monitor.alerts == [] and not control.should_training_stop
    for step, length in [(3, 10.0), (4, 1.0), (5, 1.0)]:
        state.global_step = step
        monitor.on_log(args, state, control, logs={"completions/mean_length": length})
    assert [a["kind"] for a in monitor.alerts] == ["length_collapse"] and monitor.alerts[0]["step"] == 5
    assert control.should_training_stop


# ---- curves -----------------------------------------------------------------------------------------------------
def _assert_nontrivial_png(path):
    import matplotlib.image

    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image[..., :3].var() > 1e-3  # not a blank canvas


def test_training_curves_png_from_log_history(tmp_path):
    history = [
        {"step": s, "objective/scores": s / 10, "objective/kl": 0.1 * s**0.5, "objective/kl_coef": 0.05 * 0.9**s}
        for s in range(1, 11)
    ]
    history += [{"step": s, "eval/accuracy": 0.1 + s / 40, "eval/pass@4": 0.3 + s / 40} for s in (0, 5, 10)]
    assert not plot_training_curves([{"step": 1, "loss": 0.3}], str(tmp_path / "empty.png"))  # no panel has data
    assert not (tmp_path / "empty.png").exists()

    args, state, control = _scripted(tmp_path)
    state.log_history = history
    callback = TrainingCurvesCallback()
    callback.on_train_end(args, state, control)
    assert callback.path == os.path.join(str(tmp_path), "training_curves.png")
    _assert_nontrivial_png(callback.path)


# ---- evaluate modules -------------------------------------------------------------------------------------------
def test_evaluate_modules_load_offline():
    import evaluate

    from trl_ppo_plus import metrics

    accuracy = metrics.load("verifiable_accuracy")
    code = evaluate.load(metrics.module_path("code_pass_at_k"))
    assert isinstance(accuracy, evaluate.Metric) and isinstance(code, evaluate.Metric)
    assert set(accuracy.features) == {"predictions", "references"}
    with pytest.raises(ValueError):
        metrics.module_path("bleu")
    result = accuracy.compute(
        predictions=["so the answer is \\boxed{4}", "#### 5", "no idea", "the answer is $\\frac{1}{2}$."],
        references=["4", "#### 4", "4", "0.5"],
    )
    assert result == {"accuracy": pytest.approx(0.5)}


def test_code_pass_at_k_module_runs_programs():
    from trl_ppo_plus import metrics

    result = metrics.load("code_pass_at_k").compute(
        predictions=[["def add(a, b):\n    return a + b", "def add(a, b):\n    return a - b"], ["x = 1", "x = 3"]],
        references=["assert add(1, 2) == 3", "assert x == 2"],
        k=[1, 2],
    )
    # problem 1: 1 of 2 pass (pass@1 = 0.5, pass@2 = 1); problem 2: 0 of 2 pass (0, 0)
    assert result == {"pass@1": pytest.approx(0.25), "pass@2": pytest.approx(0.5)}


# ---- training with TRL's GRPOTrainer --------------------------------------------------------------------------
PROMPTS = [(a, b) for a in range(1, 5) for b in range(1, 3)]


def contains_solution(completions, solution, **kwargs):
    """1.0 when the gold answer appears in the completion: a plain-Python verifiable reward."""
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [float(s in t) for t, s in zip(texts, solution)]


def short_bonus(completions, completion_ids, **kwargs):
    return [None if i == 0 else 1.0 / (1 + len(ids)) for i, ids in enumerate(completion_ids)]


def token_parity(completion_ids, **kwargs):
    """An arbitrary reward that differs within a group, so GRPO's updates are non-zero from the first step."""
    return [float(sum(ids) % 5) for ids in completion_ids]


def _dataset(conversational: bool):
    from datasets import Dataset

    def prompt(a, b):
        text = f"What is {a} plus {b}?"
        return [{"role": "user", "content": text}] if conversational else text

    return Dataset.from_list([{"prompt": prompt(a, b), "solution": str(a + b)} for a, b in PROMPTS])


def _grpo(model_path, output_dir, callbacks=(), conversational=True, reward_funcs=(contains_solution,), **overrides):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    config = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=6,
        max_steps=4,
        logging_steps=1,
        learning_rate=1e-3,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    config.update(overrides)
    return GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_path),
        processing_class=AutoTokenizer.from_pretrained(model_path),
        reward_funcs=list(reward_funcs),
        args=GRPOConfig(**config),
        train_dataset=_dataset(conversational),
        callbacks=list(callbacks),
    )


def test_eval_callbacks_with_grpo_trainer(tiny_model_path, tmp_path):
    curves = TrainingCurvesCallback()
    monitor = RewardHackingCallback(window=2)
    trainer = _grpo(tiny_model_path, tmp_path, callbacks=[curves, monitor], save_strategy="steps", save_steps=2)
    evaluator = VerifiableEvalCallback(
        _dataset(conversational=True).select(range(3)),
        [contains_solution, short_bonus],
        num_samples=3,
        pass_k=(1, 3),
        eval_steps=2,
        max_new_tokens=5,
        batch_size=2,
    ).bind(trainer)
    samples = CompletionSamplesCallback(evaluator, num_print=2)
    trainer.add_callback(samples)
    trainer.train()

    history = trainer.state.log_history
    evals = [e for e in history if "eval/accuracy" in e]
    assert [e["step"] for e in evals] == [0, 2, 4]
    for e in evals:
        assert {
            "eval/pass@1",
            "eval/pass@3",
            "eval/maj@3",
            "eval/mean_length",
            "eval/rewards/short_bonus/mean",
        } <= set(e)
        assert 0.0 <= e["eval/accuracy"] <= 1.0 and 0.0 <= e["eval/pass@1"] <= e["eval/pass@3"] <= 1.0
        assert 1 <= e["eval/mean_length"] <= 5
        assert not any(k.startswith(("reward", "kl", "completions/")) for k in e)  # GRPO's train buffer left alone
    train = [e for e in history if "reward" in e]
    assert [e["step"] for e in train] == [1, 2, 3, 4]  # one train entry per step, none swallowed by the evals
    assert all("completions/mean_length" in e for e in train)
    assert trainer.model.training  # train mode restored

    # One source of truth: the samples table is the evaluator's last results, written once per eval.
    import json

    lines = [json.loads(x) for x in open(tmp_path / "eval_completions.jsonl")]
    assert len(lines) == 3 * 3 * (1 + 3)  # evals x prompts x (greedy + 3 samples)
    assert {x["step"] for x in lines} == {0, 2, 4}
    assert {"prompt", "completion", "contains_solution", "short_bonus", "correct"} <= set(lines[0])
    last = [x for x in lines if x["step"] == 4]
    assert [x["completion"] for x in last] == [r["completion"] for r in evaluator.last_results.records]

    _assert_nontrivial_png(tmp_path / "training_curves.png")  # written at each save and at the end
    assert curves.path is not None and (tmp_path / "checkpoint-2").is_dir()


def test_kl_guard_stops_a_blowup_and_leaves_a_checkpoint(tiny_model_path, tmp_path):
    guard = KLGuardCallback(max_kl=1e-6, patience=1)
    trainer = _grpo(
        tiny_model_path,
        tmp_path,
        [guard],
        conversational=False,
        reward_funcs=[token_parity],
        beta=0.5,  # GRPO logs `kl` only with a KL term
        learning_rate=0.5,  # blows the policy away from the reference in one step
        max_steps=8,
    )
    trainer.train()
    step = trainer.state.global_step
    assert guard.stop_reason is not None and step < 8, guard.stop_reason
    assert guard.stop_reason.startswith("KLGuard: kl=") and "max_kl=1e-06" in guard.stop_reason
    assert (tmp_path / f"checkpoint-{step}").is_dir()
    assert (tmp_path / f"checkpoint-{step}" / "trainer_state.json").exists()


# ---- training with our PPOTrainer ---------------------------------------------------------------------------------
def test_eval_and_curves_with_ppo_trainer(tiny_model_path, tmp_path):
    from trl_ppo_plus import PPOConfig, PPOTrainer

    # a guard that counts every KL log over a tiny bound, with more patience than the run has steps
    curves, guard = TrainingCurvesCallback(), KLGuardCallback(max_kl=1e-12, patience=10)
    args = PPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        num_ppo_epochs=1,
        max_completion_length=6,
        max_steps=2,
        logging_steps=1,
        learning_rate=1e-3,
        kl_estimator="k3",  # KL >= 0 per token, so every step after the first logs a KL above the bound
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    trainer = PPOTrainer(
        model=tiny_model_path,
        reward_funcs=[contains_solution, short_bonus],  # short_bonus: a signal, so the policy moves and KL > 0
        args=args,
        train_dataset=_dataset(conversational=False),
        callbacks=[curves, guard],
    )
    evaluator = VerifiableEvalCallback(
        _dataset(conversational=False).select(range(2)), [contains_solution], eval_steps=1, max_new_tokens=4
    ).bind(trainer)
    trainer.train()

    history = trainer.state.log_history
    assert [e["step"] for e in history if "eval/accuracy" in e] == [0, 1, 2]
    assert [e["step"] for e in history if "objective/kl" in e] == [1, 2]  # PPO's train entries intact
    assert evaluator.last_results.step == 2 and len(evaluator.last_results.records) == 2
    kls = [e["objective/kl"] for e in history if "objective/kl" in e]
    trailing_over = len(kls) - max([i + 1 for i, kl in enumerate(kls) if kl <= guard.max_kl], default=0)
    assert trailing_over >= 1 and guard.num_over == trailing_over  # the guard read PPO's objective/kl
    assert guard.stop_reason is None and trainer.state.global_step == 2  # patience not reached: training went on
    _assert_nontrivial_png(tmp_path / "training_curves.png")


def test_a_callback_reused_by_a_second_ppo_trainer_serves_that_trainer(tiny_model_path, tmp_path):
    # A sweep passing one evaluator to each run: it stayed bound to the first trainer, so the second run's
    # evaluation read the first run's model and logged into the first run's state.
    from datasets import Dataset
    from ppo_helpers import DigitReward, fast_args, prompts_dataset

    from trl_ppo_plus import PPOTrainer

    reward = DigitReward(tiny_model_path)
    evaluator = VerifiableEvalCallback(Dataset.from_dict({"prompt": ["a"]}), [reward], max_new_tokens=2)
    trainers = [
        PPOTrainer(
            model=tiny_model_path,
            reward_funcs=reward,
            args=fast_args(tmp_path / f"run{i}", max_steps=1),
            train_dataset=prompts_dataset(8),
            callbacks=[evaluator],
        )
        for i in range(2)
    ]
    assert evaluator.trainer is trainers[1]
    assert trainers[1].callback_handler.callbacks.count(evaluator) == 1
