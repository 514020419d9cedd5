"""GRIT data: row schema, validation, and streaming readers for JSON Lines and Parquet.

Rows are read lazily, one line or one Parquet record batch at a time, and images are opened only
when checked or used, so a dataset of any size is never held in memory with its images.

Schema (docs/grit.md §5): ``question, answer, image, width, height, bboxs, dataset, split``;
``image`` is a file name relative to an image folder, or (Parquet) the encoded bytes. Other fields
(``id`` ...) pass through in ``Row.extra``.
"""

from __future__ import annotations

import io
import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from grit_ray.config import BadRowPolicy, DataConfig, DataFormat, DataSource

REQUIRED_FIELDS: dict[str, tuple[type, ...]] = {
    "question": (str,),
    "answer": (str, int),
    "image": (str, bytes),
    "width": (int, float),
    "height": (int, float),
    "bboxs": (list,),
    "dataset": (str,),
}
OPTIONAL_FIELDS: dict[str, tuple[type, ...]] = {"split": (str,)}
PARQUET_BATCH_ROWS = 256  # rows decoded at a time; bounds memory when images are embedded


class DataError(Exception):
    """A bad row under the ``strict`` policy, or an unreadable data file."""


@dataclass(frozen=True)
class RowError:
    source: str  # file path
    line: int  # 1-based line (JSONL) or row number (Parquet); 0 for the file as a whole
    reason: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.reason}" if self.line else f"{self.source}: {self.reason}"


def open_image(image: str | bytes, where: str) -> Image.Image:
    """An image path or encoded bytes as RGB; DataError names ``where`` when it cannot be read."""
    try:
        src = io.BytesIO(image) if isinstance(image, bytes) else image
        with Image.open(src) as im:
            return im.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise DataError(f"{where}: cannot read image: {e}") from None


@dataclass
class Row:
    question: str
    answer: str
    image: str | bytes  # absolute path, or encoded image bytes
    width: int
    height: int
    bboxs: list[list[float]]
    dataset: str
    split: str = "train"
    source: str = ""
    line: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"

    def open_image(self) -> Image.Image:
        """The image as RGB. Raises DataError naming the row when it cannot be read."""
        return open_image(self.image, self.where)

    def to_json(self) -> dict[str, Any]:
        """The row in GRIT's JSON form (image bytes are not serialised; the name is kept)."""
        out = dict(self.extra)
        out.update(
            question=self.question,
            answer=self.answer,
            image=self.image if isinstance(self.image, str) else "<bytes>",
            width=self.width,
            height=self.height,
            bboxs=self.bboxs,
            dataset=self.dataset,
            split=self.split,
        )
        return out


# ---------------------------------------------------------------------------------------------
# validation of one raw record


@dataclass(frozen=True)
class RowRules:
    counting_datasets: frozenset[str] = frozenset({"tallyqa"})
    box_tolerance_px: float = 1.0
    check_images: bool = True

    @classmethod
    def from_config(cls, cfg: DataConfig) -> RowRules:
        return cls(frozenset(cfg.counting_datasets), cfg.box_tolerance_px, cfg.check_images)


def _type_name(types: tuple[type, ...]) -> str:
    return " or ".join({"str": "string", "int": "integer", "float": "number", "list": "list",
                        "bytes": "bytes"}[t.__name__] for t in types)


def _check_fields(raw: dict[str, Any]) -> str | None:
    for name, types in REQUIRED_FIELDS.items():
        if name not in raw or raw[name] is None:
            return f"missing field '{name}'"
        value = raw[name]
        if isinstance(value, bool) or not isinstance(value, types):
            return f"field '{name}' must be {_type_name(types)}, got {type(value).__name__}"
    for name, types in OPTIONAL_FIELDS.items():
        if raw.get(name) is not None and not isinstance(raw[name], types):
            return f"field '{name}' must be {_type_name(types)}, got {type(raw[name]).__name__}"
    for name in ("width", "height"):
        v = raw[name]
        if not (math.isfinite(v) and v > 0 and float(v).is_integer()):
            return f"field '{name}' must be a positive whole number of pixels, got {v!r}"
    if not raw["question"].strip():
        return "field 'question' is empty"
    return None


def _check_boxes(bboxs: list[Any], width: float, height: float, tol: float) -> str | None:
    for i, box in enumerate(bboxs):
        if (
            not isinstance(box, list | tuple)
            or len(box) != 4
            or any(isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) for v in box)
        ):
            return f"bboxs[{i}] must be four numbers [x1, y1, x2, y2], got {box!r}"
        x1, y1, x2, y2 = box
        if x2 < x1 or y2 < y1:
            return f"bboxs[{i}] = {list(box)} has x2 < x1 or y2 < y1"
        if x1 < -tol or y1 < -tol or x2 > width + tol or y2 > height + tol:
            return f"bboxs[{i}] = {list(box)} lies outside the {int(width)}x{int(height)} image"
    return None


