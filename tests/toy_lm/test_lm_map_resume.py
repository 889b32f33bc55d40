"""Long ``lm-map`` runs lose nothing (issue 20, section 3): a map stopped by SIGKILL, SIGINT or SIGTERM after N
finished units resumes with ``--resume`` from them, and writes the files an uninterrupted map writes, byte for
byte; a resume with other settings is refused.

Compared: every file the map writes (lm_map_records.npz and the 8 figures, PDF and PNG, byte for byte);
lm_map.md and lm_map.json byte for byte except the measured seconds (one place in each, masked by a pattern
that must match exactly once): wall-clock time differs between any two runs, interrupted or not.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dpo_rlhf_checks.cli import main as cli_main
from toy_lm.map_progress import PROGRESS_DIR, RECORD

ROOT = Path(__file__).resolve().parents[2]
# 3 seeds in chunks of 2 (seeds 0, 1 trained as one batched model, seed 2 alone), 2 betas x 2 optimizers x 4 methods:
# 2 reference units, 16 cells x 2 chunks = 32 training units, 16 prediction units.
TINY = {"n_train_prompts": 4, "n_heldout_prompts": 2, "n_embd": 16, "sft_steps": 10, "steps": 5, "seeds": [0, 1, 2],
        "max_seeds": 3, "methods": ["dpo", "dpo_bt", "cpo_clip", "cpo_clip_bt"], "betas": [0.5, 2.5],
        "tabular_max_steps": 200, "batch_replicas": 2}
N_UNITS = 2 + 32 + 16
MASKS = {"lm_map.md": rb"; \d+ s \(\d+ s training, \d+ s prediction\) on ",
         "lm_map.json": rb'\n "seconds": [0-9.eE+-]+,\n'}


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "TOY_LM_THREADS": "1"}


def _cmd(cfg, out, *extra, delay=0.0, kill="-"):
    return [sys.executable, str(Path(__file__).with_name("lm_map_slow_run.py")), str(delay), kill,
            "--lm-config", str(cfg), "--out", str(out), "--device", "cpu", *extra]


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """The tiny config and the output folder of an uninterrupted map."""
    root = tmp_path_factory.mktemp("lm_map")
    cfg = root / "tiny.json"
    cfg.write_text(json.dumps(TINY))
    t0 = time.perf_counter()
    done = subprocess.run(_cmd(cfg, root / "whole"), env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return cfg, root / "whole", time.perf_counter() - t0


def _files(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                  if p.is_file() and not p.name.startswith("."))


def assert_same_outputs(a: Path, b: Path) -> None:
    names = _files(a)
    assert names == _files(b)
    # md, json, npz, 4 map figures and lm-kernel-prediction's 3 (run on the map's stage) x (pdf, png)
    assert len(names) == 3 + 8 + 6, names
    for name in names:
        x, y = (a / name).read_bytes(), (b / name).read_bytes()
        if name in MASKS:
            (x, nx), (y, ny) = (re.subn(MASKS[name], b"<seconds>", v) for v in (x, y))
            assert nx == ny == 1, f"{name}: the seconds pattern matched {nx} and {ny} times"
        assert x == y, f"{name} differs from the uninterrupted run's"


def _units(out: Path) -> int:
    try:
        return len(json.loads((out / PROGRESS_DIR / RECORD).read_text())["units"])
    except (OSError, ValueError, KeyError):
        return 0


def _interrupt_after(cfg, out, n_units: int, sig) -> subprocess.CompletedProcess:
    """Start a map whose units each take >= 0.1 s, send ``sig`` once ``n_units`` are saved (mid-unit)."""
    proc = subprocess.Popen(_cmd(cfg, out, delay=0.1), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 240
    while _units(out) < n_units and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the map finished before it could be interrupted"
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def _resume(cfg, out) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    done = subprocess.run(_cmd(cfg, out, "--resume"), env=_env(), capture_output=True, text=True, timeout=300)
    return done, time.perf_counter() - t0


@pytest.mark.parametrize("sig,n_units", [pytest.param(signal.SIGKILL, 9, marks=pytest.mark.slow), (signal.SIGINT, 20),
                                         pytest.param(signal.SIGTERM, 40, marks=pytest.mark.slow)])
def test_interrupted_map_resumes_to_identical_files(whole, tmp_path, sig, n_units):
    """9: in the training of the first optimizer; 20: mid-training; 40: in the predictions (34 training units)."""
    cfg, ref_out, _ = whole
    out = tmp_path / "o"
    stopped = _interrupt_after(cfg, out, n_units, sig)
    kept = _units(out)
    assert n_units <= kept < N_UNITS
    assert not (out / "lm_map.json").exists()  # nothing of a half map among the final files
    if sig == signal.SIGKILL:
        assert stopped.returncode == -signal.SIGKILL
    else:
        name = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}[sig]
        assert stopped.returncode == 128 + sig
        assert stopped.stderr.strip().splitlines()[-1] == (
            f"paper_checks.py lm-map: interrupted; {out}'s files are as they were, and {kept} finished units of the "
            f"map are kept in {out / PROGRESS_DIR}: rerun the same command with --resume to continue from them "
            f"({name})")
    done, _ = _resume(cfg, out)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"[lm-map] resuming: {kept} finished units in {out / PROGRESS_DIR}" in done.stderr
    assert_same_outputs(ref_out, out)
    assert not (out / PROGRESS_DIR).exists()  # a finished map removes its units


def test_killed_while_writing_a_unit_resumes_to_identical_files(whole, tmp_path):
    """SIGKILL between a unit's file and the progress record that lists it: the unit is computed again."""
    cfg, ref_out, _ = whole
    out = tmp_path / "o"
    killed = subprocess.run(_cmd(cfg, out, kill="mid-write:12"), env=_env(), capture_output=True, text=True,
                            timeout=300)
    assert killed.returncode == -signal.SIGKILL
    assert _units(out) == 11 and any(p.name.endswith(".tmp") for p in (out / PROGRESS_DIR).iterdir())
    done, _ = _resume(cfg, out)
    assert done.returncode == 0, done.stderr[-2000:]
    assert_same_outputs(ref_out, out)


