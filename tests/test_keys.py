"""No stale results: a job's key changes whenever its result can (issue 15, section 1).

Every edit of tests/code_edits.py is run twice: against a fresh process (a subprocess sweeps into a checkpoint
directory, the file is edited, a second subprocess sweeps again) and within one process (``importlib.reload``). Each
time the second sweep must recompute every job, and its rows must equal a fresh run of the new code.
"""

import importlib.metadata
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import code_edits
import raybt
from raybt import code_digest, plan
from raybt.cli import main as cli_main
from raybt.results import ResultsVersionWarning
from sweeps import comparable, same_rows

TESTS = Path(__file__).parent
ROOT = TESTS.parent
N_JOBS = len(code_edits.N_VALUES) * len(code_edits.RANGES)


@pytest.fixture()
def code(tmp_path, monkeypatch):
    """The user's code folder; the modules it defines are forgotten after the test."""
    folder = code_edits.write_code(tmp_path / "code")
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # an edit within the same second must not load a stale .pyc
    yield folder
    code_edits.forget()
    if str(folder) in sys.path:
        sys.path.remove(str(folder))


def fresh_process(folder: Path, out: str, raybt_root: Path = ROOT, **options) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(raybt_root), str(TESTS)]), PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run([sys.executable, "-m", "code_edits", json.dumps(options), out], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    counts["stored"] = pd.read_parquet(folder / f"{out}-stored.parquet")
    counts["fresh"] = pd.read_parquet(folder / f"{out}-fresh.parquet")
    return counts


def metrics_differ(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    columns = ["final_value", "n_trades", "sharpe"]
    return not comparable(a)[columns].equals(comparable(b)[columns])


# ----------------------------------------------------------------------------------------- edits, fresh process

@pytest.mark.parametrize("case", list(code_edits.EDITS))
def test_an_edit_makes_stored_rows_stale_in_a_fresh_process(code, case):
    before = fresh_process(code, "before")
    assert before["computed"] == N_JOBS
    code_edits.apply_edit(code, case)
    after = fresh_process(code, "after")
    assert (after["computed"], after["skipped"]) == (N_JOBS, 0)
    same_rows(after["stored"], after["fresh"])
    assert metrics_differ(after["fresh"], before["fresh"]), "the edit must change the results"


def test_force_recomputes_and_replaces_in_a_fresh_process(code):
    fresh_process(code, "before")
    again = fresh_process(code, "again")
    assert (again["computed"], again["skipped"]) == (0, N_JOBS)
    forced = fresh_process(code, "forced", force=True)
    assert (forced["computed"], forced["skipped"]) == (N_JOBS, 0)
    same_rows(forced["stored"], forced["fresh"])
    stored = raybt.load_results(str(code / "checkpoints")).df
    assert len(stored) == N_JOBS  # replaced: one row per key, the newest
    assert set(stored["worker"]) == set(forced["stored"]["worker"])


def test_a_change_of_raybts_engine_makes_stored_rows_stale_in_a_fresh_process(code, tmp_path):
    before = fresh_process(code, "before")
    modified = code_edits.copy_raybt(tmp_path / "upgraded")
    name, old, new = code_edits.ENGINE_EDIT
    text = (modified / name).read_text()
    assert old in text
    (modified / name).write_text(text.replace(old, new))
    after = fresh_process(code, "after", raybt_root=modified.parent)
    assert (after["computed"], after["skipped"]) == (N_JOBS, 0)
    same_rows(after["stored"], after["fresh"])
    assert metrics_differ(after["fresh"], before["fresh"]), "the engine edit must change the results"


# -------------------------------------------------------------------------------------------- edits, one process

@pytest.mark.parametrize("case", list(code_edits.EDITS))
def test_an_edit_makes_stored_rows_stale_after_a_reload(code, case, tmp_path):
    checkpoints = str(tmp_path / "checkpoints")
    module = code_edits.import_fresh(code)
    before = code_edits.sweep(module, checkpoint_dir=checkpoints)
    assert before.n_computed == N_JOBS
    code_edits.apply_edit(code, case)
    module = code_edits.reload_all()
    after = code_edits.sweep(module, checkpoint_dir=checkpoints)
    assert (after.n_computed, after.n_skipped) == (N_JOBS, 0)
    fresh = code_edits.sweep(module)
    same_rows(after.df, fresh.df)
    assert metrics_differ(fresh.df, before.df), "the edit must change the results"


def test_a_reloaded_helper_module_makes_rows_of_the_same_strategy_objects_stale(tmp_path, monkeypatch):
    """The strategy's module is not reloaded (its class object stays the same) but a module it calls is: the next
    sweep of the very same strategy instances must see the new helper."""
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "calls_helpers.py").write_text(
        "import raybt\nimport tuned_helpers\n\n\nclass UsesHelper(raybt.Strategy):\n    n: int = 5\n\n"
        "    def signals(self, data):\n        m = raybt.indicators.sma(data.close, tuned_helpers.window(self.n))\n"
        "        return data.close > m, data.close < m\n")
    (folder / "tuned_helpers.py").write_text("def window(n):\n    return n\n")
    monkeypatch.syspath_prepend(str(folder))
    import importlib

    import calls_helpers
    import tuned_helpers

    try:
        strategies = [calls_helpers.UsesHelper(n=n) for n in (3, 6)]
        ids = [s.id for s in strategies]
        options = dict(data=code_edits.DATA, date_ranges=code_edits.RANGES, show_progress=False,
                       checkpoint_dir=str(tmp_path / "checkpoints"))
        before = raybt.run_backtests(strategies, **options)
        (folder / "tuned_helpers.py").write_text("def window(n):\n    return n + 11\n")
        importlib.reload(tuned_helpers)
        after = raybt.run_backtests(strategies, **options)
        assert (after.n_computed, after.n_skipped) == (4, 0)
        assert [s.id for s in strategies] != ids
        fresh = raybt.run_backtests(strategies, options["data"], options["date_ranges"], show_progress=False)
        same_rows(after.df, fresh.df)
        assert metrics_differ(fresh.df, before.df)
    finally:
        sys.modules.pop("calls_helpers", None)
        sys.modules.pop("tuned_helpers", None)


def test_force_recomputes_and_replaces_in_one_process(code, tmp_path):
    checkpoints = str(tmp_path / "checkpoints")
    module = code_edits.import_fresh(code)
    first = code_edits.sweep(module, checkpoint_dir=checkpoints).df  # read now: Results.df reads the store lazily
    forced = code_edits.sweep(module, checkpoint_dir=checkpoints, force=True)
    assert (forced.n_computed, forced.n_skipped) == (N_JOBS, 0)
    same_rows(forced.df, code_edits.sweep(module).df)
    stored = raybt.load_results(checkpoints).df
    assert len(stored) == N_JOBS
    assert (stored.sort_values("key")["duration_s"].to_numpy()
            == forced.df.sort_values("key")["duration_s"].to_numpy()).all()  # the new rows, not the first run's
    assert not np.array_equal(first.sort_values("key")["duration_s"], forced.df.sort_values("key")["duration_s"])


def test_a_change_of_raybts_engine_makes_stored_rows_stale_in_one_process(code, tmp_path, monkeypatch):
    """Simulated upgrade: raybt's simulate() invests half as much per entry, and the results version is the digest
    of a copy of raybt's source with the same edit made."""
    checkpoints = str(tmp_path / "checkpoints")
    module = code_edits.import_fresh(code)
    before = code_edits.sweep(module, checkpoint_dir=checkpoints)
    modified = code_edits.copy_raybt(tmp_path / "upgraded")
    name, old, new = code_edits.ENGINE_EDIT
    (modified / name).write_text((modified / name).read_text().replace(old, new))
    from raybt import backtest

    original = backtest.simulate
    monkeypatch.setattr(backtest, "simulate", lambda *a, **k: original(*a, **{**k, "size": k["size"] * 0.5}))
    monkeypatch.setattr(plan, "RESULTS_VERSION", code_digest.raybt_digest(modified))
    after = code_edits.sweep(module, checkpoint_dir=checkpoints)
    assert (after.n_computed, after.n_skipped) == (N_JOBS, 0)
    same_rows(after.df, code_edits.sweep(module).df)
    assert metrics_differ(after.df, before.df)


# ------------------------------------------------------------------------------------- raybt's results version

@pytest.mark.parametrize("name", ["engine.py", "metrics/scan.py", "indicators/_columns.py", "_records.py", "backtest.py",
                                  "strategy.py", "data.py", "_accel/frames.py", "batch.py", "results.py", "demo.py"])
def test_the_results_version_moves_with_raybts_result_affecting_code(tmp_path, name):
    modified = code_edits.copy_raybt(tmp_path)
    assert code_digest.raybt_digest(modified) == plan.RESULTS_VERSION
    with open(modified / name, "a") as handle:
        handle.write("\n# any edit\n")
    assert code_digest.raybt_digest(modified) != plan.RESULTS_VERSION


@pytest.mark.parametrize("library", code_digest.COMPUTING_LIBRARIES)
def test_the_results_version_moves_with_the_computing_libraries(tmp_path, monkeypatch, library):
    modified = code_edits.copy_raybt(tmp_path)
    assert code_digest.raybt_digest(modified) == plan.RESULTS_VERSION
    installed = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version",
                        lambda name: "999.0" if name == library else installed(name))
    assert code_digest.raybt_digest(modified) != plan.RESULTS_VERSION