def _answer_is_count(answer: str | int) -> bool:
    if isinstance(answer, int):
        return answer >= 0
    return answer.strip().isdigit()


DEFAULT_IMAGE_FOLDER = "images"  # where `grit-ray data synth` (and GRIT's own layout) put a file's images


def _resolve_image(value: str | bytes, images_dir: Path | None, data_file: Path) -> str | bytes:
    """A relative image name resolves against ``images_dir`` when given; otherwise against the
    data file's folder, then that folder's ``images/`` (the first that holds the file; the first
    candidate when neither does, so the error names a real place)."""
    if isinstance(value, bytes):
        return value
    p = Path(value)
    if p.is_absolute():
        return str(p)
    if images_dir is not None:
        return str(images_dir / p)
    beside = data_file.parent / p
    in_folder = data_file.parent / DEFAULT_IMAGE_FOLDER / p
    return str(in_folder if not beside.exists() and in_folder.exists() else beside)


def _check_image(image: str | bytes, width: int, height: int) -> str | None:
    if isinstance(image, str) and not Path(image).is_file():
        return f"image file not found: {image}"
    try:
        src = io.BytesIO(image) if isinstance(image, bytes) else image
        with Image.open(src) as im:
            size = im.size
            im.load()  # decodes fully: catches truncated and corrupt files, not just bad headers
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
        what = "embedded image" if isinstance(image, bytes) else f"image {image}"
        return f"unreadable {what}: {e}"
    if size != (width, height):
        return f"image is {size[0]}x{size[1]} but the row says {width}x{height}"
    return None


def validate_record(
    raw: Any, source: str, line: int, images_dir: Path | None, rules: RowRules
) -> Row | RowError:
    """Turn one raw record into a Row, or a RowError saying what is wrong. Never raises."""
    if not isinstance(raw, dict):
        return RowError(source, line, f"row must be a JSON object, got {type(raw).__name__}")
    problem = _check_fields(raw)
    if problem:
        return RowError(source, line, problem)
    width, height = int(raw["width"]), int(raw["height"])
    problem = _check_boxes(raw["bboxs"], width, height, rules.box_tolerance_px)
    if problem:
        return RowError(source, line, problem)
    if raw["dataset"].lower() in rules.counting_datasets and not _answer_is_count(raw["answer"]):
        return RowError(source, line, f"counting row ({raw['dataset']}) needs an integer answer, got {raw['answer']!r}")
    image = _resolve_image(raw["image"], images_dir, Path(source))
    if rules.check_images:
        problem = _check_image(image, width, height)
        if problem:
            return RowError(source, line, problem)
    extra = {k: v for k, v in raw.items() if k not in REQUIRED_FIELDS and k not in OPTIONAL_FIELDS}
    return Row(
        question=raw["question"],
        answer=str(raw["answer"]),
        image=image,
        width=width,
        height=height,
        bboxs=[[float(v) for v in b] for b in raw["bboxs"]],
        dataset=raw["dataset"].lower(),
        split=raw.get("split") or "train",
        source=source,
        line=line,
        extra=extra,
    )


# ---------------------------------------------------------------------------------------------
# raw readers: yield (line, record-or-error) lazily


def _iter_jsonl(path: Path) -> Iterator[tuple[int, Any | RowError]]:
    with path.open("rb") as f:
        for line_no, raw_line in enumerate(f, start=1):
            text = raw_line.strip()
            if not text:
                continue
            try:
                yield line_no, json.loads(text)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                yield line_no, RowError(str(path), line_no, f"bad JSON: {e}")


def _iter_parquet(path: Path) -> Iterator[tuple[int, Any | RowError]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise DataError(f"{path}: not a readable Parquet file: {e}") from None
    row_no = 0
    for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS):
        for record in batch.to_pylist():
            row_no += 1
            yield row_no, record


def detect_format(path: Path, fmt: DataFormat = DataFormat.AUTO) -> DataFormat:
    if fmt is not DataFormat.AUTO:
        return fmt
    suffix = path.suffix.lower()
    if suffix in {".jsonl", ".json", ".ndjson"}:
        return DataFormat.JSONL
    if suffix in {".parquet", ".pq"}:
        return DataFormat.PARQUET
    raise DataError(f"{path}: cannot tell the format from the suffix '{suffix}'; set format: jsonl|parquet")


