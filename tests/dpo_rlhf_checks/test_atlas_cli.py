"""paper_checks.py atlas: arguments, the --losses filter, the two methods' agreement, the LM column's guard."""

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from dpo_rlhf_checks import atlas

ROOT = Path(__file__).resolve().parents[2]


def _run(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "paper_checks.py", "atlas", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_unknown_loss_is_one_line_error(tmp_path):
    proc = _run("--losses", "ipo,nonsense", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "unknown loss(es) nonsense" in proc.stderr and "Traceback" not in proc.stderr


def test_select_rows_filters_by_loss():
    rows = atlas.select_rows("ipo,hinge")
    assert {r.loss for r in rows} == {"ipo", "hinge"} and len(rows) == 9
    with pytest.raises(ValueError, match="names no loss"):
        atlas.select_rows(" , ")


def test_quick_atlas_for_two_losses_agrees(tmp_path):
    out = tmp_path / "o"
    proc = _run("--losses", "ipo,sigmoid", "--quick", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    data = json.loads((out / "atlas.json").read_text())
    assert set(data["rows"]) == {"sigmoid[beta=0.1]", "sigmoid[beta=0.1,forward_kl]", "sigmoid[beta=0.1,js_divergence]",
                                 "sigmoid[beta=0.1,alpha_divergence(a=0.5)]", "ipo[beta=0.1]", "ipo[beta=0.1,n=10]",
                                 "ipo[beta=0.1,forward_kl]", "ipo[beta=0.1,js_divergence]",
                                 "ipo[beta=0.1,alpha_divergence(a=0.5)]"}
    for key, row in data["rows"].items():
        agree = {k: v for k, v in row["agree"].items() if not k.startswith("_")}
        assert agree and all(agree.values()), (key, agree)
    ipo10 = data["rows"]["ipo[beta=0.1,n=10]"]
    assert ipo10["symbolic"]["beta_D"] == pytest.approx(5.0) and ipo10["bandit"]["beta_D"] == pytest.approx(5.0, abs=1e-6)
    assert data["lm"]["status"] == "skipped (--quick)"
    md = (out / "atlas.md").read_text()
    assert "DISAGREE" not in md and "`ipo[beta=0.1,n=10]` | absorbing | 0.5 | 5 / 5" in md
    assert (out / "figures" / "atlas_phase.png").exists() and (out / "figures" / "atlas_time_in_U.png").exists()


def test_lm_column_not_built_without_the_module(monkeypatch):
    monkeypatch.setitem(sys.modules, "toy_lm.atlas_lm", None)  # import raises ImportError
    import toy_lm

    monkeypatch.delattr(toy_lm, "atlas_lm", raising=False)  # once imported, `from toy_lm import` reads the attribute
    assert atlas.lm_column(["ipo"], 0, quick=False)["status"].startswith("not built")


def test_lm_column_ignores_a_module_from_another_checkout(monkeypatch):
    fake = types.ModuleType("toy_lm.atlas_lm")
    fake.__file__ = "/elsewhere/toy_lm/atlas_lm.py"
    fake.run_atlas_lm = lambda *a, **k: pytest.fail("must not run a module from another checkout")
    monkeypatch.setitem(sys.modules, "toy_lm.atlas_lm", fake)
    import toy_lm

    monkeypatch.setattr(toy_lm, "atlas_lm", fake, raising=False)
    assert atlas.lm_column(["ipo"], 0, quick=False)["status"].startswith("not built (toy_lm.atlas_lm is not in this")


def test_lm_column_reads_run_atlas_lm(monkeypatch):
    fake = types.ModuleType("toy_lm.atlas_lm")
    fake.__file__ = str(ROOT / "toy_lm" / "atlas_lm.py")  # as if it were in this checkout
    calls = []

    def run_atlas_lm(loss_names, *, seed=0, progress=True):
        calls.append((tuple(loss_names), seed))
        return {"ipo": {"predicted_frac_in_U": 0.5, "observed_frac_in_U": 0.4, "interval": [-0.2, 0.0],
                        "n_seeds": 3, "decided": True, "cell": {"beta": 0.1, "optimizer": "sgd", "steps": 100}}}
    fake.run_atlas_lm = run_atlas_lm
    monkeypatch.setitem(sys.modules, "toy_lm.atlas_lm", fake)
    import toy_lm

    monkeypatch.setattr(toy_lm, "atlas_lm", fake, raising=False)
    col = atlas.lm_column(["ipo"], 7, quick=False)
    assert col["status"] == "ran" and calls == [(("ipo",), 7)]
    table = {"ipo[beta=0.1]": {"setting": {"loss": "ipo", "f_divergence_type": "reverse_kl"}, "symbolic": {"class": "absorbing", "t_f": 0.5, "beta_D": 0.5},
                               "bandit": {"class": "absorbing", "beta_D": 0.5}, "agree": {"class": True}}}
    md = atlas.markdown(table, None, col, [], Path("."))
    assert "pred 0.5, obs 0.4, obs - pred in ['-0.2', '0'], 3 seeds, decided True (beta 0.1, sgd, 100 steps)" in md


def test_lm_names_skip_batch_coupled_and_mark_f_divergences():
    from dpo_rlhf_checks.atlas_rows import Setting

    assert atlas.lm_name(Setting("aot")) is None
    assert atlas.lm_name(Setting("ipo", n=10)) == "ipo"
    assert atlas.lm_name(Setting("hinge", f_div="js_divergence")) == "hinge@js_divergence"


def test_sigint_is_one_line_and_leaves_out_as_it_was(tmp_path):
    import os
    import signal
    import time

    out = tmp_path / "o"
    err = tmp_path / "err"
    with open(err, "w") as fh:
        proc = subprocess.Popen([sys.executable, "paper_checks.py", "atlas", "--quick", "--out", str(out)], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=fh, text=True, env={**os.environ})
    try:
        deadline = time.time() + 120
        while "atlas:" not in err.read_text() and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(1)
        proc.send_signal(signal.SIGINT)
        stdout, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = err.read_text()
    assert proc.returncode == 130 and "Traceback" not in text and stdout == "", text[-2000:]
    last = text.rstrip("\n").split("\n")[-1]
    assert last.startswith("paper_checks.py atlas: interrupted; nothing written") and last.endswith("(SIGINT)"), last
    assert not (out / "atlas.md").exists() and not (out / "atlas.json").exists()
