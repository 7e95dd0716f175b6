"""In-process test harness that runs inside the sandboxed runner (stdlib only; imported by `_sandbox_worker.py`).

The kernel does the hard isolation (namespaces, rlimits, uid). This module decides the verdict, and is built so that
a program cannot *make the harness report a pass*:

1. Every test is parsed, rewritten and compiled in the zygote *before* the program exists, so patching `ast` or
   `compile` is too late.
2. A pass needs a positive signal: after the last test, `token + verdicts` goes to fd 3. The per-run token is
   written by the supervisor after the fork, read from fd 4 and closed before the program starts, and kept only by
   an audit hook that writes it for the harness's own frame and never raises (so no traceback exposes it). Exiting early (`os._exit`, `sys.exit`, a crash),
   printing a marker, or writing to fd 3 directly produces no valid signal, so it scores 0.
3. Tests run with a fresh copy of the original builtins and restored stdlib modules; `check` and each test function
   are identity-checked against the code objects compiled in step 1.
4. With `strict` (default), every value an assert compares must be of an exact builtin type (int, str, list, ...):
   an object whose `__eq__` always returns True fails the test instead of passing it.
5. An audit hook (permanent, PEP 578) blocks tracing, `ctypes`, `gc` introspection, crafting code objects and
   rebinding the harness's functions. Network blocking lives here too when no network namespace was available.

Known limits: a program can still walk frames (`f_back`) and rewrite the test's globals while a test runs; the harness
detects changes to that namespace afterwards and reports an error. It can also *read* the running test from its
frame (`sys._getframe(1).f_code.co_consts` holds the expected value of `assert f(x) == 2`), and the restore of
preloaded modules is shallow: a module the tests import that was not preloaded (`json`), or a mutable object inside a
preloaded one (`copy._deepcopy_dispatch`, a class attribute), can be replaced so that a wrong program passes. Both
were shown to pass a wrong program; only judging outside the process (as for stdin/stdout) would close them. The stdin/stdout format is judged by the parent
process from the captured output, so it cannot be forged at all.
"""

import _thread
import ast
import builtins
import gc
import io
import itertools
import marshal
import operator
import os
import sys
import types


TEST_FILE = "<sandbox-test>"
FINISH = "trl_sandbox.finish"
PRELOAD = ("math", "cmath", "re", "collections", "itertools", "functools", "heapq", "bisect", "string", "operator",
           "copy", "typing", "random", "fractions", "decimal", "datetime", "statistics", "hashlib", "array")  # fmt: skip
PLAIN = (int, float, complex, str, bytes, bytearray, bool, type(None), list, tuple, dict, set, frozenset, range, type,
         type(Ellipsis))  # fmt: skip
ALWAYS_BLOCKED = frozenset({"sys.settrace", "sys.setprofile", "sys._current_frames", "sys.addaudithook",
                            "gc.get_objects", "gc.get_referrers", "gc.get_referents", "code.__new__",
                            "function.__new__"})  # fmt: skip
EXEC_EVENTS = frozenset({"os.exec", "os.posix_spawn", "os.spawn", "os.system", "subprocess.Popen", "pty.spawn"})


def preload():
    """Import what solutions commonly use, once in the zygote, so each forked run starts warm."""
    for name in PRELOAD:
        try:
            __import__(name)
        except ImportError:
            pass
    if not hasattr(builtins, "exit"):  # `-S` skips site, which is where exit()/quit() come from

        def exit(code=None):
            raise SystemExit(code)

        builtins.exit = builtins.quit = exit


def _h_plain(value, _type=type, _id=id, _set=set, _ok=frozenset(map(id, PLAIN)),
             _seq=frozenset(map(id, (list, tuple, set, frozenset))), _dict=id(dict), _err=AssertionError):  # fmt: skip
    """Return `value` if it (recursively) has only exact builtin types, else fail the assert. No global lookups."""
    stack, seen = [value], _set()
    while stack:
        v = stack.pop()
        t = _id(_type(v))
        if t not in _ok:
            raise _err("sandbox: a test compared a value of a non-builtin type")
        if t in _seq or t == _dict:
            if _id(v) in seen:
                continue
            seen.add(_id(v))
            if t == _dict:
                stack.extend(v.keys())
                stack.extend(v.values())
            else:
                stack.extend(v)
    return value


