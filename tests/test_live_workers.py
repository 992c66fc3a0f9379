"""No stale code in long-lived workers (issue 15, section 2).

The notebook scenario: one process, one Ray. The user sweeps, edits a strategy module and a helper module it imports,
calls ``importlib.reload`` and sweeps again on the same Ray, whose workers imported or received the old code. The
new sweep's rows must equal a fresh in-process run of the new code, on Ray and in-process, with and without a
checkpoint directory.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

import code_edits
from sweeps import comparable, same_rows

TESTS = Path(__file__).parent
EDITS = ("helper in the same module", "helper in another module", "module-level constant")

NOTEBOOK = textwrap.dedent('''
    """A notebook session: the code folder is the working directory (on the import path before Ray starts, so the
    workers of the Ray raybt starts can import strat_mod themselves)."""
    import importlib
    import sys

    import code_edits
    import strat_mod

    before = code_edits.sweep(strat_mod, n_workers=2, address="local", checkpoint_dir="ray-checkpoints")
    code_edits.sweep(strat_mod, checkpoint_dir="local-checkpoints")
    before.df.to_parquet("before.parquet")
    for case in {edits!r}:
        code_edits.apply_edit(code_edits.Path("."), case)
    importlib.invalidate_caches()
    importlib.reload(sys.modules["helpers_mod"])
    importlib.reload(strat_mod)
    runs = {{"ray": code_edits.sweep(strat_mod, n_workers=2),
             "ray-checkpoints": code_edits.sweep(strat_mod, n_workers=2, checkpoint_dir="ray-checkpoints"),
             "local": code_edits.sweep(strat_mod),
             "local-checkpoints": code_edits.sweep(strat_mod, checkpoint_dir="local-checkpoints")}}
    for name, results in runs.items():
        results.df.to_parquet(f"{{name}}.parquet")
        print(name, results.n_skipped)
''')


def test_notebook_reload_on_the_ray_raybt_started(tmp_path):
    """In a process of its own, so that raybt starts the Ray itself with the code folder on the workers' path."""
    folder = code_edits.write_code(tmp_path / "code")
    (folder / "notebook.py").write_text(NOTEBOOK.format(edits=EDITS))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(PYTHONPATH=os.pathsep.join([str(TESTS.parent), str(TESTS)]), PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run([sys.executable, "notebook.py"], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    fresh = fresh_run_of_new_code(tmp_path / "reference")
    before = pd.read_parquet(folder / "before.parquet")
    assert not comparable(before)[["final_value"]].equals(comparable(fresh)[["final_value"]])
    skipped = dict(line.split() for line in done.stdout.splitlines())
    stale = [name for name in ("ray", "ray-checkpoints", "local", "local-checkpoints")
             if skipped[name] != "0" or not rows_equal(pd.read_parquet(folder / f"{name}.parquet"), fresh)]
    assert not stale, f"runs with old rows or skipped jobs after the reload: {stale}"


def rows_equal(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    try:
        same_rows(a, b)
    except AssertionError:
        return False
    return True


def fresh_run_of_new_code(folder: Path) -> pd.DataFrame:
    """The edited code, swept in-process by a fresh process."""
    code_edits.write_code(folder)
    for case in EDITS:
        code_edits.apply_edit(folder, case)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS.parent), str(TESTS)]), PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run([sys.executable, "-m", "code_edits", "{}", "fresh"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return pd.read_parquet(folder / "fresh-fresh.parquet")


@pytest.mark.parametrize("checkpoints", [False, True])
def test_notebook_reload_on_the_session_ray(ray_cluster, tmp_path, monkeypatch, checkpoints):
    """The same scenario in this process, on the test session's Ray."""
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    folder = code_edits.write_code(tmp_path / "code")
    options = {"checkpoint_dir": str(tmp_path / "ray")} if checkpoints else {}
    local_options = {"checkpoint_dir": str(tmp_path / "local")} if checkpoints else {}
    try:
        module = code_edits.import_fresh(folder)
        before = code_edits.sweep(module, n_workers=2, **options).df
        code_edits.sweep(module, **local_options)
        for case in EDITS:
            code_edits.apply_edit(folder, case)
        module = code_edits.reload_all()
        on_ray = code_edits.sweep(module, n_workers=2, **options)
        in_process = code_edits.sweep(module, **local_options)
        fresh = code_edits.sweep(module)
        assert on_ray.n_skipped == in_process.n_skipped == 0
        same_rows(on_ray.df, fresh.df)
        same_rows(in_process.df, fresh.df)
        assert not comparable(before)[["final_value"]].equals(comparable(fresh.df)[["final_value"]])
    finally:
        code_edits.forget()
        sys.path.remove(str(folder))
