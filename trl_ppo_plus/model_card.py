"""The run description (`RunInfo`, saved as `trl_ppo_plus_run.json`) and the model card rendered from it.

The card is the Jinja template `model_cards/ppo_model_card.md`, installed as package data
`trl_ppo_plus.model_cards`; `render_model_card` fills it and returns a `huggingface_hub.ModelCard` whose YAML front
matter (base_model, library_name, tags, datasets, license, pipeline_tag, model-index) the Hub reads.

    info = RunInfo(
        model_name="qwen-ppo-gsm8k",
        base_model="Qwen/Qwen2.5-0.5B-Instruct",
        eval_results=[{"metric": "pass@1", "value": 0.57, "dataset_name": "openai/gsm8k", "split": "test"}],
    )
    info.to_json("runs/ppo/trl_ppo_plus_run.json")
    render_model_card(info, "runs/ppo").save("runs/ppo/README.md")

`trl_ppo_plus.hub.publish` uploads the card together with the weights.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from importlib import metadata
from importlib.resources import files
from pathlib import Path
from typing import Any


RUN_INFO_FILE = "trl_ppo_plus_run.json"
TEMPLATE_NAME = "ppo_model_card.md"
REWARD_KINDS = ("math", "code", "reward_model", "custom")
BASE_TAGS = ["trl", "ppo", "rlhf", "trl-ppo-plus"]
_FRAMEWORKS = ["trl-ppo-plus", "trl", "transformers", "torch", "peft", "datasets", "tokenizers", "huggingface_hub"]


@dataclass
class RunInfo:
    """The description of a finished run that the model card is rendered from, saved as `trl_ppo_plus_run.json`.

    Every field but `model_name` has a default, so the trainer builds it with keywords. Schema (a JSON object):

    Args:
        model_name (`str`): display name of the model, also the `model-index` name.
        base_model (`str`, *optional*): the model PPO started from (Hub id or path).
        hub_model_id (`str`, *optional*): the Hub repo of this model; `publish` sets it to the target repo.
        dataset_names (`list[str]`, defaults to `[]`): Hub ids of the training prompt datasets.
        license (`str`, *optional*): a Hub license id such as `"apache-2.0"`.
        reward_funcs (`list[dict]`, defaults to `[]`): `{"name": str, "weight": float, "kind": str}` per reward
            function, `kind` one of `math`, `code`, `reward_model`, `custom`.
        ppo_config (`dict`, defaults to `{}`): the PPO hyperparameters shown in the card's table, name -> value.
        kl_controller (`dict`, *optional*): `{"kind", "init_kl_coef", "final_kl_coef", "target", "horizon"}`; the
            initial and final β are what the card reports.
        qlora (`dict`, *optional*): `{"quantization", "lora_r", "lora_alpha", "target_modules", "value_head"}`;
            `None` means the base was not quantized.
        eval_results (`list[dict]`, defaults to `[]`): `{"metric", "value", "dataset_name", "dataset_type",
            "split"}` per result; they become the card's `model-index`.
        curves (`list[str]`, defaults to `[]`): PNG file names in `output_dir` to embed in the card; empty means
            every `*.png` at the top of `output_dir`.
        command (`str`, *optional*): the exact command line that reproduces the run (tokens are redacted).
        framework_versions (`dict[str, str]`, defaults to `{}`): package -> version; missing ones are filled in from
            the installed packages.
        summary (`str`, *optional*): a paragraph for the top of the card.
        is_adapter (`bool`, *optional*): whether the policy is a PEFT adapter; `None` detects it from `output_dir`.
        merged (`bool`, defaults to `False`): the adapter was merged into the base before upload (set by `publish`).
        extra (`dict`, defaults to `{}`): keys of the JSON file this version does not know, kept as they are.
    """

    model_name: str
    base_model: str | None = None
    hub_model_id: str | None = None
    dataset_names: list[str] = field(default_factory=list)
    license: str | None = None
    reward_funcs: list[dict[str, Any]] = field(default_factory=list)
    ppo_config: dict[str, Any] = field(default_factory=dict)
    kl_controller: dict[str, Any] | None = None
    qlora: dict[str, Any] | None = None
    eval_results: list[dict[str, Any]] = field(default_factory=list)
    curves: list[str] = field(default_factory=list)
    command: str | None = None
    framework_versions: dict[str, str] = field(default_factory=dict)
    summary: str | None = None
    is_adapter: bool | None = None
    merged: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.dataset_names, str):
            self.dataset_names = [self.dataset_names]
        for reward in self.reward_funcs:
            if reward.get("kind") not in REWARD_KINDS:
                raise ValueError(f"reward_funcs kind must be one of {REWARD_KINDS}, got {reward!r}")
            assert "name" in reward and "weight" in reward, f"reward_funcs entries need name and weight: {reward!r}"
        for result in self.eval_results:
            assert {"metric", "value", "dataset_name"} <= result.keys(), f"eval result incomplete: {result!r}"

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """Serialize to JSON; also write it to `path` when given."""
        data = dataclasses.asdict(self)
        data.update(data.pop("extra"))
        text = json.dumps(data, indent=2, sort_keys=False, default=str) + "\n"
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    @classmethod
    def from_json(cls, source: str | os.PathLike) -> RunInfo:
        """Load from a JSON string, a JSON file, or a run's `output_dir` (reads its `trl_ppo_plus_run.json`)."""
        path = Path(source) if not str(source).lstrip().startswith("{") else None
        if path is not None and path.is_dir():
            path = path / RUN_INFO_FILE
        data = json.loads(path.read_text(encoding="utf-8") if path is not None else str(source))
        if "dataset_name" in data and "dataset_names" not in data:  # accept the singular spelling
            name = data.pop("dataset_name")
            data["dataset_names"] = [name] if name else []
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        extra = {k: data.pop(k) for k in list(data) if k not in known}
        return cls(**data, extra={**data.pop("extra", {}), **extra})

    def with_framework_versions(self) -> RunInfo:
        """A copy whose `framework_versions` also lists the installed versions of the packages the run used."""
        versions = {}
        for name in _FRAMEWORKS + (["bitsandbytes"] if self.qlora else []):
            try:
                versions[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                continue
        return dataclasses.replace(self, framework_versions={**versions, **self.framework_versions})


def redact(text: str, token: str | None = None) -> str:
    """Remove secrets from `text`: the given token, anything shaped like a Hub token, and `--*token VALUE` args."""
    if token:
        text = text.replace(token, "***")
    text = re.sub(r"hf_[A-Za-z0-9]{20,}", "hf_***", text)
    return re.sub(r"(--[\w-]*token[= ]+)(?!\*\*\*)\S+", r"\1***", text)


# ---------------------------------------------------------------------------------------------------- model card
def _fmt(value: Any) -> str:
    if isinstance(value, float):
        value = f"{value:.6g}"
    elif isinstance(value, (list, tuple)):
        value = ", ".join(str(v) for v in value)
    elif value is None:
        value = "—"
    return str(value).replace("|", "\\|").replace("\n", " ")


def resolve_run_info(run_info: RunInfo, output_dir: str | os.PathLike | None) -> tuple[RunInfo, dict[str, Any]]:
    """Fill what the run description leaves open from `output_dir`: adapter or not, base model, curves, final β."""
    info, found = run_info.with_framework_versions(), {"has_value_model": False, "value_model_is_adapter": False}
    if output_dir is None:
        return dataclasses.replace(info, is_adapter=bool(info.is_adapter) and not info.merged), found
    out = Path(output_dir)
    adapter_config = out / "adapter_config.json"
    is_adapter = adapter_config.exists() if info.is_adapter is None else info.is_adapter
    base = info.base_model
    if base is None and adapter_config.exists():
        base = json.loads(adapter_config.read_text()).get("base_model_name_or_path")
    curves = [c for c in info.curves if (out / c).is_file()] or sorted(
        p.name for p in out.glob("*.png") if not p.name.endswith(".tmp.png")
    )
    kl = dict(info.kl_controller or {})
    if "final_kl_coef" not in kl and (out / "kl_controller.json").exists():
        state = json.loads((out / "kl_controller.json").read_text())
        for key in ("kl_coef", "beta", "value"):
            if isinstance(state.get(key), (int, float)):
                kl["final_kl_coef"] = state[key]
                break
    found["has_value_model"] = (out / "value_model").is_dir()
    found["value_model_is_adapter"] = (out / "value_model" / "adapter_config.json").exists()
    info = dataclasses.replace(
        info, is_adapter=is_adapter and not info.merged, base_model=base, curves=curves, kl_controller=kl or None
    )
    return info, found


def _hub_id(name: str | None) -> str | None:
    """`name` if it looks like a Hub repo id; None for a local path (the card's metadata must not point at a disk)."""
    if not name or os.path.isabs(name) or name.startswith((".", "~")) or os.path.exists(name):
        return None
    return name if re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name) else None


