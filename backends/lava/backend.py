"""The ``lava`` backend's runtime: guards, start/stop, and :func:`run` (lowering in :mod:`.lowering`,
our processes in :mod:`.processes`).

``precision="fixed"`` runs Lava's ``fixed_pt`` (bit-accurate Loihi) process models with the
integer parameters of :mod:`backends.fixed_point`; ``"float"`` runs the ``floating_pt`` models
with the NIR float parameters.  Samples run back to back in one Lava run per chunk of
``samples_per_run``; the runtime is always stopped (exceptions, KeyboardInterrupt included).
While it runs, SIGINT, SIGTERM and SIGHUP raise in this process (KeyboardInterrupt,
:class:`~lmuformer.errors.Terminated`), start-up included; a runtime that never ran is
stopped by force (its children wait for a first command), and any child forked since the
chunk began is terminated afterwards, so no Lava process or shared-memory segment outlives
the call.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import warnings

import numpy as np
from tqdm import tqdm

from backends.base import SimulationResult
from backends.fixed_point import lower_for_input
from lmuformer.errors import Terminated, UserError


def _lava_missing() -> UserError:
    v = sys.version_info
    return UserError(
        "the Lava backend needs lava-nc 0.10, which runs on Python 3.10 only "
        f"(this is Python {v.major}.{v.minor})"
    )


def _import_lava_runtime() -> None:
    """Import Lava's multiprocessing module, which calls ``mp.set_start_method('fork')`` at import
    and fails if anything (tqdm's lock, torch) has fixed the start method before: force it."""
    name = "lava.magma.runtime.message_infrastructure.multiprocessing"
    if name in sys.modules or mp.get_start_method(allow_none=True) is None:
        importlib.import_module(name)
        return
    original = mp.set_start_method
    mp.set_start_method = lambda method, force=False: original(method, force=True)
    try:
        importlib.import_module(name)
    finally:
        mp.set_start_method = original


def unavailable_reason() -> str | None:
    """None where Lava imports and runs here; otherwise why not (one line)."""
    try:
        _import_lava_runtime()
        import lava.proc.lif.models  # noqa: F401
    except Exception as e:  # ImportError, or lava 0.10's dataclass error on Python >= 3.11
        return f"lava-nc cannot be imported here ({type(e).__name__}: {e})"
    return None


_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def _signals_raise():
    """SIGINT raises KeyboardInterrupt and SIGTERM/SIGHUP raise :class:`Terminated` in this
    process at once, Lava's start-up included, so that the ``finally`` stops the runtime.

    A Lava child forked meanwhile inherits the handler: there SIGINT is ignored (a terminal
    Ctrl-C reaches the whole process group; the parent stops the children cleanly) and
    SIGTERM/SIGHUP kill it as by default (what :func:`shutdown`'s fallback sends).  An
    exception raised inside an at-fork hook is swallowed by Python, so until one reaches
    this block the signal is sent again every 0.3 s."""
    if threading.current_thread() is not threading.main_thread():
        yield _Guard()
        return
    parent = os.getpid()
    guard = _Guard()

    def handler(signum, frame) -> None:
        if os.getpid() != parent:
            if signum != signal.SIGINT:
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
            return
        if guard.stopping:  # do not abandon the clean-up half-way: raise once it is done
            guard.pending.append(signum)
            return
        guard.resend(signum)
        if not _in_fork_hook(frame):
            guard.raise_for(signum)

    old = {sig: signal.signal(sig, handler) for sig in _SIGNALS}
    try:
        yield guard
    except BaseException:
        guard.delivered = True
        raise
    finally:
        guard.closed = True
        for sig, h in old.items():
            signal.signal(sig, h)
    if guard.received:  # received, but the exception was swallowed and the run ended anyway
        guard.raise_for(guard.received[0])


def _in_fork_hook(frame) -> bool:
    """Whether ``frame`` is an at-fork hook run by multiprocessing's fork (an exception raised
    there is printed and swallowed: the re-sent signal raises a moment later instead)."""
    caller = frame.f_back if frame is not None else None
    return (caller is not None and caller.f_code.co_filename.endswith("popen_fork.py")
            and not frame.f_code.co_filename.endswith("popen_fork.py"))


class _Guard:
    """Signal bookkeeping of :func:`_signals_raise`."""

    def __init__(self) -> None:
        self.stopping = False  # the runtime is being stopped: record signals, raise afterwards
        self.pending: list[int] = []  # signals that arrived while stopping
        self.received: list[int] = []  # signals raised (perhaps swallowed) outside clean-up
        self.delivered = False  # an exception reached the clean-up or left the block
        self.closed = False
        self._resender: threading.Thread | None = None

    @staticmethod
    def raise_for(signum: int) -> None:
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated(signum)

    def resend(self, signum: int) -> None:
        self.received.append(signum)
        if self._resender is not None:
            return
        pid = os.getpid()

        def loop() -> None:
            while True:
                time.sleep(0.3)
                if self.delivered or self.closed or self.stopping:
                    return
                os.kill(pid, signum)

        self._resender = threading.Thread(target=loop, name="lava-signal-resend", daemon=True)
        self._resender.start()

    @contextlib.contextmanager
    def cleanup(self):
        self.delivered = True
        self.stopping = True
        try:
            yield
        finally:
            self.stopping = False
        if self.pending:
            self.raise_for(self.pending[0])


def live_processes() -> dict[int, tuple[int, int]]:
    """Every live (not zombie) process readable here: pid -> (parent pid, session id), from
    /proc/PID/stat (the one /proc scanner of the project; the tests use it too)."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                st = f.read()
            fields = st[st.rindex(")") + 2 :].split()  # state, ppid, pgrp, session, ...
            if fields[0] != "Z":
                out[int(entry)] = (int(fields[1]), int(fields[3]))
        except (OSError, ValueError, IndexError):
            continue
    return out


def command_line(pid: int) -> str:
    """The command line of ``pid`` (NUL-separated as in /proc), "" when it is gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def descendants(pid: int | None = None) -> set[int]:
    """Live descendants of ``pid`` (default: this process)."""
    kids: dict[int, list[int]] = {}
    for p, (ppid, _) in live_processes().items():
        kids.setdefault(ppid, []).append(p)
    out: set[int] = set()
    todo = [os.getpid() if pid is None else pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def _children() -> dict[int, str]:
    """This process's live child processes (pid -> command line)."""
    me = os.getpid()
    return {p: command_line(p) for p, (ppid, _) in live_processes().items() if ppid == me}


def _reap_new_children(before: set[int], grace: float = 2.0) -> None:
    """SIGTERM, then SIGKILL, the children forked since ``before`` that are still alive
    (e.g. one forked just as a signal interrupted start-up), except multiprocessing's
    resource tracker, which unlinks leaked shared memory when this process exits."""
    pids = [p for p, cmd in _children().items() if p not in before and "resource_tracker" not in cmd]
    # multiprocessing's own children are reaped through their Process (``exitcode`` polls it): reaped
    # behind its back, its exit handler would later join them, and Lava's ``SystemProcess.join`` then
    # raises "Cannot close a process while it is still running" (a traceback after a Ctrl-C)
    owned = {p.pid: p for p in mp.active_children()}

    def reaped(pid: int) -> bool:
        if pid in owned:
            return owned[pid].exitcode is not None
        with contextlib.suppress(ChildProcessError, OSError):
            return os.waitpid(pid, os.WNOHANG)[0] == pid
        return False

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, sig)
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if not reaped(p)]
            time.sleep(0.05)
        if not pids:
            return


