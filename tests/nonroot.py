"""Run test code as an unprivileged user, and refuse user namespaces the way a container's seccomp profile does.

CI runs as root, but most users run the sandbox from an ordinary account. `unprivileged_account()` creates a throwaway
account with `useradd` (root only) and `run_python()` runs a command as that account in a subprocess. Nothing on the
machine is chmod-ed: the subprocess gets a private mount namespace in which every directory the account may not
enter (e.g. /root, when Python lives in /root/.pyenv) is replaced by an empty tmpfs that holds only the paths the run
needs (the interpreter's prefix, the venv, this checkout), read-only.

`refuse_userns=True` installs a seccomp filter in the subprocess that fails `unshare(CLONE_NEWUSER)` and
`clone(CLONE_NEWUSER)` with EPERM (and `clone3` with ENOSYS, so libc falls back to `clone`): the kernel-level refusal
Docker's default profile applies, on a machine that otherwise allows user namespaces.
"""

import contextlib
import ctypes
import os
import platform
import pwd
import shutil
import struct
import subprocess
import sys

from trl_ppo_plus.rewards._sandbox_kernel import (
    CLONE_NEWNS,
    CLONE_NEWUSER,
    MNT_DETACH,
    MS_BIND,
    MS_NODEV,
    MS_NOSUID,
    MS_PRIVATE,
    MS_REC,
    PR_SET_NO_NEW_PRIVS,
    SYS_MOUNT_SETATTR,
    _expose_prefix,
    check,
    install_seccomp,
    load_libc,
    mount,
    unshare,
)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO = 0x7FFF0000, 0x00050000
# (audit arch, unshare, clone, clone3) per machine
SYSCALLS = {"x86_64": (0xC000003E, 272, 56, 435), "aarch64": (0xC00000B7, 97, 220, 435)}


@contextlib.contextmanager
def unprivileged_account():
    """Yield the name of a fresh account with no privileges; remove it (and its processes) afterwards.

    Raises `RuntimeError` (with the reason) when no account can be created: callers turn that into a skip."""
    if os.geteuid() != 0:
        yield pwd.getpwuid(os.geteuid()).pw_name  # already unprivileged: run as ourselves
        return
    if shutil.which("useradd") is None:
        raise RuntimeError("useradd is not installed")
    name = f"trlsbx{os.getpid() % 100000}"
    made = subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", "--user-group", name],
                          capture_output=True, text=True)  # fmt: skip
    if made.returncode != 0:
        raise RuntimeError(f"useradd failed: {made.stderr.strip()}")
    try:
        yield name
    finally:
        subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)  # only the throwaway account's processes
        subprocess.run(["userdel", "--remove", name], capture_output=True)


def _untraversable(path, uid):
    """The topmost directory above `path` that `uid` cannot enter (others' x bit unset, not the owner), or None."""
    current = "/"
    for part in os.path.realpath(path).strip("/").split("/"):
        current = os.path.join(current, part)
        st = os.stat(current)
        if os.path.isdir(current) and st.st_uid != uid and not st.st_mode & 0o001:
            return current
    return None


def _expose(paths, uid):
    """In our (new, private) mount namespace: over each directory `uid` cannot enter, an empty read-only tmpfs with
    only `paths` bound back in, read-only (the sandbox kernel's own `_expose_prefix`)."""
    covers = {}
    for path in paths:
        top = _untraversable(path, uid)
        if top is not None:
            covers.setdefault(top, []).append(os.path.realpath(path))
    for top, inside in sorted(covers.items()):
        _expose_prefix(top, inside)


def _seccomp_refuse_userns():
    arch, unshare, clone, clone3 = SYSCALLS[platform.machine()]
    ld_w_abs, jeq, jset, ret = 0x20, 0x15, 0x45, 0x06
    program = [
        (ld_w_abs, 0, 0, 4),  # seccomp_data.arch
        (jeq, 1, 0, arch),
        (ret, 0, 0, SECCOMP_RET_ALLOW),
        (ld_w_abs, 0, 0, 0),  # seccomp_data.nr
        (jeq, 0, 1, clone3),
        (ret, 0, 0, SECCOMP_RET_ERRNO | 38),  # ENOSYS: libc falls back to clone(2), whose flags we can see
        (jeq, 1, 0, unshare),
        (jeq, 0, 3, clone),
        (ld_w_abs, 0, 0, 16),  # low word of args[0]: the clone/unshare flags
        (jset, 0, 1, CLONE_NEWUSER),
        (ret, 0, 0, SECCOMP_RET_ERRNO | 1),  # EPERM
        (ret, 0, 0, SECCOMP_RET_ALLOW),
    ]
    code = b"".join(struct.pack("=HBBI", *insn) for insn in program)
    buf = ctypes.create_string_buffer(code, len(code))
    prog = struct.pack("@HP", len(program), ctypes.addressof(buf))  # struct sock_fprog
    libc = load_libc()
    check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
    check(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, prog, 0, 0))


def _seccomp_refuse_mount_setattr():
    """mount_setattr(2) fails with ENOSYS, as on Linux < 5.12."""
    ld_w_abs, jeq, ret = 0x20, 0x15, 0x06
    program = [(ld_w_abs, 0, 0, 0), (jeq, 0, 1, SYS_MOUNT_SETATTR), (ret, 0, 0, SECCOMP_RET_ERRNO | 38),
               (ret, 0, 0, SECCOMP_RET_ALLOW)]  # fmt: skip
    check(load_libc().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
    install_seccomp(b"".join(struct.pack("=HBBI", *insn) for insn in program))


def run_python(argv, user, refuse_userns=False, env=None, timeout=600, cwd=ROOT, private_tmp=True,
               refuse_mount_setattr=False):  # fmt: skip
    """Run `sys.executable argv...` as `user` (root drops to it first); returns the `CompletedProcess`.
    `private_tmp`: the run gets its own /tmp (a tmpfs), so nothing it leaves there outlives it.
    `refuse_mount_setattr`: the kernel of an older Linux, which cannot make the host mounts read-only."""
    entry = pwd.getpwnam(user)
    paths = [sys.base_prefix, sys.prefix, ROOT]
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": entry.pw_dir, "LANG": "C.UTF-8",
           "PYTHONDONTWRITEBYTECODE": "1", **(env or {})}  # fmt: skip

    def prepare():
        if os.geteuid() == 0:
            unshare(CLONE_NEWNS)
            mount("none", "/", None, MS_REC | MS_PRIVATE)
            below_tmp = [(p, os.open(p, os.O_PATH)) for p in map(os.path.realpath, paths) if p.startswith("/tmp/")]
            mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=256m,mode=1777")
            for path, fd in below_tmp:  # a checkout or venv below /tmp (a CI clone): bound back through its handle
                os.makedirs(path, mode=0o755, exist_ok=True)
                mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
                os.close(fd)
            _expose(paths, entry.pw_uid)
            if not private_tmp:  # the host's /tmp again (the binds made through our tmpfs stay where they went)
                check(load_libc().umount2(b"/tmp", MNT_DETACH))
            os.setgroups([])
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
        if refuse_userns:
            _seccomp_refuse_userns()
        if refuse_mount_setattr:
            _seccomp_refuse_mount_setattr()

    return subprocess.run([sys.executable, *argv], env=env, cwd=cwd, preexec_fn=prepare, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip
