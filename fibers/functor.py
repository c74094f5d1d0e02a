"""Functor: a callable that binds a function to an optional target.

TINN's Functor is a table you can call, so it carries attributes and can be
compared; a closure can do neither.  This is the Python form of that idea.
"""

from typing import Any, Callable, Optional


class Functor:
    """``Functor(func, target=None)`` calls ``func(target, *args)``, or
    ``func(*args)`` when ``target`` is None.

    Unlike a closure it accepts arbitrary attributes (``f.version = "1.2"``),
    has a readable ``repr``, and two functors compare equal (and hash alike)
    when they wrap the same function and the same target.
    """

    def __init__(self, func: Callable[..., Any], target: Optional[Any] = None) -> None:
        if not callable(func):
            raise TypeError(f"Functor() needs a callable, got {type(func).__name__}")
        self.func = func
        self.target = target

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.target is None:
            return self.func(*args, **kwargs)
        return self.func(self.target, *args, **kwargs)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Functor):
            return NotImplemented
        return self.func == other.func and self.target is other.target

    def __hash__(self) -> int:
        return hash((self.func, id(self.target)))

    def __repr__(self) -> str:
        name = getattr(self.func, "__qualname__", None) or repr(self.func)
        if self.target is None:
            return f"Functor({name})"
        return f"Functor({name}, target={self.target!r})"
