"""The package runs on its compiled core, not on Python stand-ins."""
import importlib.machinery

import fibers
from fibers import _core


def test_core_is_an_extension_module():
    assert isinstance(_core.__loader__, importlib.machinery.ExtensionFileLoader)
    assert _core.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def test_public_types_are_static_c_types():
    heaptype = 1 << 9  # Py_TPFLAGS_HEAPTYPE: set for classes defined in Python
    for cls in (fibers.Fiber, fibers.Scheduler, fibers.Timer, fibers.VirtualClock):
        assert not cls.__flags__ & heaptype, cls
    assert type(fibers.spawn).__name__ in ("cython_function_or_method",
                                           "builtin_function_or_method")


def test_objects_cannot_be_made_directly():
    import pytest
    with pytest.raises(TypeError):
        fibers.Fiber()
    with pytest.raises(TypeError):
        fibers.Timer()
