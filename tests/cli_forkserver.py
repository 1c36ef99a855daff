"""A fork server for ``python -m mfn_deploy``: the CLI tests' processes without the imports.

Each ``run_cli`` used to start a fresh interpreter that spent 2 to 10 s (on a loaded
2-core machine) importing torch, onnxsim, scipy and friends before it parsed its first
option. This server imports those third-party libraries once (nothing of mfn_deploy:
its modules load in each run, as in a fresh process) and forks one real process per
call, with its own pid and exit status, file descriptors 0-2 (pipes the caller reads to
the end, as ``subprocess.run`` does), working directory, environment and umask. The
child then runs ``mfn_deploy`` as ``python -m`` does and exits as the interpreter would:
SystemExit codes, a traceback and status 1 for an uncaught exception, death by SIGINT
for an uncaught KeyboardInterrupt, threads joined, atexit handlers run, stdio flushed.

What a fork cannot reproduce, the client leaves to a fresh interpreter (it raises
``ForkserverUnavailableError``): an environment that differs from the server's in a
variable read at interpreter or library start-up (PYTHON*, locale, LD_*, thread pools,
torch's and matplotlib's configuration, HOME, XDG_*), or a server whose imports printed
anything (a fresh process would print it too).

torch's intra-op thread count is the test process's (conftest sets one per xdist
worker on a machine they share, and passes it on): set in the server after its imports,
the forked children inherit it.

Server: ``python cli_forkserver.py SOCKET [TORCH_THREADS]`` (started by ``Client``).
Per connection a handler process forks the child, sends ``{"pid": ...}``, waits for it
and sends ``{"returncode": ...}`` (negative for a signal, like subprocess).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import locale
import os
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# Read at interpreter, libc, OpenMP, torch or matplotlib start-up, not when used: a
# request whose environment differs from the server's in these runs in a fresh process.
STARTUP_PREFIXES = (
    "PYTHON", "LC_", "LANG", "LD_", "OMP_", "KMP_", "MKL_", "OPENBLAS_", "GOMP_",
    "TORCH", "PYTORCH", "CUDA", "NVIDIA", "MALLOC_", "MPL", "HOME", "XDG_", "ORT_",
    "OPENCV", "TZ", "TMPDIR",
)  # fmt: skip

# The slow third-party imports of the commands (skimage's SimilarityTransform pulls scipy).
PRELOAD = (
    "numpy", "torch", "torch.nn.functional", "torch.fx", "torch.utils.data",
    "torch.utils.flop_counter", "onnx", "onnxruntime", "onnxsim", "pnnx", "ncnn", "cv2",
    "skimage.transform._geometric", "scipy.spatial", "scipy.linalg", "scipy.sparse",
    "scipy.special", "matplotlib", "PIL.Image", "click", "tqdm", "charset_normalizer",
    "tflite", "ai_edge_litert.interpreter",
)  # fmt: skip


MAX_RESTARTS = 4  # when the tests' own environment changes a start-up variable


class ForkserverUnavailableError(Exception):
    """The server cannot run this request faithfully: use a fresh interpreter."""


def startup_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(STARTUP_PREFIXES)}


def _send(conn: socket.socket, obj: dict, fds: tuple[int, ...] = ()) -> None:
    data = json.dumps(obj).encode()
    msg = struct.pack("!I", len(data)) + data
    if fds:
        socket.send_fds(conn, [msg], list(fds))
    else:
        conn.sendall(msg)


def _recv_exact(conn: socket.socket, n: int, buf: bytes = b"") -> bytes:
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise EOFError("fork server connection closed")
        buf += chunk
    return buf


def _recv_request(conn: socket.socket) -> tuple[dict, list[int]]:
    head, fds, _flags, _addr = socket.recv_fds(conn, 4, 3)
    (n,) = struct.unpack("!I", _recv_exact(conn, 4, head))
    return json.loads(_recv_exact(conn, n)), fds


# --- the server: one forked child per request -------------------------------------------


def _exit_code(e: SystemExit) -> int:
    """What the interpreter exits with for an uncaught SystemExit."""
    if e.code is None:
        return 0
    if isinstance(e.code, int):
        return e.code
    print(e.code, file=sys.stderr)
    return 1


def _become_fresh(request: dict, preload_env: dict[str, str]) -> None:
    """The state ``python -m mfn_deploy`` starts from, in this forked copy."""
    os.umask(request["umask"])
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ.update(preload_env)  # what the preloaded imports set, as they would here
    main = sys.modules["__main__"].__dict__
    for name in [n for n in main if not (n.startswith("__") and n.endswith("__"))]:
        del main[name]
    sys.path[0] = str(Path.cwd())  # what -m puts first
    sys.argv = ["-m", *request["argv"]]
    import numpy.random

    numpy.random.seed()  # a fresh interpreter seeds its global generator anew


def _run_child(request: dict, preload_env: dict[str, str]) -> None:
    """In the forked child: run as ``python -m mfn_deploy ARGS`` would; never returns."""
    import runpy
    import traceback

    try:
        _become_fresh(request, preload_env)
        runpy._run_module_as_main("mfn_deploy", alter_argv=True)  # what -m runs
        code = 0
    except SystemExit as e:
        code = _exit_code(e)
    except KeyboardInterrupt:
        traceback.print_exc()
        code = -signal.SIGINT
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    try:
        threading._shutdown()  # as the interpreter does at exit
        atexit._run_exitfuncs()
    except BaseException:
        traceback.print_exc()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            code = code or 120
    if code == -signal.SIGINT:  # the interpreter ends an uncaught ^C by the signal itself
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code & 0xFF)


def _handle(conn: socket.socket, listener: socket.socket, preload_env: dict[str, str]) -> None:
    """In a handler process: fork the child, report its pid, then its exit status."""
    request, fds = _recv_request(conn)
    pid = os.fork()
    if pid == 0:
        listener.close()
        conn.close()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)  # inheritable, like a fresh process's stdio
        for fd in fds:
            if fd > 2:
                os.close(fd)
        _run_child(request, preload_env)
    for fd in fds:
        os.close(fd)
    _send(conn, {"pid": pid})
    _, status = os.waitpid(pid, 0)
    code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    _send(conn, {"returncode": code})


def _preload() -> str:
    """Import PRELOAD; what the imports printed (a fresh process would print it too)."""
    with tempfile.TemporaryFile() as noise:
        saved = os.dup(1), os.dup(2)
        os.dup2(noise.fileno(), 1)
        os.dup2(noise.fileno(), 2)
        failed = ""
        try:
            for name in PRELOAD:
                with contextlib.suppress(ImportError):
                    importlib.import_module(name)
        except BaseException as e:
            failed = repr(e)
        sys.stdout.flush()
        sys.stderr.flush()
        for target, fd in enumerate(saved, 1):
            os.dup2(fd, target)
            os.close(fd)
        noise.seek(0)
        return noise.read().decode("utf-8", "replace") + failed


def _reap() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def serve(path: str, torch_threads: int | None = None) -> None:
    parent = os.getppid()
    before = dict(os.environ)
    said = _preload()
    if torch_threads is not None:  # the test process's share of the cores (conftest)
        import torch

        torch.set_num_threads(torch_threads)
    # What the imports changed in os.environ (cv2 prepends to LD_LIBRARY_PATH).
    preload_env = {k: v for k, v in os.environ.items() if before.get(k) != v}
    startup = startup_env(before)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    listener.settimeout(1.0)
    print(json.dumps({"pid": os.getpid(), "env": startup, "noise": said}), flush=True)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # nobody reads the pipe after that line
    os.close(devnull)
    while os.getppid() == parent and Path(path).exists():
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            _reap()
            continue
        conn.settimeout(None)
        sys.stdout.flush()
        sys.stderr.flush()
        if os.fork() == 0:
            try:
                _handle(conn, listener, preload_env)
            finally:
                os._exit(0)
        conn.close()
        _reap()


# --- the client -------------------------------------------------------------------------


class Client:
    """Starts the server on first use (one per test process) and stops it at exit."""

    def __init__(self, torch_threads: int | None = None) -> None:
        self.torch_threads = torch_threads  # what the children's torch uses; None: default
        self.proc: subprocess.Popen | None = None
        self.info: dict = {}
        self.broken = ""
        self.lock = threading.Lock()
        self.dir = self.path = ""
        self.restarts = 0
        atexit.register(self.stop)
        # cv2's import prepends to LD_LIBRARY_PATH in os.environ (the test modules import
        # it anyway): done now, the environment the server copies does not change later.
        with contextlib.suppress(ImportError):
            importlib.import_module("cv2")

    def _start(self) -> None:
        self.broken = ""
        self.dir = tempfile.mkdtemp(prefix="mfn-forkserver-")
        self.path = str(Path(self.dir) / "s")
        threads = [] if self.torch_threads is None else [str(self.torch_threads)]
        self.proc = subprocess.Popen(
            [sys.executable, __file__, self.path, *threads],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=self.dir,
        )
        line = self.proc.stdout.readline()
        if not line:
            self.broken = "the fork server did not start"
            return
        self.info = json.loads(line)
        if self.info["noise"]:
            self.broken = f"the fork server's imports printed {self.info['noise'][:300]!r}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = ""

    def run(
        self, argv: list[str], cwd: str | None, env: dict[str, str] | None, timeout: float
    ) -> subprocess.CompletedProcess:
        """``subprocess.run([python, -m, mfn_deploy, *argv], capture_output=True,
        text=True, cwd=cwd, env=env, timeout=timeout)``, forked from the server."""
        args, collect = self._submit(argv, cwd, env)
        out, err, code = collect.wait(args, timeout)
        return subprocess.CompletedProcess(args, code, _text(out), _text(err))

    def start(
        self, argv: list[str], cwd: str | None, env: dict[str, str] | None, timeout: float
    ) -> ForkedProcess:
        """``subprocess.Popen([python, -m, mfn_deploy, *argv], stdout=PIPE, stderr=PIPE,
        text=True, cwd=cwd, env=env)``, forked from the server; killed after ``timeout``."""
        args, collect = self._submit(argv, cwd, env)
        return ForkedProcess(args, collect, timeout)

    def _submit(
        self, argv: list[str], cwd: str | None, env: dict[str, str] | None
    ) -> tuple[list[str], _Collect]:
        """Send one request; the command line it stands for and what collects its output."""
        env = dict(os.environ if env is None else env)
        with self.lock:
            if self.proc is None:
                self._start()
            elif (
                startup_env(env) != self.info.get("env")
                and startup_env(env) == startup_env(dict(os.environ))
                and self.restarts < MAX_RESTARTS
            ):  # this process's own environment changed since the server started
                self.restarts += 1
                self.stop()
                self._start()
        if self.broken:
            raise ForkserverUnavailableError(self.broken)
        wanted, has = startup_env(env), self.info["env"]
        if wanted != has:
            differ = sorted(k for k in wanted.keys() | has.keys() if wanted.get(k) != has.get(k))
            raise ForkserverUnavailableError(f"start-up variables differ: {', '.join(differ)}")
        umask = os.umask(0o022)
        os.umask(umask)
        request = {
            "argv": argv,
            "cwd": str(Path(cwd).absolute() if cwd is not None else Path.cwd()),
            "env": env,
            "umask": umask,
        }
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(self.path)
            _send(conn, request, (0, out_w, err_w))
        except OSError as e:
            for fd in (out_r, err_r):
                os.close(fd)
            conn.close()
            raise ForkserverUnavailableError(f"fork server unreachable: {e}") from e
        finally:
            os.close(out_w)
            os.close(err_w)
        return [sys.executable, "-m", "mfn_deploy", *argv], _Collect(conn, out_r, err_r)


def _text(data: bytes) -> str:
    """As ``text=True`` decodes: the locale's encoding, universal newlines."""
    s = data.decode(locale.getpreferredencoding(False))
    return s.replace("\r\n", "\n").replace("\r", "\n")


