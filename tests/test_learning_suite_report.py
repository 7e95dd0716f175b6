"""`benchmarks/learning_suite.py`'s report: means with standard errors, and a verdict that tells a gap the seeds
resolve from one they do not."""

import statistics

import pytest

from tests.scripts import load_script


def _suite():
    return load_script("benchmarks/learning_suite.py")  # the report users run


def _runs(task, lr, algo, aucs):
    return [{"task": task, "lr": lr, "algo": algo, "seed": i, "auc": a, "final": 2 * a} for i, a in enumerate(aucs)]


def test_table_reports_the_mean_and_its_standard_error():
    suite = _suite()
    aucs = [0.10, 0.20, 0.40, 0.30]
    line = next(r for r in suite.table(_runs("dense", 1e-3, "ppo", aucs)).splitlines() if "| ppo |" in r)
    se = statistics.stdev(aucs) / 2  # sd / sqrt(4 seeds)
    assert f"| {0.25:.3f} ± {se:.3f} | {0.5:.3f} ± {2 * se:.3f} | 4 |" in line


def test_verdict_separates_a_resolved_gap_from_seed_noise():
    suite = _suite()
    results = (
        _runs("dense", 1e-3, "ppo", [0.200, 0.201, 0.199, 0.200])  # far behind GRPO, with tiny spread: resolved
        + _runs("dense", 1e-3, "grpo", [0.210, 0.211, 0.209, 0.210])
        + _runs("dense", 1e-3, "rloo", [0.100] * 4)
        + _runs("sparse_terminal", 1e-3, "ppo", [0.01, 0.05, 0.02, 0.04])  # behind on the mean, within the noise
        + _runs("sparse_terminal", 1e-3, "grpo", [0.02, 0.06, 0.01, 0.05])
        + _runs("sparse_token", 1e-3, "ppo", [0.03] * 4)  # ahead
        + _runs("sparse_token", 1e-3, "rloo", [0.02] * 4)
    )
    line = suite.verdict(results)
    assert line.startswith("lr 0.001: PPO AUC ≥ best of GRPO/RLOO on 1/3 tasks")
    assert "behind by > 2 SE: dense;" in line
    assert line.endswith("behind within 2 SE: sparse_terminal")


def test_verdict_with_one_seed_calls_every_gap_resolved():
    suite = _suite()  # a single seed has no error estimate: no gap is excused as noise
    results = _runs("dense", 3e-3, "ppo", [0.20]) + _runs("dense", 3e-3, "grpo", [0.21])
    assert suite.verdict(results) == (
        "lr 0.003: PPO AUC ≥ best of GRPO/RLOO on 0/1 tasks; behind by > 2 SE: dense; behind within 2 SE: none"
    )


def test_a_nan_auc_is_reported_not_a_crash_nor_a_silent_loss():
    suite = _suite()  # statistics.stdev raises on a NaN; a diverged run must still leave a readable report
    results = (
        _runs("dense", 1e-3, "ppo", [float("nan"), 0.30])
        + _runs("dense", 1e-3, "grpo", [0.20, 0.30])
        + _runs("sparse_token", 1e-3, "ppo", [0.03, 0.03])
        + _runs("sparse_token", 1e-3, "grpo", [0.01, float("nan")])
    )
    assert "| dense | 0.001 | ppo | nan ± nan |" in suite.table(results)
    assert suite.verdict(results) == "lr 0.001: PPO AUC ≥ best of GRPO/RLOO on 0/0 tasks; NaN AUC: sparse_token, dense"


def test_a_run_counted_twice_is_refused():
    suite = _suite()  # a results file merged twice would pass for twice the seeds and halve the standard error
    results = _runs("dense", 1e-3, "ppo", [0.20, 0.22, 0.18]) + _runs("dense", 1e-3, "grpo", [0.23, 0.25, 0.21])
    for report in (suite.table, suite.verdict):
        with pytest.raises(ValueError, match=r"dense.*lr 0.001.*ppo.*seed 0.*more than once"):
            report(results + results[:1])


def test_a_repeated_seed_is_refused_before_any_run(tmp_path):
    suite = _suite()  # the task name is unknown too: a run that started would raise that instead
    with pytest.raises(ValueError, match=r"no_such_task lr 0.003 ppo seed 0 appears more than once"):
        suite.main(["--tasks", "no_such_task", "--lrs", "3e-3", "--seeds", "0,0", "--out", str(tmp_path)])


def test_common_random_numbers_pair_two_trainers_rollout_by_rollout(tmp_path):
    """At lr 0 with the same prompts (one group of 16), PPO and GRPO differ only in how they use the random generator
    between rollouts (PPO builds a value head): with common random numbers they sample the same completions at
    every rollout, so their per-rollout scores agree exactly; without, they do not."""
    suite = _suite()

    def curve(algo, crn):
        config = {"num_generations": 16}
        return suite.run(algo, "dense", 0.0, 0, 4, tmp_path / f"{algo}-{crn}", config, common_random_numbers=crn)

    paired = curve("ppo", True), curve("grpo", True)
    assert paired[0] == paired[1] and len(paired[0]) == 4
    assert curve("ppo", False) != curve("grpo", False)


@pytest.mark.parametrize(
    "algo, overrides, rollout_size",
    [
        ("grpo", {"num_iterations": 2}, 16),
        ("grpo", {"steps_per_generation": 2}, 32),  # a rollout of 32: two optimizer steps of 16
        ("rloo", {"generation_batch_size": 32}, 32),
        ("ppo", {}, 16),  # four epochs
        ("ppo", {"num_ppo_epochs": 1, "num_mini_batches": 2}, 32),
    ],
)
def test_every_trainer_generates_the_asked_rollouts_whatever_its_batching(
    tmp_path, monkeypatch, algo, overrides, rollout_size
):
    # Equal completions is the suite's premise: max_steps must buy exactly `rollouts` rollouts under any override.
    suite = _suite()
    sizes = []

    class Counted(suite.RecordedReward):
        def __call__(self, completions, **kwargs):
            sizes.append(len(completions))
            return super().__call__(completions, **kwargs)

    monkeypatch.setattr(suite, "RecordedReward", Counted)
    suite.run(algo, "dense", 1e-3, 0, 2, tmp_path, overrides)
    assert sizes == [rollout_size] * 2, f"{algo} {overrides}: rollouts of {sizes}"


def test_a_report_without_grpo_or_rloo_runs_prints_no_verdict():
    # `--ablation` labels its runs ppo[...]: there is nothing to compare PPO with, and "0/0 tasks" said nothing.
    suite = _suite()
    ablation = _runs("sparse_terminal", 3e-3, "ppo[defaults]", [0.3]) + _runs("dense", 3e-3, "ppo", [0.2])
    assert suite.verdict(ablation) == ""
    compared = ablation + _runs("dense", 3e-3, "grpo", [0.1])
    assert suite.verdict(compared).startswith("lr 0.003: PPO AUC ≥ best of GRPO/RLOO on 1/1 tasks")
