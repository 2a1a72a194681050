"""Reading torch zip checkpoints without running or importing any code they name.

A torch ``.pt`` file is a zip holding ``<archive>/data.pkl`` (a pickle) and one raw byte blob per
storage (``<archive>/data/<key>``). A pickle is a small program: its GLOBAL opcodes import any
callable and REDUCE calls it, so ``pickle.load`` on an untrusted file can run ``os.system``. Here
the pickle runs on the pure-Python unpickler with an opcode whitelist, and the only callables it
can reach are this module's own tensor rebuild, ``OrderedDict`` and inert placeholders for the
classes of the SnapViT authors' package (``src.*``). Everything else is refused before it runs.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import sys
import zipfile
from collections import OrderedDict
from typing import Any

import torch

from .errors import SnapViTError

MAX_PICKLE_BYTES = 1 << 20  # a published scores pickle is ~1.3 KB
MAX_OPCODES = 20_000  # bounds nesting depth and object count (published: ~200)
MAX_STORAGES = 16  # a scores file holds 2 tensors
MAX_STORAGE_BYTES = 256 << 20  # total raw tensor bytes; ViT-g scores are ~1 MB

TRUST_FIX = "A scores file never needs code. Only open scores files from sources you trust."

# The typed storage names torch writes into the persistent id of each tensor.
STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}

FOREIGN_PACKAGE = "src"  # the authors' package: its classes become placeholders, never imported


class ForeignGlobal:
    """Stands in for a class of the authors' package; records its qualified name only."""

    __slots__ = ("qualname",)

    def __init__(self, qualname: str) -> None:
        self.qualname = qualname

    def __repr__(self) -> str:
        return f"<foreign {self.qualname}>"


class ForeignObject:
    """Stands in for an instance of a foreign class: the arguments and state it was pickled with.

    For an enum such as ``ModelType('deit-3-vit-s-16')`` ``value`` is the string.
    """

    __slots__ = ("qualname", "args", "kwargs", "state")

    def __init__(self, qualname: str, args: tuple, kwargs: dict | None = None) -> None:
        self.qualname = qualname
        self.args = args
        self.kwargs = kwargs or {}
        self.state: Any = None

    @property
    def value(self) -> Any:
        """The single plain argument (an enum's value), else None."""
        if len(self.args) == 1 and isinstance(self.args[0], (str, int, float)) and not self.kwargs:
            return self.args[0]
        return None

    def __repr__(self) -> str:
        return f"<foreign {self.qualname}({self.value!r})>"


class _StorageType:
    """Marker for ``torch.FloatStorage`` & co: only carries the dtype."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: torch.dtype) -> None:
        self.name = name
        self.dtype = dtype


class _Storage:
    """One storage's elements as a flat tensor, read from ``data/<key>``."""

    __slots__ = ("flat",)

    def __init__(self, flat: torch.Tensor) -> None:
        self.flat = flat  # (numel,) in the storage dtype


def _refuse(name: str, what: str, hint: str = "") -> SnapViTError:
    """``what`` completes 'asks to run ...', e.g. '`os.system`'."""
    return SnapViTError(f"refused: {name} asks to run {what} while loading.{hint}", TRUST_FIX)


def _corrupt(name: str, detail: str) -> SnapViTError:
    return SnapViTError(
        f"{name} is corrupt: {detail}.",
        "Re-download the file or export it again; published SnapViT scores are torch .pt zips.",
    )


