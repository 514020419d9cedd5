import json
from collections import Counter

import pytest
from PIL import Image

from grit_ray.cli import main
from grit_ray.config import DataSource, SynthSpec
from grit_ray.data.rows import RowRules, RowStream, check_sources
from grit_ray.data.synth import COLOURS, RELATIONS, synth_rows, write_synth
from grit_ray.models.tiny import directory_digest


def test_same_seed_same_bytes_different_seed_different(tmp_path):
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        assert main(["data", "synth", "--out", str(tmp_path / name), "--n", "30", "--seed", str(seed)]) == 0
    assert directory_digest(tmp_path / "a") == directory_digest(tmp_path / "b")
    assert directory_digest(tmp_path / "a") != directory_digest(tmp_path / "c")


def test_synth_rows_are_valid_grit_rows(synth_jsonl):
    good, bad = check_sources([DataSource(path=str(synth_jsonl), images=str(synth_jsonl.parent / "images"))],
                              RowRules())
    assert (good, bad) == (24, [])


def test_mix_follows_counting_fraction():
    rows = [r for r, _ in synth_rows(SynthSpec(n=400, seed=0, counting_fraction=0.25))]
    share = Counter(r["dataset"] for r in rows)["tallyqa"] / len(rows)
    assert 0.18 < share < 0.32
    assert {r["dataset"] for r, _ in synth_rows(SynthSpec(n=20, seed=0, counting_fraction=1.0))} == {"tallyqa"}


def test_counting_answers_match_boxes_and_cover_0_to_9():
    rows = [r for r, _ in synth_rows(SynthSpec(n=300, seed=1, counting_fraction=1.0))]
    assert all(int(r["answer"]) == len(r["bboxs"]) for r in rows)
    assert {int(r["answer"]) for r in rows} == set(range(10))


def _pixel_colour(png: bytes, box) -> tuple[int, int, int]:
    import io

    im = Image.open(io.BytesIO(png)).convert("RGB")
    x1, y1, x2, y2 = box
    return im.getpixel(((x1 + x2) // 2, y1 + (y2 - y1) * 2 // 3))  # lower middle: inside every shape


def test_relation_answers_are_true_of_the_picture():
    pairs = synth_rows(SynthSpec(n=200, seed=2, counting_fraction=0.0))
    yes_no = Counter()
    for row, png in pairs:
        q = row["question"]
        rel = next(r for r in RELATIONS if f" {r} the " in q)
        if q.startswith("Is the"):
            a, b = row["bboxs"]
            truth = "Yes" if RELATIONS[rel](a, b) else "No"
            assert row["answer"] == truth, row
            colour_a = q.split("Is the ")[1].split()[0]
            assert _pixel_colour(png, a) == COLOURS[colour_a], row
            yes_no[truth] += 1
        else:
            assert q.startswith("What is") and len(row["bboxs"]) == 1
            colour = row["answer"].split()[1]
            assert _pixel_colour(png, row["bboxs"][0]) == COLOURS[colour], row
    assert yes_no["Yes"] > 5 and yes_no["No"] > 5


def test_parquet_output_embeds_images(tmp_path):
    assert main(["data", "synth", "--out", str(tmp_path), "--n", "10", "--format", "parquet"]) == 0
    rows = list(RowStream([DataSource(path=str(tmp_path / "train.parquet"))]))
    assert len(rows) == 10 and isinstance(rows[0].image, bytes)
    assert rows[0].open_image().size == (rows[0].width, rows[0].height)


def test_synth_bad_arguments_fail_cleanly(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path), "--n", "0"]) == 2
    assert "n" in capsys.readouterr().err


def test_jsonl_lines_are_grit_schema(synth_jsonl):
    row = json.loads(synth_jsonl.read_text().splitlines()[0])
    assert {"question", "answer", "image", "width", "height", "bboxs", "dataset", "split", "id"} == set(row)


@pytest.mark.parametrize("seed", [0, 1])
def test_write_synth_is_repeatable_in_process(tmp_path, seed):
    a = write_synth(tmp_path / "a", SynthSpec(n=5, seed=seed))
    b = write_synth(tmp_path / "b", SynthSpec(n=5, seed=seed))
    assert a.read_bytes() == b.read_bytes()
