"""The one command-line vocabulary (cocoaug/cli.py, docs/cli.md): the same flag means the same thing
in every script, old spellings keep working, and no script writes inside a folder it reads pictures from."""

import argparse
import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest

from cocoaug import cli
from tests.helpers.scripts import ROOT, run_here
from tests.helpers.stage_outputs import make_records

SCRIPTS = ["generate_prompt_blip2.py", "generate_image_gligen.py", "draw_bboxes.py", "finalize_selected_images.py",
           "finetune_detector.py", "evaluate_fid.py", "scripts/make_tiny_models.py", "scripts/make_sample_dataset.py", "scripts/make_random_fid_weights.py"]
# Flags defined once in cocoaug/cli.py: wherever a script has one, it is the same argument.
SHARED = ["--images", "--annotations", "--records", "--generated", "--picked", "--output", "--model", "--device", "--dtype",
          "--batch-size", "--num-workers", "--limit", "--skip-missing", "--overwrite", "--debug"]
# Per script: the arguments every command needs, written the new way, then each old spelling with the
# dest it must fill.
REQUIRED = {
    "generate_prompt_blip2.py": ["-i", "I", "-a", "A", "-o", "O"],
    "generate_image_gligen.py": ["--mode", "generation", "-i", "I", "-p", "P", "-o", "O"],
    "draw_bboxes.py": ["-g", "G", "-p", "P", "-o", "O"],
    "finalize_selected_images.py": ["-a", "A", "--images", "I", "-g", "G", "--picked", "S", "-o", "O"],
    "evaluate_fid.py": ["-r", "R", "-g", "G"],
    "finetune_detector.py": ["-d", "D", "-o", "O"],
}
OLD_SPELLINGS = {
    "generate_image_gligen.py": [("--prompts", "records")],
    "draw_bboxes.py": [("--prompts", "records")],
    "finalize_selected_images.py": [("--original_annotation", "annotations"), ("--original-annotation", "annotations"),
                                    ("--original_data_root", "images"), ("--original-data-root", "images"),
                                    ("-i", "picked"), ("--selected", "picked"), ("--prompts", "records"), ("-p", "records")],
    "evaluate_fid.py": [("-o", "output"), ("--output", "output")],
}


