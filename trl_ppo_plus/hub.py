"""Publishing a finished PPO run to the Hugging Face Hub: the run description, the model card, one atomic commit.

`publish(output_dir, repo_id)` in numbered steps:
  1. Read the run description `trl_ppo_plus_run.json` (a `RunInfo`) from `output_dir`, point it at `repo_id`, and fill
     in the framework versions from the installed packages.
  2. Build the upload plan with `build_upload_plan`: the ONE function that decides which files go up. It renders the
     card, merges the adapter when asked, and redacts the token from text files. A dry run and a real push both call
     it, so they cannot upload different sets of files.
  3. Dry run: copy the plan into a local folder and print the files and sizes. Real push: create the repo (and the
     branch) if missing, then send every file in ONE `create_commit`, retried with exponential backoff on 5xx and
     timeouts. The Hub applies a commit atomically, so a push that fails leaves the repo as it was.
  4. Optionally push `eval_completions.jsonl` as a dataset repo `<repo_id>-eval` (its own single commit).

The `output_dir` layout this reads (what the trainer's `save_model` writes):
    config.json, model.safetensors, generation_config.json    a full policy model, or
    adapter_config.json, adapter_model.safetensors            a PEFT adapter (`base_model_name_or_path` names the base)
    tokenizer files                                           tokenizer.json, tokenizer_config.json, chat_template.jinja...
    value_model/                                              optional critic: a model dir, or adapter + value_head.safetensors
    kl_controller.json, *.png, eval_completions.jsonl         optional
    trl_ppo_plus_run.json                                     the `RunInfo` the card is rendered from
Anything else (training_args.bin, optimizer states, checkpoints) is never uploaded: the plan is an allowlist.

The token goes to `huggingface_hub` only. It is never written to a file, a log line, the card or an error message.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trl_ppo_plus.model_card import (
    BASE_TAGS,
    REWARD_KINDS,
    RUN_INFO_FILE,
    RunInfo,
    redact,
    render_model_card,
    resolve_run_info,
)


__all__ = [
    "RUN_INFO_FILE",
    "REWARD_KINDS",
    "HubPublishError",
    "PublishResult",
    "RunInfo",
    "build_upload_plan",
    "merge_adapter_into_base",
    "publish",
    "push_cli",
    "render_model_card",
]

logger = logging.getLogger(__name__)

EVAL_COMPLETIONS_FILE = "eval_completions.jsonl"
DRY_RUN_DIRNAME = "hub_dry_run"

_MODEL_FILES = {"config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json"}
_SHARD = re.compile(r"model-\d+-of-\d+\.safetensors")
_ADAPTER_FILES = {"adapter_config.json", "adapter_model.safetensors"}
_TOKENIZER_FILES = {
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "chat_template.jinja",
    "chat_template.json",
}
_VALUE_SUFFIXES = {".json", ".safetensors", ".jinja", ".txt", ".model"}
_TEXT_SUFFIXES = {".json", ".jsonl", ".md", ".txt", ".jinja"}
_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}


# --------------------------------------------------------------------------------------------------- upload plan
@dataclass(frozen=True)
class PlannedFile:
    """One file of an upload: where it goes in the repo, and the local file that holds its bytes."""

    path_in_repo: str
    local_path: Path

    @property
    def size(self) -> int:
        return self.local_path.stat().st_size


@dataclass
class UploadPlan:
    """Everything one publish uploads: the model repo's files, and the eval dataset repo's files (if any)."""

    repo_id: str
    files: list[PlannedFile]
    dataset_repo_id: str | None = None
    dataset_files: list[PlannedFile] = field(default_factory=list)


def merge_adapter_into_base(adapter_dir: str | os.PathLike, save_dir: str | os.PathLike) -> Path:
    """Merge the PEFT adapter in `adapter_dir` into a full-precision copy of its base and save the merged weights.

    1. Load the base named by `base_model_name_or_path` in its stored dtype, never quantized (a 4-bit base
       cannot hold merged LoRA deltas exactly).
    2. Apply the adapter with `PeftModel.from_pretrained` and fold it in with `merge_and_unload`.
    3. `save_pretrained` to `save_dir` (safetensors, config, generation config), loadable without `peft`.
    """
    try:
        from peft import PeftConfig, PeftModel
    except ImportError as err:  # pragma: no cover - peft is a dependency
        raise ImportError("Merging an adapter needs peft: `pip install peft`.") from err
    from transformers import AutoModelForCausalLM

    base_id = PeftConfig.from_pretrained(str(adapter_dir)).base_model_name_or_path
    base = AutoModelForCausalLM.from_pretrained(base_id, dtype="auto")
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(save_dir)
    return Path(save_dir)


def _policy_files(out: Path) -> list[Path]:
    names = _MODEL_FILES | _TOKENIZER_FILES | _ADAPTER_FILES | {"kl_controller.json"}
    return sorted(p for p in out.iterdir() if p.is_file() and (p.name in names or _SHARD.fullmatch(p.name)))


def build_upload_plan(
    output_dir: str | os.PathLike,
    repo_id: str,
    workdir: str | os.PathLike,
    *,
    run_info: RunInfo | None = None,
    merge_adapter: bool = False,
    include_value_model: bool = True,
    push_eval_dataset: bool = False,
    token: str | None = None,
) -> UploadPlan:
    """Decide every file a publish uploads. Generated files (card, run description, merged weights, redacted copies)
    are written under `workdir`; the others point at `output_dir`. Dry runs and real pushes both use this plan."""
    out, work = Path(output_dir), Path(workdir)
    if not out.is_dir():
        raise FileNotFoundError(f"output_dir {str(out)!r} does not exist")
    is_adapter = (out / "adapter_config.json").exists()
    if not is_adapter and not (out / "config.json").exists():
        raise FileNotFoundError(f"{str(out)!r} holds neither a model (config.json) nor a PEFT adapter")
    if merge_adapter and not is_adapter:
        raise ValueError(f"merge_adapter=True needs a PEFT adapter in {str(out)!r} (no adapter_config.json)")
    if run_info is None:
        path = out / RUN_INFO_FILE
        run_info = RunInfo.from_json(path) if path.exists() else RunInfo(model_name=repo_id.split("/")[-1])
    run_info = dataclasses.replace(run_info, hub_model_id=repo_id, merged=merge_adapter)
    run_info = dataclasses.replace(run_info, command=redact(run_info.command, token) if run_info.command else None)
    run_info = resolve_run_info(run_info, out)[0]

    planned: dict[str, Path] = {}
    sources = _policy_files(out)
    if merge_adapter:
        merged_dir = merge_adapter_into_base(out, work / "merged")
        sources = [p for p in sources if p.name not in _ADAPTER_FILES | _MODEL_FILES and not _SHARD.fullmatch(p.name)]
        planned.update({p.name: p for p in _policy_files(merged_dir) if p.name not in _TOKENIZER_FILES})
    planned.update({p.name: p for p in sources})
    planned.update({p.name: p for p in sorted(out.glob("*.png")) if p.is_file() and not p.name.endswith(".tmp.png")})
    if include_value_model and (out / "value_model").is_dir():
        for p in sorted((out / "value_model").rglob("*")):
            if p.is_file() and p.suffix in _VALUE_SUFFIXES:
                planned[p.relative_to(out).as_posix()] = p
    work.mkdir(parents=True, exist_ok=True)
    run_info.to_json(work / RUN_INFO_FILE)
    planned[RUN_INFO_FILE] = work / RUN_INFO_FILE
    render_model_card(run_info, out, token=token).save(work / "README.md")
    planned["README.md"] = work / "README.md"
    files = [PlannedFile(name, _scrubbed(path, name, work / "redacted", token)) for name, path in planned.items()]

    plan = UploadPlan(repo_id=repo_id, files=sorted(files, key=lambda f: f.path_in_repo))
    if push_eval_dataset:
        completions = out / EVAL_COMPLETIONS_FILE
        if not completions.exists():
            raise FileNotFoundError(f"push_eval_dataset=True but {str(completions)!r} does not exist")
        plan.dataset_repo_id = f"{repo_id}-eval"
        card = work / "dataset" / "README.md"
        card.parent.mkdir(parents=True, exist_ok=True)
        card.write_text(_dataset_card(run_info), encoding="utf-8")
        data_path = f"data/{EVAL_COMPLETIONS_FILE}"
        plan.dataset_files = [
            PlannedFile("README.md", card),
            PlannedFile(data_path, _scrubbed(completions, data_path, work / "dataset" / "redacted", token)),
        ]
    return plan


def _scrubbed(path: Path, path_in_repo: str, redacted_dir: Path, token: str | None) -> Path:
    """`path`, or a redacted copy of it when it is a text file that contains the token."""
    if not token or path.suffix not in _TEXT_SUFFIXES or token.encode() not in path.read_bytes():
        return path
    logger.warning("Redacted the Hub token from %s before upload.", path_in_repo)
    target = redacted_dir / path_in_repo
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(path.read_bytes().replace(token.encode(), b"***"))
    return target


def _dataset_card(info: RunInfo) -> str:
    from huggingface_hub import DatasetCardData

    data = DatasetCardData(
        tags=[*BASE_TAGS, "eval-completions"],
        configs=[
            {"config_name": "default", "data_files": [{"split": "test", "path": f"data/{EVAL_COMPLETIONS_FILE}"}]}
        ],
    )
    return (
        f"---\n{data.to_yaml()}\n---\n\n# Evaluation completions of {info.model_name}\n\n"
        f"Prompts, completions and reward scores from the evaluation of `{info.hub_model_id}`, one JSON object per "
        "line, written during PPO training by trl-ppo-plus.\n"
    )


# ------------------------------------------------------------------------------------------------------- publish
class HubPublishError(RuntimeError):
    """A publish failed; the message names the repo and the cause (it never contains the token)."""

    def __init__(self, message: str, repo_id: str, status_code: int | None = None):
        super().__init__(message)
        self.repo_id, self.status_code = repo_id, status_code


@dataclass
class PublishResult:
    """What `publish` did. `files` lists `(path_in_repo, size)`; `local_dir` is set for a dry run."""

    repo_id: str
    files: list[tuple[str, int]]
    repo_url: str | None = None
    commit_url: str | None = None
    commit_oid: str | None = None
    local_dir: str | None = None
    dataset_repo_id: str | None = None
    dataset_files: list[tuple[str, int]] = field(default_factory=list)
    dataset_commit_url: str | None = None


def _http_status(err: BaseException) -> int | None:
    """The HTTP status behind `err`, looking through wrappers such as the LFS upload's RuntimeError."""
    while err is not None:
        response = getattr(err, "response", None)
        if getattr(response, "status_code", None) is not None:
            return response.status_code
        err = err.__cause__ or err.__context__
    return None