def _guard(expr):
    """Wrap what an assert looks at in `__h_plain__(...)`: every comparison operand, and the tested value itself."""
    expr = _CompareGuard().visit(expr)
    if isinstance(expr, ast.BoolOp):
        expr.values = [_guard(v) for v in expr.values]
        return expr
    if isinstance(expr, ast.UnaryOp) and isinstance(expr.op, ast.Not):
        expr.operand = _guard(expr.operand)
        return expr
    return expr if isinstance(expr, ast.Compare) else _wrap(expr)


class _CompareGuard(ast.NodeTransformer):
    def visit_Compare(self, node):
        self.generic_visit(node)
        if not getattr(node, "_guarded", False):
            node.left, node.comparators, node._guarded = _wrap(node.left), [_wrap(c) for c in node.comparators], True
        return node


def _wrap(expr):
    return ast.Call(func=ast.Name("__h_plain__", ast.Load()), args=[expr], keywords=[])


class _Guard(ast.NodeTransformer):
    """Guard every assert; give every function the guard as a positional default (a fast local nobody can rebind)."""

    def visit_Assert(self, node):
        self.generic_visit(node)
        node.test = _guard(node.test)
        return node

    def visit_FunctionDef(self, node):
        self.generic_visit(node)
        default = ast.Name("__h_plain__", ast.Load())
        if node.args.vararg is None:
            node.args.args.append(ast.arg("__h_plain__"))
            node.args.defaults.append(default)
        else:
            node.args.kwonlyargs.append(ast.arg("__h_plain__"))
            node.args.kw_defaults.append(default)
        return node

    visit_AsyncFunctionDef = visit_FunctionDef


def compile_setup(source, strict):
    tree = ast.parse(source, TEST_FILE)
    if strict:
        tree = _Guard().visit(tree)
    return compile(ast.fix_missing_locations(tree), TEST_FILE, "exec")


def compile_test(source, strict):
    """One test snippet -> (module code defining `__h_test__`, the code object `__h_test__` must have)."""
    body = ast.parse(source, TEST_FILE).body or [ast.Pass()]
    args = ast.arguments(posonlyargs=[], args=[], vararg=None, kwonlyargs=[], kw_defaults=[], kwarg=None, defaults=[])
    fn = ast.FunctionDef(name="__h_test__", args=args, body=body, decorator_list=[], returns=None)
    tree = ast.Module(body=[fn], type_ignores=[])
    if strict:
        tree = _Guard().visit(tree)
    code = compile(ast.fix_missing_locations(tree), TEST_FILE, "exec")
    (fn_code,) = [c for c in code.co_consts if isinstance(c, types.CodeType) and c.co_name == "__h_test__"]
    return code, fn_code


def names_used(*codes):
    """Every global name the test code reads (walking nested code objects)."""
    names, stack = set(), list(codes)
    while stack:
        code = stack.pop()
        if code is None:
            continue
        names.update(code.co_names)
        stack.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    return frozenset(names)


_PRELOADED = frozenset(PRELOAD)


def modules_used(names):
    """Preloaded modules among `names`: only these are restored before tests (restoring all costs a page fault per
    touched object in every forked runner)."""
    return names & _PRELOADED


def _finish_hook(token, frame):
    """The only holder of the run's token. It writes `token + payload` to fd 3 for exactly one caller, the frame of
    `run` that installed it, when that frame raises the `FINISH` event. The program never sees the token: it was read
    from fd 4 (then closed) before the program started; the hook is unreachable from Python (gc access is blocked),
    and it never raises, so its frame (whose locals hold the token) never shows up in a traceback."""

    def hook(event, args, _type=type, _str=str, _bytes=bytes, _tuple=tuple, _token=token, _frame=frame,
             _getframe=sys._getframe, _write=os.write, _base=BaseException):  # fmt: skip
        try:
            if (
                _type(event) is not _str
                or event != FINISH
                or _type(args) is not _tuple
                or _type(args[0]) is not _bytes
            ):
                return
            if _getframe(1) is not _frame:
                return  # a forged signal: ignored, and the run will end without one
            message = _token + b"\n" + args[0]
            while message:
                message = message[_write(3, message) :]
        except _base:
            return

    return hook


