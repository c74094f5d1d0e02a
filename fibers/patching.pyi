from typing import Callable, ContextManager, Optional

_PARTS: dict[str, Callable[[], list[tuple[object, str, object]]]]

def patch(*, socket: bool = ..., ssl: bool = ..., select: bool = ...,
          selectors: bool = ..., time: bool = ..., subprocess: bool = ...,
          os: bool = ..., threading: bool = ...,
          queue: bool = ...) -> None: ...
def unpatch() -> None: ...
def patched(*, socket: bool = ..., ssl: bool = ..., select: bool = ...,
            selectors: bool = ..., time: bool = ..., subprocess: bool = ...,
            os: bool = ..., threading: bool = ...,
            queue: bool = ...) -> ContextManager[None]: ...
def is_patched(name: Optional[str] = ...) -> bool: ...
