"""Attack suite for the local code sandbox: every program scores 0.0, returns within timeout + 1 s, and leaves the
host unchanged (canary files intact, nothing written outside, no connection made, no stray process, the caller and a
bystander process of the same user alive, not stopped, not traced, their /proc entries unchanged).

It runs as root here and, through `test_sandbox_nonroot.py`, again as a throwaway unprivileged account.

Programs that try to *leak* something (an env secret, a socket connection, the canary's content) turn the leak into
a passing answer, so a leak shows up as a non-zero score, not only in the host checks.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from trl_ppo_plus.rewards.code import make_code_reward


TIMEOUT = 1.0
SECRET = "hf_FAKE_SECRET_for_sandbox_tests"
TESTS = ["assert solve(1) == 2", "assert solve(5) == 6"]  # a correct solve() would be `return x + 1`
WRONG = "\ndef solve(x):\n    return 0\n"
LEAK = "\ndef solve(x):\n    return x + 1 if LEAKED else 0\n"  # passes only when the attack got through


def _uid_range():
    base = 0x40000000 + ((os.getpid() & 0xFFFF) << 10)  # see sandbox._sandbox_uid
    return range(base, base + 1024)


def _status(pid):
    """{field: value} of /proc/<pid>/status, or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    except OSError:
        return None


def _zygotes():
    """The sandbox's worker processes: our children running `_sandbox_worker.py`, and (not root) the child each of
    them forks to be PID 1 of the worker's PID namespace. Their own children are programs, never kept."""
    workers = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"_sandbox_worker.py" not in f.read():
                    continue
        except OSError:
            continue
        status = _status(pid)
        if status:
            workers[int(pid)] = int(status["PPid"])
    top = {pid for pid, ppid in workers.items() if ppid == os.getpid()}
    return top | {pid for pid, ppid in workers.items() if ppid in top and os.geteuid() != 0}


def _pid_namespace(pid):
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def sandbox_processes(keep=()):
    """Host pids of processes a sandboxed program left behind: any process of one of this test process's sandbox uids
    (root), any descendant of a sandbox worker, and any process of our own uid in another PID namespace than ours
    (not root: that is where programs run). The workers themselves and `keep` do not count."""
    uids, zygotes = _uid_range(), _zygotes()
    keep, ours, my_ns = {os.getpid(), *zygotes, *keep}, os.geteuid(), _pid_namespace("self")
    table = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        status = _status(pid)
        if status is not None:
            table[int(pid)] = (int(status["Uid"].split()[0]), int(status["PPid"]))
    found = []
    for pid, (uid, ppid) in table.items():
        if pid in keep:
            continue
        ancestors, p = set(), ppid
        while p in table and p not in ancestors:
            ancestors.add(p)
            p = table[p][1]
        if uid in uids or ancestors & zygotes or (ours != 0 and uid == ours and _pid_namespace(pid) != my_ns):
            found.append(pid)
    return found