def _is_transient(err: BaseException) -> bool:
    import httpx2

    if (status := _http_status(err)) is not None:
        return status in _TRANSIENT_STATUS
    while err is not None:
        if isinstance(err, (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError)):
            return True
        err = err.__cause__ or err.__context__
    return False


def _explain(err: BaseException, what: str, repo: str, endpoint: str, attempts: int, token: str | None) -> str:
    """One sentence for the user: what was being done, to which repo, and why it failed."""
    status = _http_status(err)
    causes = {
        401: "authentication failed (HTTP 401): the token is missing, invalid or expired. Pass a write token "
        "(`token=`, the HF_TOKEN variable, or `hf auth login`)",
        403: f"permission denied (HTTP 403): this token may not write to '{repo}'; use a token with write access "
        "to its namespace",
        404: f"not found (HTTP 404): '{repo}' (or its revision) does not exist, or this token cannot see it",
    }
    cause = causes.get(status) or (f"server error (HTTP {status})" if status else type(err).__name__)
    text = str(err).strip()
    detail = getattr(err, "server_message", None) or (text.splitlines()[0] if text else "")
    retried = f" after {attempts} attempts" if attempts > 1 else ""
    message = f"Publishing failed while {what} '{repo}' on {endpoint}{retried}: {cause}."
    return redact(message + (f" Server said: {detail}" if detail else ""), token)


