"""Helpers shared by the tests, the benchmarks and the make targets: a
throwaway PostgreSQL cluster (pgcluster), fibers-shadow as a black box
(shadowproc), and the programs run as ``python -m tools.<name>`` from the
repository's root (run_postgres, soak_shadow).  The tests import them as
``tools.<name>``: pyproject.toml puts the root on pytest's path."""