class _Collect:
    """communicate(): both pipes read to EOF and the handler's two messages."""

    def __init__(self, conn: socket.socket, out_r: int, err_r: int) -> None:
        self.conn, self.out_r, self.err_r = conn, out_r, err_r
        self.chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
        self.inbox = b""
        self.messages: list[dict] = []
        self.started = threading.Event()  # the child's pid came (or it never will)
        self.sel = selectors.DefaultSelector()
        for f in (out_r, err_r, conn):
            self.sel.register(f, selectors.EVENT_READ)

    def _from_handler(self) -> None:
        data = self.conn.recv(65536)
        if not data:
            self.sel.unregister(self.conn)
            if len(self.messages) < 2:
                raise RuntimeError("the fork server's handler died")
            return
        self.inbox += data
        while len(self.inbox) >= 4:
            (n,) = struct.unpack("!I", self.inbox[:4])
            if len(self.inbox) < 4 + n:
                break
            self.messages.append(json.loads(self.inbox[4 : 4 + n]))
            self.inbox = self.inbox[4 + n :]
            self.started.set()

    def _timeout(self, args: list[str], timeout: float) -> subprocess.TimeoutExpired:
        if self.messages:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.messages[0]["pid"], signal.SIGKILL)
        out, err = (b"".join(self.chunks[fd]) for fd in (self.out_r, self.err_r))
        return subprocess.TimeoutExpired(args, timeout, out, err)

    def wait(self, args: list[str], timeout: float) -> tuple[bytes, bytes, int]:
        deadline = time.monotonic() + timeout
        try:
            while self.sel.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._timeout(args, timeout)
                for key, _ in self.sel.select(min(left, 5.0)):
                    if key.fileobj is self.conn:
                        self._from_handler()
                    elif data := os.read(key.fd, 65536):
                        self.chunks[key.fd].append(data)
                    else:
                        self.sel.unregister(key.fd)
        finally:
            self.started.set()
            self.sel.close()
            self.conn.close()
            os.close(self.out_r)
            os.close(self.err_r)
        out, err = (b"".join(self.chunks[fd]) for fd in (self.out_r, self.err_r))
        return out, err, self.messages[1]["returncode"]


