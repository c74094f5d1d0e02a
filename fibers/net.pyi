import socket
import ssl as _stdssl
from typing import Any, Callable, List, Optional, Tuple, Union, overload

from ._core import Socket as Socket
from .ssl import TLSListener, TLSSocket

_Seconds = Union[int, float]

def socketpair(family: int = ..., type: int = ...,
               proto: int = 0) -> Tuple[Socket, Socket]: ...
@overload
def listen(address: Any, backlog: int = 1024, reuse_port: bool = False, *,
           ssl: None = None, handshake_timeout: Optional[_Seconds] = 60.0) -> Socket: ...
@overload
def listen(address: Any, backlog: int = 1024, reuse_port: bool = False, *,
           ssl: _stdssl.SSLContext,
           handshake_timeout: Optional[_Seconds] = 60.0) -> TLSListener: ...
@overload
def connect(address: Any, timeout: Optional[_Seconds] = None, *,
            ssl: None = None, server_hostname: Optional[str] = None,
            handshake_timeout: Optional[_Seconds] = None) -> Socket: ...
@overload
def connect(address: Any, timeout: Optional[_Seconds] = None, *,
            ssl: _stdssl.SSLContext, server_hostname: Optional[str] = None,
            handshake_timeout: Optional[_Seconds] = None) -> TLSSocket: ...

class Server:
    address: Any
    @property
    def connections(self) -> int: ...
    def stop(self, grace: Optional[_Seconds] = None) -> None: ...
    def __enter__(self) -> Server: ...
    def __exit__(self, *exc_info: Any) -> None: ...

def serve(address: Any, handler: Callable[[Any, Any], Any], *,
          reuse_port: bool = False, backlog: int = 1024,
          ssl: Optional[_stdssl.SSLContext] = None,
          handshake_timeout: Optional[_Seconds] = 60.0) -> Server: ...

def getaddrinfo(host: Any, port: Any, family: int = 0, type: int = 0,
                proto: int = 0, flags: int = 0) -> List[Tuple[Any, ...]]: ...
def gethostbyname(name: str) -> str: ...
