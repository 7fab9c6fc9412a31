"""Progress reads well in a log file: a few lines per finished run, no bar redrawn every second."""

import pytest

from idnhelpers import progress
from idnhelpers.grid import build_grid, run_grid
from idnhelpers.study import Study


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IDNHELPERS_CACHE", str(tmp_path / "cache"))  # every run trains
    return tmp_path / "cache"


def tiny_grid(methods=("ce", "gce", "elr")):
    spec = Study(dataset="digits", methods=list(methods), family="symmetric", noise_rates=[0.2], seeds=[0],
                    n_epochs=3, n_train=400, n_test=100, precision="fp32")
    return build_grid(spec, device="cpu")


def test_a_grid_logged_to_a_file_writes_a_few_lines_per_finished_run(capsys, monkeypatch, private_cache):
    monkeypatch.delenv("IDNHELPERS_PROGRESS", raising=False)  # stderr is captured: not a terminal
    run_grid(tiny_grid(), "local", device="cpu")
    err = capsys.readouterr().err
    assert "\r" not in err  # nothing redraws itself
    lines = err.strip().splitlines()
    assert len(lines) <= 2 * 3 + 1, err  # per run: its own line and the grid's
    assert sum("3 epochs in" in line for line in lines) == 3
    done = [int(line.split()[1].split("/")[0]) for line in lines if line.startswith("grid:")]
    assert done == sorted(set(done)) and done[-1] == 3  # a line when the count grows (polled once a second)
    assert all("ETA" in line for line in lines if line.startswith("grid:"))


def test_a_long_run_logs_its_epochs_with_an_eta(capsys, monkeypatch, private_cache):
    monkeypatch.setenv("IDNHELPERS_PROGRESS", "lines")
    monkeypatch.setattr(progress, "LINE_SECONDS", 0.0)  # every epoch is "long enough" for a line
    run_grid(tiny_grid(["ce"]), "local", device="cpu")
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split(",")[0] for line in lines if "ETA" in line and not line.startswith("grid")] == [
        "CE: epoch 1/3", "CE: epoch 2/3"]


def test_bars_on_request_and_a_bad_mode_refused(capsys, monkeypatch, private_cache):
    monkeypatch.setenv("IDNHELPERS_PROGRESS", "bars")
    run_grid(tiny_grid(["ce"]), "local", device="cpu")
    assert "\r" in capsys.readouterr().err
    monkeypatch.setenv("IDNHELPERS_PROGRESS", "quiet")
    with pytest.raises(ValueError, match="IDNHELPERS_PROGRESS='quiet'"):
        progress.use_bars()


def test_clock():
    assert progress.clock(5) == "0:05" and progress.clock(125) == "2:05" and progress.clock(3725) == "1:02:05"