def _policy_hook(network_block, proc_visible):
    """Blocks what could subvert the harness or reach the network. Holds no secret: it may raise."""
    trusted = frozenset({TEST_FILE, _h_plain.__code__.co_filename})

    def hook(event, args, _type=type, _fn=types.FunctionType, _str=str, _bytes=bytes, _int=int, _tuple=tuple,
             _trusted=trusted, _err=RuntimeError, _blocked=ALWAYS_BLOCKED, _exec=EXEC_EVENTS, _net=network_block,
             _proc=proc_visible):  # fmt: skip
        if _type(event) is not _str or _type(args) is not _tuple:  # never run user-defined __eq__/__hash__ here
            raise _err("sandbox: malformed audit event")
        if event in _blocked or event[:7] == "ctypes.":
            raise _err(f"sandbox: {event} is not allowed")
        if event == "object.__setattr__" or event == "object.__delattr__":
            if _type(args[0]) is _fn and args[0].__code__.co_filename in _trusted:
                raise _err("sandbox: the harness's functions are read-only")
        elif event == "socket.__new__":
            if _net and not (
                _type(args[1]) is _int and args[1] == 1
            ):  # AF_UNIX stays usable (socketpair); everything else is network
                raise _err("sandbox: network access is disabled")
        elif event in ("socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg"):
            addr = args[1]
            if _type(addr) in (_str, _bytes) and addr[:1] not in ("\0", b"\0"):
                raise _err("sandbox: unix sockets on the filesystem are disabled")
            if _net:
                raise _err("sandbox: network access is disabled")
        elif _net and event in _exec:
            raise _err("sandbox: starting programs is disabled without a network namespace")
        elif _proc and event == "open" and _type(args[0]) in (_str, _bytes):
            path = args[0] if _type(args[0]) is _str else args[0].decode("latin-1")
            if "/proc" in path or path[:4] == "proc":  # /proc/self/mem would let a program rewrite the harness
                raise _err("sandbox: /proc is not accessible")

    return hook


def _describe(exc, _type=type, _str=str, _as_str=str.__str__):
    try:
        name = _as_str(_type(exc).__name__)
    except BaseException:
        return "unprintable exception"
    try:
        return (name + ": " + _as_str(_str(exc)))[:300]
    except BaseException:
        return name


def _tmpfd(_open=os.open, _flags=os.O_TMPFILE | os.O_RDWR):
    return _open(".", _flags, 0o600)