def iter_source(source: DataSource, rules: RowRules) -> Iterator[Row | RowError]:
    """Every record of one file, validated, in file order."""
    path = Path(source.path)
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    images_dir = Path(source.images) if source.images else None
    reader = _iter_parquet if detect_format(path, source.format) is DataFormat.PARQUET else _iter_jsonl
    for line, raw in reader(path):
        yield raw if isinstance(raw, RowError) else validate_record(raw, str(path), line, images_dir, rules)


@dataclass
class RowStream:
    """Valid rows of several sources in order, applying the bad-row policy.

    ``strict`` raises DataError at the first bad row; ``skip`` records it in ``skipped`` and goes on.
    """

    sources: list[DataSource]
    rules: RowRules = RowRules()
    policy: BadRowPolicy = BadRowPolicy.STRICT
    skipped: list[RowError] = field(default_factory=list)

    def __iter__(self) -> Iterator[Row]:
        self.skipped = []
        for source in self.sources:
            for item in iter_source(source, self.rules):
                if isinstance(item, RowError):
                    if self.policy is BadRowPolicy.STRICT:
                        raise DataError(f"{item} (data.bad_rows is 'strict'; set it to 'skip' to go on)")
                    self.skipped.append(item)
                    continue
                yield item

    def skipped_report(self) -> str:
        if not self.skipped:
            return "no rows skipped"
        lines = [f"skipped {len(self.skipped)} bad row(s):"] + [f"  {e}" for e in self.skipped]
        return "\n".join(lines)


def check_sources(sources: list[DataSource], rules: RowRules) -> tuple[int, list[RowError]]:
    """(number of good rows, every bad row) for ``grit-ray data check``."""
    good, bad = 0, []
    for source in sources:
        try:
            for item in iter_source(source, rules):
                if isinstance(item, RowError):
                    bad.append(item)
                else:
                    good += 1
        except DataError as e:
            bad.append(RowError(source.path, 0, str(e).split(": ", 1)[-1]))
    return good, bad


def materialise_sources(cfg: DataConfig, run_dir: Path) -> tuple[list[DataSource], list[DataSource]]:
    """(train, eval) sources; synthetic specs are written under ``run_dir/data`` first."""
    from grit_ray.data.synth import write_synth

    train, evals = [cfg.located(s) for s in cfg.train], [cfg.located(s) for s in cfg.eval]
    if cfg.synthetic is not None:
        path = write_synth(run_dir / "data", cfg.synthetic, split="train")
        train.append(DataSource(path=str(path), images=str(path.parent / "images")))
    if cfg.synthetic_eval is not None:
        path = write_synth(run_dir / "data", cfg.synthetic_eval, split="eval")
        evals.append(DataSource(path=str(path), images=str(path.parent / "images")))
    return train, evals


class PromptSampler:
    """Training rows forever, epoch after epoch, in batches. Shuffling uses a bounded buffer
    (``data.shuffle_buffer`` rows, reseeded per epoch from ``data.seed``), so the driver's memory
    does not grow with the dataset. ``state()`` is (epoch, rows taken in that epoch);
    ``restore(state)`` replays the epoch's seeded order up to that point, so a resumed run sees
    exactly the rows the uninterrupted run would have seen, including right at an epoch's end."""

    def __init__(self, stream: RowStream, shuffle: bool, seed: int, buffer_size: int):
        self.stream, self.shuffle, self.seed, self.buffer_size = stream, shuffle, seed, buffer_size
        self.epoch, self.taken = 0, 0
        self._it = self._epoch_rows(0)

    def _epoch_rows(self, epoch: int) -> Iterator[Row]:
        if not self.shuffle:
            yield from self.stream
            return
        rng = random.Random(f"{self.seed}:{epoch}")
        buffer: list[Row] = []
        for row in self.stream:
            if len(buffer) < self.buffer_size:
                buffer.append(row)
                continue
            i = rng.randrange(len(buffer))
            buffer[i], row = row, buffer[i]
            yield row
        rng.shuffle(buffer)
        yield from buffer

    def next_batch(self, n: int) -> list[Row]:
        out: list[Row] = []
        empty_epochs = 0
        while len(out) < n:
            try:
                out.append(next(self._it))
                self.taken += 1
                empty_epochs = 0
            except StopIteration:
                empty_epochs += 1
                if empty_epochs > 1:
                    raise DataError("no training rows left after validation (every row was skipped?)") from None
                self.epoch, self.taken = self.epoch + 1, 0
                self._it = self._epoch_rows(self.epoch)
        return out

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "taken": self.taken}

    def restore(self, state: dict[str, int]) -> None:
        self.epoch, self.taken = int(state["epoch"]), 0
        self._it = self._epoch_rows(self.epoch)
        for _ in range(int(state["taken"])):
            try:
                next(self._it)
            except StopIteration:  # saved at the very end of an epoch: the next batch starts the next one
                break
            self.taken += 1
