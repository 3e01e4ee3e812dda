"""tdelta: tensor-aware delta storage for safetensors checkpoints.

A thin layer over the Rust engine. ``Store(path)`` opens a store (``tdelta
init`` or ``Store.init`` makes one); ``store.pack`` adds a checkpoint file or
directory as a version, ``store.save`` a dict of arrays; ``store.open(ref)``
reads tensors of a version like ``safetensors.safe_open``, touching only the
blocks it needs; ``store.load(ref)`` returns every tensor.

Reports (``pack``, ``log``, ``show``, ``diff``, ``verify``, ``stats``, ...)
are :class:`Record` objects: dicts whose keys are the fields of the CLI's
``--json`` output, also readable as attributes (``v.id``, ``v.stored_bytes``).

BF16 tensors come back as ``ml_dtypes.bfloat16`` arrays when ``ml_dtypes``
is installed, else as raw ``uint16`` arrays (:data:`BF16_AS_UINT16` says
which); 8-bit floats likewise as ``ml_dtypes`` types or raw ``uint8``.
With ``framework="pt"`` they are torch tensors of the matching dtype.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np

from . import _tdelta
from ._tdelta import Conflict, Corrupt, InvalidInput, Locked, NotFound, ReadOnly, TdeltaError

try:  # optional: numpy types for bfloat16 and 8-bit floats
    import ml_dtypes as _ml
except ImportError:  # pragma: no cover - depends on the environment
    _ml = None

__all__ = [
    "Store",
    "Reader",
    "Slice",
    "Record",
    "TdeltaError",
    "NotFound",
    "Conflict",
    "Corrupt",
    "Locked",
    "InvalidInput",
    "ReadOnly",
    "HAS_ML_DTYPES",
    "BF16_AS_UINT16",
    "numpy_dtype",
]

#: Whether ``ml_dtypes`` is installed (BF16 and FP8 tensors get real dtypes).
HAS_ML_DTYPES = _ml is not None
#: True when BF16 tensors come back as raw ``uint16`` arrays (no ``ml_dtypes``).
BF16_AS_UINT16 = not HAS_ML_DTYPES

PathLike = Union[str, "os.PathLike[str]"]
Progress = Union[None, bool, Callable[[str, int, int], Any]]

_NUMPY = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype(np.uint8),
    "I8": np.dtype(np.int8),
    "I16": np.dtype(np.int16),
    "U16": np.dtype(np.uint16),
    "F16": np.dtype(np.float16),
    "I32": np.dtype(np.int32),
    "U32": np.dtype(np.uint32),
    "F32": np.dtype(np.float32),
    "F64": np.dtype(np.float64),
    "I64": np.dtype(np.int64),
    "U64": np.dtype(np.uint64),
    "C64": np.dtype(np.complex64),
    "BF16": np.dtype(np.uint16),
    "F8_E4M3": np.dtype(np.uint8),
    "F8_E5M2": np.dtype(np.uint8),
    "F8_E8M0": np.dtype(np.uint8),
    "F8_E4M3FNUZ": np.dtype(np.uint8),
    "F8_E5M2FNUZ": np.dtype(np.uint8),
}
if _ml is not None:
    for _name, _attr in [
        ("BF16", "bfloat16"),
        ("F8_E4M3", "float8_e4m3fn"),
        ("F8_E5M2", "float8_e5m2"),
        ("F8_E8M0", "float8_e8m0fnu"),
        ("F8_E4M3FNUZ", "float8_e4m3fnuz"),
        ("F8_E5M2FNUZ", "float8_e5m2fnuz"),
    ]:
        if hasattr(_ml, _attr):
            _NUMPY[_name] = np.dtype(getattr(_ml, _attr))

# The declaration order of the safetensors crate's `Dtype` enum: its
# serializer writes tensors by dtype in this order, descending.
_DTYPE_RANK = {
    name: i
    for i, name in enumerate(
        "BOOL F4 F6_E2M3 F6_E3M2 U8 I8 F8_E5M2 F8_E4M3 F8_E8M0 F8_E4M3FNUZ F8_E5M2FNUZ "
        "I16 U16 F16 BF16 I32 U32 F32 C64 F64 I64 U64".split()
    )
}

# Sub-byte types are packed: they come back as their raw bytes.
_PACKED = {"F4", "F6_E2M3", "F6_E3M2"}


def numpy_dtype(dtype: str) -> np.dtype:
    """The numpy dtype tensors of safetensors dtype ``dtype`` come back as."""
    if dtype in _PACKED:
        return np.dtype(np.uint8)
    try:
        return _NUMPY[dtype]
    except KeyError:
        raise InvalidInput(f"unknown dtype `{dtype}`; valid values are: {', '.join(sorted(_NUMPY))}") from None


def _safetensors_dtype(a: np.ndarray) -> str:
    """The safetensors name of an array's dtype, for ``save`` (plain
    ``uint8``/``uint16`` arrays are U8/U16, never raw FP8/BF16)."""
    for name, dt in _NUMPY.items():
        if a.dtype == dt:
            return name
    raise InvalidInput(
        f"cannot store dtype {a.dtype}; valid dtypes are: "
        + ", ".join(sorted({str(d) for d in _NUMPY.values()}))
    )


class Record(dict):
    """A report: a dict with the CLI's ``--json`` fields, also readable as
    attributes (``r.id``)."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __dir__(self) -> List[str]:
        return list(self.keys()) + list(super().__dir__())

    def to_dict(self) -> dict:
        """A plain ``dict`` (nested records too)."""
        return json.loads(json.dumps(self))


