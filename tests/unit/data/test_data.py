import io
import itertools
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from grit_ray.cli import main
from grit_ray.config import BadRowPolicy, DataSource
from grit_ray.data.rows import DataError, RowRules, RowStream, check_sources, iter_source


def _png(w=40, h=30, colour=(200, 10, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), colour).save(buf, format="PNG")
    return buf.getvalue()


def _row(**kw):
    row = {"question": "Is the cat left of the dog?", "answer": "Yes", "image": "a.png", "width": 40, "height": 30,
           "bboxs": [[1.0, 2.0, 20.5, 29.0]], "dataset": "vsr", "split": "train"}
    row.update(kw)
    return row


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "a.png").write_bytes(_png())
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    (tmp_path / "truncated.png").write_bytes(_png(64, 64)[:60])
    return tmp_path


def _write_jsonl(path: Path, lines: list) -> Path:
    path.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines))
    return path


# Every bad-row kind, with the reason the user sees.
BAD_ROWS = [
    ("{not json", "bad JSON"),
    ('["a", "list"]', "row must be a JSON object, got list"),
    (_row(question=None), "missing field 'question'"),
    ({k: v for k, v in _row().items() if k != "bboxs"}, "missing field 'bboxs'"),
    (_row(width="40"), "field 'width' must be integer or number, got str"),
    (_row(bboxs="[1,2,3,4]"), "field 'bboxs' must be list, got str"),
    (_row(answer=True), "field 'answer' must be string or integer, got bool"),
    (_row(width=-5), "field 'width' must be a positive whole number"),
    (_row(question="   "), "field 'question' is empty"),
    (_row(image="missing.png"), "image file not found"),
    (_row(image="corrupt.png"), "unreadable image"),
    (_row(image="truncated.png", width=64, height=64, bboxs=[]), "unreadable image"),
    (_row(width=41), "image is 40x30 but the row says 41x30"),
    (_row(bboxs=[[20, 2, 10, 29]]), "bboxs[0] = [20, 2, 10, 29] has x2 < x1"),
    (_row(bboxs=[[1, 20, 10, 5]]), "has x2 < x1 or y2 < y1"),
    (_row(bboxs=[[1, 2, 45, 29]]), "bboxs[0] = [1, 2, 45, 29] lies outside the 40x30 image"),
    (_row(bboxs=[[1, 2, 3]]), "bboxs[0] must be four numbers"),
    (_row(bboxs=[[1, 2, "x", 4]]), "bboxs[0] must be four numbers"),
    (_row(dataset="tallyqa", answer="three"), "counting row (tallyqa) needs an integer answer, got 'three'"),
    (_row(dataset="TallyQA", answer="2.5"), "needs an integer answer"),
]


@pytest.mark.parametrize("bad, reason", BAD_ROWS, ids=[r for _, r in BAD_ROWS])
def test_each_bad_row_kind_is_reported_with_file_line_and_reason(folder, bad, reason):
    path = _write_jsonl(folder / "d.jsonl", [_row(), bad, _row()])
    items = list(iter_source(DataSource(path=str(path)), RowRules()))
    errors = [str(i) for i in items if not hasattr(i, "question")]
    assert len(items) == 3 and len(errors) == 1
    assert errors[0].startswith(f"{path}:2: ") and reason in errors[0], errors[0]


def test_good_rows_parse_with_extra_fields_and_image_resolution(folder):
    path = _write_jsonl(folder / "d.jsonl", [_row(id="r1", dataset="TallyQA", answer=2), "", _row(answer="No")])
    rows = list(RowStream([DataSource(path=str(path))]))
    assert [r.line for r in rows] == [1, 3]
    assert rows[0].extra == {"id": "r1"} and rows[0].answer == "2" and rows[0].dataset == "tallyqa"
    assert rows[0].image == str(folder / "a.png") and rows[0].open_image().size == (40, 30)