class Host:
    """Things the attacks go after, and the checks that they are untouched."""

    def __init__(self, root):
        self.dir = root / "parent_dir"
        self.dir.mkdir()
        self.canary = self.dir / "canary.txt"
        self.canary.write_text("canary")
        self.connections = 0
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, args=(self.server,), daemon=True).start()
        self.outside = [f"/tmp/sandbox-pwned-{os.getpid()}", f"/var/tmp/sandbox-pwned-{os.getpid()}",
                        f"/dev/shm/sandbox-pwned-{os.getpid()}", str(root / "pwned.txt")]  # fmt: skip
        # A canary outside /tmp, in a directory the caller owns: only the read-only host mounts protect it when the
        # program runs as the caller's own uid (not root).
        self.home_canary = os.path.join(os.path.expanduser("~"), f".trl-sandbox-canary-{os.getpid()}")
        with open(self.home_canary, "w") as f:
            f.write("canary")
        os.chmod(self.home_canary, 0o600)
        self.outside.append(os.path.expanduser(f"~/sandbox-pwned-{os.getpid()}"))
        # A unix socket on the host's file system, where a network namespace does not reach (a D-Bus or Docker
        # socket, say): in /run as root, in $HOME otherwise.
        run_dir = "/run" if os.geteuid() == 0 else os.path.expanduser("~")
        self.unix_path = os.path.join(run_dir, f".trl-sandbox-{os.getpid()}.sock")
        self.unix_server = socket.socket(socket.AF_UNIX)
        self.unix_server.bind(self.unix_path)
        os.chmod(self.unix_path, 0o777)
        self.unix_server.listen(16)
        threading.Thread(target=self._accept, args=(self.unix_server,), daemon=True).start()
        # A process of the same user started before any reward call: the trainer's neighbour, or the user's shell.
        self.bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
        self.watch = (os.getpid(), self.bystander.pid)
        self.proc_state = {pid: self._proc_entries(pid) for pid in self.watch}

    @staticmethod
    def _proc_entries(pid):
        out = {}
        for name in ("comm", "oom_score_adj", "coredump_filter", "timerslack_ns"):
            try:
                with open(f"/proc/{pid}/{name}") as f:
                    out[name] = f.read()
            except OSError:
                out[name] = None
        return out

    def _accept(self, server):
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def fmt(self, program):
        return program.format(
            canary=str(self.canary), dir=str(self.dir), port=self.port, ppid=os.getpid(), outside=self.outside,
            caller=os.getpid(), pgid=os.getpgid(0), sid=os.getsid(0), bystander=self.bystander.pid,
            home_canary=self.home_canary, python=sys.executable, unix_path=self.unix_path,
        )  # fmt: skip

    def assert_unchanged(self):
        assert self.canary.read_text() == "canary"
        with open(self.home_canary) as f:
            assert f.read() == "canary"
        assert self.bystander.poll() is None, "the bystander was killed"
        for pid in self.watch:
            status = _status(pid)
            assert status["State"][0] not in "Tt", f"process {pid} was stopped"
            assert status["TracerPid"] == "0", f"process {pid} is being traced"
            assert self._proc_entries(pid) == self.proc_state[pid], f"/proc/{pid} was written to"
        assert sorted(p.name for p in self.dir.iterdir()) == ["canary.txt"]
        assert [p for p in self.outside if os.path.exists(p)] == []
        assert self.connections == 0
        deadline = time.monotonic() + 1.0
        while self.strays() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.strays() == []

    def strays(self):
        return sandbox_processes(keep=[self.bystander.pid])

    def close(self):
        self.server.close()
        self.unix_server.close()
        os.remove(self.unix_path)
        self.bystander.kill()
        self.bystander.wait()
        if os.path.exists(self.home_canary):  # an attack that got through may have removed it
            os.remove(self.home_canary)


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    os.environ["HF_TOKEN"] = SECRET  # the parent has a secret; the sandbox must not see it
    h = Host(tmp_path_factory.mktemp("host"))
    yield h
    h.close()
    os.environ.pop("HF_TOKEN", None)


# TRL_SANDBOX_TEST_WEAK=1: measure the weak mode instead (test_sandbox_nonroot.py, with user namespaces refused)
WEAK = {"allow_weak_isolation": True} if os.environ.get("TRL_SANDBOX_TEST_WEAK") == "1" else {}


@pytest.fixture(scope="module")
def reward(host):
    r = make_code_reward(timeout=TIMEOUT, max_workers=2, processes=32, **WEAK)
    yield r
    r.provider.close()


# A program that runs `code` in a fresh interpreter (no audit hook there) with libc at hand; its stdout lands in `out`.
NATIVE = (
    "import subprocess\ncode = {code!r}\ntry:\n    out = subprocess.run([{{python!r}}, '-I', '-S', '-c', "
    "'import ctypes, os\\nlibc = ctypes.CDLL(None, use_errno=True)\\n' + code], capture_output=True, timeout={timeout})"
    ".stdout\nexcept Exception:\n    out = b''\n"
)


def native(code, timeout=0.8):
    """NATIVE running `code`; the fresh interpreter gets `timeout` seconds (within the program's own limit)."""
    return NATIVE.format(code=code, timeout=timeout)


