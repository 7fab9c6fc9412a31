import os

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test`: one worker per core, one thread each (subprocesses too)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    if hasattr(os, "sched_setaffinity"):  # and its own core, inherited by its subprocesses: what the library sees
        cores = sorted(os.sched_getaffinity(0))  # (hardware.cpu_cores) is one core, so no worker oversubscribes
        os.sched_setaffinity(0, {cores[int(os.environ["PYTEST_XDIST_WORKER"].removeprefix("gw")) % len(cores)]})
    import torch

    torch.set_num_threads(1)

# the longest files first (by their seconds in one process, NOTES.md), so that with a worker per core (`make test`)
# the last files to start are short ones
LONGEST_FIRST = ("test_book.py", "test_recipes.py", "test_resume.py", "test_benchmarks.py", "test_cuda_paths.py",
                 "test_surfaces.py", "test_stacked.py", "test_grid.py", "test_label_sets.py", "test_install.py",
                 "test_stats.py", "test_golden.py", "test_cache.py", "test_seal.py", "test_errors.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its own order


@pytest.fixture(autouse=True, scope="session")
def isolated_cache(tmp_path_factory):
    """Every test session (each worker's) caches its training runs in a fresh folder."""
    os.environ["IDNHELPERS_CACHE"] = str(tmp_path_factory.mktemp("runs"))
    yield


@pytest.fixture(scope="session")
def digits():
    """The digits with 30% symmetric noise: training images, true and noisy labels, test images and labels."""
    from idnhelpers.datasets import load_dataset
    from idnhelpers.noise import symmetric_noise

    X, y = load_dataset("digits")
    Xt, yt = load_dataset("digits", train=False)
    return X, y, symmetric_noise(y, 0.3, 10, seed=0), Xt, yt
