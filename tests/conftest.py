import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def isolated_cache(tmp_path_factory):
    """Every test session caches its training runs in a fresh folder."""
    os.environ["IDNHELPERS_CACHE"] = str(tmp_path_factory.mktemp("runs"))
    yield
