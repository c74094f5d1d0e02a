import ssl as _ssl
from typing import Any, Callable, Iterable, Optional, Tuple, Union

from .._http import FileWrapper as FileWrapper
from .._http import HTTPLimitError as HTTPLimitError
from .._http import Limits as Limits

_App = Callable[[dict, Callable[..., Any]], Iterable[bytes]]
_Address = Union[Tuple[str, int], str, bytes]

class Server:
    address: Any
    @property
    def connections(self) -> int: ...
    def stop(self, grace: Optional[float] = None) -> None: ...
    def __enter__(self) -> "Server": ...
    def __exit__(self, *exc_info: Any) -> None: ...

def serve(app: _App, address: _Address, *,
          ssl: Optional[_ssl.SSLContext] = None, backlog: int = 1024,
          limits: Optional[Limits] = None, access_log: bool = False,
          reuse_port: bool = False,
          handshake_timeout: Optional[float] = 60.0) -> Server: ...

def run(app: _App, address: _Address, *, workers: int = 1,
        ssl: Optional[_ssl.SSLContext] = None, backlog: int = 1024,
        limits: Optional[Limits] = None, access_log: bool = False,
        grace: Optional[float] = 30.0,
        backend: Optional[str] = None) -> None: ...
