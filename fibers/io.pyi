from typing import Any

from ._core import File as File

def open(path: Any, mode: str = "rb") -> File: ...