def _records(text: str) -> Any:
    return json.loads(text, object_hook=Record)


def _jsonable(v: Any) -> Any:
    if hasattr(v, "item"):  # numpy and torch scalars
        return v.item()
    raise TypeError(f"metric value {v!r} is not a number, string, bool, list or dict")


class _Bar:
    """Progress to tqdm, one bar per phase."""

    def __init__(self) -> None:
        from tqdm.auto import tqdm

        self._tqdm = tqdm
        self._bar = None
        self._phase = None

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase != self._phase:
            self.close()
            self._phase = phase
            self._bar = self._tqdm(total=total, desc=phase, unit="B", unit_scale=True, leave=False)
        if self._bar is not None:
            self._bar.n = done
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _progress(p: Progress) -> Optional[Callable[[str, int, int], Any]]:
    if p is None or p is False:
        return None
    if p is True:
        try:
            return _Bar()
        except ImportError:
            return None
    if not callable(p):
        raise InvalidInput("progress must be None, True or a callable(phase, done, total)")
    return p


def _call(p: Progress, f: Callable[[Optional[Callable[[str, int, int], Any]]], Any]) -> Any:
    cb = _progress(p)
    try:
        return f(cb)
    finally:
        if isinstance(cb, _Bar):
            cb.close()


def _store_path(path_or_url: PathLike) -> str:
    s = os.fspath(path_or_url)
    if "://" in s:
        scheme, rest = s.split("://", 1)
        if scheme == "s3":
            return s
        if scheme != "file":
            raise InvalidInput(f"unsupported store url scheme `{scheme}`; valid values are: s3, file (or a plain path)")
        return rest
    return s


