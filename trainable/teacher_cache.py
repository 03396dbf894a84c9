"""On-disk cache of teacher outputs, computed once and shared by every run and trial.

A teacher's image embedding and its pooled attention maps depend on the teacher's weights and
the preprocessed image, not on any hyperparameter, so they are computed once per image. The
prompt grid is not part of the key because nothing grid-dependent is stored: the teacher's
decoder runs live on the cached embedding.

Layout::

    <cache_dir>/
        computations.log          one JSON line per run of a teacher's image encoder
        <type>-<teacher key>/     one folder per teacher weights and preprocessing
            teacher.json          the teacher's name, type, weights source and SHA-256
            <image key>-<content key>.pt

The teacher key hashes the weights' SHA-256, the pixel normalisation, the preprocessing rule
and the storage dtype. The image key is the SHA-256 of the resized uint8 image, so it covers
the resize. The content key hashes the entry's contents: which attention blocks, at which
grid. Every entry also stores these values in full. An entry whose values differ from the
expected ones (other weights, other settings) or that cannot be read is logged, ignored and
recomputed. Entries are written to a temporary file and renamed, so readers never see a
partial entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from trainable.data import ImageRecord
from trainable.distillation_attention import attention_sites, capture_pooled_attention
from trainable.prediction import encode_image
from trainable.teachers import Teacher

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
COMPUTATIONS_LOG = "computations.log"
TEACHER_FILE = "teacher.json"
# Preprocessing between image file and encoder (trainable.data and Sam.preprocess), part of the
# teacher key.
PREPROCESSING = ("longest side resized to 1024 with bilinear interpolation, rounding half up; "
                 "normalised by pixel mean and std; zero-padded at bottom and right to 1024")


@dataclass(frozen=True)
class CacheContent:
    """Contents of an entry besides the embedding: pooled attention maps of these teacher
    blocks at this grid size (none when ``attention_blocks`` is empty)."""

    attention_blocks: tuple[int, ...] = ()
    attention_grid: int = 0

    def key(self) -> str:
        text = json.dumps({"attention_blocks": list(self.attention_blocks),
                           "attention_grid": self.attention_grid})
        return hashlib.sha256(text.encode()).hexdigest()[:8]


@dataclass
class TeacherTargets:
    """A teacher's cached outputs for one image, as float32 on the requested device.

    Attributes:
        embedding: (1, 256, 64, 64) image embedding.
        attention: (L, G^2, G^2) pooled attention maps of the entry's blocks, or None.
    """

    embedding: torch.Tensor
    attention: torch.Tensor | None


class TeacherCache:
    """The cache folder of one run (or search), for the given storage dtype."""

    def __init__(self, root: str | Path, dtype: str = "float16"):
        self.root = Path(root)
        self.dtype = dtype
        self.root.mkdir(parents=True, exist_ok=True)
        self._image_keys: dict[str, str] = {}

    # Keys and paths.

    def teacher_folder(self, teacher: Teacher) -> Path:
        return self.root / f"{teacher.model_type}-{self._teacher_key(teacher)[:16]}"

    def entry_path(self, teacher: Teacher, record: ImageRecord, content: CacheContent) -> Path:
        return self.teacher_folder(teacher) / f"{self.image_key(record)[:32]}-{content.key()}.pt"

    def image_key(self, record: ImageRecord) -> str:
        """Return the SHA-256 of the record's resized uint8 image and its shape."""
        cached = self._image_keys.get(record.image_path)
        if cached is None:
            digest = hashlib.sha256(str(tuple(record.image.shape)).encode())
            digest.update(record.image.contiguous().numpy().tobytes())
            cached = self._image_keys[record.image_path] = digest.hexdigest()
        return cached

    def _teacher_key(self, teacher: Teacher) -> str:
        return hashlib.sha256(json.dumps(self._teacher_meta(teacher)).encode()).hexdigest()

    def _teacher_meta(self, teacher: Teacher) -> dict:
        return {
            "format": FORMAT_VERSION,
            "weights_sha256": teacher.weights_sha256,
            "pixel_mean": [float(v) for v in teacher.sam.pixel_mean.flatten()],
            "pixel_std": [float(v) for v in teacher.sam.pixel_std.flatten()],
            "preprocessing": PREPROCESSING,
            "dtype": self.dtype,
        }

    def _entry_meta(self, teacher: Teacher, record: ImageRecord, content: CacheContent) -> dict:
        return {**self._teacher_meta(teacher), "image_sha256": self.image_key(record),
                "attention_blocks": list(content.attention_blocks),
                "attention_grid": content.attention_grid}

    # Reading and computing entries.

    def load(self, teacher: Teacher, record: ImageRecord, content: CacheContent,
             device: torch.device) -> TeacherTargets | None:
        """Return the cached outputs, or None when there is no valid entry.

        A damaged entry, or one whose stored key values differ from the expected ones, is
        logged and ignored.
        """
        path = self.entry_path(teacher, record, content)
        if not path.exists():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
            meta = entry["meta"]
        except Exception as error:  # torch raises several types for damaged files
            logger.warning("ignoring unreadable teacher cache entry %s (%s); recomputing it",
                           path, error)
            return None
        expected = self._entry_meta(teacher, record, content)
        if meta != expected:
            differing = sorted(key for key in expected if meta.get(key) != expected[key])
            logger.warning("ignoring stale teacher cache entry %s for image %s: %s differ from "
                           "teacher %r's; recomputing it", path, record.image_path,
                           ", ".join(differing), teacher.name)
            return None
        attention = entry["attention"]
        return TeacherTargets(
            embedding=entry["embedding"].to(device, torch.float32)[None],
            attention=attention.to(device, torch.float32) if attention is not None else None)

    def compute(self, teacher: Teacher, record: ImageRecord, content: CacheContent,
                device: torch.device) -> TeacherTargets:
        """Run the teacher's image encoder on the image, store the entry and return it."""
        if not teacher.has_image_encoder:
            teacher.restore_image_encoder()
        sites = []
        if content.attention_blocks:
            all_sites = attention_sites(teacher.sam.image_encoder)
            sites = [all_sites[index] for index in content.attention_blocks]
        started = time.perf_counter()
        with torch.no_grad(), capture_pooled_attention(sites, content.attention_grid) as maps:
            embedding = encode_image(teacher.sam, record.image)
        seconds = time.perf_counter() - started
        attention = torch.stack(maps) if maps else None

        storage = getattr(torch, self.dtype)
        self._write_entry(self.entry_path(teacher, record, content), {
            "meta": self._entry_meta(teacher, record, content),
            "embedding": embedding[0].to("cpu", storage),
            "attention": attention.to("cpu", storage) if attention is not None else None,
        })
        self._log_computation(teacher, record, seconds)
        # Return what a later load returns, so that a run does not depend on cache hits.
        return TeacherTargets(
            embedding=embedding.to(storage).to(device, torch.float32),
            attention=(attention.to(storage).to(device, torch.float32)
                       if attention is not None else None))

    def get(self, teacher: Teacher, record: ImageRecord, content: CacheContent,
            device: torch.device) -> TeacherTargets:
        """Return the cached outputs, computing and storing them on a miss."""
        targets = self.load(teacher, record, content, device)
        if targets is None:
            targets = self.compute(teacher, record, content, device)
        return targets

    def fill(self, teacher: Teacher, records: list[ImageRecord], content: CacheContent,
             device: torch.device, verify: bool = True) -> int:
        """Compute every missing entry of ``records``; return how many were computed.

        With ``verify`` every existing entry is read and checked, and a stale one recomputed.
        Without it only missing files are computed, so a starting run does not read the whole
        cache. A stale entry is then found, logged and recomputed when it is used.
        """
        self.register(teacher)
        computed = 0
        for record in records:
            if verify:
                missing = self.load(teacher, record, content, device) is None
            else:
                missing = not self.entry_path(teacher, record, content).exists()
            if missing:
                self.compute(teacher, record, content, device)
                computed += 1
        return computed

    # The folder as a whole.

    def register(self, teacher: Teacher) -> None:
        """Write the teacher's description into its folder, and log cache folders of a
        teacher with the same name but other weights, which this run will not use."""
        folder = self.teacher_folder(teacher)
        folder.mkdir(parents=True, exist_ok=True)
        description = {"name": teacher.name, "type": teacher.model_type,
                       "source": teacher.source, **self._teacher_meta(teacher)}
        path = folder / TEACHER_FILE
        if not path.exists():
            _write_text_atomically(path, json.dumps(description, indent=2))
        for other in sorted(self.root.glob(f"*/{TEACHER_FILE}")):
            if other.parent == folder:
                continue
            try:
                described = json.loads(other.read_text())
            except (OSError, ValueError):
                continue
            if described.get("name") == teacher.name:
                entries = len(list(other.parent.glob("*.pt")))
                logger.info("teacher cache %s contains %d entries of a teacher named %r with "
                            "other weights or settings (weights sha256 %s); they are not used "
                            "for this teacher (weights sha256 %s)", other.parent, entries,
                            teacher.name, str(described.get("weights_sha256"))[:12],
                            teacher.weights_sha256[:12])

    def size_bytes(self, teacher: Teacher | None = None) -> int:
        """Return the bytes on disk of the whole cache, or of one teacher's folder."""
        folder = self.teacher_folder(teacher) if teacher is not None else self.root
        return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())

    def entry_count(self, teacher: Teacher) -> int:
        return len(list(self.teacher_folder(teacher).glob("*.pt")))

    def computations(self) -> list[dict]:
        """Return every line of ``computations.log`` as a dict."""
        path = self.root / COMPUTATIONS_LOG
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def _write_entry(self, path: Path, entry: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save(entry, temporary)
        os.replace(temporary, path)

    def _log_computation(self, teacher: Teacher, record: ImageRecord, seconds: float) -> None:
        line = json.dumps({
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "teacher": teacher.name,
            "type": teacher.model_type,
            "weights_sha256": teacher.weights_sha256,
            "image_sha256": self.image_key(record),
            "image": record.image_path,
            "seconds": round(seconds, 3),
            "host": socket.gethostname(),
            "pid": os.getpid(),
        })
        # One write of a short line in append mode, so lines of concurrent processes do not
        # interleave on a local file system.
        with open(self.root / COMPUTATIONS_LOG, "a") as file:
            file.write(line + "\n")
        logger.debug("computed teacher %r outputs for %s in %.1f s", teacher.name,
                     record.image_path, seconds)


def _write_text_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
