"""``audit`` streams: the rows kept on disk (spool), statistics in passes over chunks, the same numbers.

The chunks and the quantiles' bins are made tiny here (STAT_CHUNK, COLLECT_MAX) so that a few thousand rows
take the many-chunk, many-pass path that ten million rows take with the defaults. The chunk stays a multiple of
16, as the default (a power of two) is: see A.STAT_CHUNK.
"""

from __future__ import annotations

import errno
import json
import tempfile

import numpy as np
import pytest
import torch

from dpo_rlhf_checks import audit as A
from dpo_rlhf_checks import losses as L
from dpo_rlhf_checks import stream_stats as S

N = 3000


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stream")
    cols = A.synthetic_pairs(N, seed=5)
    return cols, A.write_pairs(folder / "pairs.jsonl", cols)


@pytest.fixture
def tiny_chunks(monkeypatch):
    # A multiple of 16 (torch's SIMD block; see A.STAT_CHUNK): per-pair losses are then those of one array.
    monkeypatch.setattr(A, "STAT_CHUNK", 96)
    monkeypatch.setattr(S, "COLLECT_MAX", 8)


def numbers(obj, path=""):
    """Every number of a result, by its path (figures and file names left out)."""
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() if key not in ("figures", "file")
                for k, v in numbers(val, f"{path}.{key}").items()}
    if isinstance(obj, list):
        return {k: v for i, val in enumerate(obj) for k, v in numbers(val, f"{path}[{i}]").items()}
    return {path: obj}


def test_many_chunks_and_passes_give_the_in_memory_numbers(sample, monkeypatch):
    cols, path = sample
    config = A.AuditConfig(betas=(0.1, 1.0, 3.0))
    whole = numbers(A.audit(A.read_pairs(path), config))  # one chunk: means are numpy's own
    monkeypatch.setattr(A, "STAT_CHUNK", 96)
    monkeypatch.setattr(S, "COLLECT_MAX", 8)
    streamed = numbers(A.audit(A.read_pairs(path, spool=True), config))
    assert whole.keys() == streamed.keys()
    differ = {k: (whole[k], streamed[k]) for k in whole if whole[k] != streamed[k]}
    # Only means may differ (per-chunk sums added exactly vs numpy's pairwise sum), and by an ulp or so.
    assert all(k.endswith(".mean") for k in differ), differ
    for k, (a, b) in differ.items():
        assert b == pytest.approx(a, rel=1e-14), k
    assert len(whole) > 150


def test_streamed_quantiles_are_numpys_on_the_whole_arrays(sample, tiny_chunks):
    """Against np.quantile of the losses computed on the whole arrays at once, and an independent numpy formula."""
    cols, path = sample
    r = A.audit(A.read_pairs(path, spool=True), A.AuditConfig(betas=(0.1, 1.0)))
    t = {k: torch.from_numpy(v) for k, v in cols.items()}
    dpo = L.dpo_loss(t["chosen_logps"], t["rejected_logps"], t["ref_chosen_logps"], t["ref_rejected_logps"],
                     beta=1.0).losses.numpy()
    assert [r["dpo_loss"]["1"][k] for k in S.QUANTILES] == np.quantile(dpo, list(S.QUANTILES.values())).tolist()
    d_ref = cols["ref_chosen_logps"] - cols["ref_rejected_logps"]
    lcrit = np.logaddexp(0.0, 0.1 * d_ref)  # numpy's, not the library's
    for k, q in S.QUANTILES.items():
        assert r["critical_loss"]["0.1"][k] == pytest.approx(np.quantile(lcrit, q), rel=1e-14)
    d_pol = cols["chosen_logps"] - cols["rejected_logps"]
    assert r["frac_in_undesirable"] == np.mean((d_ref < d_pol) & (d_pol < 0))
    lc, lr = cols["chosen_length"], cols["rejected_length"]
    m_ref = cols["ref_chosen_logps"] / lc - cols["ref_rejected_logps"] / lr
    assert r["sum_vs_mean_ranking_disagreement"]["reference"] == np.mean((d_ref >= 0) != (m_ref >= 0))
    assert r["diagnostics"]["counts"]["in_U"] == int(np.sum((d_ref < d_pol) & (d_pol < 0)))


