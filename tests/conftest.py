import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"  # the data the project ships (data/README.md: sources and licences)
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def data_dir() -> Path:
    """The repository's `data/` folder (prompt sets, the WISA-80K annotation example)."""
    assert DATA.is_dir(), f"data/ is missing from the repository at {DATA}"
    return DATA