# A fresh interpreter reads the runner's memory (process_vm_readv, as ptrace would) for the run's token: a
# 32-hex-digit bytes object near one of the program's own objects. It then forges the result channel.
STEAL_TOKEN = """import os, sys, subprocess, marshal
anchor = bytes(range(40))
lo, hi = id(anchor) - (48 << 20), id(anchor) + (48 << 20)
code = r'''
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
class iov(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
lo, hi, btype = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
buf = ctypes.create_string_buffer(1 << 16)
found = []
a = lo & ~0xFFFF
while a < hi:
    l = iov(ctypes.addressof(buf), 1 << 16); r = iov(a, 1 << 16)
    n = libc.process_vm_readv(1, ctypes.byref(l), 1, ctypes.byref(r), 1, 0)
    if n > 0:
        data = buf.raw[:n]
        i = data.find(struct.pack("<Q", btype))
        while i != -1:
            if i + 8 + 8 + 8 + 33 <= len(data):
                size = struct.unpack_from("<q", data, i + 8)[0]
                body = data[i + 24: i + 24 + 32]
                if size == 32 and all(c in b"0123456789abcdef" for c in body):
                    found.append(body)
            i = data.find(struct.pack("<Q", btype), i + 8)
    a += 1 << 16
sys.stdout.write("\\n".join(x.decode() for x in found))
'''
out = subprocess.run([sys.executable, "-I", "-S", "-c", code, str(lo), str(hi), str(id(bytes))], capture_output=True, timeout=0.8).stdout.split()
if out:
    os.write(3, out[0] + b"\\n" + marshal.dumps(("ok", "", (1, 1), 0, ())))
    os._exit(0)
"""

