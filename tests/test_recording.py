"""The recording format: round trip, a file cut off mid-write, and clear errors for bad files."""

from __future__ import annotations

import gzip

import pytest

from stratagem.viz.recording import RecordingError, RecordingWriter, read_recording, recording_path


def write_episode(path, steps: int = 5, end: bool = True) -> None:
    writer = RecordingWriter(path, env="2048", seed=7, program="abc123", params={"max_tile": 2048})
    for i in range(steps):
        writer.step(None if i == 0 else {"action_id": i % 4}, None if i == 0 else 4.0, i == steps - 1,
                    {"board": [[i, 0, 0, 0]] * 4, "score": 4 * i})  # fmt: skip
    writer.close({"score": 4.0 * (steps - 1), "moves": steps - 1, "won": False} if end else None)


@pytest.mark.parametrize("name", ["episode.jsonl.gz", "episode.jsonl"])
def test_round_trip(tmp_path, name):
    write_episode(tmp_path / name)
    recording = read_recording(tmp_path / name)
    header = recording.header
    assert (header["env"], header["seed"], header["program"], header["params"]) == (
        "2048",
        7,
        "abc123",
        {"max_tile": 2048},
    )
    assert [s["step"] for s in recording.steps] == [0, 1, 2, 3, 4]
    assert recording.steps[3]["action"] == {"action_id": 3} and recording.steps[3]["observation"]["score"] == 12
    assert recording.end == {"score": 16.0, "moves": 4, "won": False}
    assert recording_path(tmp_path, "abc", 3).name == "abc-seed3.jsonl.gz"


@pytest.mark.parametrize("name", ["cut.jsonl.gz", "cut.jsonl"])
def test_a_file_cut_off_mid_write_replays_to_its_last_whole_step(tmp_path, name):
    path = tmp_path / name
    write_episode(path, steps=40, end=False)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.7)])
    recording = read_recording(path)
    assert recording.end is None and 5 < len(recording.steps) < 40
    assert [s["step"] for s in recording.steps] == list(range(len(recording.steps)))


def test_bad_files_name_the_file_and_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    write_episode(path)
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines[:3], "{not json", *lines[4:]]) + "\n")
    with pytest.raises(RecordingError, match=r"bad.jsonl, line 4: not JSON"):
        read_recording(path)
    path.write_text("\n".join([lines[0], lines[2]]) + "\n")  # step 1 where step 0 belongs
    with pytest.raises(RecordingError, match=r"line 2: expected step 0"):
        read_recording(path)
    path.write_text(lines[0].replace('"version":1', '"version":99') + "\n")
    with pytest.raises(RecordingError, match="format version 99; this stratagem reads version 1"):
        read_recording(path)
    path.write_text('{"hello": 1}\n')
    with pytest.raises(RecordingError, match="line 1: not a stratagem recording"):
        read_recording(path)
    path.write_text("")
    with pytest.raises(RecordingError, match="empty file"):
        read_recording(path)
    (tmp_path / "plain.jsonl.gz").write_text("not gzip at all\n")
    with pytest.raises(RecordingError, match="not a gzip file"):
        read_recording(tmp_path / "plain.jsonl.gz")
    with pytest.raises(RecordingError, match="no such recording"):
        read_recording(tmp_path / "missing.jsonl.gz")
    path.write_text("\n".join([*lines, lines[1]]) + "\n")
    with pytest.raises(RecordingError, match="a line after the episode's end line"):
        read_recording(path)


def test_a_gzip_file_is_flushed_line_by_line(tmp_path):
    path = tmp_path / "live.jsonl.gz"
    writer = RecordingWriter(path, env="2048", seed=1, program="p")
    writer.step(None, None, False, {"board": []})
    with gzip.open(path, "rb") as still_open:  # readable while the writer is still open, as after a kill
        assert still_open.read1(1 << 16)
    assert len(read_recording(path).steps) == 1
    writer.close()
