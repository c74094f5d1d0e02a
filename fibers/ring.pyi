from ._core import Ring as Ring, strerror as strerror