class Store:
    """A tdelta store, opened from its path, a ``file://`` url, or an
    ``s3://bucket/prefix`` url (a store ``tdelta push`` wrote).

    An ``s3://`` store is read through the engine's object-store backend,
    its endpoint and credentials taken from the environment as the CLI's
    remotes do (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
    ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``; plain http on loopback
    only). It is read-only: ``open``, ``load``, ``restore``, ``log``,
    ``show``, ``tags``, ``diff``, ``verify`` and ``stats`` work; ``pack``,
    ``save``, ``tag`` and ``rollback`` raise :class:`ReadOnly`.

    Raises :class:`NotFound` when there is no store there. Every method that
    reads or writes the store releases the GIL while it runs and answers
    Ctrl-C between atomic steps: a read or restore stops at its next block
    (a restore leaves nothing at its target), a pack at its next window and
    writes nothing (nothing is ever left half-written).
    """

    def __init__(
        self, path_or_url: PathLike, *, author: Optional[str] = None, lock_wait: Optional[float] = None
    ) -> None:
        self._s = _tdelta.Store(_store_path(path_or_url), author=author, lock_wait=lock_wait)

    @classmethod
    def init(
        cls,
        path: PathLike,
        *,
        block_size: Optional[int] = None,
        author: Optional[str] = None,
        lock_wait: Optional[float] = None,
    ) -> "Store":
        """Creates an empty store at ``path`` (:class:`Conflict` if one is there).

        ``author`` is recorded in new versions and the audit log;
        ``lock_wait`` is how many seconds a writer waits for another one's
        lock before raising :class:`Locked` (default ``TDELTA_LOCK_WAIT``,
        else 60).
        """
        self = cls.__new__(cls)
        self._s = _tdelta.Store.init(_store_path(path), block_size=block_size, author=author, lock_wait=lock_wait)
        return self

    @property
    def path(self) -> str:
        """The store's directory (its url for an ``s3://`` store)."""
        return os.fspath(self._s.path)

    def __repr__(self) -> str:
        return f"tdelta.Store({self.path!r})"

    def refresh(self) -> None:
        """Re-reads the store's indexes, to see versions other processes packed
        (and forgets the version manifests ``open`` kept)."""
        self._s.refresh()

    def resolve(self, ref: str) -> str:
        """The full version id ``ref`` (``HEAD``, a tag, an id prefix, ``~N``, ``^``) names."""
        return self._s.resolve(ref)

    def pack(
        self,
        path: PathLike,
        message: Optional[str] = None,
        meta: Optional[Mapping[str, Any]] = None,
        metrics: Optional[Mapping[str, Any]] = None,
        tag: Optional[str] = None,
        base: Optional[str] = None,
        lossy: Optional[str] = None,
        max_error: Optional[float] = None,
        *,
        policy: Optional[str] = None,
        force_tag: bool = False,
        keep_exact: Optional[Sequence[str]] = None,
        include: Optional[Sequence[str]] = None,
        exclude: Optional[Sequence[str]] = None,
        progress: Progress = None,
    ) -> Record:
        """Packs a ``.safetensors`` file or a checkpoint directory as a new
        version and moves ``HEAD`` (and ``tag``) to it.

        ``meta`` values are stored as strings, ``metrics`` as JSON. ``base``
        is a ref or ``"none"``; ``lossy`` is ``"int8"``, ``"int4"`` or
        ``"int2"``. Returns the pack report (``id``, ``raw_bytes``,
        ``stored_bytes``, ...).
        """
        return _records(
            _call(
                progress,
                lambda cb: self._s.pack(
                    os.fspath(path),
                    _write_options(message, meta, metrics, tag, force_tag, base, policy, lossy, max_error, keep_exact),
                    include=None if include is None else list(include),
                    exclude=None if exclude is None else list(exclude),
                    progress=cb,
                ),
            )
        )

    def save(
        self,
        tensors: Mapping[str, Any],
        metadata: Optional[Mapping[str, str]] = None,
        message: Optional[str] = None,
        *,
        filename: str = "model.safetensors",
        meta: Optional[Mapping[str, Any]] = None,
        metrics: Optional[Mapping[str, Any]] = None,
        tag: Optional[str] = None,
        base: Optional[str] = None,
        lossy: Optional[str] = None,
        max_error: Optional[float] = None,
        policy: Optional[str] = None,
        force_tag: bool = False,
        keep_exact: Optional[Sequence[str]] = None,
        progress: Progress = None,
    ) -> Record:
        """Packs a dict of numpy arrays (or torch tensors) as a version whose
        one file, ``filename``, is the safetensors file ``safetensors``'
        ``save_file(tensors, metadata=metadata)`` would write.

        No file is written: the header is built in memory and the arrays'
        buffers are read in place (a non-contiguous array, or a torch tensor
        on another device, is copied to a contiguous one first). The arrays
        must not be modified until the call returns. Other keyword
        arguments are those of :meth:`pack`.
        """
        if not isinstance(tensors, Mapping):
            raise InvalidInput("tensors must be a dict of name -> array")
        header, items = _header(tensors, metadata)
        arrays = [a for _, _, a in items]
        return _records(
            _call(
                progress,
                lambda cb: self._s.save(
                    filename,
                    header,
                    [n for n, _, _ in items],
                    [_address(a) for a in arrays],
                    [a.nbytes for a in arrays],
                    arrays,
                    _write_options(message, meta, metrics, tag, force_tag, base, policy, lossy, max_error, keep_exact),
                    progress=cb,
                ),
            )
        )

    def open(self, ref: str = "HEAD") -> "Reader":
        """A reader of version ``ref``, like ``safetensors.safe_open``."""
        return Reader(self, self._s.version(ref))

    def load(
        self,
        ref: str = "HEAD",
        tensors: Optional[Iterable[str]] = None,
        framework: str = "np",
        *,
        progress: Progress = None,
    ) -> Dict[str, Any]:
        """Every tensor of version ``ref`` (or those named in ``tensors``) as
        a dict of arrays, each decoded once into its own buffer."""
        r = self.open(ref)
        names = r.keys() if tensors is None else list(tensors)
        return r._get_many(names, framework, progress)

    def restore(
        self,
        ref: str,
        out: PathLike,
        *,
        force: bool = False,
        tensors: Optional[Sequence[str]] = None,
        files: Optional[Sequence[str]] = None,
        progress: Progress = None,
    ) -> Record:
        """Restores version ``ref`` to ``out``, bit-exact (as ``tdelta unpack``)."""
        return _records(
            _call(
                progress,
                lambda cb: self._s.restore(
                    ref,
                    os.fspath(out),
                    force=force,
                    tensors=None if tensors is None else list(tensors),
                    files=None if files is None else list(files),
                    progress=cb,
                ),
            )
        )

    def log(
        self,
        ref: str = "HEAD",
        *,
        all: bool = False,
        where: Optional[Mapping[str, Any]] = None,
        sort: Optional[str] = None,
        n: Optional[int] = None,
    ) -> List[Record]:
        """Versions from ``ref`` back (``all=True``: every version), as ``tdelta log --json``."""
        filters = [(str(k), str(v)) for k, v in (where or {}).items()]
        return _records(self._s.log(ref, all=all, filters=filters, sort=sort, max=n))

    def show(self, ref: str = "HEAD") -> Record:
        """One version: ``id``, ``refs`` and its ``manifest`` (metadata, metrics, stats, files, tensors)."""
        return _records(self._s.show(ref))

    def tag(self, name: str, ref: str = "HEAD", *, force: bool = False, delete: bool = False, reason: str = "") -> Record:
        """Points tag ``name`` at ``ref`` (``force`` to move an existing one), or deletes it."""
        if delete:
            return _records(self._s.untag(name, reason=reason))
        return _records(self._s.tag(name, ref, force=force, reason=reason))

    def tags(self) -> List[Record]:
        """Every ref (``name``, ``id``)."""
        return _records(self._s.tags())

    def rollback(self, name: str = "HEAD", to: Optional[str] = None, *, steps: Optional[int] = None, reason: str = "") -> Record:
        """Moves ref ``name`` back to version ``to``, or ``steps`` moves back in its history (default 1)."""
        return _records(self._s.rollback(name, to=to, steps=steps, reason=reason))

    def diff(self, a: str, b: str) -> Record:
        """What changed between two versions, per tensor and per file."""
        return _records(self._s.diff(a, b))

    def verify(self, refs: Optional[Sequence[str]] = None, *, progress: Progress = None) -> Record:
        """Checks the given versions (default: all) block by block; ``ok`` is the verdict."""
        return _records(
            _call(progress, lambda cb: self._s.verify(None if refs is None else list(refs), progress=cb))
        )

    def stats(self) -> Record:
        """Store-wide storage figures, as ``tdelta stats --json``."""
        return _records(self._s.stats())