def _with_retries(
    fn: Callable[[], Any],
    *,
    what: str,
    repo: str,
    endpoint: str,
    token: str | None,
    max_retries: int,
    backoff_base: float,
) -> Any:
    """Call `fn`, retrying transient failures (5xx, 408, 429, timeouts) with exponential backoff
    `backoff_base * 2**attempt` seconds; any failure ends in a `HubPublishError` that names the repo and the cause."""
    for attempt in range(max_retries + 1):
        try:
            return fn()
        except Exception as err:
            if _is_transient(err) and attempt < max_retries:
                wait = backoff_base * 2**attempt
                status = _http_status(err)
                logger.warning(
                    "%s '%s' failed (%s); retrying in %.2fs [%d/%d]",
                    what.capitalize(),
                    repo,
                    status or type(err).__name__,
                    wait,
                    attempt + 1,
                    max_retries,
                )
                time.sleep(wait)
                continue
            message = _explain(err, what, repo, endpoint, attempt + 1, token)
            raise HubPublishError(message, repo, _http_status(err)) from err


def _commit(
    api,
    repo_id: str,
    files: list[PlannedFile],
    *,
    repo_type: str,
    private: bool | None,
    revision: str | None,
    message: str,
    retry: dict[str, Any],
):
    """Create the repo (and branch) if missing, then upload every file in ONE `create_commit`."""
    from huggingface_hub import CommitOperationAdd

    repo_url = _with_retries(
        lambda: api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True),
        what="creating repo",
        repo=repo_id,
        **retry,
    )
    if revision and revision != "main":
        _with_retries(
            lambda: api.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True),
            what=f"creating branch '{revision}' of",
            repo=repo_id,
            **retry,
        )
    # Built once: after a failed attempt, LFS files the server already has are not uploaded again.
    operations = [CommitOperationAdd(f.path_in_repo, str(f.local_path)) for f in files]
    info = _with_retries(
        lambda: api.create_commit(repo_id, operations, commit_message=message, repo_type=repo_type, revision=revision),
        what="committing to",
        repo=repo_id,
        **retry,
    )
    return repo_url, info


