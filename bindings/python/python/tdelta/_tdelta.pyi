"""Type stubs of the compiled extension ``tdelta._tdelta`` (use the ``tdelta`` package instead)."""

from os import PathLike
from typing import Callable, List, Optional, Sequence, Tuple, Union

_Path = Union[str, PathLike[str]]
_Progress = Optional[Callable[[str, int, int], object]]

class TdeltaError(Exception): ...
class NotFound(TdeltaError): ...
class Conflict(TdeltaError): ...
class Corrupt(TdeltaError): ...
class Locked(TdeltaError): ...
class InvalidInput(TdeltaError): ...
class ReadOnly(TdeltaError): ...

class Store:
    def __init__(self, path: _Path, author: Optional[str] = None, lock_wait: Optional[float] = None) -> None: ...
    @staticmethod
    def init(
        path: _Path, block_size: Optional[int] = None, author: Optional[str] = None, lock_wait: Optional[float] = None
    ) -> Store: ...
    @property
    def path(self) -> str: ...
    def refresh(self) -> None: ...
    def resolve(self, reference: str) -> str: ...
    def pack(
        self,
        source: _Path,
        message: Optional[str] = None,
        meta: Optional[dict[str, str]] = None,
        metrics: Optional[str] = None,
        tag: Optional[str] = None,
        force_tag: bool = False,
        base: Optional[str] = None,
        policy: Optional[str] = None,
        lossy: Optional[str] = None,
        max_error: Optional[float] = None,
        keep_exact: Optional[Sequence[str]] = None,
        include: Optional[Sequence[str]] = None,
        exclude: Optional[Sequence[str]] = None,
        progress: _Progress = None,
    ) -> str: ...
    def save(
        self,
        filename: str,
        header: bytes,
        names: Sequence[str],
        ptrs: Sequence[int],
        lens: Sequence[int],
        keep: Sequence[object],
        message: Optional[str] = None,
        meta: Optional[dict[str, str]] = None,
        metrics: Optional[str] = None,
        tag: Optional[str] = None,
        force_tag: bool = False,
        base: Optional[str] = None,
        policy: Optional[str] = None,
        lossy: Optional[str] = None,
        max_error: Optional[float] = None,
        keep_exact: Optional[Sequence[str]] = None,
        progress: _Progress = None,
    ) -> str: ...
    def restore(
        self,
        reference: str,
        out: _Path,
        force: bool = False,
        tensors: Optional[Sequence[str]] = None,
        files: Optional[Sequence[str]] = None,
        progress: _Progress = None,
    ) -> str: ...
    def log(
        self,
        reference: str = "HEAD",
        all: bool = False,
        filters: Optional[Sequence[Tuple[str, str]]] = None,
        sort: Optional[str] = None,
        max: Optional[int] = None,
    ) -> str: ...
    def show(self, reference: str) -> str: ...
    def tag(self, name: str, reference: str = "HEAD", force: bool = False, reason: str = "") -> str: ...
    def untag(self, name: str, reason: str = "") -> str: ...
    def tags(self) -> str: ...
    def rollback(self, name: str, to: Optional[str] = None, steps: Optional[int] = None, reason: str = "") -> str: ...
    def diff(self, a: str, b: str) -> str: ...
    def verify(self, references: Optional[Sequence[str]] = None, progress: _Progress = None) -> str: ...
    def stats(self) -> str: ...
    def version(self, reference: str) -> Version: ...

class Version:
    @property
    def id(self) -> str: ...
    def index(self) -> str: ...
    def header(self, path: str) -> bytes: ...
    def read(
        self, names: Sequence[str], starts: Sequence[int], lens: Sequence[int], progress: _Progress = None
    ) -> List[bytearray]: ...