def parser_of(script: str) -> argparse.ArgumentParser:
    spec = importlib.util.spec_from_file_location(Path(script).stem + "_under_test", ROOT / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_parser()


def actions_by_flag(parser) -> dict:
    return {flag: action for action in parser._actions for flag in action.option_strings}


@pytest.mark.parametrize("script", sorted(OLD_SPELLINGS))
def test_every_old_spelling_fills_the_same_argument(script):
    parser = parser_of(script)
    required = REQUIRED[script]
    for old, dest in OLD_SPELLINGS[script]:
        new_flag = next(flag for flag, action in actions_by_flag(parser).items() if action.dest == dest and flag.startswith("--"))
        # Replace the new spelling of this argument (if required) by the old one, with another value.
        args = list(required)
        for i in range(0, len(args) - 1):
            if actions_by_flag(parser).get(args[i]) is not None and actions_by_flag(parser)[args[i]].dest == dest:
                del args[i:i + 2]
                break
        parsed_old = parser.parse_args([*args, old, "VALUE"])
        parsed_new = parser.parse_args([*args, new_flag, "VALUE"])
        assert getattr(parsed_old, dest) == "VALUE", (script, old)
        assert vars(parsed_old) == vars(parsed_new), (script, old, new_flag)


def test_stage4_i_is_still_the_picked_folder_not_the_images():
    parsed = parser_of("finalize_selected_images.py").parse_args(
        ["--original_annotation", "A", "--original_data_root", "I", "-g", "G", "-i", "S", "-o", "O"])
    assert (parsed.annotations, parsed.images, parsed.picked) == ("A", "I", "S")


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_has_the_one_help_formatter_and_the_shared_flags(script):
    parser = parser_of(script)
    assert parser.formatter_class is cli.HelpFormatter
    flags = actions_by_flag(parser)
    assert "--debug" in flags and "--overwrite" in flags
    reference = actions_by_flag(parser_of("generate_prompt_blip2.py")) | actions_by_flag(parser_of("finalize_selected_images.py"))
    reference |= actions_by_flag(parser_of("draw_bboxes.py"))
    for flag in SHARED:
        if flag in flags:
            mine, theirs = flags[flag], reference[flag]
            assert (mine.dest, type(mine), mine.type, mine.choices) == (theirs.dest, type(theirs), theirs.type, theirs.choices), (script, flag)
    snake_case = {flag for flag in flags if flag.startswith("--") and "_" in flag}
    assert snake_case <= {"--original_annotation", "--original_data_root"}, snake_case  # the seed's spellings, kept


@pytest.mark.parametrize("script", ["generate_prompt_blip2.py", "generate_image_gligen.py", "evaluate_fid.py"])
def test_device_takes_cuda_n_everywhere_and_refuses_other_names(script, capsys):
    parser = parser_of(script)
    required = REQUIRED[script]
    assert parser.parse_args([*required, "--device", "cuda:1"]).device == "cuda:1"
    assert parser.parse_args([*required, "--device", "cpu"]).device == "cpu"
    with pytest.raises(SystemExit) as ended:
        parser.parse_args([*required, "--device", "gpu0"])
    assert ended.value.code == 2 and "'gpu0' is not a device" in capsys.readouterr().err


def test_docs_table_lists_every_shared_flag_and_old_spelling():
    table = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    for flag in SHARED + ["--prompts", "--original_annotation", "--original-annotation", "--original_data_root",
                          "--original-data-root", "--selected"]:
        assert f"`{flag}`" in table, flag


# ---------------------------------------------------------------- outputs never inside picture folders


def refused(result, output, folder, what="image folder", where="lies inside"):
    assert result.returncode == 2, result.stderr
    expected = (f"error: the output folder {output} {where} the {what} {folder}, which this script reads pictures from: "
                f"choose an output folder outside it")
    assert result.stderr.strip().splitlines()[-1].startswith(expected), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_stage1_refuses_an_output_inside_the_image_folder(sample_dataset, tmp_path):
    images, annotations = sample_dataset / "images", sample_dataset / "annotations.json"
    output = images / "out"
    refused(run_here("generate_prompt_blip2.py", "-i", images, "-a", annotations, "-o", output, "--select-only"), output, images)
    assert not output.exists()
    deeper = images / "extra" / "out"
    refused(run_here("generate_prompt_blip2.py", "-i", images, "-a", annotations, "-o", deeper, "--select-only"), deeper, images)
    refused(run_here("generate_prompt_blip2.py", "-i", images, "-a", annotations, "-o", images, "--select-only"), images, images,
            where="is")


def test_stage1_refuses_an_output_that_a_link_puts_inside_the_image_folder(sample_dataset, tmp_path):
    images, annotations = sample_dataset / "images", sample_dataset / "annotations.json"
    os.symlink(images, tmp_path / "link")
    output = tmp_path / "link" / "out"
    refused(run_here("generate_prompt_blip2.py", "-i", images, "-a", annotations, "-o", output, "--select-only"), output, images)
    # The other way round: the image folder given through a link, the output the real folder below it.
    refused(run_here("generate_prompt_blip2.py", "-i", tmp_path / "link", "-a", annotations, "-o", images / "out", "--select-only"),
            images / "out", tmp_path / "link")
    # stage 1 copies the originals to OUT_DIR/selected/: an image folder that is OUT_DIR/selected is refused too.
    shutil.copytree(images, tmp_path / "out" / "selected")
    refused(run_here("generate_prompt_blip2.py", "-i", tmp_path / "out" / "selected", "-a", annotations, "-o", tmp_path / "out",
                "--select-only"), tmp_path / "out" / "selected", tmp_path / "out" / "selected", where="is")


def test_stage2_refuses_an_output_inside_the_image_folder(sample_dataset, stage_outputs, tmp_path):
    images = sample_dataset / "images"
    output = images / "generated"
    result = run_here("generate_image_gligen.py", "--mode", "generation", "-i", images, "-p", stage_outputs / "blip2_post.json",
                        "-o", output, "--model", tmp_path / "never_loaded")
    refused(result, output, images)


def test_stage2_takes_an_output_folder_that_holds_its_records_file(sample_dataset, tiny_models, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "blip2_post.json").write_text(json.dumps(make_records(sample_dataset, max_records=1)))
    result = run_here("generate_image_gligen.py", "--mode", "generation", "-i", sample_dataset / "images", "-p", out / "blip2_post.json",
                        "-o", out, "--model", tiny_models / "gligen-generation", "--steps", "1", "--resolution", "64",
                        "--device", "cpu", "--dtype", "float32")
    assert result.returncode == 0, result.stderr
    assert len(list((out / "generation").glob("*.png"))) == 1


def test_stage3_refuses_an_output_inside_a_mode_folder(stage_outputs, sample_dataset, tmp_path):
    generation = stage_outputs / "generation"
    output = generation / "boxes"
    refused(run_here("draw_bboxes.py", "-g", stage_outputs, "-p", stage_outputs / "blip2_post.json", "-o", output),
            output, generation, what="generation folder")
    output = sample_dataset / "images" / "boxes"
    refused(run_here("draw_bboxes.py", "-g", stage_outputs, "-p", stage_outputs / "blip2_post.json", "-i", sample_dataset / "images",
                "-o", output), output, sample_dataset / "images")
    assert not (generation / "boxes").exists() and not output.exists()


def test_stage4_refuses_an_output_inside_the_picked_or_image_folder(stage_outputs, sample_dataset, tmp_path):
    picked = tmp_path / "picked"
    picked.mkdir()
    base = ["-a", sample_dataset / "annotations.json", "--images", sample_dataset / "images", "-g", stage_outputs, "--picked", picked]
    refused(run_here("finalize_selected_images.py", *base, "-o", picked / "final"), picked / "final", picked,
            what="folder of picked images")
    output = sample_dataset / "images" / "final"
    refused(run_here("finalize_selected_images.py", *base, "-o", output), output, sample_dataset / "images")
    # FINAL_DIR/images/generated/<mode>/ would be the generation folder itself.
    out = tmp_path / "loop"
    (out / "images" / "generated").mkdir(parents=True)
    os.symlink(stage_outputs / "generation", out / "images" / "generated" / "generation")
    result = run_here("finalize_selected_images.py", *base, "-o", out)
    assert result.returncode == 2 and "is the generation folder" in result.stderr, result.stderr


ALL_SCRIPTS = [*REQUIRED, "score_images.py"]
REQUIRED["score_images.py"] = ["-g", "G", "-p", "P"]


def float_flags(script: str) -> list[str]:
    return [action.option_strings[0] for action in parser_of(script)._actions if action.type in (float, cli.finite_float)]


def test_every_float_flag_is_finite_float():
    flags = {script: float_flags(script) for script in ALL_SCRIPTS}
    assert all(action.type is not float for script in ALL_SCRIPTS for action in parser_of(script)._actions)
    assert sum(map(len, flags.values())) >= 8, flags  # guidance scale, grounding beta, feather, min box area, ...


@pytest.mark.parametrize("script, flag", [(script, flag) for script in ALL_SCRIPTS for flag in float_flags(script)])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
def test_float_flags_refuse_nan_and_infinity_at_parse_time(script, flag, value, capsys):
    parser = parser_of(script)
    with pytest.raises(SystemExit) as ended:
        parser.parse_args([*REQUIRED[script], f"{flag}={value}"])  # "-inf" alone would read as an option
    err = capsys.readouterr().err
    assert ended.value.code == 2 and f"argument {flag}: {value!r} is not a finite number" in err, err
    assert parser.parse_args([*REQUIRED[script], flag, "0.25"]).__dict__[parser._option_string_actions[flag].dest] == 0.25


@pytest.mark.parametrize("flag", ["--guidance-scale", "--min-box-area", "--min-region-clip", "--feather"])
def test_the_issues_nan_flags_are_refused(flag):
    """Issue 18's cases, as a user types them: exit code 2 and a usage line, nothing run."""
    script = next(script for script in ALL_SCRIPTS if flag in float_flags(script))
    result = run_here(script, *REQUIRED[script], flag, "nan")
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].endswith(f"argument {flag}: 'nan' is not a finite number")


@pytest.mark.parametrize("port, accepted", [("70000", False), ("65536", False), ("-1", False), ("http", False),
                                            ("65535", True), ("1", True), ("0", True)])
def test_port_is_0_to_65535(port, accepted, capsys):
    parser = parser_of("draw_bboxes.py")
    if accepted:
        assert parser.parse_args([*REQUIRED["draw_bboxes.py"], "--port", port]).port == int(port)
        return
    with pytest.raises(SystemExit) as ended:
        parser.parse_args([*REQUIRED["draw_bboxes.py"], "--port", port])
    err = capsys.readouterr().err
    assert ended.value.code == 2 and "argument --port:" in err and ("not a port" in err), err