def _write_local(files: list[PlannedFile], folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    for f in files:
        target = folder / f.path_in_repo
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f.local_path, target)


def publish(
    output_dir: str | os.PathLike,
    repo_id: str,
    merge_adapter: bool = False,
    private: bool | None = None,
    revision: str | None = None,
    endpoint: str | None = None,
    token: str | None = None,
    dry_run: bool = False,
    include_value_model: bool = True,
    push_eval_dataset: bool = False,
    *,
    run_info: RunInfo | None = None,
    dry_run_dir: str | os.PathLike | None = None,
    max_retries: int = 5,
    backoff_base: float = 1.0,
) -> PublishResult:
    """Publish the run in `output_dir` to the Hub repo `repo_id` (see the module docstring for the steps).

    Args:
        merge_adapter: merge the PEFT adapter into a full-precision base and upload the merged weights instead.
        private: visibility when the repo is created (`None`: the namespace default); ignored if it exists.
        revision: branch to commit to (created from `main` if missing).
        endpoint: Hub URL for self-hosted or enterprise hubs; defaults to `$HF_ENDPOINT`, then huggingface.co.
        token: a write token; defaults to the one `huggingface_hub` finds (`HF_TOKEN`, `hf auth login`).
        dry_run: upload nothing; write the files to `dry_run_dir` (default `<output_dir>/hub_dry_run`), with the
            model repo under `model/` and the eval dataset repo under `dataset/`, and print them with their sizes.
        include_value_model: also upload `value_model/`.
        push_eval_dataset: also push `eval_completions.jsonl` as the dataset repo `<repo_id>-eval`.
        run_info: the run description; defaults to `<output_dir>/trl_ppo_plus_run.json`.
        max_retries, backoff_base: retries of each Hub call on 5xx and timeouts, waiting `backoff_base * 2**k` s.
    """
    from huggingface_hub import HfApi, constants, get_token

    from trl_ppo_plus import __version__

    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
    secret = token or get_token()  # the token the client will send, wherever it comes from: scrub that one
    with tempfile.TemporaryDirectory(prefix="trl-ppo-plus-push-") as work:
        plan = build_upload_plan(
            output_dir,
            repo_id,
            work,
            merge_adapter=merge_adapter,
            include_value_model=include_value_model,
            run_info=run_info,
            push_eval_dataset=push_eval_dataset,
            token=secret,
        )
        result = PublishResult(
            repo_id=repo_id,
            files=[(f.path_in_repo, f.size) for f in plan.files],
            dataset_repo_id=plan.dataset_repo_id,
            dataset_files=[(f.path_in_repo, f.size) for f in plan.dataset_files],
        )
        if dry_run:
            folder = Path(dry_run_dir or Path(output_dir) / DRY_RUN_DIRNAME)
            _write_local(plan.files, folder / "model")
            if plan.dataset_files:
                _write_local(plan.dataset_files, folder / "dataset")
            result.local_dir = str(folder)
            print(_describe(result, endpoint, revision))
            return result

        if constants.is_offline_mode():
            raise HubPublishError(
                f"Cannot publish '{repo_id}': HF_HUB_OFFLINE is set. Unset it, or use dry_run.", repo_id
            )
        api = HfApi(endpoint=endpoint, token=token, library_name="trl-ppo-plus", library_version=__version__)
        retry = {"endpoint": endpoint, "token": secret, "max_retries": max_retries, "backoff_base": backoff_base}
        repo_url, info = _commit(
            api,
            repo_id,
            plan.files,
            repo_type="model",
            private=private,
            revision=revision,
            message=f"Upload {repo_id.split('/')[-1]} trained with trl-ppo-plus PPO",
            retry=retry,
        )
        result.repo_url, result.commit_url, result.commit_oid = str(repo_url), info.commit_url, info.oid
        logger.info("Pushed %d files to %s in commit %s", len(plan.files), repo_id, info.oid)
        if plan.dataset_files:
            _, dataset_info = _commit(
                api,
                plan.dataset_repo_id,
                plan.dataset_files,
                repo_type="dataset",
                private=private,
                revision=None,
                message=f"Upload eval completions of {repo_id}",
                retry=retry,
            )
            result.dataset_commit_url = dataset_info.commit_url
    return result