def _rebuild_tensor_v2(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> torch.Tensor:
    """Our stand-in for ``torch._utils._rebuild_tensor_v2``: a view of the storage, copied out."""
    del requires_grad, backward_hooks, metadata  # scores are plain data: no grad, no hooks
    if not isinstance(storage, _Storage):
        raise ValueError("a tensor without its storage")
    shape, strides = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if len(shape) != len(strides) or type(storage_offset) is not int or storage_offset < 0:
        raise ValueError(f"a tensor with inconsistent layout {shape} / {strides} @ {storage_offset}")
    numel = storage.flat.numel()
    if all(shape):  # non-empty: the furthest element must lie inside the storage
        last = storage_offset + sum((n - 1) * s for n, s in zip(shape, strides, strict=True))
        if last >= numel:
            raise ValueError(f"a tensor reaching element {last} of a storage of {numel}")
    elif storage_offset > numel:
        raise ValueError(f"a tensor starting at element {storage_offset} of a storage of {numel}")
    return torch.as_strided(storage.flat, shape, strides, storage_offset).clone()


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(type(v) is int and 0 <= v < 1 << 40 for v in value):
        raise ValueError(f"a tensor {what} that is not a tuple of non-negative ints: {value!r}"[:200])
    return value


class _OpcodeTable(dict):
    """The dispatch table; an opcode that is not in it is refused instead of run."""

    def __missing__(self, code: int):
        name = pickletools.code2op.get(chr(code))
        raise pickle.UnpicklingError(f"pickle opcode {name.name if name else code!r} is not allowed")


# Opcodes that only build plain data (numbers, strings, tuples, lists, dicts, sets, memo) or reach
# code through find_class / persistent_load, which this module controls. Left out on purpose:
# INST and OBJ (call a class), EXT1/2/4 (the copyreg registry), PERSID (text ids, unused by torch),
# buffers and bytearray (protocol-5 out-of-band data).
_PLAIN_OPCODES = (
    "PROTO FRAME STOP MARK POP POP_MARK DUP NONE NEWTRUE NEWFALSE INT BININT BININT1 BININT2 LONG "
    "LONG1 LONG4 FLOAT BINFLOAT STRING BINSTRING SHORT_BINSTRING BINBYTES SHORT_BINBYTES BINBYTES8 "
    "UNICODE BINUNICODE SHORT_BINUNICODE BINUNICODE8 EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 TUPLE3 "
    "EMPTY_LIST LIST EMPTY_DICT DICT EMPTY_SET FROZENSET PUT BINPUT LONG_BINPUT MEMOIZE GET BINGET "
    "LONG_BINGET GLOBAL STACK_GLOBAL BINPERSID"
).split()


class RestrictedUnpickler(pickle._Unpickler):
    """A pickle reader that can build data but run no code of the file's choosing.

    Built on the pure-Python unpickler because only it lets a subclass replace single opcodes
    (REDUCE, BUILD, NEWOBJ, APPEND, SETITEM ...); the C unpickler would call ``__setstate__``,
    ``append`` or ``__setitem__`` on whatever object the stream puts on the stack.

    Args:
        file: the pickle stream.
        name: the file name used in error messages.
        read_storage: ``(key, dtype, numel) -> _Storage`` for the persistent ids of tensors.
    """

    dispatch = _OpcodeTable(
        {getattr(pickle, op)[0]: pickle._Unpickler.dispatch[getattr(pickle, op)[0]] for op in _PLAIN_OPCODES}
    )

    def __init__(self, file: io.BufferedIOBase, name: str, read_storage) -> None:
        super().__init__(file, encoding="utf-8")
        self.name = name
        self.read_storage = read_storage
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name, STORAGE_DTYPES[name])
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        parts = module.split(".") + name.split(".")
        if parts[0] == FOREIGN_PACKAGE and all(p.isidentifier() and not p.startswith("__") for p in parts):
            return ForeignGlobal(".".join(parts))
        hint = ""
        if parts[0] == "torch":  # e.g. _rebuild_parameter: more likely an innocent model checkpoint
            hint = " That is a torch object other than a plain tensor: is this a model checkpoint?"
        raise _refuse(self.name, f"`{module}.{name}`", hint)

    def persistent_load(self, pid: Any) -> _Storage:
        # torch writes ('storage', <typed storage class>, key, location, numel) for every storage
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"an unexpected persistent id {pid!r}"[:200])
        _, storage_type, key, _location, numel = pid  # location ignored: always read to CPU
        if not isinstance(storage_type, _StorageType) or type(key) is not str or type(numel) is not int:
            raise pickle.UnpicklingError(f"a malformed storage id {pid!r}"[:200])
        if key not in self.storages:
            if len(self.storages) >= MAX_STORAGES:
                raise SnapViTError(
                    f"{self.name} holds more than {MAX_STORAGES} tensors; a scores file holds 2 "
                    "— this looks like a model checkpoint, not a scores file.",
                    "Pass a SnapViT scores file; the backbone's weights are chosen separately.",
                )
            self.storages[key] = self.read_storage(key, storage_type.dtype, numel)
        return self.storages[key]

    def load_reduce(self) -> None:
        args = self.stack.pop()
        func = self.stack[-1]
        if not isinstance(args, tuple):
            raise pickle.UnpicklingError("REDUCE without an argument tuple")
        if func is _rebuild_tensor_v2 or func is OrderedDict:
            self.stack[-1] = func(*args)
        elif isinstance(func, ForeignGlobal):
            self.stack[-1] = ForeignObject(func.qualname, args)
        else:
            raise _refuse(self.name, f"a call to {_describe(func)}")

    def load_newobj(self) -> None:
        args = self.stack.pop()
        self._new_foreign(self.stack.pop(), args, {})

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        self._new_foreign(self.stack.pop(), args, kwargs)

    def _new_foreign(self, cls: Any, args: Any, kwargs: Any) -> None:
        if not isinstance(cls, ForeignGlobal) or not isinstance(args, tuple) or type(kwargs) is not dict:
            raise _refuse(self.name, f"the constructor of {_describe(cls)}")
        self.append(ForeignObject(cls.qualname, args, kwargs))

    def load_build(self) -> None:
        # Only placeholders take state, and they just keep it: no __setstate__ of any real class runs.
        state = self.stack.pop()
        target = self.stack[-1]
        if not isinstance(target, ForeignObject):
            raise _refuse(self.name, f"`__setstate__` on {_describe(target)}")
        target.state = state

    def load_append(self) -> None:
        value = self.stack.pop()
        self._container(list).append(value)

    def load_appends(self) -> None:
        items = self.pop_mark()
        self._container(list).extend(items)

    def load_setitem(self) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        self._container(dict, OrderedDict)[key] = value

    def load_setitems(self) -> None:
        items = self.pop_mark()
        target = self._container(dict, OrderedDict)
        for i in range(0, len(items) - 1, 2):
            target[items[i]] = items[i + 1]

    def load_additems(self) -> None:
        items = self.pop_mark()
        self._container(set).update(items)

    def _container(self, *types: type) -> Any:
        target = self.stack[-1]
        if type(target) not in types:  # exact type: a subclass could override append/__setitem__
            raise pickle.UnpicklingError(f"adding items to {_describe(target)}")
        return target


