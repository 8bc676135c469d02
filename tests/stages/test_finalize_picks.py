"""Stage 4 with --picks: a picks file (the review page's export, the server's picks.json or
picks_passed.json) gives the same dataset as the same pictures copied into a folder; picks of
pictures stage 2 did not make, or made for another stage-2 folder, are one error line."""

import json
import shutil

import pytest

from cocoaug.picks import PASSED_PICKS_FILE, write_picks
from tests.helpers.scripts import run_finalize, tree_hashes
from tests.helpers.stage_outputs import generated_names, make_scores


def test_picks_give_the_same_dataset_as_the_folder_way(tmp_path, stage_outputs, sample_dataset):
    chosen = [("generation", generated_names(stage_outputs, "generation")[0]), ("inpainting", generated_names(stage_outputs, "inpainting")[-1])]
    selected = tmp_path / "selected"
    for mode, name in chosen:
        (selected / mode).mkdir(parents=True, exist_ok=True)
        shutil.copy(stage_outputs / mode / name, selected / mode)
    picks = tmp_path / "picks.json"
    write_picks(picks, chosen, stage_outputs, source="review page", rejected=[])
    before = tree_hashes(stage_outputs, sample_dataset)
    assert run_finalize(sample_dataset, stage_outputs, selected, tmp_path / "a", "--merge").returncode == 0
    result = run_finalize(sample_dataset, stage_outputs, None, tmp_path / "c", "--picks", picks, "--merge")
    assert result.returncode == 0, result.stderr
    assert "selected 2 generated images (generation 1, inpainting 1)" in result.stdout
    assert (tmp_path / "c" / "annotations.json").read_bytes() == (tmp_path / "a" / "annotations.json").read_bytes()
    merged = lambda final: (tmp_path / final / "train_augmented.json").read_text().replace(f"/{final}/images/", "/FINAL/images/")
    assert merged("c") == merged("a")
    generated = [image["file_name"] for image in json.loads((tmp_path / "c" / "annotations.json").read_text())["images"]
                 if "source_image_id" in image]
    assert generated == [f"generated/{mode}/{mode}_{name}" for mode, name in chosen]
    for mode, name in chosen:
        assert (tmp_path / "c" / "images" / "generated" / mode / f"{mode}_{name}").read_bytes() == (stage_outputs / mode / name).read_bytes()
    assert tree_hashes(stage_outputs, sample_dataset) == before


def test_picks_passed_of_the_scorer_is_taken_as_it_is(tmp_path, stage_outputs, sample_dataset):
    out = tmp_path / "out"
    shutil.copytree(stage_outputs, out)
    passed = make_scores(out)
    result = run_finalize(sample_dataset, out, None, tmp_path / "final", "--picks", out / PASSED_PICKS_FILE)
    assert result.returncode == 0, result.stderr
    images = json.loads((tmp_path / "final" / "annotations.json").read_text())["images"]
    assert sorted(tuple(i["file_name"].split("/")[1:]) for i in images if "source_image_id" in i) == sorted(
        (mode, f"{mode}_{name}") for mode, name in passed)


@pytest.mark.parametrize("case, message", [
    ("unknown pictures", "2 pick(s) name pictures that stage 2 did not make: generation/1_9999.png, inpainting/holiday.png"),
    ("other folder", "the picks file was made for the stage-2 folder"),
    ("no picks", "the picks file keeps no picture"),
    ("not a picks file", "not a picks file"),
    ("missing file", "picks file does not exist"),
    ("both ways", "pass either --picked PICKED_DIR or --picks PICKS.json"),
    ("neither way", "pass either --picked PICKED_DIR or --picks PICKS.json"),
])
def test_bad_picks_end_with_one_error_line(tmp_path, stage_outputs, sample_dataset, case, message):
    picks = tmp_path / "picks.json"
    good = [("generation", generated_names(stage_outputs, "generation")[0])]
    write_picks(picks, good, stage_outputs)
    if case == "unknown pictures":
        write_picks(picks, good + [("generation", "1_9999.png"), ("inpainting", "holiday.png")], stage_outputs)
    elif case == "other folder":
        write_picks(picks, good, tmp_path / "another_out")
    elif case == "no picks":
        write_picks(picks, [], stage_outputs)
    elif case == "not a picks file":
        picks.write_text('{"images": []}')
    elif case == "missing file":
        picks.unlink()
    flags = [] if case == "neither way" else ["--picks", picks]
    if case == "both ways":
        (tmp_path / "selected").mkdir()
        flags += ["-i", tmp_path / "selected"]
    before = tree_hashes(stage_outputs, sample_dataset)
    result = run_finalize(sample_dataset, stage_outputs, None, tmp_path / "final", *flags)
    assert result.returncode == 2, result.stdout
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "final" / "annotations.json").exists()
    assert tree_hashes(stage_outputs, sample_dataset) == before