@pytest.fixture
def partial(whole, tmp_path):
    """An output folder holding the progress of a map killed after 6 units."""
    cfg, _, _ = whole
    out = tmp_path / "o"
    killed = subprocess.run(_cmd(cfg, out, kill="mid-write:7"), env=_env(), capture_output=True, text=True,
                            timeout=300)
    assert killed.returncode == -signal.SIGKILL and _units(out) == 6
    return cfg, out


def _refused(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        cli_main(["lm-map", *argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_resume_with_other_settings_is_refused(partial, tmp_path, capsys, monkeypatch):
    cfg, out = partial
    monkeypatch.setenv("TOY_LM_THREADS", "1")
    record = (out / PROGRESS_DIR / RECORD).read_bytes()
    prefix = f"paper_checks.py lm-map: error: --resume: {out / PROGRESS_DIR} is from a different run ("
    suffix = "); rerun with the same settings, or without --resume to start afresh"
    base = ["--lm-config", str(cfg), "--out", str(out), "--device", "cpu", "--resume"]
    assert _refused([*base, "--seed", "1"], capsys) == prefix + "--seed differs" + suffix
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**TINY, "steps": 6}))
    assert _refused([*base[:1], str(other), *base[2:]], capsys) == prefix + "the LM config differs" + suffix
    monkeypatch.setenv("TOY_LM_THREADS", "2")
    assert _refused(base, capsys) == prefix + "torch's CPU threads (TOY_LM_THREADS) differ" + suffix
    monkeypatch.setenv("TOY_LM_THREADS", "1")
    tampered = json.loads(record)
    tampered["fingerprint"]["code"] = "0" * 64  # as a record written before the training code changed
    (out / PROGRESS_DIR / RECORD).write_text(json.dumps(tampered))
    assert _refused(base, capsys) == prefix + "the training or prediction code changed" + suffix
    (out / PROGRESS_DIR / RECORD).write_bytes(record)
    assert (out / PROGRESS_DIR / RECORD).read_bytes() == record  # a refused resume leaves the units as they were
    assert not (out / "lm_map.json").exists()


def test_resume_without_a_record_is_refused_up_front(whole, tmp_path, capsys):
    cfg, _, _ = whole
    out = tmp_path / "empty"
    out.mkdir()
    err = _refused(["--lm-config", str(cfg), "--out", str(out), "--device", "cpu", "--resume"], capsys)
    assert err == (f"paper_checks.py lm-map: error: --resume: no progress record in {out / PROGRESS_DIR}: the map "
                   f"into {out} finished, or never finished a unit; rerun without --resume")


