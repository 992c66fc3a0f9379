"""examples/explore.ipynb runs top to bottom on a small sweep, and a notebook kernel shows raybt without noise:
no "IProgress not found" warning when ipywidgets is missing, a widget progress bar when it is there, no Ray
start-up chatter, strategies' print() output still shown."""

import json
import os
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parent.parent / "examples" / "explore.ipynb"
WIDGET = "application/vnd.jupyter.widget-view+json"
NOISE = ("IProgress", "Started a local Ray instance", "INFO worker.py", "INFO ")


def _client(notebook, directory) -> NotebookClient:
    """A client running ``notebook`` in a fresh kernel (raybt from this tree) in ``directory``."""
    os.environ["PYTHONPATH"] = os.pathsep.join([str(NOTEBOOK.parent.parent), os.environ.get("PYTHONPATH", "")])
    return NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(directory)}})


def _execute(notebook, directory):
    """Run a notebook top to bottom; every output as text."""
    _client(notebook, directory).execute()
    return notebook


def _texts(cell):
    for output in cell.get("outputs", []):
        if "text" in output:
            yield output["text"]
        for kind, value in output.get("data", {}).items():
            yield value if isinstance(value, str) else json.dumps(value)


def test_explore_notebook_runs_on_a_small_sweep(tmp_path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    parameters = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    parameters.source = 'FAST = [3, 5, 8]\nSLOW = [20, 30]\nN_WORKERS = 2\nCHECKPOINT_DIR = "ck"'
    _execute(notebook, tmp_path)
    outputs = {c.source.splitlines()[0]: "\n".join(_texts(c)) for c in notebook.cells if c.cell_type == "code"}
    everything = "\n".join(outputs.values())
    assert not any(noise in everything for noise in NOISE), everything
    assert "Results(12 jobs: 12 computed" in outputs["results = raybt.run_backtests(raybt.grid(SmaCross, fast=FAST, "
                                                   "slow=SLOW, where=lambda fast, slow: fast < slow),"]
    sweep_cell = next(c for c in notebook.cells if c.source.startswith("results = raybt.run_backtests"))
    assert any(WIDGET in o.get("data", {}) for o in sweep_cell.outputs)  # the progress bar is a widget
    assert "Backtest(SmaCross(" in outputs["best = results.backtest(results.best(\"sharpe\", 1).iloc[0], data)"]
    assert "compounded_return" in outputs["results.summary().head(10)"]
    heatmap = next(c for c in notebook.cells if c.source.startswith("results.plot_heatmap"))
    assert any("application/vnd.plotly.v1+json" in o.get("data", {}) for o in heatmap.outputs)
    assert (tmp_path / "explore_report.html").stat().st_size > 100_000  # plotly.js inside: opens offline
    assert (tmp_path / "ck" / "parts").is_dir()


PLAIN = [
    "import sys\nsys.modules['ipywidgets'] = None  # as if ipywidgets were not installed",
    "import raybt",
    "class Loud(raybt.Strategy):\n    n: int = 1\n\n    def signals(self, data):\n"
    "        print(f'signals of n={self.n}')\n        return data.close > data.close.shift(self.n), data.close < data.close.shift(self.n)",
    "data = raybt.synthetic_ohlcv(['A'], '2023-01-01', '2023-02-01', '1h', seed=1)\n"
    "results = raybt.run_backtests([Loud(n=1), Loud(n=2)], data, n_workers=2, address='local', batch_size=1)\n"
    "len(results.df)",
]
WORKER_PRINTS = ("(_run_remote pid=", "signals of n=")
"""What the strategy's print() in a Ray worker looks like once Ray's log monitor has forwarded it."""


def test_kernel_without_ipywidgets_and_ray_started_by_raybt(tmp_path):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in PLAIN])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    client = _client(notebook, tmp_path)

    def everything() -> str:
        return "\n".join(t for c in notebook.cells for t in _texts(c))

    with client.setup_kernel():
        for index, cell in enumerate(notebook.cells):
            client.execute_cell(cell, index)
        # Ray's log monitor forwards worker output seconds after the sweep: wait in short cells until it arrives,
        # rather than a fixed sleep
        deadline = time.monotonic() + 60
        while not all(text in everything() for text in WORKER_PRINTS) and time.monotonic() < deadline:
            notebook.cells.append(nbformat.v4.new_code_cell("import time; time.sleep(0.5)"))
            client.execute_cell(notebook.cells[-1], len(notebook.cells) - 1)
    assert not any(noise in everything() for noise in NOISE), everything()
    assert "raybt: 100%" in everything()  # the plain text progress bar
    # prints of Ray workers are shown, under Ray's prefix
    assert all(text in everything() for text in WORKER_PRINTS), everything()
    assert not any(WIDGET in o.get("data", {}) for c in notebook.cells for o in c.outputs)
