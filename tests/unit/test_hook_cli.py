import os
import subprocess
import sys

from mailstack_installer import cli, hook


def test_hook_pins_this_interpreter_and_package(tmp_path):
    assert hook.install_hooks(str(tmp_path)) is True
    path = tmp_path / "renewal-hooks" / "deploy" / "mailstack"
    text = path.read_text()
    assert text.startswith(f"#!{sys.executable} -I\n")
    assert os.access(path, os.X_OK)
    assert hook.install_hooks(str(tmp_path)) is False  # unchanged content: not rewritten


def test_installed_hook_ignores_a_lineage_it_does_not_manage(tmp_path):
    hook.install_hooks(str(tmp_path))
    env = dict(
        os.environ, RENEWED_LINEAGE=str(tmp_path / "live" / "other.test"), RENEWED_DOMAINS="other.test"
    )
    proc = subprocess.run(
        [str(tmp_path / "renewal-hooks" / "deploy" / "mailstack")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_deploy_hook_outside_certbot_says_what_is_wrong(monkeypatch, capsys):
    monkeypatch.delenv("RENEWED_LINEAGE", raising=False)
    assert cli.main(["deploy-hook"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "RENEWED_LINEAGE" in err


def test_damaged_state_is_one_error_line_and_exit_2(tmp_path, monkeypatch, capsys):
    (tmp_path / "mailstack").mkdir()
    (tmp_path / "mailstack" / "state.json").write_text("{not json")
    monkeypatch.setenv("RENEWED_LINEAGE", str(tmp_path / "live" / "a.test"))
    assert cli.main(["deploy-hook"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "damaged" in err and "Traceback" not in err