class ForkedProcess:
    """What the tests use of ``subprocess.Popen`` (``pid``, ``poll``, ``send_signal``,
    ``communicate``, ``returncode``) for a child of the server; a thread reads its pipes
    to the end meanwhile, as ``communicate`` would."""

    def __init__(self, args: list[str], collect: _Collect, timeout: float) -> None:
        self.args = args
        self.returncode: int | None = None
        self._collect = collect
        self._result: tuple[bytes, bytes, int] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._wait, args=(timeout,), daemon=True)
        self._thread.start()

    def _wait(self, timeout: float) -> None:
        try:
            self._result = self._collect.wait(self.args, timeout)
        except BaseException as e:  # raised again by communicate
            self._error = e

    @property
    def pid(self) -> int:
        self._collect.started.wait()
        if not self._collect.messages:
            raise RuntimeError("the fork server's handler died before the child started")
        return self._collect.messages[0]["pid"]

    def poll(self) -> int | None:
        if self.returncode is None and not self._thread.is_alive() and self._result:
            self.returncode = self._result[2]
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise subprocess.TimeoutExpired(self.args, timeout)
        if self._error is not None:
            raise self._error
        out, err, self.returncode = self._result
        return _text(out), _text(err)


if __name__ == "__main__":
    # Under its own name, so that a child can empty __main__ for mfn_deploy's run.
    import importlib.util

    _spec = importlib.util.spec_from_file_location("cli_forkserver", __file__)
    _server = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_server)
    _server.serve(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None)
