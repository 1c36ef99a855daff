"""Read InsightFace's ``train.rec`` / ``train.idx`` (MXNet RecordIO) without mxnet.

File layout, as MXNet (dmlc-core) writes it:

* ``train.idx`` is text, one ``key<TAB>byte offset`` line per record.
* ``train.rec`` is a sequence of parts. Each part is a little-endian uint32
  magic ``0xced7230a``, a uint32 ``cflag << 29 | length``, ``length`` payload
  bytes, and zero padding to a multiple of 4. A record is one part
  (cflag 0), or, when its payload happened to contain the magic word at a
  4-byte-aligned position, several parts (cflag 1 = first, 2 = middle,
  3 = last) between which the writer dropped that magic word; joining them
  puts it back.
* A record's payload starts with the 24-byte header ``<IfQQ`` (flag, label,
  id, id2). With flag > 0 the label is instead the ``flag`` float32 values
  following the header. The encoded image (JPEG or PNG) comes after.

Two layouts are in use and both are read:

* MS1M / CASIA as InsightFace distributes them: record 0 is a header whose
  labels (a, b) say that records 1 .. a-1 are images and records a .. b-1
  are one per identity (their labels give each identity's image range). The
  number of identities is then b - a, without reading the images.
* A plain file (what ``im2rec`` writes from a list): every record in the index
  is an image; the identities are counted by reading every record's header.

An image's identity is its first label, truncated to an integer.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mfn_deploy.errors import MfnError

MAGIC = 0xCED7230A
PART_HEADER = struct.Struct("<II")
IMAGE_HEADER = struct.Struct("<IfQQ")  # flag, label, id, id2
LENGTH_BITS = 29
LENGTH_MASK = (1 << LENGTH_BITS) - 1
WHOLE, FIRST, MIDDLE, LAST = 0, 1, 2, 3
ALIGN = 4
HEADER_KEY = 0  # the key of the MS1M-style header record


@dataclass(frozen=True)
class Record:
    labels: tuple[float, ...]
    image: bytes  # the encoded JPEG/PNG


def _padded(length: int) -> int:
    return -(-length // ALIGN) * ALIGN


def read_index(path: Path) -> dict[int, int]:
    """``train.idx``: record key -> byte offset in ``train.rec``."""
    try:
        text = path.read_text()
    except OSError as e:
        raise MfnError(f"{path}: cannot read RecordIO index ({e.strerror})") from None
    except UnicodeDecodeError:
        raise MfnError(
            f"{path}: not a RecordIO index (binary data, not 'key<TAB>offset' lines)"
        ) from None
    try:
        values = np.array(text.split(), dtype=np.int64)
    except ValueError:
        raise MfnError(f"{path}: not a RecordIO index (expected 'key<TAB>offset' lines)") from None
    if values.size == 0 or values.size % 2:
        raise MfnError(f"{path}: not a RecordIO index (expected 'key<TAB>offset' lines)")
    pairs = values.reshape(-1, 2)
    return dict(zip(pairs[:, 0].tolist(), pairs[:, 1].tolist(), strict=True))


def parse_payload(payload: bytes, where: str) -> Record:
    if len(payload) < IMAGE_HEADER.size:
        raise MfnError(f"{where}: record too short for an image header ({len(payload)} bytes)")
    flag, label, _id, _id2 = IMAGE_HEADER.unpack_from(payload)
    start = IMAGE_HEADER.size
    if flag == 0:
        return Record((float(label),), payload[start:])
    end = start + 4 * flag
    if len(payload) < end:
        raise MfnError(f"{where}: record header announces {flag} labels past the record's end")
    labels = tuple(float(v) for v in np.frombuffer(payload[start:end], "<f4"))
    return Record(labels, payload[end:])


class RecordFile:
    """Random access to the records of one ``.rec`` file by key.

    The file handle is opened lazily and per process, so a reader can be
    shared with DataLoader worker processes.
    """

    def __init__(self, rec: Path, idx: Path | None = None) -> None:
        self.rec = rec
        self.idx = idx if idx is not None else rec.with_suffix(".idx")
        if not rec.is_file():
            raise MfnError(f"{rec}: RecordIO file not found")
        if not self.idx.is_file():
            raise MfnError(f"{rec}: its index {self.idx.name} is missing (expected next to it)")
        self.offsets = read_index(self.idx)
        self.size = rec.stat().st_size
        self._file = None
        self._pid = -1

    def _handle(self):
        if self._pid != os.getpid():  # a forked worker must not share the parent's offset
            self._file = self.rec.open("rb")
            self._pid = os.getpid()
        return self._file

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_file": None, "_pid": -1}

    def keys(self) -> list[int]:
        return sorted(self.offsets)

    def read_payload(self, key: int) -> bytes:
        if key not in self.offsets:
            raise MfnError(f"{self.rec}: no record with key {key} in {self.idx.name}")
        f, offset, parts = self._handle(), self.offsets[key], []
        while True:
            f.seek(offset)
            head = f.read(PART_HEADER.size)
            if len(head) < PART_HEADER.size:
                raise MfnError(f"{self.rec}: truncated record at offset {offset}")
            magic, word = PART_HEADER.unpack(head)
            if magic != MAGIC:
                raise MfnError(
                    f"{self.rec}: bad RecordIO magic 0x{magic:08x} at offset {offset} "
                    f"(record {key}); not a RecordIO file, or {self.idx.name} does not match it"
                )
            cflag, length = word >> LENGTH_BITS, word & LENGTH_MASK
            data = f.read(length)
            if len(data) < length:
                raise MfnError(f"{self.rec}: truncated record at offset {offset}")
            parts.append(data)
            if cflag in (WHOLE, LAST):
                break
            if cflag not in (FIRST, MIDDLE) or (cflag == FIRST) != (len(parts) == 1):
                raise MfnError(f"{self.rec}: broken multi-part record at offset {offset}")
            offset += PART_HEADER.size + _padded(length)
        return struct.pack("<I", MAGIC).join(parts)

    def read(self, key: int) -> Record:
        return parse_payload(self.read_payload(key), f"{self.rec} record {key}")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file, self._pid = None, -1


@dataclass(frozen=True)
class RecordLayout:
    image_keys: list[int]
    num_classes: int
    labels: list[int] | None  # known up front only for the plain layout


def image_layout(records: RecordFile) -> RecordLayout:
    """Which keys are images, and how many identities there are (see module docstring)."""
    head = records.read(HEADER_KEY) if HEADER_KEY in records.offsets else None
    if head is not None and len(head.labels) >= 2 and not head.image:
        first_identity, end = int(head.labels[0]), int(head.labels[1])
        if not 1 < first_identity <= end:
            raise MfnError(
                f"{records.rec}: header record 0 has an impossible image/identity range "
                f"({first_identity}, {end})"
            )
        keys = list(range(1, first_identity))
        missing = [k for k in keys if k not in records.offsets]
        if missing:
            raise MfnError(
                f"{records.rec}: header says records 1..{first_identity - 1} are images, "
                f"but {records.idx.name} lacks {len(missing)} of them (first: {missing[0]})"
            )
        return RecordLayout(keys, end - first_identity, None)
    keys = records.keys()
    labels = [int(records.read(k).labels[0]) for k in keys]
    return RecordLayout(keys, max(labels) + 1 if labels else 0, labels)