def test_the_command_line_spools_and_gives_the_library_numbers(sample, tiny_chunks, capsys, monkeypatch):
    cols, path = sample
    spooled = []
    real = A.read_pairs

    def spy(*args, **kwargs):
        data = real(*args, **kwargs)
        spooled.append(isinstance(data.columns, A.SpooledColumns))
        return data

    monkeypatch.setattr(A.cli, "read_pairs", spy)  # where the command line calls it
    assert A.main([str(path), "--json", "--beta", "0.1", "1"]) == 0
    cli = numbers(json.loads(capsys.readouterr().out))
    assert spooled == [True]
    lib = numbers(A.audit(real(path), A.AuditConfig(betas=(0.1, 1.0))))
    assert cli.keys() == lib.keys()
    assert all(cli[k] == lib[k] or (k.endswith(".mean") and cli[k] == pytest.approx(lib[k], rel=1e-14)) for k in cli)


def test_interleaved_readers_of_one_spool(sample):
    """audit reads the sums and the per-token means side by side (two readers of one file)."""
    cols, path = sample
    data = A.read_pairs(path, spool=True)
    a, b = data.chunks(101), data.chunks(101)
    for x, y in zip(a, b):
        for name in x:
            np.testing.assert_array_equal(x[name], y[name])
    for name, col in cols.items():
        np.testing.assert_array_equal(data.columns[name], col)
    assert data.n_pairs == N and list(data.columns) == list(A.read_pairs(path).columns)