ATTACKS = {
    "fork_bomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
    "memory_bomb": "chunks = []\nwhile True:\n    chunks.append(bytearray(1 << 24))",
    "infinite_loop": "while True:\n    pass",
    "sleep_forever": "import time\ntime.sleep(10 ** 6)",
    "write_outside": "for p in {outside!r} + [{canary!r}]:\n    try:\n        open(p, 'w').write('pwned')\n"
    "    except OSError:\n        pass" + WRONG,
    "delete_parent_dir": "import os, shutil\nfor f in (lambda: os.remove({canary!r}), lambda: shutil.rmtree({dir!r})):\n"
    "    try:\n        f()\n    except OSError:\n        pass" + WRONG,
    "create_in_parent_dir": "try:\n    open({dir!r} + '/new.txt', 'w').write('x')\nexcept OSError:\n    pass" + WRONG,
    "read_env_secret": "import os\nLEAKED = os.environ.get('HF_TOKEN') == " + repr(SECRET) + LEAK,
    "read_parent_environ": f"try:\n    LEAKED = {SECRET!r}.encode() in open('/proc/{{ppid}}/environ', 'rb').read()\n"
    "except OSError:\n    LEAKED = False" + LEAK,
    "read_canary": "try:\n    LEAKED = open({canary!r}).read() == 'canary'\nexcept OSError:\n    LEAKED = False"
    + LEAK,
    "socket_connect": "import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=0.5)\n"
    "    LEAKED = True\nexcept OSError:\n    LEAKED = False" + LEAK,
    "kill_parent": "import os, signal\nfor pid in ({ppid}, os.getppid(), -1):\n    try:\n        os.kill(pid, signal.SIGKILL)\n"
    "    except OSError:\n        pass" + WRONG,
    "huge_output": "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)",
    "deep_recursion": "import sys\nsys.setrecursionlimit(10 ** 7)\ndef f(n):\n    return f(n + 1) + 1\nf(0)",
    "daemonized_grandchild": "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
    "        time.sleep(60)\n    os._exit(0)" + WRONG,
    "exec_escape": "import subprocess\nsubprocess.Popen(['sleep', '60'], start_new_session=True)" + WRONG,
    "ignore_sigterm": "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True:\n    pass",
    "os_exit_before_tests": WRONG + "import os\nos._exit(0)",
    "sys_exit_module_level": WRONG + "import sys\nsys.exit(0)",
    "override_builtins": "import builtins\nbuiltins.AssertionError = type('X', (BaseException,), {{}})\n"
    "builtins.sorted = lambda *a, **k: [2]\ndef solve(x):\n    return [0]",
    "always_equal": "class Eq:\n    def __eq__(self, other):\n        return True\n    __hash__ = object.__hash__\n"
    "def solve(x):\n    return Eq()",
    "forged_marker": "print('PASSED'); print('All tests passed'); print('ok 2/2')\nimport sys\n"
    "sys.stderr.write('passed')" + WRONG,
    "forge_result_channel": "import os, marshal\ntok = b''\nfor fd in range(3, 64):\n    try:\n"
    "        tok += os.read(fd, 64) if fd != 3 else b''\n    except OSError:\n        pass\n"
    "payload = marshal.dumps(('ok', '', (1, 1), 0, ()))\nfor fd in range(3, 64):\n    try:\n"
    "        os.write(fd, tok[:32] + b'\\n' + payload)\n    except OSError:\n        pass\nos._exit(0)",
    "steal_token": "import os, sys, marshal\nfound = []\ndef hunt(frame):\n    while frame is not None:\n"
    "        found.extend(v for v in frame.f_locals.values() if type(v) is bytes and len(v) == 32)\n"
    "        frame = frame.f_back\n"
    "for attempt in (lambda: sys.settrace(None), lambda: sys.audit('trl_sandbox.finish', b'x'),\n"
    "                lambda: __import__('ctypes')):\n    try:\n        attempt()\n    except BaseException as exc:\n"
    "        tb = exc.__traceback__\n        while tb is not None:\n            hunt(tb.tb_frame)\n"
    "            tb = tb.tb_next\nhunt(sys._getframe())\npayload = marshal.dumps(('ok', '', (1, 1), 0, ()))\n"
    "for tok in found:\n    for fd in range(3, 20):\n        try:\n            os.write(fd, tok + b'\\n' + payload)\n"
    "        except OSError:\n            pass\nsys.audit('trl_sandbox.finish', payload)\nos._exit(0)",
    "frame_walk_tamper": "import sys\ndef solve(x):\n    f = sys._getframe(1)\n    f.f_globals['__h_test__'] = None\n"
    "    f.f_builtins['AssertionError'] = KeyError\n    return 0",
    "shadow_builtin": "def sorted(*args, **kwargs):\n    return [2]\ndef solve(x):\n    return [0]",
    "fake_module": "class FakeMath:\n    @staticmethod\n    def isclose(*a, **k):\n        return True\n"
    "math = FakeMath()\ndef solve(x):\n    return 0.0",
    "patch_then_restore": "import sys\ncalls = []\ndef solve(x):\n    calls.append(x)\n"
    "    b = sys._getframe(1).f_builtins\n    if len(calls) == 1:\n        b['real'], b['sorted'] = b['sorted'], lambda *a: [2]\n"
    "    elif len(calls) == 3:\n        b['sorted'] = b.pop('real')\n    return [0]",
    "patch_stdlib": "import math\nmath.isclose = lambda *a, **k: True\ndef solve(x):\n    return 0.0",
    "leftover_thread": "import threading, time\nthreading.Thread(target=time.sleep, args=(30,), daemon=True).start()"
    + WRONG,
    "setuid_root": "import os\ntry:\n    os.setuid(0)\n    LEAKED = True\nexcept OSError:\n    LEAKED = False" + LEAK,
    "ctypes_memory": "try:\n    import ctypes\n    LEAKED = True\nexcept Exception:\n    LEAKED = False" + LEAK,
    "settrace_skip": "import sys\ntry:\n    sys.settrace(lambda *a: None)\n    LEAKED = True\n"
    "except RuntimeError:\n    LEAKED = False" + LEAK,
    # --- attacks on the caller (the trainer) and on a bystander process of the same user
    "kill_caller": "import os, signal\nfor sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):\n"
    "    for pid in ({caller}, {bystander}):\n        try:\n            os.kill(pid, sig)\n        except OSError:\n"
    "            pass" + WRONG,
    "killpg_caller_group": "import os, signal\nfor group in ({pgid}, {sid}):\n    try:\n"
    "        os.killpg(group, signal.SIGKILL)\n    except OSError:\n        pass\n    try:\n"
    "        os.kill(-group, signal.SIGKILL)\n    except OSError:\n        pass" + WRONG,
    "sigstop_caller": "import os, signal\nfor pid in ({caller}, {bystander}, -{pgid}):\n    try:\n"
    "        os.kill(pid, signal.SIGSTOP)\n    except OSError:\n        pass" + WRONG,
    "kill_pid_range": "import os\nfor pid in range(max(2, {caller} - 3000), {caller} + 3000):\n    try:\n"
    "        os.kill(pid, 9)\n    except OSError:\n        pass" + WRONG,
    "pidfd_signal": "import os, signal\nfor pid in ({caller}, {bystander}):\n    try:\n"
    "        signal.pidfd_send_signal(os.pidfd_open(pid), signal.SIGKILL)\n    except OSError:\n        pass" + WRONG,
    "proc_write_caller": "for pid in ({caller}, {bystander}):\n    for name, data in (('oom_score_adj', '1000'), "
    "('comm', 'pwned'), ('coredump_filter', '0'), ('timerslack_ns', '1'), ('clear_refs', '1'), ('mem', 'x')):\n"
    "        try:\n            with open(f'/proc/{{pid}}/{{name}}', 'w') as f:\n                f.write(data)\n"
    "        except Exception:\n            pass" + WRONG,
    "scan_proc": "import os\ntry:\n    LEAKED = any(p.isdigit() and p != '1' for p in os.listdir('/proc'))\n"
    "except Exception:\n    LEAKED = False" + LEAK,
    "setpgid_into_caller_group": "import os\ntry:\n    os.setpgid(0, {pgid})\n    LEAKED = True\n"
    "except OSError:\n    LEAKED = False" + LEAK,
    "inode_flood": "import os\nn = 0\ntry:\n    while n < 20000:\n        os.mkdir(str(n))\n        n += 1\n"
    "except OSError:\n    pass\nLEAKED = n >= 20000" + LEAK,  # empty dirs: no bytes, but kernel memory, cleanup time
    "memfd_hoard": "import os\ntry:\n    fd = os.memfd_create('m')\n    os.write(fd, bytes(1 << 20))\n    LEAKED = True\n"
    "except OSError:\n    LEAKED = False" + LEAK,  # 16 MiB per fd x 128 fds per process, outside RLIMIT_AS
    "read_home_secret": "try:\n    LEAKED = open({home_canary!r}).read() == 'canary'\nexcept OSError:\n    LEAKED = False"
    + LEAK,  # ~/.cache/huggingface/token, ~/.ssh: the caller's files, even those only its uid may read
    "home_canary_write": "import os\nfor f in (lambda: open({home_canary!r}, 'w').write('pwned'),\n"
    "          lambda: os.remove({home_canary!r}), lambda: open({outside!r}[-1], 'w').write('x')):\n"
    "    try:\n        f()\n    except OSError:\n        pass" + WRONG,
    # --- native code in a fresh interpreter, where no audit hook of ours runs: only the kernel stands in the way
    "native_kill": native("for pid in (-1, {caller}, -{pgid}, {bystander}):\n    libc.kill(pid, 9)\n") + WRONG,
    "ptrace_attach": native(
        "for pid in ({caller}, {bystander}):\n    if libc.ptrace(16, pid, 0, 0) == 0:\n        print('LEAK')\n"
    )
    + "LEAKED = b'LEAK' in out"
    + LEAK,
    "native_proc_write": native(
        "for pid in ({caller}, {bystander}):\n    for name in ('mem', 'oom_score_adj', 'comm'):\n"
        "        try:\n            with open('/proc/%d/%s' % (pid, name), 'wb') as f:\n"
        "                f.write(b'1000' if name != 'mem' else b'x')\n            print('LEAK')\n"
        "        except OSError:\n            pass\n"
    )
    + "LEAKED = b'LEAK' in out"
    + LEAK,
    "steal_token_from_memory": STEAL_TOKEN + WRONG,
    "unix_socket_connect": native(
        "import socket\ns = socket.socket(socket.AF_UNIX)\nprint('LEAK')\ns.connect('{unix_path}')\n"
    )
    + "LEAKED = b'LEAK' in out"
    + LEAK,
    "unshare_regain_caps": native(
        "libc.unshare(0x10000000 | 0x20000)\nlibc.mount(b'proc', b'/proc', b'proc', 0, None)\n"
        "print('LEAK' if str({caller}) in os.listdir('/proc') else 'no')\n"
    )
    + "LEAKED = b'LEAK' in out"
    + LEAK,
    # a key in the user keyring (per uid, not per process) outlives the run: the next program on the worker reads it
    "keyring_store": native(
        "import platform\nadd_key = {{'x86_64': 248, 'aarch64': 217}}[platform.machine()]\n"
        "print('LEAK' if libc.syscall(add_key, b'user', b'trl-sandbox', b'answer', 6, -4) > 0 else 'no')\n"
    )
    + "LEAKED = b'LEAK' in out"
    + LEAK,
}
SPECIAL_TESTS = {  # attacks aimed at a particular kind of assert
    "override_builtins": ["assert sorted(solve(1)) == [2]"],
    "patch_stdlib": ["import math\nassert math.isclose(solve(1), 2.0)"],
    "shadow_builtin": ["assert sorted(solve(1)) == [2]"],
    "patch_then_restore": ["assert solve(1)", "assert sorted(solve(2)) == [2]", "assert solve(3)"],
    "fake_module": ["assert math.isclose(solve(1), 2.0)"],  # relies on the program's `import math`, like HumanEval
}


