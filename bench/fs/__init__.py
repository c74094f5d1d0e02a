"""File-system watcher benchmark: the C writer (writer.c) and one watcher
process per contender (watchers.py).  Driven by ``python -m bench.fs_run``."""