def render_model_card(run_info: RunInfo, output_dir: str | os.PathLike | None = None, token: str | None = None):
    """Render `model_cards/ppo_model_card.md` for `run_info` into a `huggingface_hub.ModelCard`.

    With `output_dir`, fields the run description leaves open are detected from the files there (adapter or full
    model, base model, curves, final β from `kl_controller.json`, value model). `token` is redacted if it appears.
    """
    import jinja2
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    info, found = resolve_run_info(run_info, output_dir)
    eval_results = [
        EvalResult(
            task_type="text-generation",
            task_name="Text Generation",
            dataset_type=r.get("dataset_type") or r["dataset_name"],
            dataset_name=r["dataset_name"],
            dataset_split=r.get("split"),
            metric_type=r["metric"],
            metric_name=r["metric"],
            metric_value=r["value"],
        )
        for r in info.eval_results
    ]
    kinds = sorted({r["kind"] for r in info.reward_funcs})
    card_data = ModelCardData(
        base_model=_hub_id(info.base_model),
        library_name="peft" if info.is_adapter else "transformers",
        tags=BASE_TAGS
        + kinds
        + (["lora"] if info.is_adapter or info.merged else [])
        + (["qlora"] if info.qlora else []),
        datasets=info.dataset_names or None,
        license=info.license,
        pipeline_tag="text-generation",
        model_name=info.model_name if eval_results else None,  # only the model-index needs it
        eval_results=eval_results or None,
    )
    kl = info.kl_controller or {}
    kl_labels = {
        "kind": "controller",
        "init_kl_coef": "initial β",
        "final_kl_coef": "final β",
        "target": "target KL",
        "horizon": "horizon",
    }
    context = {
        "card_data": card_data.to_yaml(),
        "model_name": info.model_name,
        "model_id": info.hub_model_id or info.model_name,
        "base_model": info.base_model,
        "summary": info.summary,
        "is_adapter": info.is_adapter,
        "merged": info.merged,
        "datasets": info.dataset_names,
        **found,
        "ppo_rows": [(k, _fmt(v)) for k, v in info.ppo_config.items()],
        "kl": [(label, _fmt(kl[k])) for k, label in kl_labels.items() if k in kl]
        + [(k, _fmt(v)) for k, v in kl.items() if k not in kl_labels],
        "reward_rows": [(r["name"], r["kind"], _fmt(r["weight"])) for r in info.reward_funcs],
        "qlora_rows": [(k, _fmt(v)) for k, v in (info.qlora or {}).items()],
        "eval_rows": [
            (_fmt(r["metric"]), _fmt(r["value"]), _fmt(r["dataset_name"]), _fmt(r.get("split")))
            for r in info.eval_results
        ],
        "curves": info.curves,
        "framework_rows": sorted(info.framework_versions.items()),
        "command": redact(info.command, token) if info.command else None,
    }
    template = files("trl_ppo_plus.model_cards").joinpath(TEMPLATE_NAME).read_text(encoding="utf-8")
    env = jinja2.Environment(
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined
    )
    return ModelCard(redact(env.from_string(template).render(**context), token))