def test_box_tolerance(folder):
    path = _write_jsonl(folder / "d.jsonl", [_row(bboxs=[[-0.5, 0, 40.9, 30]])])
    assert check_sources([DataSource(path=str(path))], RowRules())[1] == []
    assert len(check_sources([DataSource(path=str(path))], RowRules(box_tolerance_px=0.0))[1]) == 1


def test_strict_policy_stops_at_first_bad_row_with_location(folder):
    path = _write_jsonl(folder / "d.jsonl", [_row(), _row(image="missing.png"), _row(width=0)])
    stream = RowStream([DataSource(path=str(path))], policy=BadRowPolicy.STRICT)
    with pytest.raises(DataError, match=rf"{path}:2: image file not found"):
        list(stream)


def test_skip_policy_counts_and_reports_every_skipped_row(folder):
    path = _write_jsonl(folder / "d.jsonl", [_row(), _row(image="missing.png"), "{", _row()])
    stream = RowStream([DataSource(path=str(path))], policy=BadRowPolicy.SKIP)
    assert len(list(stream)) == 2
    report = stream.skipped_report()
    assert report.startswith("skipped 2 bad row(s):") and f"{path}:2:" in report and f"{path}:3: bad JSON" in report


def test_several_sources_with_their_own_image_folders(tmp_path):
    for name, colour in (("vsr", (255, 0, 0)), ("tally", (0, 0, 255))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "img.png").write_bytes(_png(colour=colour))
        _write_jsonl(tmp_path / f"{name}.jsonl", [_row(image="img.png", dataset=name)])
    sources = [DataSource(path=str(tmp_path / f"{n}.jsonl"), images=str(tmp_path / n)) for n in ("vsr", "tally")]
    rows = list(RowStream(sources))
    assert [r.open_image().getpixel((0, 0)) for r in rows] == [(255, 0, 0), (0, 0, 255)]


def test_stream_is_lazy(folder):
    # Under 'strict' the third row is bad: taking the first two must not reach it.
    path = _write_jsonl(folder / "d.jsonl", [_row(), _row(), "{broken"])
    it = iter(RowStream([DataSource(path=str(path))]))
    assert next(it).line == 1 and next(it).line == 2
    with pytest.raises(DataError):
        next(it)


def test_parquet_with_embedded_bytes_and_with_paths(folder):
    good, bad = _row(image=_png()), _row(image=b"garbage")
    pq.write_table(pa.Table.from_pylist([good, bad]), folder / "bytes.parquet")
    items = list(iter_source(DataSource(path=str(folder / "bytes.parquet")), RowRules()))
    assert items[0].open_image().size == (40, 30)
    assert str(items[1]).startswith(f"{folder / 'bytes.parquet'}:2: unreadable embedded image")
    pq.write_table(pa.Table.from_pylist([_row()]), folder / "paths.parquet")
    (row,) = RowStream([DataSource(path=str(folder / "paths.parquet"), images=str(folder))])
    assert row.image == str(folder / "a.png")


