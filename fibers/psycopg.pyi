from typing import Any, Optional, Union

import psycopg
from psycopg.abc import AdaptContext, PQGen, RV
from psycopg.cursor import Cursor
from psycopg.rows import Row, RowFactory
from typing_extensions import Self

_Seconds = Union[int, float]

class Connection(psycopg.Connection[Row]):
    cancel_timeout: float
    @classmethod
    def connect(cls, conninfo: str = "", *, autocommit: bool = False,
                prepare_threshold: Optional[int] = 5,
                context: Optional[AdaptContext] = None,
                row_factory: Optional[RowFactory[Row]] = None,
                cursor_factory: Optional[type[Cursor[Row]]] = None,
                **kwargs: Any) -> Self: ...
    def wait(self, gen: PQGen[RV], interval: Optional[_Seconds] = None,
             timeout: Optional[_Seconds] = None) -> RV: ...
    def cancel_safe(self, *, timeout: float = 30.0) -> None: ...
    def cancel(self) -> None: ...

def connect(conninfo: str = "", **kwargs: Any) -> Connection[Any]: ...