@pytest.mark.parametrize("name", ["cli.py", "checkpoint.py", "_storage.py", "executors/ray_tasks.py", "plots.py", "report.py",
                                  "stats/pbo.py", "verdict.py"])
def test_the_results_version_ignores_commands_storage_and_transport(tmp_path, name):
    modified = code_edits.copy_raybt(tmp_path)
    with open(modified / name, "a") as handle:
        handle.write("\n# any edit\n")
    assert code_digest.raybt_digest(modified) == plan.RESULTS_VERSION


def test_a_ray_worker_with_other_raybt_code_refuses_to_run(ray_cluster, code, monkeypatch):
    from raybt import sweep as sweep_module

    module = code_edits.import_fresh(code)
    real_settings = sweep_module.RunSettings
    monkeypatch.setattr(sweep_module, "RunSettings",
                        lambda *a, **k: real_settings(*a, results_version="0000000000000000", **k))
    with pytest.raises(Exception, match="raybt code of results version .* but the driver's is 0000000000000000"):
        code_edits.sweep(module, n_workers=2)


# --------------------------------------------------------------------------------------------- Strategy.version

def test_version_is_a_class_attribute_not_a_parameter():
    class Versioned(raybt.Strategy):
        version = 3
        n: int = 1

        def signals(self, data):
            return data.close > 0, data.close < 0

    assert Versioned(n=2).params == {"n": 2}
    assert Versioned(n=2).version == 3
    with pytest.raises(TypeError, match="'version' is the strategy's code version, not a parameter"):
        type("Annotated", (raybt.Strategy,), {"__annotations__": {"version": int}, "version": 2})
    with pytest.raises(TypeError, match="version must be an int or a str"):
        type("BadVersion", (raybt.Strategy,), {"version": 1.5})


