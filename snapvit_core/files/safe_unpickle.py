"""Reading torch zip checkpoints (published SnapViT scores) without running any code they name.

A torch ``.pt`` file is a zip holding ``<archive>/data.pkl`` (a pickle, i.e. a small program whose
GLOBAL opcodes import callables and REDUCE calls them) and one raw byte blob per storage
(``<archive>/data/<key>``). The pickle is run by torch's own weights-only unpickler
(``torch.load(weights_only=True)``), which can only call tensor rebuilds, ``OrderedDict`` and what
is allowlisted; the two enum classes of the SnapViT authors' package (``src.models.enums``) are
allowlisted as inert stand-ins that only record their value.

Before torch sees a byte, a static pass bounds what the file may cost:

* the zip: a few members, stored (not compressed), a pickle of at most 1 MB and raw tensor data of
  at most ``MAX_STORAGE_BYTES``;
* the pickle: at most ``MAX_OPCODES`` steps, no opcode that builds objects by calling a class
  (INST, OBJ, NEWOBJ, BUILD, EXT*, STACK_GLOBAL), only the globals a scores file needs, and no
  container fetched twice from the memo — so the unpickled object is a tree no larger than the
  pickle (a list shared 60 levels deep would otherwise be 2**60 nodes for any repr or walk);

and after it, every tensor must be a view no larger than its own storage (a stride-0 view of one
float cannot pose as a 16384 x 16384 tensor) and no larger than a scores tensor can be.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import threading
import zipfile
from typing import Any

import torch

from snapvit_core.errors import SnapViTError
from snapvit_core.files.guards import read_bounded

MAX_PICKLE_BYTES = 1 << 20  # a published scores pickle is ~1.3 KB
MAX_OPCODES = 20_000  # bounds the object count (published: ~200)
MAX_MEMBERS = 64  # published: 8 zip members
MAX_STORAGES = 16  # a scores file holds 2 tensors
MAX_STORAGE_BYTES = 64 << 20  # total raw tensor bytes; ViT-g scores are ~1 MB
MAX_FILE_BYTES = MAX_STORAGE_BYTES + (2 << 20)  # storages + pickle + zip records
MAX_TENSOR_ELEMENTS = 1 << 22  # per tensor: B x M; ViT-22B scores are 48 x 24576 = 1.2 M
MAX_BLOCKS = 1024  # rows of a score tensor (transformer blocks)

TRUST_FIX = "A scores file never needs code. Only open scores files from sources you trust."
FOREIGN_ENUMS = ("src.models.enums.ModelType", "src.models.enums.MLPArchitecture")  # the authors' enums

# The only globals a scores pickle names; anything else is refused before torch runs the pickle.
_ALLOWED_GLOBALS = {"torch._utils._rebuild_tensor_v2", "collections.OrderedDict", *FOREIGN_ENUMS} | {
    f"torch.{kind}Storage"
    for kind in ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool")
}
# Opcodes that reach code other than through GLOBAL + REDUCE of an allowlisted name.
_CODE_OPCODES = {"INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "BUILD", "EXT1", "EXT2", "EXT4", "STACK_GLOBAL"}
# What torch's weights-only unpickler reads (torch/_weights_only_unpickler.py) and a scores file needs;
# any other opcode is refused up front as malformed (torch would stop at it with a misleading message).
_TORCH_OPCODES = set(
    "PROTO STOP MARK GLOBAL REDUCE APPEND APPENDS SETITEM SETITEMS TUPLE TUPLE1 TUPLE2 TUPLE3 NONE NEWFALSE "
    "NEWTRUE EMPTY_TUPLE EMPTY_LIST EMPTY_DICT EMPTY_SET BININT BININT1 BININT2 BINFLOAT BINUNICODE "
    "SHORT_BINSTRING BINPERSID BINGET LONG_BINGET BINPUT LONG_BINPUT LONG1".split()
)
# Opcodes that push one scalar: a memo entry made right after one of them is safe to share.
_SCALAR_OPCODES = set(
    "NONE NEWTRUE NEWFALSE INT BININT BININT1 BININT2 LONG LONG1 LONG4 FLOAT BINFLOAT STRING BINSTRING "
    "SHORT_BINSTRING BINBYTES SHORT_BINBYTES BINBYTES8 UNICODE BINUNICODE SHORT_BINUNICODE BINUNICODE8 "
    "GLOBAL EMPTY_TUPLE".split()
)
_MEMO_PUT = {"BINPUT", "LONG_BINPUT"}
_MEMO_GET = {"BINGET", "LONG_BINGET"}

_LOAD_LOCK = threading.Lock()  # safe_globals edits torch's process-wide allowlist: one load at a time


class ForeignObject:
    """Stands in for an instance of one of the authors' enums: the arguments it was pickled with.

    For ``ModelType('deit-3-vit-s-16')`` ``value`` is the string. Constructing one runs no code of
    the file's choosing; it only stores the (plain, already unpickled) arguments.
    """

    qualname = "src"

    def __init__(self, *args: Any) -> None:
        self.args = args

    @property
    def value(self) -> Any:
        """The single plain argument (an enum's value), else None."""
        if len(self.args) == 1 and isinstance(self.args[0], (str, int, float)):
            return self.args[0]
        return None

    def __repr__(self) -> str:
        return f"<foreign {self.qualname}({self.value!r})>"


# One stand-in class per foreign enum, registered under the enum's qualified name.
_STAND_INS = [
    (type(qualname.rsplit(".", 1)[1], (ForeignObject,), {"qualname": qualname, "__slots__": ()}), qualname)
    for qualname in FOREIGN_ENUMS
]


def _refuse(name: str, what: str, hint: str = "") -> SnapViTError:
    """``what`` completes 'asks to run ...', e.g. '`os.system`'."""
    return SnapViTError(f"refused: {name} asks to run {what} while loading.{hint}", TRUST_FIX)


def _corrupt(name: str, detail: str) -> SnapViTError:
    return SnapViTError(
        f"{name} is corrupt: {detail}.",
        "Re-download the file or export it again; published SnapViT scores are torch .pt zips.",
    )


def _not_scores(name: str, what: str) -> SnapViTError:
    return SnapViTError(
        f"{name} {what}; a scores file holds 2 small tensors — this looks like a model checkpoint, not a scores file.",
        "Pass a SnapViT scores file; the backbone's weights are chosen separately.",
    )


def _check_zip(archive: zipfile.ZipFile, name: str) -> tuple[str, zipfile.ZipInfo]:
    """The data.pkl member, after bounding the archive's members; refuses anything else."""
    infos = archive.infolist()
    if len(infos) > MAX_MEMBERS:
        raise _not_scores(name, f"has {len(infos)} zip members")
    records = [i for i in infos if i.filename.count("/") == 1 and i.filename.endswith("/data.pkl")]
    if len(records) != 1:
        raise SnapViTError(
            f"{name} is a zip file but not a torch checkpoint (no single <archive>/data.pkl).",
            "Pass a SnapViT Explorer .safetensors scores file or a published SnapViT .pt file.",
        )
    prefix = records[0].filename[: -len("data.pkl")]
    storage_bytes = storages = 0
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED:  # torch never compresses; a deflated member can be a bomb
            raise _corrupt(name, f"zip member {info.filename[:60]!r} is compressed, torch files never are")
        if info.filename.startswith(f"{prefix}data/"):
            storage_bytes += info.file_size
            storages += 1
    if records[0].file_size > MAX_PICKLE_BYTES:
        raise SnapViTError(f"{name}: its pickle is {records[0].file_size} bytes; a scores file's is ~1 KB.", TRUST_FIX)
    if storages > MAX_STORAGES:
        raise _not_scores(name, f"holds {storages} tensors")
    if storage_bytes > MAX_STORAGE_BYTES:
        raise _not_scores(name, f"holds {storage_bytes >> 20} MB of tensors (limit {MAX_STORAGE_BYTES >> 20} MB)")
    return prefix, records[0]


def _check_pickle(data: bytes, name: str) -> None:
    """Static pass over the stream before anything runs: bounded, allowlisted, a tree (no shared containers)."""
    scalar_memo: dict[int, bool] = {}  # memo index -> holds a scalar (sharing it is harmless)
    last = ""  # the last opcode other than a memo put: what sits on top of the stack
    for count, (opcode, arg, _pos) in enumerate(pickletools.genops(data)):
        if count >= MAX_OPCODES:
            raise SnapViTError(
                f"{name} holds a pickle of more than {MAX_OPCODES} steps; a scores file needs ~200.", TRUST_FIX
            )
        op = opcode.name
        if op in _CODE_OPCODES:
            if op == "INST":  # INST names its class inline: 'os system'
                raise _refuse(name, f"`{str(arg).replace(' ', '.')[:80]}`")
            if op == "BUILD":
                raise _refuse(name, "`__setstate__` on an unpickled object")
            raise _refuse(name, f"code (pickle opcode {op})")
        if op not in _TORCH_OPCODES:
            raise _corrupt(name, f"pickle opcode {op} is not used by torch scores files")
        if op == "GLOBAL":
            qualname = str(arg).replace(" ", ".")
            if qualname not in _ALLOWED_GLOBALS:
                hint = ""
                if qualname.startswith("torch."):  # e.g. torch.nn.Linear: an innocent model checkpoint
                    hint = " That is a torch object other than a plain tensor: is this a model checkpoint?"
                raise _refuse(name, f"`{qualname[:120]}`", hint)
        if op in _MEMO_PUT:
            index = int(arg)
            scalar_memo[index] = last in _SCALAR_OPCODES
            continue
        if op in _MEMO_GET and not scalar_memo.get(int(arg), False):
            raise _corrupt(name, "its pickle shares one container in several places, which scores files never do")
        last = op


def _check_tensors(value: Any, name: str) -> None:
    """Every tensor in the (tree-shaped, bounded) payload: a plain view no larger than a scores tensor."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, torch.Tensor):
            shape = list(item.shape)
            if item.numel() > item.untyped_storage().nbytes() // max(item.element_size(), 1):
                raise _corrupt(name, f"a tensor of shape {shape[:4]} repeats its data (it is larger than its storage)")
            if item.numel() > MAX_TENSOR_ELEMENTS or (item.ndim and shape[0] > MAX_BLOCKS):
                raise _not_scores(name, f"holds a tensor of shape {shape[:4]}")


def _torch_message(exc: Exception) -> str:
    """The first sentence of torch's weights-only refusal, without its advice to load unsafely."""
    text = str(exc)[:2000]
    marker = "WeightsUnpickler error: "
    if marker in text:
        text = text.split(marker, 1)[1]
    return text.split(". ", 1)[0].split("\n", 1)[0][:200]


def load_torch_zip(source: str | os.PathLike | bytes, name: str) -> Any:
    """Unpickle a torch zip checkpoint with torch's weights-only loader, after the static checks above.

    Args:
        source: a path or the file's bytes.
        name: the file name used in error messages.

    Returns:
        The unpickled object; tensors as ``torch.Tensor``, the authors' enums as ``ForeignObject``.

    Raises:
        SnapViTError: on anything refused, malformed or too large. Other exceptions may escape for
            a corrupt stream (``zipfile.BadZipFile``, ``ValueError`` ...); the caller wraps them.
    """
    if not isinstance(source, (bytes, bytearray)):
        # read once, from a regular file of bounded size: what is checked is what torch loads
        source = read_bounded(source, MAX_FILE_BYTES, "the scores file", "Pick a published SnapViT .pt scores file.")
    data = bytes(source)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        _prefix, record = _check_zip(archive, name)
        _check_pickle(archive.read(record), name)
    with _LOAD_LOCK, torch.serialization.safe_globals(_STAND_INS):
        try:
            payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True, mmap=False)
        except pickle.UnpicklingError as exc:  # torch's weights-only refusal: a call it does not allow
            raise _refuse(name, f"code torch's weights-only loader does not allow ({_torch_message(exc)})") from exc
        except RuntimeError as exc:
            text = str(exc)[:2000]
            if "not found" in text:
                raise _corrupt(name, "a tensor refers to a missing storage") from exc
            if "record size" in text:
                raise _corrupt(name, "a storage is shorter than its tensor") from exc
            raise _corrupt(name, text.split("\n", 1)[0][:200]) from exc
    _check_tensors(payload, name)
    return payload
