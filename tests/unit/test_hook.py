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


def _without_site(path):
    """The hook's own command line, minus the test environment's site-packages (-S), where this
    package is installed: only the directory the hook pins is searched, as on a host."""
    first = path.read_text().splitlines()[0]
    assert first == f"#!{sys.executable} -I"
    return [sys.executable, "-I", "-S", str(path)]


def test_hook_left_behind_by_a_removed_package_says_so_and_exits_0(tmp_path, monkeypatch):
    """After `apt-get remove` (or a deleted virtualenv) certbot still runs the hooks: no failure."""
    gone = tmp_path / "gone" / "mailstack_installer"
    monkeypatch.setattr(hook, "__file__", str(gone / "hook.py"))
    config_dir = tmp_path / "le"
    hook.install_hooks(str(config_dir))
    for kind in ("deploy", "post"):
        path = config_dir / "renewal-hooks" / kind / "mailstack"
        env = {"PATH": os.environ["PATH"], "RENEWED_LINEAGE": str(config_dir / "live" / "a.test")}
        proc = subprocess.run(
            _without_site(path), env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == ""
        assert proc.stdout == (
            "certbot-mailstack is not installed any more: this hook does nothing "
            f"(delete {path} to silence it)\n"
        )


def test_hook_does_not_hide_a_broken_install(tmp_path, monkeypatch):
    """Only the package itself missing is 'removed'; any other import failure stays an error."""
    parent = tmp_path / "site"
    package = parent / "mailstack_installer"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "cli.py").write_text("import mailstack_dependency_that_is_missing\n")
    monkeypatch.setattr(hook, "__file__", str(package / "hook.py"))
    hook.install_hooks(str(tmp_path / "le"))
    path = tmp_path / "le" / "renewal-hooks" / "deploy" / "mailstack"
    proc = subprocess.run(_without_site(path), capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1
    assert "mailstack_dependency_that_is_missing" in proc.stderr
