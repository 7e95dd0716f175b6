"""`evaluate` module: pass@k of generated programs, run against their tests in trl_ppo_plus's local sandbox.

>>> import evaluate
>>> from trl_ppo_plus.metrics import module_path
>>> pass_at_k = evaluate.load(module_path("code_pass_at_k"))
>>> pass_at_k.compute(
...     predictions=[["def add(a, b):\\n    return a + b", "def add(a, b):\\n    return a - b"]],
...     references=["assert add(1, 2) == 3"],
...     k=[1, 2],
... )
{'pass@1': 0.5, 'pass@2': 1.0}
"""

import datasets
import evaluate


_DESCRIPTION = """
pass@k of code generation: each problem has n candidate programs and one test program (assert statements). A candidate
passes when the tests run to completion after it, inside `trl_ppo_plus.rewards.code_execution_reward` (a child process
with resource limits; a program that exits early never counts as passing). pass@k is the unbiased estimator of Chen et
al. 2021: 1 - C(n - c, k) / C(n, k), averaged over problems.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[list[str]]`): n candidate programs (or completions holding a code block) per problem.
    references (`list[str]`): the test code of each problem.
    k (`list[int]`, *optional*, defaults to `[1]`): the k values to report; each must be <= n.
    timeout (`float`, *optional*): seconds per program, passed to the reward when given.
Returns:
    pass@k (`float`) for every requested k.
"""

_CITATION = """
@article{chen2021codex,
  title={Evaluating Large Language Models Trained on Code},
  author={Chen, Mark and others},
  journal={arXiv preprint arXiv:2107.03374},
  year={2021}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CodePassAtK(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("string")), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, k=(1,), timeout=None):
        # Lazy imports: the sandbox is only needed when programs actually run.
        from trl_ppo_plus.metrics.estimators import mean_pass_at_k
        from trl_ppo_plus.rewards import code_execution_reward, make_code_reward

        reward = code_execution_reward if timeout is None else make_code_reward(timeout=timeout)
        num_samples, num_correct = [], []
        for candidates, tests in zip(predictions, references):
            # One test snippet per problem, run as an MBPP-style `test_list` after each candidate program.
            rewards = reward(completions=list(candidates), test_list=[[tests]] * len(candidates))
            num_samples.append(len(candidates))
            num_correct.append(sum(1 for r in rewards if r is not None and r >= 1.0))
        return {f"pass@{kk}": mean_pass_at_k(num_samples, num_correct, kk) for kk in k}
