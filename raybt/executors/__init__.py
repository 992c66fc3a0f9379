"""Executors run batches of jobs and yield their results in completion order.

Both share everything else (planning, the batch function, checkpoints, results): the Ray executor is the local path
run remotely. ``local`` needs nothing beyond raybt; ``ray_tasks`` is the only module that imports ``ray``.
"""

from raybt.executors.local import LocalExecutor

__all__ = ["LocalExecutor"]