class _Info:
    __slots__ = ("file", "dtype", "shape", "nbytes")

    def __init__(self, file: str, dtype: str, shape: List[int], nbytes: int) -> None:
        self.file, self.dtype, self.shape, self.nbytes = file, dtype, shape, nbytes


class Reader:
    """Reads tensors of one version, like ``safetensors.safe_open``: only the
    blocks of the tensors (or rows) asked for are read. Safe to share
    between threads. Usable as a context manager."""

    def __init__(self, store: Store, version: Any) -> None:
        self._store = store
        self._v = version
        self._index: Dict[str, _Info] = {}
        self._files: List[str] = []
        for path, ts in json.loads(version.index()):
            self._files.append(path)
            for name, dtype, shape, nbytes in ts:
                self._index.setdefault(name, _Info(path, dtype, shape, nbytes))
        self._metadata: Optional[Dict[str, str]] = None

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    @property
    def id(self) -> str:
        """The version's full id."""
        return self._v.id

    def keys(self) -> List[str]:
        """Tensor names, in file then offset order."""
        return list(self._index)

    def files(self) -> List[str]:
        """The version's safetensors files."""
        return list(self._files)

    def metadata(self) -> Dict[str, str]:
        """The ``__metadata__`` of the version's safetensors header(s), merged
        across shards (read from the header blocks only)."""
        if self._metadata is None:
            md: Dict[str, str] = {}
            for f in self._files:
                h = self._v.header(f)
                (n,) = struct.unpack("<Q", h[:8])
                md.update(json.loads(h[8 : 8 + n].decode("utf-8")).get("__metadata__") or {})
            self._metadata = md
        return dict(self._metadata)

    def _info(self, name: str) -> _Info:
        try:
            return self._index[name]
        except KeyError:
            raise NotFound(f"version {self.id[:8]} has no tensor `{name}`") from None

    def get_dtype(self, name: str) -> str:
        """The tensor's safetensors dtype name (``"BF16"``)."""
        return self._info(name).dtype

    def get_shape(self, name: str) -> List[int]:
        """The tensor's shape."""
        return list(self._info(name).shape)

    def get_tensor(self, name: str, framework: str = "np", *, progress: Progress = None) -> Any:
        """The tensor as a numpy array (``framework="np"``) or a torch tensor (``"pt"``)."""
        return self._get_many([name], framework, progress)[name]

    def get_slice(self, name: str) -> "Slice":
        """A lazy view: ``reader.get_slice(name)[a:b]`` reads only the blocks of rows ``a..b``."""
        return Slice(self, name, self._info(name))

    def _get_many(self, names: List[str], framework: str, progress: Progress) -> Dict[str, Any]:
        _check_framework(framework)
        infos = [self._info(n) for n in names]
        bufs = _call(
            progress,
            lambda cb: self._v.read(names, [0] * len(names), [i.nbytes for i in infos], progress=cb),
        )
        return {n: _wrap(b, i.dtype, i.shape, framework) for n, i, b in zip(names, infos, bufs)}


