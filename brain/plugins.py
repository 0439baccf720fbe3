"""Your own code named by import path, ``my_pkg.module:Name``: models, familiarity strategies.

The module must be importable where the code runs: on the driver's ``sys.path``, and on
the engines' workers (the config's ``code_paths`` ships package folders to Ray and Spark).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from brain.config import Conf


def is_import_path(name: str) -> bool:
    module, sep, attr = name.partition(":")
    return bool(sep and module and all(p.isidentifier() for p in [*module.split("."), *attr.split(".")]))


def import_object(path: str, *, what: str) -> Any:
    """The object ``MODULE:NAME`` names; errors say which part failed and how to make it importable."""
    if not is_import_path(path):
        raise ValueError(f"{what} {path!r} must be an import path MODULE:NAME, e.g. my_pkg.models:MyNet")
    module_name, _, attr = path.partition(":")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as err:
        raise ImportError(f"{what} {path!r}: cannot import module {module_name!r} ({err}); put its package folder "
                          "on PYTHONPATH, and list it in code_paths for jobs on Ray or Spark") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{what} {path!r}: module {module_name!r} has no attribute {attr!r}") from None
    return obj


def path_of(cls: type) -> str:
    """The import path of a class (what :func:`import_object` takes back)."""
    return f"{cls.__module__}:{cls.__qualname__}"


def use_code_paths(conf: "Conf") -> list[str]:
    """Put ``code_paths`` (your package folders) on this process's ``sys.path``; returns them, resolved."""
    folders = [Path(p).expanduser().resolve() for p in conf.code_paths]
    for folder in folders:
        if not folder.is_dir():
            raise FileNotFoundError(f"code_paths: {folder} is not a folder (give your package's folder)")
        if str(folder.parent) not in sys.path:
            sys.path.insert(0, str(folder.parent))
    return [str(f) for f in folders]