@pytest.mark.slow
def test_a_run_without_resume_starts_afresh(partial):
    """Old units are discarded, not silently mixed into a run that did not ask for them."""
    cfg, out = partial
    (out / PROGRESS_DIR / "unit00000.pt").write_bytes(b"not weights")
    done = subprocess.run(_cmd(cfg, out), env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming" not in done.stderr and not (out / PROGRESS_DIR).exists()


def test_a_crash_keeps_the_finished_units_and_says_resume(whole, tmp_path, monkeypatch, capsys):
    """A training step that raises (in-process) after 5 training units: one line naming --resume, the traceback
    as before; the resumed map (in-process) writes the uninterrupted (subprocess) run's files."""
    import toy_lm.stage as S

    cfg, ref_out, _ = whole
    out = tmp_path / "o"
    monkeypatch.setenv("TOY_LM_THREADS", "1")
    real, calls = S.train_preference_batched, {"n": 0}

    def crash_at_the_6th(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:
            raise RuntimeError("planted crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(S, "train_preference_batched", crash_at_the_6th)
    argv = ["lm-map", "--lm-config", str(cfg), "--out", str(out), "--device", "cpu"]
    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match="planted crash"):
        cli_main(argv)
    crash_wall = time.perf_counter() - t0
    assert _units(out) == 2 + 5
    # each kept unit records the seconds it took (a clock reading instead, ~8e4 s each, survived mutation and made a
    # resumed map's header say 399214 s)
    units = json.loads((out / PROGRESS_DIR / RECORD).read_text())["units"]
    assert all(0 < u["seconds"] <= crash_wall for u in units.values()), units
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"paper_checks.py lm-map: error: RuntimeError during the map; 7 finished units are kept in "
        f"{out / PROGRESS_DIR}: rerun the same command with --resume to continue from them")
    monkeypatch.setattr(S, "train_preference_batched", real)

    def no_retraining(*args, **kwargs):  # both reference units were saved before the crash: they must be loaded
        raise AssertionError("a saved reference unit was retrained on resume")

    monkeypatch.setattr(S, "train_reference_batched", no_retraining)
    t0 = time.perf_counter()
    assert cli_main([*argv, "--resume"]) == 0
    resume_wall = time.perf_counter() - t0
    assert_same_outputs(ref_out, out)
    assert 0 < json.loads((out / "lm_map.json").read_text())["seconds"] <= crash_wall + resume_wall


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupt_names_its_signal_and_exits_128_plus_it(whole, tmp_path, monkeypatch, capsys, sig):
    """In-process and fast (the SIGTERM subprocess test above is slow-marked, so the default run and the mutation
    runner never ran it): the handler's KeyboardInterrupt(SIGTERM) during training (after the 2 reference units) is
    reported as SIGTERM with exit code 143, a Ctrl-C (KeyboardInterrupt with no signal number) as SIGINT with 130."""
    import toy_lm.stage as S

    cfg, _, _ = whole
    monkeypatch.setenv("TOY_LM_THREADS", "1")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt(sig) if sig == signal.SIGTERM else KeyboardInterrupt()

    monkeypatch.setattr(S, "train_preference_batched", interrupted)
    out = tmp_path / "o"
    code = cli_main(["lm-map", "--lm-config", str(cfg), "--out", str(out), "--device", "cpu"])
    name = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT"}[sig]
    assert code == 128 + int(sig)
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("paper_checks.py lm-map: interrupted; ") and last.endswith(f"({name})")
    assert _units(out) == 2


def test_the_code_fingerprint_follows_imports_inside_functions_and_from_module_to_module():
    """--resume refuses units whose code fingerprint differs; the fingerprint hashes toy_lm and the toolkit modules it
    imports. It read only toy_lm's top-level `from dpo_rlhf_checks.x import` lines, so dpo_rlhf_checks/report.py
    (imported inside lm_map's run, which computes the claims from the units) and tracing.py were left out, and an edit
    to them did not stop a resume (a helper's finding while reviewing seed 1120). Pins: those two are in, so is
    toy_bandits/dynamics.py (imported by toy_lm/tabular.py, whose prediction the units store), and modules nothing in
    toy_lm reaches (toy_bandits/maps.py, theory/gpo_atlas.py) are out."""
    from toy_lm.map_progress import _ROOT, code_files

    files = {f.relative_to(_ROOT).as_posix() for f in code_files()}
    assert {"dpo_rlhf_checks/report.py", "dpo_rlhf_checks/tracing.py", "dpo_rlhf_checks/losses.py",
            "toy_bandits/dynamics.py", "toy_lm/train.py", "toy_lm/map_progress.py"} <= files
    assert not files & {"toy_bandits/maps.py", "theory/gpo_atlas.py", "dpo_rlhf_checks/score.py"}


def test_code_fingerprint_changes_when_a_code_file_is_renamed(tmp_path, monkeypatch):
    """The record's code hash covers each code file's path as well as its bytes: renaming toy_lm/a.py to a2.py
    (same bytes, same order) changes it, and so does an edit (a survivor of mutation: dropping the path from the
    hash left a rename unseen by --resume)."""
    import toy_lm.map_progress as mp

    (tmp_path / "toy_lm").mkdir()
    (tmp_path / "toy_lm" / "a.py").write_text("x = 1\n")
    (tmp_path / "toy_lm" / "b.py").write_text("y = 2\n")

    class Cfg:
        def to_dict(self):
            return {"k": 1}

    monkeypatch.setattr(mp, "_ROOT", tmp_path)
    monkeypatch.setattr(mp, "code_files", lambda: sorted((tmp_path / "toy_lm").glob("*.py")))
    before = mp.fingerprint(Cfg(), 0, "cpu", 1)["code"]
    (tmp_path / "toy_lm" / "a.py").rename(tmp_path / "toy_lm" / "a2.py")
    renamed = mp.fingerprint(Cfg(), 0, "cpu", 1)["code"]
    (tmp_path / "toy_lm" / "a2.py").write_text("x = 3\n")
    edited = mp.fingerprint(Cfg(), 0, "cpu", 1)["code"]
    assert before != renamed
    assert renamed != edited