RestrictedUnpickler.dispatch.update(
    {
        getattr(pickle, op)[0]: getattr(RestrictedUnpickler, f"load_{op.lower()}")
        for op in ("REDUCE", "NEWOBJ", "NEWOBJ_EX", "BUILD", "APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS")
    }
)


def _describe(obj: Any) -> str:
    if isinstance(obj, (ForeignGlobal, ForeignObject)):
        return repr(obj)
    if isinstance(obj, type):
        return f"`{obj.__module__}.{obj.__qualname__}`"
    return f"a {type(obj).__module__}.{type(obj).__qualname__}"


def _check_opcodes(data: bytes, name: str) -> None:
    """Static pass over the stream: bounded length, whitelisted opcodes, before anything runs."""
    allowed = set(RestrictedUnpickler.dispatch)
    for count, (opcode, arg, _pos) in enumerate(pickletools.genops(data)):
        if count >= MAX_OPCODES:
            raise SnapViTError(
                f"{name} holds a pickle of more than {MAX_OPCODES} steps; a scores file needs ~200.",
                TRUST_FIX,
            )
        if opcode.code.encode("latin-1")[0] not in allowed:
            if opcode.name == "INST":  # INST names its class inline: 'os system'
                raise _refuse(name, f"`{str(arg).replace(' ', '.')}`")
            if opcode.name in ("OBJ", "EXT1", "EXT2", "EXT4"):
                raise _refuse(name, f"code (pickle opcode {opcode.name})")
            raise pickle.UnpicklingError(f"pickle opcode {opcode.name} is not allowed")


