import os
from pathlib import Path
import pytest

os.environ.setdefault('OMP_NUM_THREADS', '1')
try:
    import torch
    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / 'shared'


@pytest.fixture
def shared_dir():
    "The project's reference-data folder beside the repository; tests using it skip in a user's clone."
    if not SHARED.is_dir(): pytest.skip('the reference-data folder beside the repository is not present (only on the developers\' machines)')
    return SHARED