class Slice:
    """Rows of one tensor, read on indexing: ``s[3]``, ``s[10:20]``,
    ``s[::2, :5]``. The first index picks the rows read; the rest is applied
    to them by numpy."""

    def __init__(self, reader: Reader, name: str, info: _Info) -> None:
        self._r, self._name, self._i = reader, name, info

    def get_shape(self) -> List[int]:
        return list(self._i.shape)

    def get_dtype(self) -> str:
        return self._i.dtype

    def __getitem__(self, key: Any) -> np.ndarray:
        i = self._i
        rest: tuple = ()
        if isinstance(key, tuple):
            key, rest = (key[0], key[1:]) if key else (slice(None), ())
        if i.dtype in _PACKED or not i.shape or key is Ellipsis:
            a = self._r.get_tensor(self._name)
            return a[(key,) + rest] if rest or key is not Ellipsis else a[key]
        rows = i.shape[0]
        row_bytes = i.nbytes // rows if rows else 0
        if isinstance(key, (int, np.integer)):
            k = int(key)
            if not -rows <= k < rows:
                raise IndexError(f"index {k} is out of bounds for axis 0 with size {rows}")
            k %= rows
            start, stop, step, single = k, k + 1, 1, True
        elif isinstance(key, slice):
            start, stop, step = key.indices(rows)
            single = False
        else:
            raise InvalidInput(f"unsupported index {key!r}; valid indexes are: int, slice, a tuple of them")
        idx = range(start, stop, step)
        if len(idx) == 0:
            out = np.empty((0,) + tuple(i.shape[1:]), numpy_dtype(i.dtype))
            return out[(slice(None),) + rest] if rest else out
        lo, hi = min(idx[0], idx[-1]), max(idx[0], idx[-1]) + 1
        (buf,) = self._r._v.read([self._name], [lo * row_bytes], [(hi - lo) * row_bytes])
        a = _wrap(buf, i.dtype, [hi - lo] + list(i.shape[1:]), "np")
        a = a[idx[0] - lo :: step] if step > 0 else a[idx[0] - lo :: step]
        a = a[: len(idx)]
        return a[(0 if single else slice(None),) + rest]


def _check_framework(framework: str) -> None:
    if framework not in ("np", "numpy", "pt", "torch"):
        raise InvalidInput(f"unknown framework `{framework}`; valid values are: np, pt")


