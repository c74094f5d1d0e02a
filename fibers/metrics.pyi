from typing import Any, Iterator, Optional, Tuple, Union

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import REGISTRY as REGISTRY
from prometheus_client.registry import CollectorRegistry

from ._core import Scheduler
from .http import Limits

_Address = Union[Tuple[str, int], str, bytes]

DEFAULT_ADDRESS: Tuple[str, int]

class FibersCollector:
    scheduler: Optional[Scheduler]
    def __init__(self, scheduler: Optional[Scheduler] = None) -> None: ...
    def collect(self) -> Iterator[Metric]: ...

class MetricsServer:
    address: Any
    def stop(self, grace: Optional[float] = None) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> "MetricsServer": ...
    def __exit__(self, *exc_info: Any) -> None: ...

def install(registry: CollectorRegistry = ...,
            scheduler: Optional[Scheduler] = None) -> FibersCollector: ...
def uninstall(registry: CollectorRegistry = ...) -> Optional[FibersCollector]: ...
def serve(address: _Address = ..., *, registry: CollectorRegistry = ...,
          limits: Optional[Limits] = None) -> MetricsServer: ...