def _run_asserts(program, setup_code, tests, strict, mods, real_mods, bsnap, threads0, used, _exec=exec, _compile=compile,
                 _type=type, _fn=types.FunctionType, _count=_thread._count, _dict=dict, _tuple=tuple, _len=len,
                 _mem=MemoryError, _base=BaseException, _gc_disable=gc.disable, _plain=_h_plain, _mt=types.ModuleType,
                 _str=str, _modules=sys.modules, _any=any, _map=map, _is_not=operator.is_not,
                 _repeat=itertools.repeat):  # fmt: skip
    """Returns (phase, detail, verdicts, memory). Locals only hold immutable values or objects we verify."""
    g = {"__name__": "solution", "__builtins__": builtins}
    try:
        _exec(_compile(program, "<solution>", "exec"), g)
    except _mem:
        return "load", "MemoryError", (), 1
    except _base as exc:
        return "load", _describe(exc), (), 0
    _gc_disable()  # no finalizer runs between building the test namespace and snapshotting it
    if _count() > threads0:
        return "threads", "the program left threads running", (), 0
    for name, mod, d, items in mods:  # undo monkeypatching of the stdlib modules the tests may import
        _modules[name] = mod
        d.clear()
        d.update(items)
        if _type(mod) is not _mt:
            return "tamper", f"module {name} was replaced", (), 0
    # The tests see the program's globals with the real module behind every preloaded module name. A global named
    # like a builtin stays only when it is what the tests are about: when they read no other name the program
    # defined (MBPP's `def sum(a, b)` tested by `assert sum(1, 2) == 3`). Next to a function under test it is a
    # forgery (`def sorted(x): return [2]` against `assert sorted(solve(1)) == [2]`) and the real builtin is used.
    # Only exact-str keys: no user __hash__/__eq__ runs here.
    (mod_names, real_mods), bdict, ns = real_mods, _dict(bsnap), {}
    shadows_ok = 1
    for k in g:
        if _type(k) is _str and k in used and k not in bdict and k[:2] != "__":
            shadows_ok = 0
    for k, v in g.items():
        if _type(k) is not _str or (k in bdict and k[:2] != "__" and not (shadows_ok and k in used)):
            continue
        if k in mod_names and _type(v) is not _fn:
            for name, mod in real_mods:
                if name == k:
                    v = mod
        ns[k] = v
    ns["__builtins__"] = bdict
    ns["__h_plain__"] = _plain
    try:
        _exec(setup_code, ns)
    except _mem:
        return "setup", "MemoryError", (), 1
    except _base as exc:
        return "setup", _describe(exc), (), 0
    ns["__h_test__"] = None  # each test rebinds it; the snapshot below must not count that as tampering
    snaps = ((ns, _tuple(ns), _tuple(ns.values())), (bdict, _tuple(bdict), _tuple(bdict.values())))
    verdicts, detail, memory = (), "", 0
    for mod_code, fn_code in tests:
        try:
            _exec(mod_code, ns)
            fn = ns.get("__h_test__")
            if _type(fn) is not _fn or fn.__code__ is not fn_code or (strict and fn.__defaults__[-1] is not _plain):
                return "tamper", "the test function was replaced", verdicts, memory
            fn()
            verdicts += (1,)
        except _mem:
            verdicts, memory = verdicts + (0,), 1
        except _base as exc:
            verdicts += (0,)
            detail = detail or _describe(exc)
        if _count() > threads0:
            return "threads", "the program left threads running", verdicts, memory
        ns["__h_test__"] = None
        for d, keys, values in snaps:  # after every test: a change cannot help a later one
            # d.get(k, d) is not v, for every (k, v), in C; exact-str keys: no user __eq__ runs
            if _len(d) != _len(keys) or _any(_map(_is_not, _map(d.get, keys, _repeat(d)), values)):
                return "tamper", "the test namespace was modified while tests ran", verdicts, memory
    return "ok", detail, verdicts, memory


def _run_stdio(program, inputs, out_cap, _exec=exec, _compile=compile, _type=type, _int=int, _mem=MemoryError,
               _base=BaseException, _exit=SystemExit, _os=os, _io=io, _sys=sys, _bytes=bytes):  # fmt: skip
    """Run the program once per input with fds 0/1 on fresh files. Returns (phase, detail, ran_ok, memory, outputs)."""
    try:
        code = _compile(program, "<solution>", "exec")
    except _base as exc:
        return "load", _describe(exc), (), 0, ()
    verdicts, outputs, detail, memory = (), (), "", 0
    for data in inputs:
        fd = _tmpfd()
        view = data.encode()
        while view:
            view = view[_os.write(fd, view) :]
        _os.lseek(fd, 0, 0)
        _os.dup2(fd, 0)
        _os.close(fd)
        fd = _tmpfd()
        _os.dup2(fd, 1)
        _os.close(fd)
        stdout = _io.TextIOWrapper(_io.BufferedWriter(_io.FileIO(1, "w", closefd=False)), encoding="utf-8")
        _sys.stdin = _io.TextIOWrapper(_io.BufferedReader(_io.FileIO(0, "r", closefd=False)), encoding="utf-8")
        _sys.stdout = stdout
        ok = 1
        try:
            _exec(code, {"__name__": "__main__", "__builtins__": builtins})
        except _exit as exc:
            ok = 1 if exc.code is None or (_type(exc.code) is _int and exc.code == 0) else 0
        except _mem:
            ok, memory = 0, 1
        except _base as exc:
            ok, detail = 0, detail or _describe(exc)
        try:
            stdout.flush()
        except _base:
            pass
        _os.lseek(1, 0, 0)
        outputs += (_bytes(_os.read(1, out_cap)),)
        verdicts += (ok,)
    return "ok", detail, verdicts, memory, outputs


