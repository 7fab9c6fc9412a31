"""The paper's grids (Section 4.3, Tables 1-3) as data, run on one machine or across a cluster.

A grid is a list of ``Cell`` values: one method, with its options, on one base run (a sample's
training rows with one set of noisy labels, a seed, what to record). ``GridSpec`` holds the settings
that choose the cells (chapter 05's parameters; its defaults are Table 1 as the paper ran it) and
``build_grid(spec)`` expands methods x label sets x seeds into cells. Chapter 05, chapter 06 and
``idn-grid`` all build their runs here, so they share cache keys: what one trains, the other loads.

- ``spec``: ``GridSpec``, ``Cell``, ``Grid``, ``build_grid`` (any noise family or published label set);
- ``plan``: jobs, what the cache holds (``trace``, ``grid_status``, ``collect``) and ``plan``;
- ``executors``: ``run_grid`` on this machine, on Slurm or submitit's local processes;
- ``cli``: the ``idn-grid`` command line.
"""

from .executors import EXECUTORS, executor_options, run_grid, run_job
from .plan import MissingRuns, T_error, collect, format_plan, format_status, grid_status, plan, trace
from .spec import Cell, Grid, GridSpec, build_grid

__all__ = ["Cell", "EXECUTORS", "Grid", "GridSpec", "MissingRuns", "T_error", "build_grid", "collect",
           "executor_options", "format_plan", "format_status", "grid_status", "plan", "run_grid", "run_job", "trace"]