def test_pairs_out_numbers_pairs_across_chunks(sample, tiny_chunks, tmp_path, capsys):
    cols, path = sample
    out = tmp_path / "flags.jsonl"
    assert A.main([str(path), "--json", "--pairs-out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["pair"] for r in rows] == list(range(1, N + 1))
    d_ref = cols["ref_chosen_logps"] - cols["ref_rejected_logps"]
    d_pol = cols["chosen_logps"] - cols["rejected_logps"]
    assert [r["delta"] for r in rows] == d_pol.tolist()
    assert [r["in_U"] for r in rows] == ((d_ref < d_pol) & (d_pol < 0)).tolist()


def test_figure_counts_are_the_whole_arrays_histograms(sample, tiny_chunks, tmp_path, monkeypatch):
    import figures.audit as F

    cols, path = sample
    seen = {}

    def capture(bins, counts, violated_fraction, beta, fig_dir, name="audit_delta_ref"):
        seen.update(bins=bins, counts=counts, violated=violated_fraction)
        return []

    monkeypatch.setattr(F, "delta_ref_histogram", capture)
    A.audit(A.read_pairs(path, spool=True), A.AuditConfig(), fig_dir=tmp_path)
    d_ref = cols["ref_chosen_logps"] - cols["ref_rejected_logps"]
    boundary = -(cols["chosen_reward"] - cols["rejected_reward"]) / 0.1
    lo, hi = np.quantile(np.concatenate([d_ref, boundary]), F.RANGE_QUANTILES)
    np.testing.assert_array_equal(seen["bins"], F.histogram_bins(lo, hi))
    bad = d_ref <= boundary
    np.testing.assert_array_equal(seen["counts"]["holds"], np.histogram(d_ref[~bad], seen["bins"])[0])
    np.testing.assert_array_equal(seen["counts"]["violated"], np.histogram(d_ref[bad], seen["bins"])[0])
    np.testing.assert_array_equal(seen["counts"]["boundary"], np.histogram(boundary, seen["bins"])[0])
    assert seen["violated"] == np.mean(bad)


def test_no_room_for_the_spool_is_one_clear_line(sample, capsys, monkeypatch):
    cols, path = sample

    class Full:
        def write(self, _):
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            pass

    monkeypatch.setattr(tempfile, "TemporaryFile", lambda **kw: Full())
    code = A.main([str(path)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "No space left on device" in err and "TMPDIR" in err and str(path) not in err


def test_boundaries_with_exact_ties(tmp_path, tiny_chunks, monkeypatch):
    """U is open (delta_ref < delta < 0) and the assumption fails at equality (delta_ref <= -dr/beta): pairs that sit
    exactly on each boundary, spread over many chunks."""
    import figures.audit as F

    base = [  # ref_chosen, ref_rejected, chosen, rejected, chosen_reward, rejected_reward
        (-3.0, -2.0, -3.0, -2.0, 0.1, 0.0),   # delta = delta_ref = -1: not in U; beta delta_ref + dr = 0: violated
        (-3.0, -2.0, -2.5, -2.0, 0.2, 0.0),   # delta = -0.5 in (-1, 0): in U; 0.1 (-1) + 0.2 > 0: holds
        (-3.0, -2.0, -2.0, -2.0, 0.0, 0.0),   # delta = 0: not in U; violated (< 0)
    ]
    rows = base * 200
    names = ("ref_chosen_logps", "ref_rejected_logps", "chosen_logps", "rejected_logps", "chosen_reward",
             "rejected_reward")
    path = tmp_path / "ties.jsonl"
    path.write_text("".join(json.dumps(dict(zip(names, r))) + "\n" for r in rows))
    seen = {}
    monkeypatch.setattr(F, "delta_ref_histogram", lambda bins, counts, violated, *a, **k: seen.update(v=violated) or [])
    r = A.audit(A.read_pairs(path, spool=True), A.AuditConfig(betas=(0.1,)), fig_dir=tmp_path)
    assert r["frac_in_undesirable"] == pytest.approx(1 / 3, abs=0)
    assert r["assumption_violation_rate"]["0.1"] == pytest.approx(2 / 3, abs=0)
    assert seen["v"] == pytest.approx(2 / 3, abs=0)
    assert r["diagnostics"]["counts"]["in_U"] == 200


def test_the_spool_file_is_closed_with_its_data_or_at_once(sample):
    import gc

    _, path = sample
    data = A.read_pairs(path, spool=True)
    f = data.columns.spool.file
    del data
    gc.collect()
    assert f.closed  # with its owner, not left to a ResourceWarning at exit
    data = A.read_pairs(path, spool=True)
    f = data.columns.spool.file
    data.close()
    assert f.closed
    A.read_pairs(path).close()  # in memory: nothing to close


def test_membership_does_not_read_a_spooled_column(sample, monkeypatch):
    _, path = sample
    data = A.read_pairs(path, spool=True)
    monkeypatch.setattr(A._Spool, "chunks", lambda *a: (_ for _ in ()).throw(AssertionError("read the spool")))
    assert "chosen_logps" in data.columns and "prompt" not in data.columns


def test_torch_simd_tails_are_why_the_chunk_is_a_power_of_two():
    """The reason STAT_CHUNK is a power of two: chunks of 16 give one array's logaddexp, odd chunks need not."""
    x = torch.from_numpy(np.random.default_rng(1).normal(0, 3, 4096))
    z = torch.zeros_like(x)
    whole = torch.logaddexp(x, z).numpy()

    def pieces(w):
        return np.concatenate([torch.logaddexp(x[i:i + w], z[i:i + w]).numpy() for i in range(0, len(x), w)])

    for w in (16, 64, 1024):
        np.testing.assert_array_equal(pieces(w), whole)
    np.testing.assert_allclose(pieces(7), whole, rtol=4e-16)  # at most an ulp apart where they differ


def test_a_chunk_with_every_row_skipped(tmp_path, capsys):
    """--skip-invalid with a parse chunk whose rows are all bad: nothing to spool from it (found by the fuzzer)."""
    path = tmp_path / "pairs.csv"  # CSV with --chunk-rows 1: one line per parse chunk
    path.write_text("ref_chosen_logps,ref_rejected_logps\n-1,-2\n1,-2\n-3,-2\n")  # row 2 positive: skipped
    assert A.main([str(path), "--json", "--skip-invalid", "--chunk-rows", "1"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["n_pairs"] == 2 and r["skipped_rows"]["count"] == 1 and r["reference_ranking_accuracy"] == 0.5


# ---------------------------------------------------------------------------------------------------------------
# Issue 17 item 9: the reading's memory does not grow with the width of the rows


def _peak_reading(path, **kwargs) -> tuple[A.PairData, float]:
    """read_pairs(path, spool=True) and the peak of Python's allocations while it ran (bytes)."""
    import tracemalloc

    tracemalloc.start()
    try:
        data = A.read_pairs(path, spool=True, **kwargs)
        return data, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_wide_rows_are_read_in_chunks_of_bounded_characters(tmp_path, monkeypatch, fmt):
    """3,000 rows with a 20 KB text column (60 MB): with chunks of about 1 Mi characters the reading's peak
    stays near that (it read the whole file at once before: chunk_rows rows of the first line's width)."""
    monkeypatch.setattr(A, "CHUNK_CHARS", 1 << 20, raising=False)
    rng = np.random.default_rng(0)
    rc, rr = -rng.uniform(1, 50, 3000), -rng.uniform(1, 50, 3000)
    path = tmp_path / f"wide.{fmt}"
    with open(path, "w") as f:
        if fmt == "jsonl":
            f.writelines(json.dumps({"prompt": "p" * 20_000, "ref_chosen_logps": a, "ref_rejected_logps": b}) + "\n"
                         for a, b in zip(rc, rr))
        else:  # a quoted cell: the csv module's path, which once kept chunk_rows records whatever their width
            f.write("prompt,ref_chosen_logps,ref_rejected_logps\n")
            f.writelines(f'"{"p" * 20_000}",{a!r},{b!r}\n' for a, b in zip(rc.tolist(), rr.tolist()))
    data, peak = _peak_reading(path)
    try:
        assert data.n_pairs == 3000
        np.testing.assert_array_equal(data.columns["ref_chosen_logps"], rc)
        np.testing.assert_array_equal(data.columns["ref_rejected_logps"], rr)
    finally:
        data.close()
    assert peak < 12e6, f"peak {peak / 1e6:.1f} MB for chunks of 1 Mi characters"  # 60 MB read whole: > 120 MB
    numeric = tmp_path / "narrow.csv"  # the numeric fast path reads whole lines up to the bound too
    A.write_pairs(numeric, {"ref_chosen_logps": rc, "ref_rejected_logps": rr, "chosen_reward": rc * 0,
                            "rejected_reward": rr * 0 - 1})
    monkeypatch.setattr(A, "CHUNK_CHARS", 4096, raising=False)
    data = A.read_pairs(numeric, chunk_rows=7)
    np.testing.assert_array_equal(data.columns["ref_rejected_logps"], rr)


def test_a_50_mb_first_line_is_read_not_a_memory_error(tmp_path):
    """The first line's width once sized every block (chunk_rows times 50 MB: a MemoryError); now one line is
    held once, in a few copies."""
    path = tmp_path / "long_first_line.jsonl"
    with open(path, "w") as f:
        f.write(json.dumps({"ref_chosen_logps": -1.0, "ref_rejected_logps": -2.0, "text": "x" * 50_000_000}) + "\n")
        f.writelines(json.dumps({"ref_chosen_logps": -3.0, "ref_rejected_logps": -2.0, "text": "y"}) + "\n"
                     for _ in range(999))
    data, peak = _peak_reading(path)
    try:
        assert data.n_pairs == 1000
        assert float(np.sum(data.columns["ref_chosen_logps"])) == -1.0 - 3.0 * 999
    finally:
        data.close()
    assert peak < 4 * 50e6, f"peak {peak / 1e6:.0f} MB for a 50 MB line"


def test_impossible_chunk_rows_is_one_line(sample, capsys):
    _, jsonl = sample
    for value in ("10000000000000", "0", "-5"):
        assert A.main([str(jsonl), "--chunk-rows", value]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("error: paper_checks.py audit: --chunk-rows must be "
                                                             "between 1 and 10,000,000"), err
    with pytest.raises(ValueError, match="chunk_rows must be between 1 and"):
        A.read_pairs(jsonl, chunk_rows=10**13)


def test_negative_cpo_gamma_is_one_line(sample, capsys):
    """Issue 17 item 11: --cpo-gamma -1 was accepted (c9d097b only required it finite); gamma weighs a margin."""
    _, jsonl = sample
    for value in ("-1", "-1e-300", "nan"):
        assert A.main([str(jsonl), "--cpo-gamma", value]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "cpo_gamma must be a finite number >= 0" in err, err
    assert A.main([str(jsonl), "--cpo-gamma", "0", "--json"]) == 0
    capsys.readouterr()


def test_violation_counts_on_pairs_counted_by_hand():
    """violation_counts had no test of its own (a dropped dr or a flipped sign in beta delta_ref + dr survived the
    mutation sample). Pairs violate the assumption where beta delta_ref + dr <= 0 (docs/theory.md §3); counted by
    hand: beta 0.25 -> pairs 2, 3; beta 1 -> pairs 0, 3; beta 4 -> pairs 0, 1, 3 (pair 3 sits on the boundary)."""
    from dpo_rlhf_checks.audit import violation_counts

    delta_ref = np.array([-1.0, -1.0, 2.0, 0.0])
    dr = np.array([0.5, 2.0, -1.0, 0.0])
    counts = violation_counts(delta_ref, dr, [0.25, 1.0, 4.0])
    assert counts.dtype == np.int64 and counts.tolist() == [2, 2, 3]


def test_reference_only_streamed_quantiles_are_numpys(sample, tiny_chunks, tmp_path):
    """Without a policy only the critical losses have quantiles, and they need further passes on their own (no
    DPO-loss accumulator pending beside them): still np.quantile of softplus(beta delta_ref), computed here."""
    cols, _ = sample
    ref = {k: cols[k] for k in ("ref_chosen_logps", "ref_rejected_logps")}
    path = A.write_pairs(tmp_path / "ref.jsonl", ref)
    r = A.audit(A.read_pairs(path, spool=True), A.AuditConfig(betas=(0.1, 1.0)))
    assert r["dpo_loss"] is None
    d_ref = ref["ref_chosen_logps"] - ref["ref_rejected_logps"]
    for key, beta in (("0.1", 0.1), ("1", 1.0)):
        lcrit = np.logaddexp(0.0, beta * d_ref)
        for k, q in S.QUANTILES.items():
            assert r["critical_loss"][key][k] == pytest.approx(np.quantile(lcrit, q), rel=1e-14), (key, k)


def test_a_pair_exactly_at_the_margin_is_neither_above_it_nor_certified(tmp_path):
    """delta = m exactly (binary-exact numbers): not above the margin (delta > m is strict) and not certified (the
    loss equals the critical loss, not below it), so the certificate and the margin count agree: mismatch 0."""
    # margin 0.5; deltas 0.5 (at the margin), 1.5 (above), -1 (below); delta_ref = 0 for all
    cols = {"ref_chosen_logps": np.array([-2.0, -2.0, -2.0]), "ref_rejected_logps": np.array([-2.0, -2.0, -2.0]),
            "chosen_logps": np.array([-1.5, -1.0, -3.0]), "rejected_logps": np.array([-2.0, -2.5, -2.0])}
    r = A.audit_arrays(cols, A.AuditConfig(betas=(1.0,), margin=0.5))
    assert r["fraction_delta_above_margin"] == 1 / 3
    assert r["certified_fraction"]["dpo"]["1"] == 1 / 3
    assert r["certificate_mismatch_fraction"]["dpo"]["1"] == 0.0
