"""dpo_rlhf_checks.paths: an output path that is an input, by any name (issue 17 item 6)."""

from __future__ import annotations

import os

from dpo_rlhf_checks.paths import output_overwrites_input


def test_same_file_by_every_name(tmp_path):
    data = tmp_path / "x.jsonl"
    data.write_text("{}\n")
    (tmp_path / "sub").mkdir()
    link = tmp_path / "link.jsonl"
    link.symlink_to(data)
    hard = tmp_path / "hard.jsonl"
    os.link(data, hard)
    cases = {
        data: "",
        tmp_path / "sub" / ".." / "x.jsonl": "",
        link: "(through a symbolic link)",
        hard: "(a hard link to it)",
    }
    for out, how in cases.items():
        problem = output_overwrites_input(out, [tmp_path / "other.jsonl", data])
        assert problem is not None and problem.startswith(f"{out} is the input file {data}"), (out, problem)
        assert how in problem and "destroy the input" in problem
    # The input given through the link, the output by its real name: still the same file.
    assert "symbolic link" in output_overwrites_input(data, [link])


def test_other_paths_pass(tmp_path):
    data = tmp_path / "x.jsonl"
    data.write_text("{}\n")
    copy = tmp_path / "copy.jsonl"
    copy.write_text("{}\n")  # same content, another file
    assert output_overwrites_input(copy, [data]) is None
    assert output_overwrites_input(tmp_path / "new.jsonl", [data]) is None  # does not exist yet
    assert output_overwrites_input(data, [tmp_path / "missing.jsonl"]) is None
    assert output_overwrites_input(data, []) is None


def test_a_file_inside_an_input_folder_is_refused_and_labelled(tmp_path):
    """score reads model and datasets folders: an output inside one would change an input (shared with audit)."""
    folder = tmp_path / "model"
    folder.mkdir()
    problem = output_overwrites_input(folder / "config.json", {"--model": folder})
    assert problem == (f"{folder / 'config.json'} is inside the input --model folder {folder}; writing it would "
                       "change the input: give another path")
    data = tmp_path / "d.jsonl"
    data.write_text("{}\n")
    assert output_overwrites_input(data, {"--data": data}).startswith(f"{data} is the input --data {data};")
    assert output_overwrites_input(tmp_path / "elsewhere.jsonl", {"--model": folder, "--data": data}) is None


def test_output_file_problem_is_shared_by_audit_and_score(tmp_path):
    """One check serves audit's --pairs-out and score's --out/--pairs-out; a str keeps a trailing '/'."""
    from dpo_rlhf_checks.audit import cli as audit_cli
    from dpo_rlhf_checks import paths, score

    assert audit_cli.output_file_problem is paths.output_file_problem is score.output_file_problem
    assert paths.output_file_problem(str(tmp_path) + "/new/") == f"{tmp_path}/new/ is a folder; give a file name"
    assert paths.output_file_problem(tmp_path / "missing" / "f.jsonl") == f"folder {tmp_path / 'missing'} does not exist"
    assert paths.output_file_problem(tmp_path / "ok.jsonl") is None
    assert not list(tmp_path.iterdir())  # the write test leaves nothing behind
