"""The sandbox from an ordinary account: the whole attack suite as an unprivileged user, and the clear error (or the
opted-in weak mode) where the kernel refuses user namespaces. CI runs as root, so a throwaway account is created."""

import os
import re

import pytest
from nonroot import run_python, unprivileged_account

from trl_ppo_plus.rewards._sandbox_kernel import landlock_abi


@pytest.fixture(scope="module")
def user():
    try:
        with unprivileged_account() as name:
            yield name
    except RuntimeError as exc:
        pytest.skip(f"no unprivileged account could be created: {exc}")


@pytest.mark.skipif(os.geteuid() != 0, reason="already unprivileged: test_sandbox_attacks.py runs in this mode itself")
def test_attack_suite_passes_as_an_unprivileged_user(user):
    run = run_python(
        ["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_sandbox_attacks.py"], user, timeout=400
    )
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr[-2000:]
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    passed = int(re.search(r"(\d+) passed", summary).group(1))
    assert passed >= 40 and "skipped" not in summary and "failed" not in summary, summary
    print(f"\nattack suite as {user}: {summary}")


PROBE = """
import os, warnings
from trl_ppo_plus.rewards.sandbox import ExecutionRequest, LocalSandboxProvider, SandboxIsolationError
request = ExecutionRequest("def f(): return 1", tests=["assert f() == 1"])
try:
    LocalSandboxProvider(max_workers=1).execute([request])
    print("NO ERROR")
except SandboxIsolationError as exc:
    print("ERROR:", exc)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for _ in range(2):
        provider = LocalSandboxProvider(max_workers=1, allow_weak_isolation=True)
        print("WEAK:", provider.execute([request])[0].status, provider.isolation["pidns"])
        provider.close()
weak = [str(w.message) for w in caught if "weak isolation" in str(w.message)]
print("WARNINGS:", len(weak), weak[0] if weak else "")
"""


def test_refused_user_namespaces_raise_a_clear_error(user):
    """A seccomp filter refuses unshare(CLONE_NEWUSER), as Docker's default profile does: the first execution raises
    `SandboxIsolationError` naming the cause and the fix; `allow_weak_isolation=True` runs weakly, warning once."""
    run = run_python(["-c", PROBE], user, refuse_userns=True, timeout=120)
    out = run.stdout
    assert run.returncode == 0, out + run.stderr[-2000:]
    error = next(line for line in out.splitlines() if line.startswith(("ERROR:", "NO ERROR")))
    assert "unshare(CLONE_NEWUSER | CLONE_NEWPID) failed: Operation not permitted" in error
    assert "unprivileged_userns_clone" in error and "allow_weak_isolation=True" in error
    assert out.count("WEAK: passed False") == 2
    assert "WARNINGS: 1 " in out and "Not isolated: programs run as uid" in out


def test_host_mounts_that_cannot_be_read_only_raise_a_clear_error(user):
    """On Linux < 5.12 (mount_setattr fails with ENOSYS, simulated by a seccomp filter) the namespaces are granted but
    the host file system would stay writable to the caller's uid: that is refused too, never a quiet downgrade."""
    run = run_python(["-c", PROBE], user, refuse_mount_setattr=True, timeout=120)
    out = run.stdout
    assert run.returncode == 0, out + run.stderr[-2000:]
    error = next(line for line in out.splitlines() if line.startswith(("ERROR:", "NO ERROR")))
    assert "host mounts cannot be made read-only" in error and "allow_weak_isolation=True" in error
    assert "WARNINGS: 1 " in out and "NOT a read-only host file system" in out


def test_unrefused_user_namespaces_isolate_the_unprivileged_user(user):
    """Without the filter the same account gets the strong mode: a PID namespace inside a user namespace."""
    probe = (
        "from trl_ppo_plus.rewards.sandbox import LocalSandboxProvider\n"
        "i = LocalSandboxProvider(max_workers=1).isolation\n"
        "print(i['userns'], i['pidns'], i['netns'], i['mountns'], i['readonly_fs'], i['drop_uid'])"
    )
    run = run_python(["-c", probe], user, timeout=120)
    assert run.stdout.split() == ["True", "True", "True", "True", "True", "False"], run.stdout + run.stderr[-2000:]


# What the weak mode does not isolate, as measured: the tests of the attack suite it fails (all others pass).
WEAK_GAPS = {
    "test_limits_work_on_a_harmless_program",  # RLIMIT_NPROC counts every process of the caller's uid
    "test_native_attacks_do_run",  # starting programs is blocked by the audit hook (no network namespace)
    "test_attack_scores_zero_and_leaves_host_unchanged[read_canary]",  # files the uid can read stay readable
    "test_attack_scores_zero_and_leaves_host_unchanged[read_home_secret]",  # the caller's own files too
    "test_attack_scores_zero_and_leaves_host_unchanged[inode_flood]",  # the temp dir is on the host's /tmp
    "test_sysv_shared_memory_does_not_outlive_the_run",  # no IPC namespace (nor programs to start for the control)
    "test_attack_scores_zero_and_leaves_host_unchanged[scan_proc]",  # /proc shows every process
}


@pytest.mark.skipif(landlock_abi() < 6, reason="the weak mode keeps the caller alive only with Landlock ABI >= 6")
def test_weak_mode_with_landlock_keeps_the_caller_and_bystander_safe(user):
    """User namespaces refused, `allow_weak_isolation=True`: Landlock stops every kill, SIGSTOP, ptrace, /proc write
    and file write of the attack suite; what stays open is exactly `WEAK_GAPS`."""
    argv = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf", "tests/test_sandbox_attacks.py"]
    run = run_python(argv, user, refuse_userns=True, env={"TRL_SANDBOX_TEST_WEAK": "1"}, timeout=400)
    failed = set(re.findall(r"^FAILED tests/test_sandbox_attacks.py::(\S+)", run.stdout, re.M))
    assert failed == WEAK_GAPS, run.stdout[-4000:] + run.stderr[-2000:]
    print(f"\nweak mode as {user}: {run.stdout.strip().splitlines()[-1]}")
