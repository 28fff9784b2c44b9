"""Shared test set-up: caches go to a temporary folder, never the home folder."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from _helpers_engine import workdir

_CACHE = Path(tempfile.mkdtemp(prefix="whaleaudit-test-cache-"))
for var in ("TORCH_HOME", "FASTAI_HOME", "MPLCONFIGDIR", "TORCHINDUCTOR_CACHE_DIR", "XDG_CACHE_HOME"):
    os.environ[var] = str(_CACHE / var.lower())

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REAL_PHOTOS = SHARED_DATA / "happywhale128"
REAL_LABELS = SHARED_DATA / "happywhale_train.csv"
#: Set in CI, where ../shared/data is always there: a missing file then fails the test instead of skipping it.
REQUIRE_DATA = os.environ.get("WHALEAUDIT_REQUIRE_DATA") == "1"


def need_shared(path: Path, what: str) -> Path:
    """``path``, or a skip where the shared data is absent (a user's machine); a failure where it must be there."""
    if not path.exists():
        message = f"{what} not found at {path} (only on the developers' and CI machines)"
        if REQUIRE_DATA:
            pytest.fail(f"{message}; WHALEAUDIT_REQUIRE_DATA=1 says it must be there")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session", autouse=True)
def _leave_no_temporary_folders():
    """The caches and the engine tests' tiny models and datasets (about 90-180 MB a run) go when the run ends;
    a run that is killed leaves them in the system's temporary folder, which the system clears."""
    yield
    shutil.rmtree(_CACHE, ignore_errors=True)
    if workdir.cache_info().currsize:
        shutil.rmtree(workdir(), ignore_errors=True)


@pytest.fixture
def real_photos():
    """The 3,000 real Happywhale photos, or a skip where they are not (a user's machine)."""
    need_shared(REAL_PHOTOS / "labels.csv", "the real photos")
    return REAL_PHOTOS


@pytest.fixture
def real_labels():
    return need_shared(REAL_LABELS, "Happywhale train.csv")
