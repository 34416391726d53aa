"""Where the peers that cannot share Gristmill's environment live.

datatrove 0.10.1 pins libraries Gristmill does not (spaCy, xxhash < 4), so it runs in a side
virtual environment: `make datatrove-env` builds `.venv-datatrove` from
`benchmarks/datatrove-requirements.txt`; `$DATATROVE_PYTHON` points at another one. The parity tests
(`make parity`) and the datatrove benchmarks run their datatrove side as a child process of that
interpreter.
"""

from __future__ import annotations

import os
from pathlib import Path

from benchmarks.common import REPO

DATATROVE_PYTHON = Path(os.environ.get("DATATROVE_PYTHON") or REPO / ".venv-datatrove" / "bin" / "python")
DATATROVE_HOW = "make datatrove-env (or point $DATATROVE_PYTHON at a Python with benchmarks/datatrove-requirements.txt)"