def load_torch_zip(source: str | os.PathLike | bytes, name: str) -> Any:
    """Unpickle a torch zip checkpoint with tensors rebuilt from the raw storages, no code run.

    Args:
        source: a path or the file's bytes.
        name: the file name used in error messages.

    Returns:
        The unpickled object; tensors as ``torch.Tensor``, the authors' classes as ``ForeignObject``.

    Raises:
        SnapViTError: on anything refused, malformed or too large. Other exceptions may escape for
            a corrupt stream (``zipfile.BadZipFile``, ``pickle.UnpicklingError`` ...); the caller wraps them.
    """
    handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    with zipfile.ZipFile(handle) as archive:
        members = set(archive.namelist())
        records = [n for n in members if n.count("/") == 1 and n.endswith("/data.pkl")]
        if len(records) != 1:
            raise SnapViTError(
                f"{name} is a zip file but not a torch checkpoint (no single <archive>/data.pkl).",
                "Pass a SnapViT Explorer .safetensors scores file or a published SnapViT .pt file.",
            )
        prefix = records[0][: -len("data.pkl")]
        pickle_info = archive.getinfo(records[0])
        if pickle_info.file_size > MAX_PICKLE_BYTES:
            raise SnapViTError(
                f"{name}: its pickle is {pickle_info.file_size} bytes; a scores file's is ~1 KB.",
                TRUST_FIX,
            )
        data = archive.read(pickle_info)
        byteorder = "little"  # torch < 1.13 wrote no byteorder record; those files are little-endian
        if f"{prefix}byteorder" in members:
            byteorder = archive.read(f"{prefix}byteorder").decode("ascii", "replace").strip()
            if byteorder not in ("little", "big"):
                raise _corrupt(name, f"unknown byte order {byteorder[:20]!r}")
        budget = [MAX_STORAGE_BYTES]

        def read_storage(key: str, dtype: torch.dtype, numel: int) -> _Storage:
            member = f"{prefix}data/{key}"
            if not key.isalnum() or member not in members:
                raise _corrupt(name, f"a tensor refers to a missing storage {key[:40]!r}")
            itemsize = torch.empty((), dtype=dtype).element_size()
            nbytes = numel * itemsize
            if numel < 0 or nbytes > budget[0]:
                raise SnapViTError(
                    f"{name} holds more than {MAX_STORAGE_BYTES >> 20} MB of tensors; scores take ~1 MB "
                    "— this looks like a model checkpoint, not a scores file.",
                    "Pass a SnapViT scores file; the backbone's weights are chosen separately.",
                )
            budget[0] -= nbytes
            with archive.open(member) as blob:
                raw = blob.read(nbytes)
            if len(raw) != nbytes:
                raise _corrupt(name, f"storage {key} has {len(raw)} bytes, its tensor needs {nbytes}")
            flat = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if nbytes else torch.empty(0, dtype=torch.uint8)
            if byteorder != sys.byteorder and itemsize > 1:
                flat = flat.view(-1, itemsize).flip(1).reshape(-1)  # swap each element's bytes
            return _Storage(flat.view(dtype))

        _check_opcodes(data, name)
        return RestrictedUnpickler(io.BytesIO(data), name, read_storage).load()
