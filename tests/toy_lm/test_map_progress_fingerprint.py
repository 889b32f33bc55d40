"""toy_lm.map_progress.fingerprint: the code hash must tell a file's path from its contents."""
from toy_lm import map_progress as MP


class _Cfg:
    def to_dict(self):
        return {"stub": 1}


def _code_hash(root, files, monkeypatch):
    (root / "toy_lm").mkdir(parents=True)
    for name, text in files.items():
        (root / "toy_lm" / name).write_text(text)
    monkeypatch.setattr(MP, "_ROOT", root)
    return MP.fingerprint(_Cfg(), 0, "cpu", 1)["code"]


def test_code_fingerprint_separates_a_path_from_the_contents_that_follow_it(tmp_path, monkeypatch):
    """Pins the separator between each code file's path and its bytes in the resume fingerprint: toy_lm/x.py holding
    "z.py\\nX = 1\\n" and toy_lm/x.pyz.py holding "\\nX = 1\\n" are different code (another file name, other source),
    yet path + contents is the same byte string "toy_lm/x.pyz.py\\nX = 1\\n" for both; without the separator the two
    trees hash alike and --resume would continue across the change. By hand the two streams differ only in where
    the NUL falls. (a survivor of mutation: toy_lm/map_progress.py::fingerprint::drop-term::d82c3b16f2)"""
    a = _code_hash(tmp_path / "a", {"x.py": "z.py\nX = 1\n"}, monkeypatch)
    b = _code_hash(tmp_path / "b", {"x.pyz.py": "\nX = 1\n"}, monkeypatch)
    assert ("toy_lm/x.py" + "z.py\nX = 1\n") == ("toy_lm/x.pyz.py" + "\nX = 1\n")  # the collision the separator stops
    assert a != b
    # and the same tree hashes alike (the fingerprint is a function of the files, not of where they lie)
    assert _code_hash(tmp_path / "c", {"x.py": "z.py\nX = 1\n"}, monkeypatch) == a