def test_limits_work_on_a_harmless_program(reward, host):
    """Before any bomb: a program that forks many sleepers gets exactly RLIMIT_NPROC - 1 of them, and none remain."""
    program = (
        "import os, time\npids = []\nfor _ in range(100):\n    try:\n        pid = os.fork()\n    except OSError:\n"
        "        break\n    if pid == 0:\n        time.sleep(30)\n        os._exit(0)\n    pids.append(pid)\n"
        "def solve(x):\n    return len(pids)"
    )
    [result] = reward.results([f"```python\n{program}\n```"], test_list=[["assert solve(0) == 31"]])
    assert result.status == "passed", result
    host.assert_unchanged()


def test_memory_and_output_limits_hold(reward, host):
    """An allocation past RLIMIT_AS (1 GiB) fails (status `memory`), and a flood of output is cut at `output_bytes`."""
    bomb = "chunks = [bytearray(1 << 31)]"
    flood = "import sys\nsys.stdout.write('x' * (1 << 22))" + WRONG
    memory, output = reward.results([f"```python\n{p}\n```" for p in (bomb, flood)], test_list=[TESTS, TESTS])
    assert memory.status == "memory", memory
    assert output.status == "failed" and len(output.stdout) == reward.provider.config.output_bytes, output.status
    host.assert_unchanged()


