import pytest

from segrec.jobs import bootstrap


def test_missing_java_stops_with_a_one_line_hint(monkeypatch, capsys):
    monkeypatch.setattr(bootstrap.shutil, "which", lambda name: None)
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(SystemExit) as stop:
        bootstrap.check_java()
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Java 17+ is missing" in err


def test_old_java_is_refused(monkeypatch, capsys):
    monkeypatch.setattr(bootstrap, "java_major", lambda: 11)
    with pytest.raises(SystemExit):
        bootstrap.check_java()
    assert "Java 11 found" in capsys.readouterr().err


def test_java_on_this_machine_is_detected():
    assert bootstrap.java_major() >= 17


def test_no_gpu_without_nvidia_smi(monkeypatch):
    monkeypatch.setattr(bootstrap.shutil, "which", lambda name: None)
    assert bootstrap.has_gpu() is False