def _wrap(buf: bytearray, dtype: str, shape: List[int], framework: str) -> Any:
    if framework in ("pt", "torch"):
        return _to_torch(buf, dtype, shape)
    a = np.frombuffer(buf, dtype=numpy_dtype(dtype))
    return a if dtype in _PACKED else a.reshape(shape)


_TORCH = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "I16": "int16",
    "U16": "uint16",
    "F16": "float16",
    "BF16": "bfloat16",
    "I32": "int32",
    "U32": "uint32",
    "F32": "float32",
    "F64": "float64",
    "I64": "int64",
    "U64": "uint64",
    "C64": "complex64",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E8M0": "float8_e8m0fnu",
    "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2FNUZ": "float8_e5m2fnuz",
}


def _to_torch(buf: bytearray, dtype: str, shape: List[int]) -> Any:
    try:
        import torch
    except ImportError:
        raise InvalidInput("framework `pt` needs torch; install it or use framework `np`") from None
    if dtype in _PACKED:
        t = torch.frombuffer(buf, dtype=torch.uint8) if len(buf) else torch.empty(0, dtype=torch.uint8)
        return t
    tdt = getattr(torch, _TORCH.get(dtype, ""), None)
    if tdt is None:
        raise InvalidInput(f"this torch has no dtype for `{dtype}`")
    if not len(buf):
        return torch.empty(shape, dtype=tdt)
    return torch.frombuffer(buf, dtype=tdt).reshape(shape)


def _as_numpy(name: str, v: Any) -> "tuple[str, np.ndarray]":
    """(safetensors dtype, C-contiguous array) of a numpy array or torch tensor."""
    mod = type(v).__module__
    if mod.startswith("torch"):
        import torch

        t = v.detach().cpu().contiguous()
        inv = {getattr(torch, n, None): k for k, n in _TORCH.items()}
        dt = inv.get(t.dtype)
        if dt is None:
            raise InvalidInput(f"tensor `{name}`: cannot store torch dtype {t.dtype}")
        itemsize = t.element_size()
        raw = t.view(torch.uint8) if t.dim() else t.reshape(1).view(torch.uint8)
        a = raw.numpy().view({1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[itemsize])
        return dt, a.reshape(tuple(t.shape))
    a = np.asarray(v, order="C")
    try:
        return _safetensors_dtype(a), a
    except InvalidInput as e:
        raise InvalidInput(f"tensor `{name}`: {e}") from None


def _header(tensors: Mapping[str, Any], metadata: Optional[Mapping[str, str]]) -> "tuple[bytes, list]":
    """The header region of the safetensors file of ``tensors`` (the bytes
    ``safetensors.numpy.save_file`` writes before the data) and its
    ``(name, dtype, C-contiguous array)`` items in data order."""
    items = []
    for name, v in tensors.items():
        if not isinstance(name, str):
            raise InvalidInput(f"tensor names must be strings, not {type(name).__name__}")
        items.append((name,) + _as_numpy(name, v))
    # The order of safetensors' serializer: dtype (the declaration order of
    # its `Dtype` enum) descending, then name.
    items.sort(key=lambda t: (-_DTYPE_RANK[t[1]], t[0]))
    header: Dict[str, Any] = {}
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise InvalidInput("metadata must map strings to strings")
        header["__metadata__"] = dict(metadata)
    off = 0
    for name, dt, a in items:
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h, items


def _write_options(message, meta, metrics, tag, force_tag, base, policy, lossy, max_error, keep_exact) -> dict:
    """The options ``pack`` and ``save`` pass on to the extension, as one
    dict (``_tdelta._WriteOptions``): ``meta`` values as strings,
    ``metrics`` as JSON."""
    return dict(
        message=message,
        meta={str(k): str(v) for k, v in (meta or {}).items()},
        metrics=None if metrics is None else json.dumps(dict(metrics), default=_jsonable),
        tag=tag,
        force_tag=force_tag,
        base=base,
        policy=policy,
        lossy=lossy,
        max_error=max_error,
        keep_exact=None if keep_exact is None else list(keep_exact),
    )


def _address(a: np.ndarray) -> int:
    """The address of a C-contiguous array's first byte (0 when empty)."""
    if not a.nbytes:
        return 0
    assert a.flags.c_contiguous
    return int(a.__array_interface__["data"][0])
