"""The progress bar class: a Jupyter widget in a notebook kernel that has ipywidgets, plain text anywhere else.

``tqdm.auto`` makes the same choice but, in a kernel without ipywidgets, warns "IProgress not found" as soon as it
is imported (so at ``import raybt``); raybt decides itself and falls back quietly.
"""

from __future__ import annotations

import sys


def _in_notebook_kernel() -> bool:
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and "IPKernelApp" in shell.config


def _has_widgets() -> bool:
    try:
        import ipywidgets  # noqa: F401 - only whether it imports
    except ImportError:
        return False
    return True


if _in_notebook_kernel() and _has_widgets():
    from tqdm.notebook import tqdm
else:
    from tqdm.std import tqdm

__all__ = ["tqdm"]
