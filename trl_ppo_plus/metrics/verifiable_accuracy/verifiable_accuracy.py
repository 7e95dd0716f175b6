"""`evaluate` module: accuracy of math answers checked by symbolic equivalence (`trl_ppo_plus.rewards`).

>>> import evaluate
>>> from trl_ppo_plus.metrics import module_path
>>> accuracy = evaluate.load(module_path("verifiable_accuracy"))
>>> accuracy.compute(predictions=["so the answer is \\boxed{1/2}"], references=["0.5"])
{'accuracy': 1.0}
"""

import datasets
import evaluate


_DESCRIPTION = """
Fraction of predictions whose final answer is mathematically equivalent to the reference answer. Each prediction is a
full model completion (the answer is extracted from it: last `\\boxed{}`, `#### N`, "the answer is ...") or a bare
answer; each reference is a gold answer. Equivalence is decided by `trl_ppo_plus.rewards.verify_answer`, which runs
with timeouts and never hangs. A reference that cannot be parsed makes that example count as wrong.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[str]`): model completions or extracted answers.
    references (`list[str]`): gold answers or solutions (`#### 42`, `\\boxed{42}`, `42`).
    strict (`bool`, *optional*, defaults to `True`): only explicit answers count (boxed, `####`, "the answer is",
        `Answer:` / `A:`, `<answer>` tags, a bare answer, a closing math span); `False` falls back to the last
        number of the prediction.
Returns:
    accuracy (`float`): fraction of predictions judged equivalent to their reference, in [0, 1].
"""

_CITATION = ""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class VerifiableAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, strict=True):
        from trl_ppo_plus.rewards import verify_answer  # lazy: keeps `evaluate.load` light

        correct = [verify_answer(p, r, strict=strict) for p, r in zip(predictions, references)]
        return {"accuracy": sum(correct) / len(correct) if correct else 0.0}
