"""cocoaug.records.read_manifest: stage 2's manifest.jsonl keyed by file name, bad files are UserErrors."""

import pytest

from cocoaug.errors import UserError
from cocoaug.records import read_manifest


def test_manifest_entries_are_keyed_by_file_name(tmp_path):
    (tmp_path / "manifest.jsonl").write_text(
        '{"file_name": "3_0001.png", "seed": 5}\n\n{"file_name": "3_0002_1.png", "variant": 1}\n'
    )
    assert read_manifest(tmp_path) == {
        "3_0001.png": {"file_name": "3_0001.png", "seed": 5},
        "3_0002_1.png": {"file_name": "3_0002_1.png", "variant": 1},
    }


@pytest.mark.parametrize("text,message", [
    (None, "no manifest.jsonl"),
    ('{"file_name": "a.png"}\n{not json\n', "line 2 of the manifest is not valid JSON"),
    ('["a.png"]\n', "line 1 of the manifest is not an object with a 'file_name'"),
])
def test_a_missing_or_bad_manifest_is_a_user_error(tmp_path, text, message):
    if text is not None:
        (tmp_path / "manifest.jsonl").write_text(text)
    with pytest.raises(UserError, match=message):
        read_manifest(tmp_path)
