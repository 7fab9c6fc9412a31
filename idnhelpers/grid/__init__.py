"""The paper's grids (Section 4.3, Tables 1-3) as data, run on one machine or across a cluster.

A grid is a list of ``Cell`` values: one method, with its options, on one base run (a sample's
training rows with one set of noisy labels, a seed, what to record). ``build_grid(study)`` expands a
``study.Study``'s methods x label sets x seeds into cells; ``run_study(study)`` trains them and
returns their ``results.Results``. The chapters and ``idn-grid`` all build their runs here, so they
share cache keys: what one trains, the other loads.

- ``plan``: ``Cell``, ``Grid``, ``build_grid``; jobs, what the cache holds (``trace``, ``grid_status``,
  ``collect``) and ``plan``;
- ``executors``: ``run_study``, ``run_grid`` on this machine, on Slurm or submitit's local processes;
- ``cli``: the ``idn-grid`` command line."""

from .executors import EXECUTORS, executor_options, run_grid, run_job, run_study
from .plan import (Cell, Grid, MissingRuns, build_grid, collect, format_plan, format_status, grid_status, plan,
                   trace)

__all__ = ["Cell", "EXECUTORS", "Grid", "MissingRuns", "build_grid", "collect", "executor_options", "format_plan",
           "format_status", "grid_status", "plan", "run_grid", "run_job", "run_study", "trace"]
