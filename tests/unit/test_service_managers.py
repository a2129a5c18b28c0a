"""Each backend's real command line, run through a stand-in binary on PATH that records its argv;
auto-detection against fake root trees; third-party backends through a real entry point."""

import configparser
import dataclasses
import logging
import os
import stat
import sys
from pathlib import Path

import pytest

from mailstack_installer import service_managers
from mailstack_installer.cli import build_parser
from mailstack_installer.errors import InputError, MisconfiguredError
from mailstack_installer.service_managers import Host
from mailstack_installer.settings import OPTION_NAMES, resolve

REPO = Path(__file__).resolve().parents[2]
TOOLS = ("systemctl", "rc-service", "sv", "s6-svc", "service", "postfix", "doveadm", "dovecot", "mail-reload")
SEP = "\x1f"  # between arguments in the log, so an argument with spaces stays one argument


class Recorder:
    def __init__(self, log: Path) -> None:
        self.log = log

    def calls(self):
        if not self.log.exists():
            return []
        return [line.rstrip(SEP).split(SEP) for line in self.log.read_text().splitlines()]


@pytest.fixture
def recorder(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "argv.log"
    for tool in TOOLS:
        script = bindir / tool
        script.write_text(
            f'#!/bin/sh\nprintf "%s\\037" "$(basename "$0")" "$@" >> {log}\nprintf "\\n" >> {log}\n'
        )
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return Recorder(log)


def make_tree(root: Path, dirs=(), files=(), tools=()) -> Host:
    """A fake host: directories, files and executables (in usr/bin) under ``root``."""
    for directory in dirs:
        (root / directory.lstrip("/")).mkdir(parents=True, exist_ok=True)
    for name, text in dict(files).items():
        path = root / name.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for tool in tools:
        path = root / "usr" / "bin" / tool
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    root.mkdir(parents=True, exist_ok=True)
    return Host(str(root))


# -- exact command lines --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backend", "postfix_argv", "dovecot_argv"),
    [
        ("systemd", ["systemctl", "reload", "postfix.service"], ["systemctl", "reload", "dovecot.service"]),
        ("openrc", ["rc-service", "postfix", "reload"], ["rc-service", "dovecot", "reload"]),
        ("runit", ["postfix", "-c", "/srv/pf", "reload"], ["sv", "reload", "dovecot"]),
        ("s6", ["postfix", "-c", "/srv/pf", "reload"], ["s6-svc", "-h", "/run/service/dovecot"]),
        ("sysvinit", ["service", "postfix", "reload"], ["service", "dovecot", "reload"]),
        (
            "native",
            ["postfix", "-c", "/srv/pf", "reload"],
            ["doveadm", "-c", "/srv/dc/dovecot.conf", "reload"],
        ),
    ],
)
def test_backend_runs_its_exact_reload_command(recorder, tmp_path, backend, postfix_argv, dovecot_argv):
    host = make_tree(tmp_path / "root", dirs=["/run/service/postfix", "/run/service/dovecot"])
    settings = resolve({"service-manager": backend, "postfix-dir": "/srv/pf", "dovecot-dir": "/srv/dc"})
    manager = service_managers.for_settings(settings, host)
    manager.reload("postfix")
    manager.reload("dovecot")
    assert recorder.calls() == [postfix_argv, dovecot_argv]


@pytest.mark.parametrize(
    ("backend", "dovecot_argvs"),
    [
        ("systemd", [["systemctl", "restart", "dovecot.service"]]),
        ("openrc", [["rc-service", "dovecot", "restart"]]),
        ("runit", [["sv", "restart", "dovecot"]]),
        ("s6", [["s6-svc", "-r", "/run/service/dovecot"]]),
        ("sysvinit", [["service", "dovecot", "restart"]]),
        (
            "native",
            [["doveadm", "-c", "/srv/dc/dovecot.conf", "stop"], ["dovecot", "-c", "/srv/dc/dovecot.conf"]],
        ),
    ],
)
def test_backend_restarts_dovecot_with_its_own_verb(recorder, tmp_path, backend, dovecot_argvs):
    """Only for a config process limit a reload cannot raise (pipeline._raise_limit_first)."""
    host = make_tree(tmp_path / "root", dirs=["/run/service/dovecot"])
    settings = resolve({"service-manager": backend, "postfix-dir": "/srv/pf", "dovecot-dir": "/srv/dc"})
    service_managers.for_settings(settings, host).restart("dovecot")
    assert recorder.calls() == dovecot_argvs