def snapshot(network_block, proc_visible):
    """Taken in the zygote after `preload`: the preloaded modules' bindings, the builtins, the thread count, our own
    stdout/stderr, and the policy audit hook (it holds no secret). Every runner starts from exactly this state, so it
    is computed once; its own containers are tuples and frozensets, so a program that reaches it cannot change what
    it records.

    The builtins' names are fresh copies of the interned ones, allocated side by side: building a runner's builtins
    dict writes each key's refcount, and the interned strings lie scattered over some 60 pages, each a copy-on-write
    page fault in every runner."""
    mods = tuple((n, sys.modules[n], vars(sys.modules[n]), tuple(vars(sys.modules[n]).items()))
                 for n in PRELOAD if n in sys.modules)  # fmt: skip
    names = [(k + ".")[:-1] for k in vars(builtins)]  # equal, not identical: dict lookups compare by value
    bsnap = tuple(zip(names, vars(builtins).values()))
    real_mods = (frozenset(m[0] for m in mods), tuple((m[0], m[1]) for m in mods))
    policy = _policy_hook(network_block, proc_visible)
    return mods, bsnap, _thread._count(), (sys.stdout, sys.stderr), real_mods, policy


def run(job, compiled, snap, _exit=os._exit, _dumps=marshal.dumps, _audit=sys.audit):
    """Entry point in the runner. `compiled` = (setup code, ((test module, test function code), ...), error), built
    by the zygote before this program existed; `snap` from `snapshot`. Locks the interpreter, runs the program,
    reports, exits."""
    strict, kind = bool(job.get("strict", True)), job["kind"]
    program, out_cap = str(job["program"]), int(job["limits"]["output_bytes"])
    inputs = tuple(str(x) for x in job.get("inputs") or ())
    setup_code, tests, broken, used = compiled or (None, (), None, frozenset())
    restore = modules_used(used)
    if broken:
        kind = "broken"
    del job
    mods, bsnap, threads0, streams, real_mods, policy = snap
    mods = tuple(m for m in mods if m[0] in restore) if restore else ()
    sys.addaudithook(_finish_hook(os.read(4, 64), sys._getframe()))
    sys.addaudithook(policy)
    os.close(4)
    memory, outputs = 0, ()
    if kind == "broken":
        phase, detail, verdicts = "setup", broken, ()
    elif kind == "stdio":
        phase, detail, verdicts, memory, outputs = _run_stdio(program, inputs, out_cap)
    else:
        phase, detail, verdicts, memory = _run_asserts(program, setup_code, tests, strict, mods, real_mods, bsnap,
                                                       threads0, used)  # fmt: skip
    try:
        payload = _dumps((phase, detail, verdicts, memory, outputs))
    except BaseException:
        payload = _dumps(("ok" if phase == "ok" else "error", "", verdicts, memory, ()))
    for stream in streams:  # our own TextIOWrappers (C code), not whatever the program put in sys.stdout
        try:
            stream.flush()
        except BaseException:
            pass
    _audit(FINISH, payload)  # the hook adds the token and writes to fd 3
    _exit(0)


def decode(data, token, job):
    """Supervisor side: turn the result channel's bytes into a verdict. No valid token -> no pass, ever."""
    import hmac

    total = len(job.get("inputs") or ()) if job["kind"] == "stdio" else len(job.get("tests") or ())
    head, _, payload = data.partition(b"\n")
    if not hmac.compare_digest(head, token):
        return {"status": "error", "passed": 0, "total": total, "detail": "no completion signal from the harness"}
    phase, detail, verdicts, memory, outputs = marshal.loads(payload)
    result = {"passed": 0, "total": total, "detail": detail, "ran_ok": list(verdicts),
              "outputs": [o.decode("utf-8", "replace") for o in outputs]}  # fmt: skip
    if memory:
        return dict(result, status="memory", detail=detail or "memory limit exceeded")
    if phase != "ok" or len(verdicts) != total:
        return dict(result, status="error", detail=f"{phase}: {detail}")
    passed = sum(verdicts)
    return dict(result, passed=passed, status="passed" if passed == total and total > 0 else "failed")
