"""Mutation testing of the critical modules with mutmut 3, one module at a time.

    nice -n 15 python benchmarks/bench_mutation.py lif lmu quantize     # some modules
    nice -n 15 python benchmarks/bench_mutation.py                      # all of MODULES
    python benchmarks/bench_mutation.py --list

For each module: a scratch copy of the sources and tests under ``mutants/bench/wNN/``
(git-ignored) gets a ``[tool.mutmut]`` that mutates only that file and runs only the tests
selected for it (mutmut then runs, per mutant, the selected tests that call the mutated
function).  Survivors whose mutation is listed in ``benchmarks/mutation_equivalents.toml``
(by function and mutated line, with the reason) count as equivalent, or, with
``kind = "killed_outside"``, as killed by a test that mutmut cannot see switch mutants (one
that runs the code in a subprocess; checked by hand).  The score is
(killed + killed_outside + timeout) / (mutants - equivalent), written per module, with the seconds and the
load average, to ``benchmarks/results/mutation.json`` (entries of modules not run
this time are kept).  Survivors are listed with their diff: kill them with an assertion or
list them as equivalent.  ``--survivors`` reruns only those (fast) but reuses mutmut's map of
which test calls which function: a new test is mapped, an edited one is not, so a full run is
the authoritative score.  ``--rescore`` applies edited equivalents without running anything.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lmuformer.files import write_json  # noqa: E402

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

RESULTS = ROOT / "benchmarks" / "results" / "mutation.json"
EQUIVALENTS = ROOT / "benchmarks" / "mutation_equivalents.toml"
SCRATCH = ROOT / "mutants" / "bench"
SOURCES = ("lmuformer", "export", "backends", "tests")
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped",
          36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout", None: "not checked"}


@dataclass(frozen=True)
class Module:
    """One file to mutate and the pytest arguments that select the tests meant to catch its defects."""

    path: str
    tests: tuple[str, ...]
    note: str = ""
    not_scored: tuple[str, ...] = ()  # functions whose mutants are neither run nor scored
    only: tuple[str, ...] = ()  # if given, the only functions whose mutants are run and scored

    def scored(self, function: str) -> bool:
        return function not in self.not_scored and (not self.only or function in self.only)


# the 8 s digits run, the Lava tests and the CLI subprocesses of test_peers left out
_EMULATOR_TESTS = ("tests/test_emulator.py", "tests/test_fixed_point.py", "tests/test_fixed_point_edges.py",
                   "tests/test_nir_subset.py", "tests/test_peers.py", "tests/test_current_grid.py", "-k",
                   "not fixed_agrees and not lava and not test_cli_simulate")
_EMULATOR_NOTE = ("emulator-only tests: the Lava tests (tests/test_lava.py, ~40 s each) are not in the "
                  "selection; Lava == emulator equality is asserted in CI")
_REPORT_TESTS = ("tests/test_report.py", "-k", "not lava and not plot")
_COUNTS_TESTS = ("tests/test_report.py", "tests/test_report_chains.py", "tests/test_counts_fallback.py",
                 "tests/test_counts_edges.py",
                 "-k", "not lava and not plot")
MODULES: dict[str, Module] = {
    "lif": Module("lmuformer/functional/lif.py", ("tests/test_model.py", "-k", "lif")),
    "lmu": Module("lmuformer/functional/lmu.py",
                  ("tests/test_model.py", "-k", "matrices or zoh or memory or lmu")),
    "quantize": Module("export/quantize.py",
                       ("tests/test_export.py", "-k", "quantis or lmu_representation")),
    "fixed_point": Module("backends/fixed_point.py", ("tests/test_fixed_point_triage.py", *_EMULATOR_TESTS),
                          _EMULATOR_NOTE),
    "emulator": Module("backends/emulator.py", _EMULATOR_TESTS,
                       _EMULATOR_NOTE + "; run() is scored as emulator_run", ("run",)),
    "emulator_run": Module("backends/emulator.py", ("tests/test_emulator_run.py",),
                           "the module-level run() only (batching, progress, result assembly), with its "
                           "fast tests on the hand-made graphs", only=("run",)),
    "lava_lowering": Module("backends/lava/lowering.py", ("tests/test_lava_lowering.py",),
                            "the processes built (Lava imported, not run) checked against the Network; "
                            "the Lava runs (tests/test_lava.py, ~40 s each) are not in the selection; "
                            "needs Lava (Python 3.10)"),
    "finetune": Module("backends/finetune.py", ("tests/test_finetune.py",),
                       "the deployment-aware integer forward pass and its gradients"),
    "export_job": Module("lmuformer/jobs/export.py",
                         ("tests/test_export.py", "tests/test_calibrate.py", "tests/test_current_grid.py",
                          "tests/test_current_grid_jobs.py"),
                         "the export job: options a fine-tuned checkpoint pins, the frame period, the "
                         "calibrated current grids and their headroom"),
    "report_counts": Module("lmuformer/analysis/counts.py", _COUNTS_TESTS),
    "report_profiles": Module("lmuformer/analysis/profiles.py",
                              ("tests/test_report.py", "tests/test_profiles_edges.py", *_REPORT_TESTS[1:])),
    "streaming": Module("lmuformer/analysis/streaming.py",
                        ("tests/test_streaming.py", "tests/test_streaming_edges.py"),
                        "plot_curve not scored: drawing (labels, colours, layout), not a metric",
                        ("plot_curve",)),
    "stream_job": Module("lmuformer/jobs/stream.py", ("tests/test_streaming.py",)),
    "checkpoint": Module("lmuformer/checkpoint.py",
                         ("tests/test_training.py", "tests/test_checkpoint_edges.py", "-k",
                          "checkpoint and not real_entry_point and not trained"),
                         "the trained-checkpoint test (3 epochs of training per mutant) is left out"),
    "files": Module("lmuformer/files.py", ("tests/test_export.py", "tests/test_robustness.py",
                                           "tests/test_files_edges.py", "-k",
                                           "atomic or utf8 or device_and_directory or special_target or "
                                           "stale_temporaries or lock_is_exclusive or onto_its or "
                                           "files_edges")),
}


def load_equivalents() -> dict[str, list[dict]]:
    """Per module: [{function, line, reason}], ``line`` the mutated line as mutmut shows it."""
    if not EQUIVALENTS.exists():
        return {}
    return tomllib.loads(EQUIVALENTS.read_text(encoding="utf-8"))


def _function(key: str) -> str:
    """``pkg.mod.xǁClassǁmethod__mutmut_3`` -> ``Class.method``; ``pkg.mod.x_func__mutmut_3`` -> ``func``."""
    name = key.rpartition(".")[2].rpartition("__mutmut_")[0]
    if name.startswith("xǁ"):
        return ".".join(name[2:].split("ǁ"))
    return name[2:] if name.startswith("x_") else name


def _mutated_line(diff: str) -> str:
    """The diff's changed lines, stripped: ``-old | +new`` (how equivalents are matched)."""
    lines = [ln[0] + ln[1:].strip() for ln in diff.splitlines()
             if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    return " | ".join(lines)


# mutmut forks every mutant's test run from one server process.  tqdm's default write lock holds a
# multiprocessing semaphore that all those forks share: a fork that exits (or is stopped) while
# holding it (tqdm's monitor thread takes it every 10 s) blocks every later fork that draws a bar,
# and each then counts as a timeout, i.e. as killed.  A per-process thread lock avoids that.
_CONFTEST_PATCH = """

# added by benchmarks/bench_mutation.py (scratch copy only): a per-process tqdm lock, see there
import threading as _bench_threading  # noqa: E402

import tqdm as _bench_tqdm  # noqa: E402

_bench_tqdm.tqdm.set_lock(_bench_threading.RLock())
"""


def _copy_tests(work: Path) -> None:
    shutil.copytree(ROOT / "tests", work / "tests", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    with open(work / "tests" / "conftest.py", "a", encoding="utf-8") as f:
        f.write(_CONFTEST_PATCH)


def _scratch(name: str, mod: Module, base: dict) -> Path:
    # a neutral folder name: pytest's -k also matches the names of the folders above a test
    work = SCRATCH / f"w{list(MODULES).index(name):02d}"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for src in SOURCES:
        if src != "tests":
            shutil.copytree(ROOT / src, work / src, ignore=ignore)
    _copy_tests(work)
    cfg = {**base, "only_mutate": [mod.path], "pytest_add_cli_args_test_selection": list(mod.tests)}
    lines = ["[tool.mutmut]"] + [f"{k} = {json.dumps(v)}" for k, v in cfg.items()]
    (work / "pyproject.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return work


_DIFFS = """
import json, sys
from mutmut.mutation.diff_apply import get_diff_for_mutant
path, keys = sys.argv[1], json.loads(sys.stdin.read())
print(json.dumps({k: get_diff_for_mutant(k, path=path) for k in keys}))
"""


def _scored_globs(mod: Module) -> list[str]:
    """mutmut name patterns for every scored function of the module ([] if all are scored)."""
    if not mod.not_scored and not mod.only:
        return []
    import ast

    tree = ast.parse((ROOT / mod.path).read_text(encoding="utf-8"))
    prefix = mod.path[:-3].replace("/", ".")
    globs = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and mod.scored(node.name):
            globs.append(f"{prefix}.x_{node.name}__mutmut_*")
        elif isinstance(node, ast.ClassDef):
            globs += [f"{prefix}.xǁ{node.name}ǁ{f.name}__mutmut_*" for f in node.body
                      if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                      and mod.scored(f"{node.name}.{f.name}")]
    return globs


def _picked(key: str, only: list[str] | None) -> bool:
    """Whether ``--only`` (functions ``f``, ``Class.method``; mutants ``x_f__mutmut_3``) selects it."""
    if not only:
        return True
    name = key.rpartition(".")[2]
    return any(name == o if "__mutmut_" in o else _function(key) == o for o in only)


def _only_names(mod: Module, only: list[str]) -> list[str]:
    """mutmut name patterns for ``--only``'s functions and mutants."""
    prefix = mod.path[:-3].replace("/", ".")
    return [f"{prefix}.{o}" if "__mutmut_" in o else
            f"{prefix}.xǁ{o.replace('.', 'ǁ')}__mutmut_*" if "." in o else f"{prefix}.x_{o}__mutmut_*"
            for o in only]


def _previous_survivors(work: Path, mod: Module, only: list[str] | None = None) -> list[str] | None:
    """Mutants of the last full run in ``work`` that were not killed (None: no usable last run)."""
    meta = work / "mutants" / (mod.path + ".meta")
    if not meta.exists():
        return None
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    return [k for k, v in codes.items() if STATUS.get(v) != "killed" and mod.scored(_function(k))
            and _picked(k, only)]


def run_module(name: str, mod: Module, base: dict, equivalents: list[dict], jobs: int,
               survivors_only: bool = False, rescore: bool = False, only: list[str] | None = None) -> dict:
    work = SCRATCH / f"w{list(MODULES).index(name):02d}"
    again = _previous_survivors(work, mod, only) if survivors_only or rescore else None
    if rescore and again is None:
        return {"module": mod.path, "error": "no previous run to rescore", "log_tail": "", "seconds": 0.0}
    if again is None:
        survivors_only = False
        work = _scratch(name, mod, base)
    else:  # the sources are unchanged (mutmut re-mutates a changed file); take the current tests
        _copy_tests(work)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": ""}
    start = time.perf_counter()
    returncode = 0
    if not rescore:
        with open(work / "mutmut.log", "w") as log:
            names = again if again is not None else _only_names(mod, only) if only else _scored_globs(mod)
            cmd = [sys.executable, "-m", "mutmut", "run", "--max-children", str(jobs), *names]
            proc = subprocess.run(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
            returncode = proc.returncode
    seconds = time.perf_counter() - start
    meta = work / "mutants" / (mod.path + ".meta")
    if returncode != 0 or not meta.exists():
        tail = (work / "mutmut.log").read_text(errors="replace")[-1500:]
        return {"module": mod.path, "error": f"mutmut exited {returncode}", "log_tail": tail,
                "seconds": round(seconds, 1)}
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    not_scored = sum(1 for k in codes if not (mod.scored(_function(k)) and _picked(k, only)))
    status = {k: STATUS.get(v, "suspicious") for k, v in codes.items()
              if mod.scored(_function(k)) and _picked(k, only)}
    alive = [k for k, s in status.items() if s not in ("killed",)]
    diffs = {}
    if alive:
        out = subprocess.run([sys.executable, "-c", _DIFFS, mod.path], cwd=work, env=env, text=True,
                             input=json.dumps(alive), capture_output=True, check=True)
        diffs = json.loads(out.stdout)
    table = {(e["function"], e["line"]): e for e in equivalents}
    counts = {"killed": 0, "killed_outside": 0, "survived": 0, "equivalent": 0, "timeout": 0, "no_tests": 0,
              "other": 0, "not_checked": 0}
    survivors, equivalent, outside = [], [], []
    for key, s in sorted(status.items(), key=lambda kv: (_function(kv[0]), int(kv[0].rpartition("_")[2]))):
        if s == "killed":
            counts["killed"] += 1
            continue
        if s == "not checked":  # an interrupted run: left out of the score, counted here
            counts["not_checked"] += 1
            continue
        entry = {"mutant": key.rpartition(".")[2], "function": _function(key), "status": s,
                 "line": _mutated_line(diffs.get(key, ""))}
        listed = table.get((entry["function"], entry["line"]))
        if listed is not None and listed.get("kind", "equivalent") == "killed_outside":
            counts["killed_outside"] += 1  # a test kills it where mutmut cannot switch mutants (a subprocess)
            outside.append({**entry, "reason": listed["reason"]})
        elif listed is not None:
            counts["equivalent"] += 1
            equivalent.append({**entry, "reason": listed["reason"]})
        elif s == "survived":
            counts["survived"] += 1
            survivors.append(entry)
        elif s == "timeout":
            counts["timeout"] += 1  # an endless loop is a detected defect: counted as killed in the score
        elif s == "no tests":
            counts["no_tests"] += 1
            survivors.append(entry)
        else:
            counts["other"] += 1
            survivors.append(entry)
    detected = counts["killed"] + counts["killed_outside"] + counts["timeout"]
    relevant = len(status) - counts["equivalent"] - counts["not_checked"]
    return {
        "module": mod.path,
        "tests": " ".join(mod.tests),
        "mutants": len(status),
        "not_scored": not_scored,
        **counts,
        "score": round(detected / relevant, 4) if relevant else None,
        "seconds": round(seconds, 1),
        "timeout_constant": base.get("timeout_constant"),
        "rerun": ("none: the last run's results with the current equivalents" if rescore else
                  f"only the {len(again)} mutants not killed before" if survivors_only else
                  f"only {' '.join(only)}" if only else "all mutants"),
        "note": mod.note,
        "survivors": survivors,
        "equivalents": equivalent,
        "killed_outside_mutmut": outside,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("modules", nargs="*", help=f"names from {', '.join(MODULES)} (default: all)")
    ap.add_argument("--jobs", type=int, default=1, help="mutmut worker processes (default 1: shared machine)")
    ap.add_argument("--timeout-constant", type=float, default=20.0,
                    help="mutmut's timeout_constant in seconds (default 20): a mutant is stopped as a "
                         "timeout after (its tests' seconds + this) * 15 s of wall clock.  mutmut's own "
                         "default (1 s) turns a niced run on a loaded machine into false timeouts (counted "
                         "as killed)")
    ap.add_argument("--list", action="store_true", help="list the modules and their test selection")
    ap.add_argument("--rescore", action="store_true",
                    help="no run: score the last run of each module again with the current equivalents")
    ap.add_argument("--survivors", action="store_true",
                    help="rerun only the mutants the last run of a module did not kill (after new tests)")
    ap.add_argument("--only", nargs="+", metavar="NAME",
                    help="one module: run and score only these functions (f, Class.method) or mutants "
                         "(x_f__mutmut_3); written as MODULE@only, the module's full entry is kept")
    args = ap.parse_args(argv)
    if args.list:
        for n, m in MODULES.items():
            print(f"{n:16s} {m.path:34s} {' '.join(m.tests)}  {m.note}")
        return 0
    unknown = [n for n in args.modules if n not in MODULES]
    if unknown:
        print(f"error: unknown module(s) {', '.join(unknown)}; see --list", file=sys.stderr)
        return 2
    if args.only and len(args.modules) != 1:
        print("error: --only needs exactly one module", file=sys.stderr)
        return 2
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    base = {k: v for k, v in pyproject["tool"]["mutmut"].items()
            if k not in ("only_mutate", "pytest_add_cli_args_test_selection")}
    base.setdefault("timeout_constant", args.timeout_constant)
    equivalents = load_equivalents()
    for name in args.modules or list(MODULES):
        load = os.getloadavg()
        r = run_module(name, MODULES[name], base, equivalents.get(name, []), args.jobs, args.survivors,
                       args.rescore, args.only)
        key = f"{name}@only" if args.only else name
        # read the file again: other runs (other modules) may have written it meanwhile
        results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"modules": {}}
        before = results["modules"].get(key, {})
        if args.rescore and "error" not in r:
            r["rerun"] = before.get("rerun", "all mutants").replace(" (rescored)", "") + " (rescored)"
            for field in ("seconds", "seconds_full_run", "ran_at", "loadavg_before", "loadavg_after"):
                if field in before:  # not `key`: that names the module's entry, written below
                    r[field] = before[field]
        else:
            if args.survivors and before:
                r["seconds_full_run"] = before.get("seconds_full_run", before.get("seconds"))
            r["loadavg_before"] = [round(x, 2) for x in load]
            r["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
            r["ran_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        results["modules"][key] = r
        if "error" in r:
            print(f"{name:16s} ERROR {r['error']}\n{r['log_tail']}")
        else:
            print(f"{name:16s} {r['mutants']:4d} mutants  killed {r['killed'] + r['killed_outside']:4d}  "
                  f"timeout {r['timeout']:3d}  equivalent {r['equivalent']:3d}  survived {r['survived']:3d}  "
                  f"no tests {r['no_tests']:3d}  score {r['score']:.1%}  {r['seconds']:.0f} s")
            for s in r["survivors"]:
                print(f"    {s['status']:9s} {s['function']}: {s['line']}")
        results["command"] = "nice -n 15 python benchmarks/bench_mutation.py [MODULE ...]"
        results["mutmut"] = _mutmut_version()
        results["cpus"] = os.cpu_count()
        write_json(RESULTS, results)
    return 0


def _mutmut_version() -> str:
    from importlib.metadata import version

    return version("mutmut")


if __name__ == "__main__":
    sys.exit(main())
