"""``lm-map --resume``: the finished units of a map, kept on disk as they finish, so an interrupted map resumes.

A map is made of units, each a pure function of the config, the seed and the units before it:
  - ``ref``: the reference SFT of one chunk of seeds (kept: the reference weights);
  - ``train``: the preference training of one cell (beta, optimizer, method) for one chunk of seeds (kept: the
    per-step records, :class:`toy_lm.train.RunRecord`);
  - ``predict``: the tabular prediction of one cell for every seed (kept: :class:`toy_lm.predict.Comparison`).
Each finished unit is written into ``OUT/.lm_map-progress/`` (its file first, renamed into place, then the progress
record ``progress.json``, renamed over the old one), so a unit is either whole and listed or not listed. A resumed
run loads the listed units instead of computing them and computes the rest; the chunks of seeds are the same as in
the first run (the same ``batch_replicas``), so every number, and every output file, is the one an uninterrupted
run writes (tests/toy_lm/test_lm_map_resume.py).

The record carries a fingerprint of what decides the numbers (the config, the seed offset, the device, torch's CPU
threads, the source of the training and prediction code, the torch and numpy versions); ``--resume`` refuses a
record whose fingerprint differs and says which part. Files are read back with ``allow_pickle=False`` and
``torch.load(weights_only=True)``: the record holds arrays and weights, never code.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

PROGRESS_DIR = ".lm_map-progress"
RECORD = "progress.json"
FORMAT = "paper_checks.py lm-map progress"
VERSION = 1
_ROOT = Path(__file__).resolve().parents[1]


def progress_dir(out: Path) -> Path:
    return Path(out) / PROGRESS_DIR


_PACKAGES = ("toy_lm", "dpo_rlhf_checks", "toy_bandits", "theory")
_IMPORT = re.compile(r"^[ \t]*(?:from[ \t]+(\w+(?:\.\w+)*)[ \t]+import[ \t]+([\w \t,()*]+)|import[ \t]+(\w+(?:\.\w+)*))",
                     flags=re.M)


def _module_file(name: str) -> Path | None:
    path = _ROOT.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def code_files() -> list[Path]:
    """The source that computes the units: every module of toy_lm and every toolkit module they import, followed
    from module to module, imports inside functions included (before: only the top-level ``from dpo_rlhf_checks.x
    import`` lines of toy_lm, so an edit to a module imported inside a function, or one import further, did not stop
    a ``--resume``)."""
    todo = sorted((_ROOT / "toy_lm").glob("*.py"))
    seen: set[Path] = set()
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        for base, names, plain in _IMPORT.findall(f.read_text()):
            mod = base or plain
            if mod.split(".", 1)[0] not in _PACKAGES:
                continue
            found = [_module_file(mod)]
            if base:  # from pkg import name: name may be a module of pkg
                found += [_module_file(f"{mod}.{n.strip()}") for n in re.split(r"[,()\s]+", names) if n.strip()]
            todo.extend(p for p in found if p is not None and p not in seen)
    return sorted(seen)


def fingerprint(cfg, seed_offset: int, device: str, threads: int) -> dict[str, Any]:
    """What must be equal for a resumed run to continue another exactly (each part compared on its own)."""
    code = hashlib.sha256()
    for f in code_files():
        code.update(f.relative_to(_ROOT).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    config = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()
    return {"config": config, "seed": int(seed_offset), "device": str(device), "threads": int(threads),
            "code": code.hexdigest(), "torch": torch.__version__, "numpy": np.__version__}


_WHY = {"config": "the LM config differs", "seed": "--seed differs", "device": "the device differs",
        "threads": "torch's CPU threads (TOY_LM_THREADS) differ", "code": "the training or prediction code changed",
        "torch": "the torch version differs", "numpy": "the numpy version differs"}


class ResumeMismatch(ValueError):
    """The progress record is from a run with other settings (the message names them)."""


def read_record(out: Path) -> dict | None:
    """The progress record in ``out``, or None when there is none (or it cannot be read as one)."""
    path = progress_dir(out) / RECORD
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("format") == FORMAT else None


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class MapProgress:
    """The progress folder of one map run: ``load_*`` returns a finished unit (or None), ``save_*`` adds one.

    ``MapProgress(out, fp, resume=False)`` starts afresh (an old folder is removed); ``resume=True`` continues the
    record in ``out``, raising :class:`ResumeMismatch` when its fingerprint is not ``fp``. Call under the lock on
    ``out`` (dpo_rlhf_checks.outdir.StagedOutput): no other run writes the folder meanwhile.
    """

    def __init__(self, out: Path, fp: dict[str, Any], resume: bool):
        self.dir = progress_dir(out)
        self.fp = fp
        self.loaded = {"ref": 0.0, "train": 0.0, "predict": 0.0}  # seconds the loaded units took when computed
        self.n_loaded = 0
        if resume:
            record = read_record(out)
            if record is None:
                raise ResumeMismatch(f"no progress record {self.dir / RECORD}: the run into {out} finished, or never "
                                     "finished a unit; rerun without --resume")
            old = record.get("fingerprint", {})
            differ = [k for k in fp if old.get(k) != fp[k]]
            if differ:
                raise ResumeMismatch(f"{self.dir} is from a different run ({'; '.join(_WHY[k] for k in differ)}); "
                                     "rerun with the same settings, or without --resume to start afresh")
            self.units: dict[str, dict] = dict(record.get("units", {}))
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.units = {}
        self.n_at_start = len(self.units)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._write_record()

    # -- record
    def _write_record(self) -> None:
        record = {"format": FORMAT, "version": VERSION, "fingerprint": self.fp, "units": self.units}
        _atomic_write(self.dir / RECORD, lambda fh: fh.write(json.dumps(record, indent=1).encode()))

    def _add(self, name: str, kind: str, write, seconds: float, suffix: str) -> None:
        file = f"unit{len(self.units):05d}{suffix}"
        _atomic_write(self.dir / file, write)
        self.units[name] = {"file": file, "kind": kind, "seconds": round(float(seconds), 6)}
        self._write_record()

    def _get(self, name: str) -> Path | None:
        unit = self.units.get(name)
        if unit is None:
            return None
        self.loaded[unit["kind"]] += unit["seconds"]
        self.n_loaded += 1
        return self.dir / unit["file"]

    def finish(self) -> None:
        """The map's files are in place: the progress folder is no longer needed."""
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- references
    @staticmethod
    def _ref_name(seeds: list[int]) -> str:
        return "ref/seeds=" + ",".join(map(str, seeds))

    def load_references(self, seeds: list[int], models: list[torch.nn.Module]) -> bool:
        """Load the reference weights of ``seeds`` into ``models`` (fresh models of the right shape); False when
        this unit is not finished."""
        path = self._get(self._ref_name(seeds))
        if path is None:
            return False
        state = torch.load(path, map_location="cpu", weights_only=True)
        for seed, model in zip(seeds, models):
            prefix = f"{seed}/"
            model.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
            model.eval()
            for p in model.parameters():
                p.requires_grad_(False)
        return True

    def save_references(self, seeds: list[int], models: list[torch.nn.Module], seconds: float) -> None:
        state = {f"{seed}/{k}": v.detach().cpu().clone() for seed, m in zip(seeds, models)
                 for k, v in m.state_dict().items()}
        self._add(self._ref_name(seeds), "ref", lambda fh: torch.save(state, fh), seconds, ".pt")

    # -- preference training of one cell
    @staticmethod
    def _cell_name(kind: str, key, seeds: list[int]) -> str:
        beta, opt, method = key
        return f"{kind}/b{float(beta)!r}/{opt}/{method}/seeds=" + ",".join(map(str, seeds))

    def load_records(self, key, seeds: list[int]) -> list | None:
        from toy_lm.train import RunRecord

        path = self._get(self._cell_name("train", key, seeds))
        if path is None:
            return None
        beta, opt, method = key
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        out = []
        for seed in seeds:
            fields = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(f"{seed}/")}
            out.append(RunRecord(method=method, seed=seed, beta=beta, optimizer=opt, **fields))
        return out

    def save_records(self, key, seeds: list[int], records: list, seconds: float) -> None:
        import dataclasses

        arrays = {}
        for seed, rec in zip(seeds, records):
            for f in dataclasses.fields(rec):
                if f.name not in ("method", "seed", "beta", "optimizer"):
                    arrays[f"{seed}/{f.name}"] = np.asarray(getattr(rec, f.name))
        self._add(self._cell_name("train", key, seeds), "train", lambda fh: np.savez(fh, **arrays), seconds, ".npz")

    # -- tabular prediction of one cell
    def load_predictions(self, key, seeds: list[int]) -> list | None:
        from toy_lm.predict import Comparison

        path = self._get(self._cell_name("predict", key, seeds))
        if path is None:
            return None
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        out = []
        for seed in seeds:
            fields = {}
            for k, v in arrays.items():
                s, name, kind = k.split("/")
                if int(s) != seed:
                    continue
                if kind == "ndarray":
                    fields[name] = v
                elif kind in ("float", "bool", "int"):
                    fields[name] = {"float": float, "bool": bool, "int": int}[kind](v)
                else:  # a numpy scalar stays one (its type decides how the report prints it)
                    fields[name] = v[()]
            out.append(Comparison(**fields))
        return out

    def save_predictions(self, key, seeds: list[int], comparisons: list, seconds: float) -> None:
        import dataclasses

        arrays = {}
        for seed, c in zip(seeds, comparisons):
            for f in dataclasses.fields(c):
                value = getattr(c, f.name)
                kind = type(value).__name__ if type(value) in (np.ndarray, float, bool, int) else "numpy"
                if kind == "numpy" and not isinstance(value, np.generic):
                    raise TypeError(f"Comparison.{f.name} is a {type(value).__name__}; the progress record keeps "
                                    "arrays and numbers only")
                arrays[f"{seed}/{f.name}/{kind}"] = np.asarray(value)
        self._add(self._cell_name("predict", key, seeds), "predict", lambda fh: np.savez(fh, **arrays), seconds,
                  ".npz")


__all__ = ["MapProgress", "ResumeMismatch", "PROGRESS_DIR", "fingerprint", "progress_dir", "read_record"]
