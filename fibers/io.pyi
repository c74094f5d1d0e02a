import os
from typing import Union

from ._core import File as File, ioctl as ioctl

def open(path: Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"], mode: str = "rb") -> File: ...