def test_a_command_without_reload_cannot_restart_and_says_so():
    settings = resolve({"service-manager": "command", "reload-command": "mailctl hup {service}"})
    with pytest.raises(MisconfiguredError, match="cannot restart dovecot: restart it by hand"):
        service_managers.for_settings(settings).restart_argv("dovecot")


def test_command_backend_splits_like_a_shell_and_runs_without_one(recorder, tmp_path):
    marker = tmp_path / "injected"
    settings = resolve(
        {
            "service-manager": "command",
            "reload-command": f"mail-reload --unit '{{service}}.service' \"a b\" {{service}};touch {marker}",
        }
    )
    manager = service_managers.for_settings(settings)
    manager.reload("postfix")
    manager.reload("dovecot")
    assert recorder.calls() == [
        ["mail-reload", "--unit", "postfix.service", "a b", "postfix;touch", str(marker)],
        ["mail-reload", "--unit", "dovecot.service", "a b", "dovecot;touch", str(marker)],
    ]
    assert not marker.exists()


def test_command_without_placeholder_is_fine_for_one_daemon(recorder):
    settings = resolve(
        {"service-manager": "command", "services": "dovecot", "reload-command": "mail-reload --all"}
    )
    service_managers.for_settings(settings).reload("dovecot")
    assert recorder.calls() == [["mail-reload", "--all"]]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, r"^--service-manager command needs --reload-command"),
        ({"reload-command": "   "}, r"^--service-manager command needs --reload-command"),
        (
            {"reload-command": "mail-reload --all"},
            r"^--reload-command 'mail-reload --all' has no \{service\}",
        ),
        ({"reload-command": "mail-reload '{service}"}, r"^--reload-command .*: No closing quotation"),
    ],
)
def test_command_backend_refuses_unusable_commands_in_one_line(options, message):
    with pytest.raises(InputError, match=message) as caught:
        resolve({"service-manager": "command", **options})
    assert "\n" not in str(caught.value)


def test_command_backend_guards_settings_built_without_resolve():
    settings = resolve({"service-manager": "command", "reload-command": "mail-reload {service}"})
    for broken in ("mail-reload '{service}", ""):
        manager = service_managers.for_settings(dataclasses.replace(settings, reload_command=broken))
        with pytest.raises(InputError, match="--reload-command"):
            manager.reload_argv("postfix")


def test_reload_command_is_ignored_by_other_backends():
    settings = resolve({"service-manager": "systemd", "reload-command": "mail-reload --all"})
    assert service_managers.for_settings(settings).reload_argv("dovecot") == [
        "systemctl",
        "reload",
        "dovecot.service",
    ]


# -- s6 service directories -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tree", "options", "expected"),
    [
        (["/run/service/dovecot"], {}, "/run/service/dovecot"),  # s6-linux-init, s6-overlay 3
        (["/var/run/s6/services/dovecot"], {}, "/var/run/s6/services/dovecot"),  # s6-overlay 2
        (["/run/service/dovecot-srv"], {}, "/run/service/dovecot-srv"),  # Artix s6-rc longrun
        (["/run/service/dovecot", "/srv/scan/dovecot"], {"s6-scandir": "/srv/scan"}, "/srv/scan/dovecot"),
    ],
)
def test_s6_signals_the_service_directory_that_exists(tmp_path, tree, options, expected):
    host = make_tree(tmp_path / "root", dirs=tree)
    manager = service_managers.for_settings(resolve({"service-manager": "s6", **options}), host)
    assert manager.reload_argv("dovecot") == ["s6-svc", "-h", expected]


