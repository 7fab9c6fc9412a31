"""``idn-grid`` (also ``python -m idnhelpers.grid``): a grid from settings files (``--profile``;
default the paper's protocol), a table of the paper (``paper.TABLES``) and options, run here or on
Slurm, planned (``--dry-run``) or followed (``--status``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import paper
from ..checks import check_assignments, check_choice, check_int, fail
from ..commands import Parser, check_output, run_main, write_bytes
from ..families import FAMILIES
from ..study import Study, load_profile
from .executors import EXECUTORS, executor_options, jobs_device_type, run_grid, with_job_resources
from .plan import build_grid, format_plan, format_status, grid_status, plan


def study_from_args(args) -> Study:
    """The study of parsed command-line arguments: the profile files, then ``--table``, then the
    options that name a setting, then ``--set``."""
    settings = load_profile(args.profile or [])
    if args.table is not None:
        settings.update(paper.TABLES[args.table])
    family = args.family
    if args.labels is not None:
        if args.family is not None:
            fail("--labels", args.labels, "not with --family: --labels names the labels itself")
        known = FAMILIES.get(args.labels)
        family = args.labels if known is not None and known.needs == "file" else "labels_file"
        if family == "labels_file":
            args.setting = [*args.setting, f"path={args.labels}"]
    explicit = dict(dataset=args.dataset, methods=args.methods, noise_rates=args.noise_rates, seeds=args.seeds,
                    data_root=args.data_root, family=family, device=args.device)
    settings.update({k: v for k, v in explicit.items() if v is not None})
    if args.noise_rates is not None:
        settings["baseline_rates"] = None  # every method at the rates given (--set baseline_rates=... for fewer)
    elif family in FAMILIES and FAMILIES[family].fixed:
        settings.update(noise_rates=None, baseline_rates=None)  # one fixed set of labels
    settings.update(check_assignments(args.set, "--set", [f for f in Study.fields() if f != "family_settings"],
                                      "n_epochs=5 or n_train=null"))
    chosen = FAMILIES[check_choice(settings.get("family", "idn_published"), "--family", FAMILIES)]
    settings["family_settings"] = check_assignments(args.setting, "--setting", list(chosen.settings), "norm_std=0.2")
    return Study.load(**settings)


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="idn-grid", description="Run the paper's benchmark grids (chapter 05, "
                                "Tables 1-3) into the shared cache, on this machine or on Slurm.",
                                epilog="Examples: idn-grid --table 1 --dry-run; idn-grid --table 1 --executor slurm "
                                "--partition gpu --time 720; idn-grid --profile my_settings.yaml --status")
    g = p.add_argument_group("the grid")
    g.add_argument("--profile", nargs="+", metavar="FILE", help="YAML files of settings, read in order, a later "
                   "file's values winning (the book's profiles are such files); default: none, the paper's protocol")
    g.add_argument("--table", type=int, choices=sorted(paper.TABLES), help="the grid of the paper's Table 1 (MNIST), "
                   "2 (CIFAR-10) or 3 (Clothing1M); without a profile (or with the book's paper profile), the "
                   "paper's protocol for it")
    g.add_argument("--dataset", help="data set (overrides the profile)")
    g.add_argument("--methods", nargs="+", help="method names (the paper's: ce forward coteaching gce dac dmi seal "
                   "seal_dmi; beyond it: gce_truncated elr plc)")
    g.add_argument("--family", help="noise family or published label set of families.FAMILIES (default: the "
                   "authors' published IDN labels, idn_published; idn: Algorithm 1 on these rows)")
    g.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE",
                   help="a setting of the family, e.g. --setting norm_std=0.2 (xia), --setting labels=aggre (cifar10n)")
    g.add_argument("--labels", metavar="FILE_OR_SET", help="a label,label_noisy CSV of the training split, or a "
                   "published label set by name (cifar10n, cal_idn, ...)")
    g.add_argument("--rates", dest="noise_rates", nargs="+", type=float, metavar="RATES",
                   help="noise rates of every method, e.g. 0.2 0.4 (a profile's baseline_rates no longer apply; "
                   "none for a fixed label set)")
    g.add_argument("--seeds", nargs="+", type=int, help="run seeds, e.g. 0 1 2")
    g.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="any other grid setting, e.g. --set n_epochs=5 --set n_train=null (YAML values)")
    g.add_argument("--data-root", help="folder with the data sets")
    e = p.add_argument_group("how it runs")
    e.add_argument("--executor", default="local", choices=EXECUTORS, help="local: in this process (default); "
                   "slurm: a submitit job array; submitit-local: submitit's local processes; debug: submitit's debug "
                   "executor")
    e.add_argument("--device", help="auto, cpu or cuda (default: the profile's)")
    e.add_argument("--stack-size", type=int, help="at most K runs stacked per call on CUDA (default: as many as fit)")
    e.add_argument("--cells-per-job", type=int, help="cells per job (default: all cells of a method)")
    e.add_argument("--folder", help="submitit's folder for logs and pickles (default: jobs/ in the cache folder)")
    e.add_argument("--partition", help="Slurm partition")
    e.add_argument("--gpus", type=int, help="Slurm: GPUs per job (default 1); submitit-local: GPUs of this machine "
                   "the jobs share, one each (default: those visible)")
    e.add_argument("--cpus", type=int, help="CPUs per job (Slurm; default 8 per GPU)")
    e.add_argument("--time", type=int, dest="time_min", help="time limit per job in minutes (default 1440)")
    e.add_argument("--array-parallelism", type=int, help="Slurm: at most this many jobs of the array at once")
    e.add_argument("--parallel", type=int, help="submitit-local: jobs at once (at most the CPU cores; default one "
                   "per GPU, else one per core)")
    e.add_argument("--no-wait", action="store_true", help="submit to Slurm and exit; --status follows the jobs")
    a = p.add_argument_group("what to do").add_mutually_exclusive_group()
    a.add_argument("--dry-run", action="store_true", help="print the plan: cells, jobs, runs, estimated hours")
    a.add_argument("--status", action="store_true", help="print done / running / missing per cell")
    p.add_argument("--csv", help="also write the results table to this CSV file")
    return p


def main(argv=None) -> int:
    """``idn-grid`` / ``python -m idnhelpers.grid``: see ``--help``."""
    return run_main(parser(), _main, argv)


def _main(args) -> int:
    if args.csv is not None:
        check_output(args.csv, "--csv", folder=False)
    if args.folder is not None:
        check_output(args.folder, "--folder")
    study = study_from_args(args)
    options = executor_options(args.executor, folder=args.folder, partition=args.partition, gpus=args.gpus,
                               cpus=args.cpus, time_min=args.time_min, array_parallelism=args.array_parallelism,
                               parallel=args.parallel)
    check_int(args.stack_size, "--stack-size", minimum=1, none_ok=True)
    check_int(args.cells_per_job, "--cells-per-job", minimum=1, none_ok=True)
    if args.no_wait and args.executor != "slurm":
        fail("--no-wait", True, "only with --executor slurm")
    target = jobs_device_type(args.executor, options, study.device)  # where cells train: in their keys
    grid = build_grid(study, train_labels=not (args.dry_run or args.status), device_type=target)
    print(grid.description, file=sys.stderr)
    if args.status:
        print(format_status(grid_status(grid)))
        return 0
    if args.dry_run:
        p = plan(grid, device=target, cells_per_job=args.cells_per_job)
        print(format_plan(p, args.executor, with_job_resources(args.executor, options, p)))
        return 0
    results = run_grid(grid, args.executor, stack_size=args.stack_size, cells_per_job=args.cells_per_job,
                       wait=not args.no_wait, **options)
    if args.no_wait:
        print("submitted; follow with --status, gather the table by running the same command (or chapter 05 with "
              "collect_only: true) when they are done")
        return 0
    for family in results.frame["family"].unique():  # last-epoch test accuracy (%), mean ± std over seeds
        table = results.table(family=family)
        table.index.name = f"{results.frame['dataset'].iloc[0]}, {family}: last-epoch test accuracy (%)"
        print(table.to_string())
    if args.csv:  # atomic: a killed run leaves no half-written table
        write_bytes(Path(args.csv), results.frame.to_csv(index=False).encode())
    return 0

