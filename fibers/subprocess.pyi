import io
import subprocess as _std
from typing import Any, Optional, Union

from subprocess import (
    DEVNULL as DEVNULL,
    PIPE as PIPE,
    STDOUT as STDOUT,
    CalledProcessError as CalledProcessError,
    CompletedProcess as CompletedProcess,
    SubprocessError as SubprocessError,
    TimeoutExpired as TimeoutExpired,
    list2cmdline as list2cmdline,
)

_Input = Union[bytes, bytearray, memoryview, str, None]

class PipeIO(io.RawIOBase):
    def __init__(self, fileio: io.FileIO) -> None: ...
    @property
    def name(self) -> Any: ...
    @property
    def mode(self) -> str: ...

# The stdlib's Popen: same constructor, attributes and methods; only the
# waits are cooperative.
class Popen(_std.Popen[Any]):
    def wait(self, timeout: Optional[float] = ...) -> int: ...
    def communicate(self, input: _Input = ...,
                    timeout: Optional[float] = ...) -> tuple[Any, Any]: ...

def run(*popenargs: Any, input: _Input = ..., capture_output: bool = ...,
        timeout: Optional[float] = ..., check: bool = ...,
        **kwargs: Any) -> CompletedProcess[Any]: ...
def call(*popenargs: Any, timeout: Optional[float] = ...,
         **kwargs: Any) -> int: ...
def check_call(*popenargs: Any, **kwargs: Any) -> int: ...
def check_output(*popenargs: Any, timeout: Optional[float] = ...,
                 **kwargs: Any) -> Any: ...