def test_s6_without_a_service_directory_names_the_option(tmp_path):
    manager = service_managers.for_settings(resolve({"service-manager": "s6"}), make_tree(tmp_path / "r"))
    with pytest.raises(MisconfiguredError, match="no s6 service directory dovecot .*--s6-scandir"):
        manager.reload_argv("dovecot")


def test_s6_scandir_must_be_absolute_and_auto_means_detect():
    with pytest.raises(InputError, match="^--s6-scandir"):
        resolve({"s6-scandir": "run/service"})
    assert resolve({"s6-scandir": "auto"}).s6_scandir == ""
    assert resolve({"s6-scandir": "/run/service/"}).s6_scandir == "/run/service"


# -- auto-detection on fake hosts -----------------------------------------------------------------

INIT_SCRIPTS = {"/etc/init.d/postfix": "", "/etc/init.d/dovecot": ""}


@pytest.mark.parametrize(
    ("dirs", "files", "tools", "expected"),
    [
        (["/run/systemd/system"], INIT_SCRIPTS, ["systemctl", "service"], "systemd"),
        (["/run/openrc"], INIT_SCRIPTS, ["rc-service"], "openrc"),
        # Void: runit is PID 1, services linked into /var/service
        (["/var/service/postfix", "/var/service/dovecot"], {"/proc/1/comm": "runit\n"}, ["sv"], "runit"),
        # Artix: runit-init, services in /run/runit/service
        (["/run/runit/service/postfix", "/run/runit/service/dovecot"], {}, ["sv"], "runit"),
        (["/run/service/postfix", "/run/service/dovecot"], {"/proc/1/comm": "s6-svscan\n"}, ["s6-svc"], "s6"),
        (["/run/service/postfix-srv", "/run/service/dovecot-srv"], {}, ["s6-svc"], "s6"),
        (["/var/run/s6/services/postfix", "/var/run/s6/services/dovecot"], {}, ["s6-svc"], "s6"),
        ([], INIT_SCRIPTS, ["service"], "sysvinit"),
        ([], {}, [], "native"),
        # present but not in charge of the mail daemons: fall through
        (["/run/systemd/system"], {}, [], "native"),  # no systemctl
        (["/etc/runit", "/etc/service/ssh"], INIT_SCRIPTS, ["sv", "service"], "sysvinit"),
        (["/run/service/dovecot"], {}, ["s6-svc"], "native"),  # postfix not supervised by s6
        ([], {"/etc/init.d/postfix": ""}, ["service"], "native"),  # no dovecot init script
    ],
)
def test_auto_detects_the_init_system_in_charge(tmp_path, dirs, files, tools, expected):
    host = make_tree(tmp_path / "root", dirs=dirs, files=files, tools=tools)
    assert service_managers.detect(resolve({}), host) == expected


def test_auto_checks_only_the_managed_daemons(tmp_path):
    host = make_tree(tmp_path / "root", dirs=["/run/service/dovecot"], tools=["s6-svc"])
    assert service_managers.detect(resolve({"services": "dovecot"}), host) == "s6"


def test_auto_uses_a_given_s6_scandir(tmp_path):
    host = make_tree(tmp_path / "root", dirs=["/srv/scan/postfix", "/srv/scan/dovecot"], tools=["s6-svc"])
    assert service_managers.detect(resolve({}), host) == "native"
    assert service_managers.detect(resolve({"s6-scandir": "/srv/scan"}), host) == "s6"


def test_auto_uses_native_for_private_config_dirs(tmp_path):
    host = make_tree(tmp_path / "root", dirs=["/run/systemd/system"], tools=["systemctl"])
    assert service_managers.detect(resolve({"postfix-dir": "/srv/pf"}), host) == "native"


def test_for_settings_reloads_through_the_detected_backend(recorder, tmp_path):
    host = make_tree(
        tmp_path / "root", dirs=["/run/service/postfix", "/run/service/dovecot"], tools=["s6-svc"]
    )
    manager = service_managers.for_settings(resolve({}), host)
    manager.reload("dovecot")
    assert manager.name == "s6"
    assert recorder.calls() == [["s6-svc", "-h", "/run/service/dovecot"]]


