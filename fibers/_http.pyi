from typing import Any, Iterator

class HTTPLimitError(Exception):
    status: int
    def __init__(self, status: int, message: str) -> None: ...

class Limits:
    max_header_size: int
    max_headers: int
    max_body_size: int
    header_timeout: float
    keepalive_timeout: float
    max_connections: int
    def __init__(self, *, max_header_size: int = 65536,
                 max_headers: int = 100, max_body_size: int = 1 << 30,
                 header_timeout: float = 10.0,
                 keepalive_timeout: float = 5.0,
                 max_connections: int = 10000) -> None: ...

class FileWrapper:
    filelike: Any
    blksize: int
    def __init__(self, filelike: Any, blksize: int = 65536) -> None: ...
    def __iter__(self) -> Iterator[bytes]: ...
