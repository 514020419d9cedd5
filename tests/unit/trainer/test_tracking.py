"""Metrics out of the driver: metrics.jsonl, TensorBoard event files (written by tensorboardX and
checked here by decoding their bytes with a TFRecord reader of our own, CRCs included), the
progress line, and trimming on resume."""

from __future__ import annotations

import json
import struct

import pytest

from grit_ray.trainer.tracking import MetricsLogger, progress_line


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c ^= b
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    return c ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def test_crc32c_known_vector():
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value of CRC-32C


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[i]
        value |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            return value, i
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, object]]:
    """A protobuf message as (field number, value) pairs: varint, fixed64/32 and length-delimited."""
    out, i = [], 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = struct.unpack("<d", buf[i:i + 8])[0], i + 8
        elif wire == 5:
            value, i = struct.unpack("<f", buf[i:i + 4])[0], i + 4
        else:
            n, i = _varint(buf, i)
            value, i = buf[i:i + n], i + n
        out.append((number, value))
    return out


def _records(data: bytes) -> list[bytes]:
    out, i = [], 0
    while i < len(data):
        header = data[i:i + 8]
        (n,) = struct.unpack("<Q", header)
        assert struct.unpack("<I", data[i + 8:i + 12])[0] == _masked_crc(header)
        payload = data[i + 12:i + 12 + n]
        assert struct.unpack("<I", data[i + 12 + n:i + 16 + n])[0] == _masked_crc(payload)
        out.append(payload)
        i += 16 + n
    return out


def test_metrics_jsonl_tensorboard_and_progress(tmp_path, capsys):
    log = MetricsLogger(tmp_path, total_steps=4, tensorboard=True, progress=True, wandb_project=None,
                        run_name="t", config={})
    for step in (1, 2):
        log.log({"step": step, "reward/mean": 0.25 * step, "time/step": 2.0, "answer_right": 0.5, "note": "text"})
    log.close()
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and rows[1]["reward/mean"] == 0.5

    events = [_fields(r) for r in _records(next((tmp_path / "tb").glob("events.out.tfevents.*")).read_bytes())]
    assert dict(events[0])[3] == b"brain.Event:2"  # the file-version record TensorBoard expects first
    at_step2 = [dict(e) for e in events[1:] if dict(e).get(2) == 2]  # step (field 2)
    assert at_step2
    values = {dict(_fields(v))[1].decode(): dict(_fields(v))[2]
              for e in at_step2 for n, v in _fields(e[5]) if n == 1}
    assert values == {"reward/mean": pytest.approx(0.5), "time/step": pytest.approx(2.0), "answer_right": 0.5}

    out = capsys.readouterr().out
    assert "step 2/4 | reward 0.500 | right 0.500" in out and "ETA 0m04s" in out


def test_resume_trims_metrics_beyond_the_checkpoint(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"step": s}) + "\n" for s in (0, 1, 2, 3)))
    MetricsLogger(tmp_path, 5, False, False, None, "t", {}, keep_through=2).close()
    assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [0, 1, 2]
    MetricsLogger(tmp_path, 5, False, False, None, "t", {}, keep_through=0).close()  # rebuilt before step 1
    assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [0]
    MetricsLogger(tmp_path, 5, False, False, None, "t", {}).close()  # a fresh run in the same directory
    assert (tmp_path / "metrics.jsonl").read_text() == ""


def _tensorboard_steps(run_dir) -> list[tuple[int, str]]:
    """(step, tag) of every scalar in every event file under run_dir/tb."""
    out = []
    for f in sorted((run_dir / "tb").glob("events.out.tfevents.*")):
        for e in (dict(_fields(r)) for r in _records(f.read_bytes())):
            if 5 in e:
                out += [(e[2], dict(_fields(v))[1].decode()) for n, v in _fields(e[5]) if n == 1]
    return out


def test_tensorboard_holds_each_step_once_after_a_resume(tmp_path):
    first = MetricsLogger(tmp_path, 4, True, False, None, "t", {})
    for step in (1, 2, 3):  # the run dies after step 3; its last checkpoint is step 2
        first.log({"step": step, "reward/mean": float(step)})
    first.close()
    resumed = MetricsLogger(tmp_path, 4, True, False, None, "t", {}, keep_through=2)
    for step in (3, 4):
        resumed.log({"step": step, "reward/mean": 10.0 + step})
    resumed.close()
    assert sorted(_tensorboard_steps(tmp_path)) == [(s, "reward/mean") for s in (1, 2, 3, 4)]
    assert [json.loads(x)["reward/mean"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [
        1.0, 2.0, 13.0, 14.0]


def test_progress_line_with_missing_values():
    line = progress_line({"step": 3}, 10, 125)
    assert line == "step 3/10 | reward - | right - | kl - | s/step - | tok/s - | ETA 2m05s"