def test_sysv_shared_memory_does_not_outlive_the_run(host):
    """A SysV shared memory segment (256 MiB, touched, detached) must go with the run that made it: it holds memory
    no rlimit counts, and a later program on the same worker must not find it. Touching 256 MiB takes 0.3-0.8 s on
    a loaded 2-core machine, so both runs get 10 s; the later one scores only when it sees the segment gone (ENOENT),
    so a run cut short cannot pass for one that found nothing."""
    make = (
        "libc.shmat.restype = ctypes.c_void_p\nsid = libc.shmget(0x5EED, 256 << 20, 0o1666)\n"
        "addr = libc.shmat(sid, None, 0)\nctypes.memset(addr, 7, 256 << 20)\nlibc.shmdt(ctypes.c_void_p(addr))\n"
        "print('LEAK' if sid >= 0 else 'no')\n"
    )
    find = "print('GONE' if libc.shmget(0x5EED, 0, 0o666) < 0 and ctypes.get_errno() == 2 else 'FOUND')\n"
    reward = make_code_reward(timeout=10.0, max_workers=1)  # one worker: the second run follows the first
    try:
        made = reward([f"```python\n{host.fmt(native(make, 9.0))}LEAKED = b'LEAK' in out{LEAK}```"], test_list=[TESTS])
        gone = reward([f"```python\n{host.fmt(native(find, 9.0))}LEAKED = b'GONE' in out{LEAK}```"], test_list=[TESTS])
        host.assert_unchanged()  # before close(): not root, a closed worker may leave a zombie for init to reap
    finally:
        reward.provider.close()
    assert made == [1.0], "control: the segment was made"
    assert gone == [1.0], "a later run found the segment (or could not tell)"