def test_unreadable_files_are_data_errors(tmp_path):
    (tmp_path / "x.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        list(RowStream([DataSource(path=str(tmp_path / "x.parquet"))]))
    with pytest.raises(DataError, match="data file not found"):
        list(RowStream([DataSource(path=str(tmp_path / "nope.jsonl"))]))
    (tmp_path / "x.txt").write_text("{}\n")
    with pytest.raises(DataError, match="cannot tell the format"):
        list(RowStream([DataSource(path=str(tmp_path / "x.txt"))]))


def test_cli_data_check_lists_every_bad_row_and_exits_1(folder, capsys):
    path = _write_jsonl(folder / "d.jsonl", [_row(), _row(image="missing.png"), "{", _row(bboxs=[[5, 5, 1, 1]])])
    assert main(["data", "check", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{path}:2: image file not found")
    assert out[1].startswith(f"{path}:3: bad JSON")
    assert out[2].startswith(f"{path}:4: bboxs[0]")
    assert out[-1] == "4 rows checked: 1 good, 3 bad"


def test_cli_data_check_all_good_exits_0_and_images_flag(folder, tmp_path_factory, capsys):
    other = tmp_path_factory.mktemp("elsewhere")
    path = _write_jsonl(other / "d.jsonl", [_row(), _row()])
    assert main(["data", "check", str(path)]) == 1  # images not next to the file
    capsys.readouterr()
    assert main(["data", "check", str(path), "--images", str(folder)]) == 0
    assert capsys.readouterr().out.strip() == "2 rows checked: 2 good, 0 bad"


def test_synthetic_data_round_trips_through_the_tools_without_an_images_flag(tmp_path, capsys):
    """`data synth` puts images in OUT/images/: check and the readers find them there by default."""
    assert main(["data", "synth", "--out", str(tmp_path / "d"), "--n", "6", "--seed", "4"]) == 0
    assert main(["data", "check", str(tmp_path / "d" / "train.jsonl")]) == 0
    assert capsys.readouterr().out.strip().endswith("6 rows checked: 6 good, 0 bad")
    (row,) = itertools.islice(RowStream([DataSource(path=str(tmp_path / "d" / "train.jsonl"))]), 1)
    assert Path(row.image).parent == tmp_path / "d" / "images"


def test_cli_data_check_missing_file_is_reported_not_raised(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path / "none.jsonl")]) == 1
    assert capsys.readouterr().out.splitlines()[0] == f"{tmp_path / 'none.jsonl'}: data file not found"


def test_parquet_with_embedded_images_streams_in_bounded_memory(tmp_path):
    # 2,000 rows x ~12 KB of image bytes = ~24 MB on disk, written in row groups of 250.
    import os

    noise = [os.urandom(12_000) for _ in range(8)]
    rows = [_row(image=noise[i % 8], width=40, height=30) for i in range(2000)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "big.parquet", row_group_size=250)
    rules = RowRules(check_images=False)
    baseline = pa.total_allocated_bytes()
    peak = 0
    n = 0
    for item in iter_source(DataSource(path=str(tmp_path / "big.parquet")), rules):
        n += 1
        peak = max(peak, pa.total_allocated_bytes() - baseline)
        del item
    assert n == 2000
    assert peak < 8_000_000, f"arrow held {peak / 1e6:.1f} MB while streaming 24 MB"


def _sampler(synth_jsonl, shuffle=True, buffer=5):
    from grit_ray.data.rows import PromptSampler

    stream = RowStream([DataSource(path=str(synth_jsonl), images=str(synth_jsonl.parent / "images"))])
    return PromptSampler(stream, shuffle=shuffle, seed=7, buffer_size=buffer)


def test_prompt_sampler_epochs_shuffle_and_exact_restore(synth_jsonl):
    n = 24  # rows in the fixture
    s = _sampler(synth_jsonl)
    epoch0 = [r.line for r in s.next_batch(n)]
    epoch1 = [r.line for r in s.next_batch(n)]
    assert sorted(epoch0) == sorted(epoch1) == list(range(1, n + 1))  # every row once per epoch
    assert epoch0 != epoch1 and epoch0 != sorted(epoch0)  # shuffled, and reshuffled per epoch
    assert [r.line for r in _sampler(synth_jsonl, shuffle=False).next_batch(n)] == list(range(1, n + 1))

    for stop in (5, 24, 29):  # mid-epoch, exactly at an epoch's end, inside the next epoch
        a = _sampler(synth_jsonl)
        a.next_batch(stop)
        state = a.state()
        expected = [r.line for r in a.next_batch(10)]
        b = _sampler(synth_jsonl)
        b.restore(state)
        assert [r.line for r in b.next_batch(10)] == expected, stop
    at_end = _sampler(synth_jsonl)
    at_end.next_batch(24)
    assert at_end.state() == {"epoch": 0, "taken": 24}
    at_end.next_batch(1)
    assert at_end.state() == {"epoch": 1, "taken": 1}
