from typing import Any

from ._core import File as File, ioctl as ioctl

def open(path: Any, mode: str = "rb") -> File: ...
