import json
import shutil

import pytest

from tokmusic.errors import DataError
from tokmusic.training.manifest import read_manifest


def write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_reads_items_with_defaults_and_relative_paths(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"x")
    (tmp_path / "m.wav").write_bytes(b"x")
    m = write(tmp_path / "m.jsonl", [json.dumps({"video": "a.mp4"}), "",
                                     json.dumps({"video": "a.mp4", "audio": "m.wav", "text": "piano", "split": "valid"})])
    items = read_manifest(m)
    assert [i.line for i in items] == [1, 3]
    assert items[0].video == (tmp_path / "a.mp4").resolve() and items[0].audio is None
    assert items[0].split == "train" and items[0].music_path == items[0].video
    assert items[1].audio == (tmp_path / "m.wav").resolve() and items[1].text == "piano"
    assert items[1].split == "valid"
    assert not items[0].keep_control and not items[1].keep_control
    assert items[0].key != items[1].key and len(items[0].key) == 16
    assert read_manifest(m)[0].key == items[0].key  # stable


def test_a_corpus_moved_whole_keeps_its_keys(tmp_path):
    """Keys name files relative to the manifest, so a copied corpus is not preprocessed again."""
    here = tmp_path / "here" / "corpus"
    (here / "clips").mkdir(parents=True)
    (here / "clips" / "a.mp4").write_bytes(b"x")
    (here / "m.wav").write_bytes(b"x")
    write(here / "m.jsonl", [json.dumps({"video": "clips/a.mp4", "audio": "m.wav"})])
    there = tmp_path / "there" / "corpus"
    shutil.copytree(here, there)
    before, after = read_manifest(here / "m.jsonl")[0], read_manifest(there / "m.jsonl")[0]
    assert after.video != before.video and after.key == before.key
    assert after.absolute_key != before.absolute_key  # the old, path-bound key differs


@pytest.mark.parametrize("line, message", [
    ("{not json", "m.jsonl:1: not a JSON object"),
    ("[1, 2]", "m.jsonl:1: must be a JSON object"),
    ('{"audio": "a.mp4"}', "missing the 'video' key"),
    ('{"video": "a.mp4", "colour": 1}', "unknown key(s) ['colour']"),
    ('{"video": "a.mp4", "split": "test"}', "split must be one of"),
    ('{"video": "a.mp4", "keep_control": "yes"}', "'keep_control' must be true or false"),
    ('{"video": "nope.mp4"}', "does not exist"),
    ('{"video": "a.mp4", "audio": "nope.wav"}', "audio file"),
])
def test_bad_lines_name_the_line(tmp_path, line, message):
    (tmp_path / "a.mp4").write_bytes(b"x")
    with pytest.raises(DataError) as err:
        read_manifest(write(tmp_path / "m.jsonl", [line]))
    assert message in str(err.value)


def test_keep_control(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"x")
    (tmp_path / "b.mp4").write_bytes(b"x")
    m = write(tmp_path / "m.jsonl", [json.dumps({"video": "a.mp4", "keep_control": True}),
                                     json.dumps({"video": "b.mp4", "keep_control": False})])
    assert [i.keep_control for i in read_manifest(m)] == [True, False]


def test_empty_missing_and_duplicate(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"x")
    with pytest.raises(DataError, match="empty"):
        read_manifest(write(tmp_path / "m.jsonl", ["", "  "]))
    with pytest.raises(DataError, match="manifest not found"):
        read_manifest(tmp_path / "none.jsonl")
    with pytest.raises(DataError, match="m.jsonl:2: the same video/audio pair as line 1"):
        read_manifest(write(tmp_path / "m.jsonl", ['{"video": "a.mp4"}', '{"video": "./a.mp4"}']))