def test_a_program_leaves_nothing_for_the_next_one_on_its_worker():
    """Not root, a program owns its worker's private /tmp. Whatever it leaves there (a file, a symlink, a symlink in
    place of its own working dir) is gone before the next program on that worker, and that program still runs. (The
    attacks above check the host; here a check would also count the zombie of the worker closed just before.)"""
    litter = (
        "import os\nos.chdir('/')\n"
        "for act in (lambda: open('/tmp/left', 'w').write('A'), lambda: os.symlink('/tmp/left', '/tmp/link'),\n"
        "            lambda: os.rename('/tmp/run', '/tmp/moved'), lambda: os.symlink('/nowhere', '/tmp/run')):\n"
        "    try:\n        act()\n    except OSError:\n        pass\n"
    )
    clean = "import os\nCLEAN = not any(os.path.lexists(p) for p in ('/tmp/left', '/tmp/link', '/tmp/moved'))\n"
    reward = make_code_reward(timeout=TIMEOUT, max_workers=1, **WEAK)  # one worker: the second run follows the first
    try:
        first = reward([f"```python\n{litter}{WRONG}```"], test_list=[TESTS])
        second = reward([f"```python\n{clean}def solve(x):\n    return x + 1 if CLEAN else 0\n```"], test_list=[TESTS])
    finally:
        reward.provider.close()
    assert (first, second) == ([0.0], [1.0])


def test_closed_workers_leave_no_process_behind():
    """`close()` lets each worker exit and be reaped by its own parent: not root, a worker killed outright leaves the
    PID 1 of its namespace to the machine's init, a zombie for a second or more, that looks like a stray process."""
    from trl_ppo_plus.rewards.sandbox import ExecutionRequest, LocalSandboxProvider

    before = set(sandbox_processes())
    provider = LocalSandboxProvider(timeout=TIMEOUT, max_workers=2, **WEAK)
    results = provider.execute([ExecutionRequest("def f():\n    return 1", tests=["assert f() == 1"])] * 4)
    provider.close()
    assert [r.status for r in results] == ["passed"] * 4
    assert set(sandbox_processes()) - before == set()


def test_a_leak_would_score(reward):
    """Control: the LEAK pattern does score when the attack gets through, so 0.0 above means it did not."""
    assert reward([f"```python\nLEAKED = True{LEAK}```"], test_list=[TESTS]) == [1.0]


def test_native_attacks_do_run(reward, host):
    """Control: a fresh interpreter with ctypes does start inside the sandbox, so the native attacks are real tries."""
    program = host.fmt(native("print('LEAK' if libc.getpid() > 0 else 'no')\n") + "LEAKED = b'LEAK' in out")
    assert reward([f"```python\n{program}{LEAK}```"], test_list=[TESTS]) == [1.0]


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_scores_zero_and_leaves_host_unchanged(name, reward, host):
    program = host.fmt(ATTACKS[name])
    start = time.monotonic()
    scores = reward([f"```python\n{program}\n```"], test_list=[SPECIAL_TESTS.get(name, TESTS)])
    elapsed = time.monotonic() - start
    assert scores == [0.0]
    assert elapsed < TIMEOUT + 1.0
    host.assert_unchanged()
    os.kill(os.getpid(), 0)  # the parent is alive (trivially, if we got here)


def test_humaneval_check_override_scores_zero(reward, host):
    test = "def check(candidate):\n    assert candidate(1) == 2\n    assert candidate(2) == 3\n"
    completion = "def check(candidate):\n    return True\n\ndef inc(x):\n    return 0\n"
    assert reward([completion], test=[test], entry_point=["inc"]) == [0.0]
    host.assert_unchanged()


def test_stdio_forged_output_marker_scores_zero(reward, host):
    completion = "print('PASSED')\nimport os\nos._exit(0)"
    assert reward([completion], input_output=[{"inputs": ["1\n"], "outputs": ["2\n"]}]) == [0.0]
    host.assert_unchanged()


def test_batch_of_attacks_in_parallel_is_bounded(reward, host):
    """Everything at once, two workers: still 0.0 each, and the batch ends within ceil(n/2) timeouts + 1 s."""
    names = ["fork_bomb", "memory_bomb", "sleep_forever", "daemonized_grandchild", "kill_parent", "huge_output",
             "kill_caller", "sigstop_caller"]  # fmt: skip
    completions = [f"```python\n{host.fmt(ATTACKS[n])}\n```" for n in names]
    start = time.monotonic()
    scores = reward(completions, test_list=[TESTS] * len(names))
    assert scores == [0.0] * len(names)
    assert time.monotonic() - start < (len(names) + 1) // 2 * TIMEOUT + 1.5
    host.assert_unchanged()
    assert signal.getsignal(signal.SIGTERM) is not None  # the parent's own state is untouched