def test_version_changes_the_id_of_a_class_without_source():
    """Classes built at run time have no source: the version still counts."""
    def build(version):
        return type("Dynamic", (raybt.Strategy,), {"__annotations__": {"n": int}, "n": 1, "version": version,
                                                    "__module__": __name__})

    assert build(1)(n=2).id == build(1)(n=2).id != build(2)(n=2).id


# ------------------------------------------------------------------------------------------- cost and stability

def test_the_code_digest_is_computed_once_per_class_and_reload_gives_a_fresh_one(code, monkeypatch):
    module = code_edits.import_fresh(code)
    walks = []
    real_walk = code_digest._walk_class
    monkeypatch.setattr(code_digest, "_walk_class", lambda cls: walks.append(cls) or real_walk(cls))
    old = module.Edited
    ids = {old(n=n).id for n in range(2_000)}
    assert len(ids) == 2_000 and walks == [old]
    new = code_edits.reload_all().Edited
    assert new is not old
    assert new(n=3).id == old(n=3).id  # same code, same id ...
    assert walks == [old, new]  # ... computed afresh for the new class object
    strategy = new(n=4)
    assert strategy.id
    cached = strategy._id
    code_digest.refresh([new])  # what every sweep does: the code is unchanged ...
    assert strategy.id and strategy._id is cached  # ... so the ids cached by instances stay valid


def test_code_of_a_module_executed_by_hand_counts(tmp_path):
    """A module run from a file without being registered in sys.modules (importlib.util by hand): its helpers are
    still followed."""
    import importlib.util

    def load(helper_body):
        path = tmp_path / "by_hand.py"
        path.write_text("import raybt\n\ndef helper(x):\n    " + helper_body + "\n\n"
                        "class ByHand(raybt.Strategy):\n    def signals(self, data):\n"
                        "        return helper(data.close) > 0, data.close < 0\n")
        spec = importlib.util.spec_from_file_location("by_hand_unregistered", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.ByHand()

    assert "by_hand_unregistered" not in sys.modules
    assert load("return x").id == load("return x").id != load("return x - 1").id


def test_ids_are_the_same_in_every_process_whatever_the_hash_seed(tmp_path):
    (tmp_path / "seeded.py").write_text(
        "import raybt\nKINDS = {'a', 'b', 'c', 'd'}\n\n\nclass SetLiteral(raybt.Strategy):\n    kind: str = 'a'\n\n"
        "    def signals(self, data):\n        ok = self.kind in {'a', 'b', 'c'} and self.kind in KINDS\n"
        "        return data.close > 0 if ok else data.close < 0, data.close < 0\n")
    ids = set()
    for seed in ("1", "2", "3"):
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONHASHSEED=seed)
        done = subprocess.run([sys.executable, "-c", "import seeded; print(seeded.SetLiteral().id)"], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=60, check=True)
        ids.add(done.stdout.strip())
    assert len(ids) == 1


