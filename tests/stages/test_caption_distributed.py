"""Stage 1 under torchrun: two processes split the captioning, and the first writes what a one-process run writes."""

from tests.helpers.scripts import ROOT, run_here, run_python

SCRIPT = "generate_prompt_blip2.py"
FAST = ["--max-new-tokens", "8", "--device", "cpu", "--dtype", "float32", "--num-workers", "0"]
MANY = ["--allow-multi-category", "--max-objects", "10"]  # most of the sample set


def test_two_processes_write_the_files_of_one(sample_dataset, tiny_models, tmp_path):
    common = ["-i", sample_dataset / "images", "-a", sample_dataset / "annotations.json", "--model", tiny_models / "blip2",
              *FAST, *MANY, "--batch-size", "2"]
    one = run_here(SCRIPT, *common, "-o", tmp_path / "one")  # only the torchrun run is about the command line
    assert one.returncode == 0, one.stderr
    two = run_python("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", ROOT / SCRIPT, *common, "-o", tmp_path / "two",
                     timeout=600)
    assert two.returncode == 0, two.stderr

    captioned = int(next(line for line in one.stdout.splitlines() if line.strip().startswith("captioned ")).split()[-1])
    assert captioned >= 9
    rank1 = int(next(line for line in two.stdout.splitlines() if line.startswith("rank 1: captioned")).split()[-1])
    assert rank1 == captioned // 2  # every second record
    summary = [line for line in two.stdout.splitlines() if line.startswith("  ")]
    assert summary == [line for line in one.stdout.splitlines() if line.startswith("  ")]  # the same counts, all of them

    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*") if p.is_file())  # no rank file left
    for name in files:
        a, b = (tmp_path / "one" / name).read_bytes(), (tmp_path / "two" / name).read_bytes()
        if name.name == "blip2.partial.jsonl":  # the same captions, in the order the processes finished them
            assert sorted(a.splitlines()) == sorted(b.splitlines())
        else:
            assert a == b, name
