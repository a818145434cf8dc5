"""Make ``callgrid`` importable from the src layout when the package is not installed in the venv."""

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("callgrid") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