HELPED = {
    "helpers.py": "LIMIT = 3\n\n\ndef above(close, n):\n    return close > close.shift(min(n, LIMIT))\n",
    "helped.py": "import helpers\nimport raybt\n\n\nclass Helped(raybt.Strategy):\n    n: int = 1\n\n"
                 "    def signals(self, data):\n        return helpers.above(data.close, self.n), data.close < 0\n",
}

IDS_BEFORE_AND_AFTER = """
import builtins, pickle, sys
import helped
from raybt import code_digest
sys.stdout.write(helped.Helped(n=2).id + "\\n")
pickle.dumps(helped.Helped(n=2))  # caches Helped.__slotnames__
builtins.print = lambda *args, **kwargs: None  # as Ray does when it starts
code_digest.refresh([helped.Helped])  # as the next sweep does
sys.stdout.write(helped.Helped(n=2).id + "\\n")
"""


def test_ids_do_not_depend_on_the_folder_or_on_what_python_sets_in_a_helper_module(tmp_path):
    """A strategy calling a helper module (``import helpers``) has the same id in another folder (another machine,
    a moved project: the module's ``__file__`` differs), and after Ray replaced ``print`` in the modules' builtins
    and an instance was pickled (``__slotnames__``): else a rerun there would not find its stored rows."""
    ids = []
    for folder in ("one", "elsewhere/two"):
        for name, text in HELPED.items():
            (tmp_path / folder).mkdir(parents=True, exist_ok=True)
            (tmp_path / folder / name).write_text(text)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(tmp_path / folder)]))
        done = subprocess.run([sys.executable, "-c", IDS_BEFORE_AND_AFTER], cwd=tmp_path / folder, env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        ids.extend(done.stdout.split())
    assert len(ids) == 4 and len(set(ids)) == 1, ids


# ----------------------------------------------------------------------------------- results version warnings

def test_load_results_and_the_cli_warn_about_rows_of_another_results_version(code, tmp_path):
    checkpoints = tmp_path / "checkpoints"
    module = code_edits.import_fresh(code)
    code_edits.sweep(module, checkpoint_dir=str(checkpoints))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(raybt.load_results(str(checkpoints))) == N_JOBS  # only this version: no warning
    manifest = json.loads((checkpoints / "manifest.json").read_text())
    manifest["runs"][0]["raybt_results_version"] = 1  # what raybt wrote before versions were derived
    (checkpoints / "manifest.json").write_text(json.dumps(manifest))
    with pytest.warns(ResultsVersionWarning, match=r"another raybt results version \(1; this raybt is "):
        raybt.load_results(str(checkpoints))
    with pytest.warns(ResultsVersionWarning, match=r"another raybt results version \(1; this raybt is "):
        assert cli_main(["results", str(checkpoints)]) == 0


def test_cli_force(code, tmp_path, capsys):
    spec = code / "spec.py"
    spec.write_text("import code_edits\nimport strat_mod\n"
                    "strategies = [strat_mod.Edited(n=n) for n in code_edits.N_VALUES]\n"
                    "data = code_edits.DATA\ndate_ranges = code_edits.RANGES\nshow_progress = False\n")
    code_edits.import_fresh(code)
    args = ["run", str(spec), "--checkpoint-dir", str(tmp_path / "checkpoints"), "--no-progress"]
    assert cli_main(args) == 0
    assert cli_main(args) == 0
    assert f"0 computed, {N_JOBS} from checkpoints" in capsys.readouterr().out
    assert cli_main([*args, "--force"]) == 0
    assert f"{N_JOBS} computed, 0 from checkpoints" in capsys.readouterr().out


def test_long_helper_chains_and_self_containing_constants(tmp_path, monkeypatch):
    """The walk is iterative (a chain of 3,000 helpers) and stops at a container holding itself; the last helper of
    the chain still counts."""
    chain = "".join(f"def f{i}(x):\n    return f{i + 1}(x)\n" for i in range(3000))
    source = ("import raybt\nLOOP = [1]\nLOOP.append(LOOP)\n" + chain + "def f3000(x):\n    return x\n"
              "class Deep(raybt.Strategy):\n    def signals(self, data):\n        f0(LOOP)\n"
              "        return data.close > 0, data.close < 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ids = []
    for last in ("return x", "return x + 1"):
        (tmp_path / "deep_chain.py").write_text(source.replace("return x\n", f"{last}\n"))
        sys.modules.pop("deep_chain", None)
        import deep_chain

        ids.append(deep_chain.Deep().id)
    sys.modules.pop("deep_chain", None)
    assert ids[0] != ids[1]