def _describe(result: PublishResult, endpoint: str, revision: str | None) -> str:
    lines = [
        f"Dry run: would push to {endpoint}/{result.repo_id} (revision {revision or 'main'}); wrote {result.local_dir}"
    ]
    for title, listed in (("model", result.files), (f"dataset {result.dataset_repo_id}", result.dataset_files)):
        if listed:
            lines.append(f"  {title}: {len(listed)} files, {sum(s for _, s in listed):,} bytes")
            lines += [f"    {size:>14,}  {path}" for path, size in listed]
    return "\n".join(lines)


def push_cli(argv: list[str]) -> int:
    """`trl-ppo-plus push OUTPUT_DIR REPO_ID [--merge] [--dry-run] [--private] [--revision R] [--endpoint URL]
    [--no-value-model]`. The token comes from HF_TOKEN or `hf auth login`, never from the command line."""
    parser = argparse.ArgumentParser(
        prog="trl-ppo-plus push", description="Publish a PPO run to the Hugging Face Hub."
    )
    parser.add_argument("output_dir", help="the run's output directory")
    parser.add_argument("repo_id", help="target model repo, e.g. user/my-ppo-model")
    parser.add_argument("--merge", action="store_true", help="merge the LoRA adapter into the base before upload")
    parser.add_argument("--dry-run", action="store_true", help="write what would be uploaded to a local folder")
    parser.add_argument("--dry-run-dir", default=None, help="folder for --dry-run (default OUTPUT_DIR/hub_dry_run)")
    parser.add_argument("--private", action="store_true", default=None, help="create the repo as private")
    parser.add_argument("--revision", default=None, help="branch to push to (created if missing)")
    parser.add_argument("--endpoint", default=None, help="Hub URL (default $HF_ENDPOINT or huggingface.co)")
    parser.add_argument("--no-value-model", action="store_true", help="do not upload value_model/")
    parser.add_argument("--push-eval-dataset", action="store_true", help="push eval_completions.jsonl as a dataset")
    args = parser.parse_args(argv)
    try:
        result = publish(
            args.output_dir,
            args.repo_id,
            merge_adapter=args.merge,
            private=args.private,
            revision=args.revision,
            endpoint=args.endpoint,
            dry_run=args.dry_run,
            include_value_model=not args.no_value_model,
            push_eval_dataset=args.push_eval_dataset,
            dry_run_dir=args.dry_run_dir,
        )
    except (HubPublishError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if not args.dry_run:
        print(f"Pushed {len(result.files)} files to {result.repo_url}: {result.commit_url}")
        if result.dataset_commit_url:
            print(f"Pushed eval completions to {result.dataset_repo_id}: {result.dataset_commit_url}")
    return 0
