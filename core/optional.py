"""Heavy optional libraries load only when a feature needs them, with a clear message when one is missing."""

from __future__ import annotations

import importlib
import sys
from types import ModuleType


def require_package(module: str, pip_name: str, feature: str) -> ModuleType:
    """Import ``module`` now, or raise ImportError saying which package ``feature`` needs and how to install it into
    the Python that is running (ComfyUI's own Python when a node asks)."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"The Python package '{pip_name}' is needed for {feature} but is not installed in this Python "
            f"({sys.executable}). Install it with: {sys.executable} -m pip install {pip_name}") from error