# -- registry -------------------------------------------------------------------------------------


def test_unknown_backend_lists_the_known_ones():
    with pytest.raises(InputError, match="command.*native.*runit, s6.*systemd"):
        service_managers.for_settings(resolve({"service-manager": "upstart"}))


def test_every_builtin_backend_is_declared_as_an_entry_point():
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    declared = dict(
        line.split(" = ")
        for line in config["options.entry_points"][service_managers.ENTRY_POINT_GROUP].strip().splitlines()
    )
    assert declared == {
        name: f"mailstack_installer.service_managers:{cls.__name__}"
        for name, cls in service_managers.BUILTIN.items()
    }


def test_new_options_reach_both_front_doors():
    assert {"reload-command", "s6-scandir"} <= set(OPTION_NAMES)
    args = build_parser().parse_args(
        ["deploy-hook", "--reload-command", "mail-reload {service}", "--s6-scandir", "/run/service"]
    )
    assert (args.reload_command, args.s6_scandir) == ("mail-reload {service}", "/run/service")


def add_distribution(site: Path, name: str, entry_points: str, modules=None) -> None:
    """A minimal installed distribution: ``<name>-1.0.dist-info`` with METADATA and entry_points.txt."""
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{service_managers.ENTRY_POINT_GROUP}]\n{entry_points}")
    for module, source in (modules or {}).items():
        (site / f"{module}.py").write_text(source)


THIRD_PARTY = """\
from mailstack_installer.service_managers import ServiceManager


class MailCtl(ServiceManager):
    name = "mailctl"

    def reload_argv(self, service):
        return ["mail-reload", "--via-mailctl", service]


class Hijack(MailCtl):
    name = "systemd"


NOT_A_BACKEND = 42
"""


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A directory on sys.path that stands for a third party's site-packages."""
    path = tmp_path / "site"
    path.mkdir()
    monkeypatch.syspath_prepend(str(path))
    yield path
    for module in [m for m in sys.modules if m.startswith("mailstack_thirdparty_")]:
        del sys.modules[module]


def test_third_party_backend_is_found_through_its_entry_point(site, recorder):
    add_distribution(
        site,
        "mailstack_thirdparty_ok",
        "mailctl = mailstack_thirdparty_ok:MailCtl\n",
        {"mailstack_thirdparty_ok": THIRD_PARTY},
    )
    manager = service_managers.for_settings(resolve({"service-manager": "mailctl"}))
    manager.reload("postfix")
    assert type(manager).__name__ == "MailCtl"
    assert recorder.calls() == [["mail-reload", "--via-mailctl", "postfix"]]


def test_broken_third_party_backends_only_warn(site, caplog):
    add_distribution(
        site,
        "mailstack_thirdparty_bad",
        "missing = mailstack_thirdparty_nowhere:Backend\n"
        "raises = mailstack_thirdparty_bad:Backend\n"
        "notaclass = mailstack_thirdparty_good:NOT_A_BACKEND\n"
        "systemd = mailstack_thirdparty_good:Hijack\n",
        {
            "mailstack_thirdparty_bad": "raise RuntimeError('backend exploded on import')\n",
            "mailstack_thirdparty_good": THIRD_PARTY,
        },
    )
    with caplog.at_level(logging.WARNING, logger=service_managers.__name__):
        backends = service_managers.registered()
    assert set(service_managers.BUILTIN) <= set(backends)
    assert backends["systemd"] is service_managers.Systemd  # a third party cannot replace a built-in
    assert not {"missing", "raises", "notaclass"} & set(backends)
    warned = " | ".join(r.getMessage() for r in caplog.records)
    assert "service manager missing could not be loaded" in warned
    assert "service manager raises could not be loaded: backend exploded on import" in warned
    assert "notaclass" in warned and "not a ServiceManager subclass" in warned
    manager = service_managers.for_settings(resolve({"service-manager": "native"}))
    assert manager.reload_argv("dovecot") == ["doveadm", "-c", "/etc/dovecot/dovecot.conf", "reload"]