def shutdown(root, timeout: float = 60.0) -> None:
    """Stop the Lava runtime of ``root``; if the graceful stop does not finish within
    ``timeout`` s (e.g. a child died), terminate, then kill, its OS processes."""
    runtime = getattr(root, "runtime", None)
    if runtime is None:
        return
    errors: list[BaseException] = []
    if not getattr(runtime, "_is_started", False):
        # created but never run (or interrupted while starting): Lava's stop() would wait
        # forever on children that are still waiting for their first command
        _force_stop(runtime)
        return

    _patient_shared_memory(getattr(runtime, "_messaging_infrastructure", None))

    def stop() -> None:
        try:
            root.stop()
        except BaseException as e:  # noqa: BLE001 - reported below, after the forced cleanup
            errors.append(e)

    worker = threading.Thread(target=stop, name="lava-stop", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive() or errors:
        _force_stop(runtime)
        reason = f"did not stop within {timeout:.0f} s" if worker.is_alive() else repr(errors[0])
        warnings.warn(f"Lava runtime {reason}; its processes were terminated", RuntimeWarning, stacklevel=2)


def _force_stop(runtime) -> None:
    """Terminate, then kill, the runtime's OS processes and release its shared memory."""
    infra = getattr(runtime, "_messaging_infrastructure", None)
    for actor in list(getattr(infra, "actors", [])):
        try:
            if actor.is_alive():
                actor.terminate()
                mp.Process.join(actor, 2.0)
            if actor.is_alive():
                actor.kill()
                mp.Process.join(actor, 2.0)
        except (ValueError, AssertionError, OSError):
            pass
    runtime._is_started = False  # a later Process.__del__ -> stop() must not wait on them
    _stop_shared_memory(getattr(infra, "smm", None))
    with contextlib.suppress(Exception):
        runtime._watchdog_manager.stop()


def _ask_server_to_stop(smm, timeout: float = 30.0) -> None:
    """Ask the SharedMemoryManager's server to shut down (it unlinks every segment) and wait
    up to ``timeout`` s: multiprocessing's own ``shutdown()`` terminates a server that has not
    finished within 1 s, leaving its segments (hundreds per run) in /dev/shm on a busy machine."""
    process = getattr(smm, "_process", None)
    with contextlib.suppress(Exception):
        if process is not None and process.is_alive():
            from multiprocessing.managers import dispatch

            conn = smm._Client(smm._address, authkey=smm._authkey)
            try:
                dispatch(conn, None, "shutdown")
            finally:
                conn.close()
            process.join(timeout)


def _patient_shared_memory(infra) -> None:
    """Make Lava's own stop (``smm.shutdown()``) wait for the server (:func:`_ask_server_to_stop`)."""
    smm = getattr(infra, "smm", None)
    if smm is None or getattr(smm, "_lmuf_patient", False):
        return
    finalize = smm.shutdown

    def shutdown() -> None:
        _ask_server_to_stop(smm)
        finalize()

    smm.shutdown = shutdown
    smm._lmuf_patient = True


def _stop_shared_memory(smm) -> None:
    if smm is None:
        return
    _ask_server_to_stop(smm)
    with contextlib.suppress(Exception):
        smm.shutdown()


def run(graph, x: np.ndarray, precision: str = "fixed", progress: bool = True, record: bool = False,
        samples_per_run: int = 16, input_bits: int = 16, input_frac_bits: int | None = None,
        gap: int | None = None) -> SimulationResult:
    """Run ``graph`` on x (samples, frames, features) in Lava, frames + latency steps per sample.

    ``record``: also return every LIF population's spike trains in ``extra["spike_trains"]``
    (name -> (samples, steps, neurons) bool).  ``samples_per_run``: samples per compiled Lava
    network (each is one run of ``samples x period`` steps).
    """
    try:
        _import_lava_runtime()
        from lava.magma.core.run_conditions import RunSteps
        from lava.magma.core.run_configs import Loihi2SimCfg

        from backends.lava import lowering
        from backends.lava.processes import (
            GradedIntegrator,
            PyGradedIntegratorFixed,
            PyGradedIntegratorFloat,
        )
    except ImportError as e:
        if "lava" in str(e).lower():
            raise _lava_missing() from None
        raise
    except Exception as e:  # lava 0.10 on Python >= 3.11 fails with a dataclass ValueError
        if sys.version_info[:2] != (3, 10):
            raise _lava_missing() from None
        raise UserError(f"cannot import Lava: {type(e).__name__}: {e}") from None

    fixed = precision == "fixed"
    start = time.perf_counter()
    net, x, steps = lower_for_input(graph, x, precision, input_bits, input_frac_bits)
    sched = lowering.schedule(net, steps, gap)
    model = PyGradedIntegratorFixed if fixed else PyGradedIntegratorFloat
    cfg = Loihi2SimCfg(select_tag="fixed_pt" if fixed else "floating_pt",
                       exception_proc_model_map={GradedIntegrator: model})
    lif_names = [n for n, p in net.populations.items() if p.kind == "lif"]
    n_cls = net.populations[net.readout].size
    trace = np.zeros((len(x), steps, n_cls))
    counts = {n: np.zeros(len(x), np.int64) for n in lif_names}
    trains = {n: np.zeros((len(x), steps, net.populations[n].size), bool) for n in lif_names if record}
    lava_steps = 0
    run_s = 0.0
    n_procs = 0
    with _signals_raise() as guard, tqdm(total=len(x), desc=f"lava ({precision})", unit="sample",
                                         disable=not progress) as bar:
        for c0 in range(0, len(x), samples_per_run):
            chunk = x[c0 : c0 + samples_per_run]
            lnet = lowering.build(net, sched, chunk, fixed)
            total = sched.total_steps(len(chunk))
            before = set(_children())
            try:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message="Cannot import module")  # Lava's model search
                    lnet.root.create_runtime(run_cfg=cfg)
                done = 0
                t0 = time.perf_counter()
                for i in range(len(chunk)):  # run up to the end of sample i's readout window
                    end = sched.depth[net.readout] + i * sched.period + steps - 1
                    if end > done:
                        lnet.root.run(condition=RunSteps(num_steps=end - done), run_cfg=cfg)
                        done = end
                    bar.update(1)
                if done < total:
                    lnet.root.run(condition=RunSteps(num_steps=total - done), run_cfg=cfg)
                run_s += time.perf_counter() - t0
                data = {n: np.asarray(s.data.get()) for n, s in lnet.sinks.items()}
            finally:
                with guard.cleanup():
                    try:
                        shutdown(lnet.root)
                    finally:
                        _reap_new_children(before)
            lava_steps += total
            n_procs = len(lnet.processes)
            for i in range(len(chunk)):
                for n in lif_names:
                    spk = data[n][:, sched.columns(n, i)].T != 0
                    counts[n][c0 + i] = spk.sum()
                    if record:
                        trains[n][c0 + i] = spk
                r = data[net.readout][:n_cls, sched.columns(net.readout, i)].T
                if net.populations[net.readout].kind == "lif":
                    trace[c0 + i] = r != 0
                else:
                    trace[c0 + i] = r * (net.readout_scale() if fixed else 1.0)
    extra = {
        "network": net.summary(),
        "lava_steps": lava_steps,
        "lava_run_s": run_s,
        "ms_per_lava_step": 1000.0 * run_s / lava_steps if lava_steps else 0.0,
        "period": sched.period,
        "lava_processes": n_procs,
        "depth": dict(sched.depth),
    }
    if fixed:
        extra["input_clipped"] = net.clipped_fraction(x)
    if record:
        extra["spike_trains"] = trains
    return SimulationResult(
        backend="lava", precision=precision,
        readout=trace[:, -1], trace=trace, spikes=counts,
        neurons={n: net.populations[n].size for n in lif_names},
        steps=steps, wall_s=time.perf_counter() - start, extra=extra,
    )
