"""Front door 2: the ``certbot-mailstack`` command, for work outside certbot's own verbs.

``deploy`` imports existing lineages in bulk; ``deploy-hook`` redeploys a renewed lineage and
``post-hook`` reloads once at the end of a renew run; ``verify`` asks the daemons what they serve
(verify.py); ``status`` compares the state with the files on disk (status.py).

Exit codes: 0 all good, 1 a check found a problem, 2 could not run. Expected failures print one
line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable, Dict, List, Optional, TextIO, TypeVar

from . import __version__, hook, probe, report, status, verify
from .constants import DEFAULT_CONFIG_DIR
from .errors import InputError, MailstackError, MisconfiguredError
from .pipeline import Imported, Pipeline
from .settings import OPTION_HELP, OPTION_NAMES
from .state import State

EXIT_OK, EXIT_PROBLEM, EXIT_ERROR = 0, 1, 2


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config-dir",
        help=f"certbot's config dir (default: {DEFAULT_CONFIG_DIR}; "
        "for deploy-hook: the one RENEWED_LINEAGE lies in)",
    )
    for name in OPTION_NAMES:
        common.add_argument(
            f"--{name}",
            dest=name.replace("-", "_"),
            help=OPTION_HELP[name] + "; unset: as at the last deployment",
        )
    common.add_argument("-v", "--verbose", action="store_true", help="log each step")
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="certbot-mailstack",
        description="Serve the right certificate per SNI name from Postfix and Dovecot.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    bulk = sub.add_parser(
        "deploy",
        parents=[_common()],
        help="map every DNS name of existing lineages (live/<name>) into Postfix and Dovecot, then reload",
        description="Map every DNS name of certbot's existing lineages, read from <config-dir>/live/<name>/: "
        "the migration path for a host that already has certificates. A lineage that fails its checks is "
        "reported and skipped. Each daemon is reloaded once at the end. Exit 0 all deployed, 1 some "
        "lineages failed, 2 could not run.",
    )
    bulk.add_argument("--all", action="store_true", help="every lineage under <config-dir>/live")
    bulk.add_argument("--cert-name", action="append", help="the lineage live/<name>; repeatable")
    bulk.add_argument(
        "--dry-run",
        action="store_true",
        help="change nothing: say per lineage what a deployment would do and which daemons would reload",
    )
    bulk.add_argument(
        "--require-running",
        action="store_true",
        help="fail (exit 2) before changing anything if Postfix or Dovecot is not running",
    )
    bulk.add_argument(
        "--json", action="store_true", help="print a JSON document of what was (or would be) done"
    )
    hook_cmd = sub.add_parser(
        "deploy-hook",
        parents=[_common()],
        help="redeploy the lineage in RENEWED_LINEAGE (certbot deploy hook; installed automatically)",
    )
    hook_cmd.add_argument(
        "--defer-reload",
        action="store_true",
        help="leave the reload to the post hook when it is installed (certbot runs it once per run)",
    )
    sub.add_parser(
        "post-hook",
        parents=[_common()],
        help="reload each daemon whose configuration changed, once "
        "(certbot post hook; installed automatically)",
    )
    check = sub.add_parser(
        "verify",
        parents=[_common()],
        help="handshake with every mapped name on every mail port and compare the served certificates",
        description="TLS handshake with SNI for every mapped name on every mail port; the served leaf "
        "must be the lineage's leaf, its chain must verify, it must cover the name and not expire "
        "within --expiry-days. Exit 0 all good, 1 a problem found, 2 could not check.",
    )
    check.add_argument("names", nargs="*", metavar="NAME", help="names to check (default: every mapped name)")
    check.add_argument(
        "--host", default=verify.DEFAULT_HOST, help="address to connect to (default: %(default)s)"
    )
    check.add_argument(
        "--ports",
        help="comma list of service=port to probe, services: " + ", ".join(probe.SERVICES) + " "
        "(default: all seven on their usual ports, e.g. smtp=25,submission=587,imaps=993)",
    )
    check.add_argument("--ca-file", help="PEM file of trusted roots for chain checks (default: the system's)")
    check.add_argument(
        "--timeout", default=str(verify.DEFAULT_TIMEOUT), help="seconds per check (default: 10)"
    )
    check.add_argument(
        "--expiry-days",
        default=str(verify.DEFAULT_EXPIRY_DAYS),
        help="flag certificates that expire within this many days (default: %(default)s)",
    )
    check.add_argument(
        "--concurrency",
        default=str(verify.DEFAULT_CONCURRENCY),
        help="handshakes at once (default: %(default)s)",
    )
    check.add_argument("--json", action="store_true", help="print a JSON document (docs/verify.md)")
    show = sub.add_parser(
        "status",
        parents=[_common()],
        help="per name: lineage files, expiry, and whether the Postfix map and Dovecot drop-in are current",
        description="Compare the state with the files on disk and in the daemons' configuration (no "
        "handshakes). Exit 0 all good, 1 something is stale, missing or expiring, 2 could not check.",
    )
    show.add_argument(
        "--expiry-days",
        default=str(verify.DEFAULT_EXPIRY_DAYS),
        help="flag certificates that expire within this many days (default: %(default)s)",
    )
    show.add_argument("--json", action="store_true", help="print a JSON document (docs/verify.md)")
    unmap = sub.add_parser(
        "remove",
        parents=[_common()],
        help="unmap names, or all names of a lineage, from Postfix and Dovecot, and reload",
    )
    unmap.add_argument("names", nargs="*", metavar="NAME", help="names to unmap")
    unmap.add_argument(
        "--cert-name", action="append", help="unmap every name of this lineage (live/<name>); repeatable"
    )
    return parser


def _given(args: argparse.Namespace) -> dict:  # type: ignore[type-arg]
    return {name: getattr(args, name.replace("-", "_")) for name in OPTION_NAMES}


def deploy_hook(args: argparse.Namespace) -> int:
    lineage = os.environ.get("RENEWED_LINEAGE", "")
    if not lineage:
        print(
            "certbot-mailstack: error: RENEWED_LINEAGE is not set: run deploy-hook as a certbot deploy hook",
            file=sys.stderr,
        )
        return EXIT_ERROR
    config_dir = args.config_dir or os.path.dirname(os.path.dirname(os.path.normpath(lineage)))
    pipeline = Pipeline(config_dir, _given(args))
    if not pipeline.store.exists():
        return EXIT_OK  # this config dir has never had a mailstack deployment
    outcome = pipeline.refresh(lineage)
    if outcome is None:
        return EXIT_OK  # not ours: certbot runs deploy hooks for every lineage
    changed = ", ".join(outcome.changed) or "unchanged"
    if args.defer_reload and hook.post_hook_installed(config_dir):
        print(f"certbot-mailstack: {os.path.basename(lineage)}: {changed}; reload at the end of the run")
        return EXIT_OK
    pipeline.reload_pending(outcome)  # its warnings went to stderr through logging
    done = ", ".join(outcome.reloaded) or "nothing to reload"
    print(f"certbot-mailstack: {os.path.basename(lineage)}: {changed}; reloaded: {done}")
    return EXIT_OK


def post_hook(args: argparse.Namespace) -> int:
    pipeline = Pipeline(args.config_dir or DEFAULT_CONFIG_DIR, _given(args))
    if not pipeline.store.exists():
        return EXIT_OK  # this config dir has never had a mailstack deployment
    outcome = pipeline.reload_pending()
    if outcome.reloaded:
        print(f"certbot-mailstack: reloaded {', '.join(outcome.reloaded)}")
    return EXIT_OK


def _lineage_dirs(config_dir: str, everything: bool, names: List[str]) -> List[str]:
    live = os.path.join(config_dir, "live")
    if everything:
        try:
            entries = sorted(os.listdir(live))
        except OSError as exc:
            raise MisconfiguredError(f"cannot list lineages in {live}: {exc.strerror}") from None
        return [os.path.join(live, e) for e in entries if os.path.isdir(os.path.join(live, e))]
    for name in names:
        if not name or "/" in name or name in (".", ".."):
            raise InputError(f"--cert-name {name!r}: give a lineage name as in {live}/<name>")
    return [os.path.join(live, name) for name in names]


def deploy_command(args: argparse.Namespace) -> int:
    if args.all == bool(args.cert_name):
        print("certbot-mailstack: error: give either --all or --cert-name NAME", file=sys.stderr)
        return EXIT_ERROR
    config_dir = args.config_dir or DEFAULT_CONFIG_DIR
    dirs = _lineage_dirs(config_dir, args.all, args.cert_name or [])
    pipeline = Pipeline(config_dir, _given(args))
    if args.dry_run:
        imported, reloads, running = pipeline.preview(dirs)
        result = _report(True, dirs, imported, reloads, running)
        sys.stdout.write(report.render_json(result) if args.json else report.render_text(result))
        return result.exit_code()
    bar = ProgressBar(sys.stderr)
    imported = pipeline.import_lineages(dirs, bar.update, require_running=args.require_running)
    bar.clear()
    if not args.json:
        for lineage_dir, error in imported.failed:
            print(f"certbot-mailstack: error: {os.path.basename(lineage_dir)}: {error}", file=sys.stderr)
    if imported.deployed:
        hook.install_hooks(config_dir)
    pipeline.reload_pending(imported.outcome)
    reloaded = list(dict.fromkeys(imported.outcome.reloaded))
    if args.json:
        running = {daemon.service: daemon.is_running() for daemon in pipeline.daemons(pipeline.settings())}
        result = _report(False, dirs, imported, reloaded, running)
        sys.stdout.write(report.render_json(result))
        return result.exit_code()
    print(
        f"certbot-mailstack: deployed {len(imported.deployed)} of {len(dirs)} lineage(s), "
        f"{imported.names} name(s); {len(imported.failed)} failed; "
        f"reloaded: {', '.join(reloaded) or 'nothing'}"
    )
    return EXIT_PROBLEM if imported.failed else EXIT_OK


def _report(
    dry_run: bool, dirs: List[str], imported: Imported, reloads: List[str], running: Dict[str, bool]
) -> report.Report:
    outcome = imported.outcome
    return report.Report(
        dry_run=dry_run,
        lineages=report.lineage_results(dirs, imported.lineages, imported.before, imported.failed),
        unmapped=outcome.unmapped,
        daemons=[report.DaemonResult(s, up, s in reloads) for s, up in running.items()],
        warnings=outcome.warnings,
        changed=bool(reloads or outcome.changed or outcome.unmapped),
    )


class ProgressBar:
    """A one-line progress bar on a terminal; silent when the stream is not one (cron, pipes)."""

    WIDTH = 30

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.shown = stream.isatty()

    def update(self, phase: str, done: int, total: int) -> None:
        if not self.shown or total == 0:
            return
        filled = self.WIDTH * done // total
        bar = "#" * filled + "." * (self.WIDTH - filled)
        self.stream.write(f"\r{phase:<9} [{bar}] {done}/{total}")
        self.stream.flush()

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()


N = TypeVar("N", int, float)


def _number(text: str, option: str, kind: Callable[[str], N], low: N, high: N) -> N:
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise InputError(f"{option} {text!r}: give a number from {low} to {high}")
    return value


def _load_state(pipeline: Pipeline) -> State:
    if not pipeline.store.exists():
        raise MisconfiguredError(
            f"no deployment recorded: {pipeline.store.path} does not exist (is --config-dir right?)"
        )
    return pipeline.store.load()


def remove_command(args: argparse.Namespace) -> int:
    if not args.names and not args.cert_name:
        print("certbot-mailstack: error: give the names to unmap, or --cert-name", file=sys.stderr)
        return EXIT_ERROR
    pipeline = Pipeline(args.config_dir or DEFAULT_CONFIG_DIR, _given(args))
    outcome = pipeline.remove(args.names, args.cert_name or [])
    pipeline.reload_pending(outcome)
    changed = ", ".join(outcome.changed) or "nothing changed"
    print(f"certbot-mailstack: removed; {changed}; reloaded: {', '.join(outcome.reloaded) or 'nothing'}")
    return EXIT_OK


def verify_command(args: argparse.Namespace) -> int:
    options = verify.Options(
        host=args.host,
        ports=verify.parse_ports(args.ports),
        ca_file=args.ca_file,
        timeout=_number(args.timeout, "--timeout", float, 0.1, 3600.0),
        expiry_days=_number(args.expiry_days, "--expiry-days", int, 0, 100000),
        concurrency=_number(args.concurrency, "--concurrency", int, 1, 1024),
    )
    state = _load_state(Pipeline(args.config_dir or DEFAULT_CONFIG_DIR, _given(args)))
    report = verify.run(state.plan, args.names, options)
    sys.stdout.write(verify.render_json(report) if args.json else verify.render_table(report))
    return report.exit_code()


def status_command(args: argparse.Namespace) -> int:
    expiry_days = _number(args.expiry_days, "--expiry-days", int, 0, 100000)
    pipeline = Pipeline(args.config_dir or DEFAULT_CONFIG_DIR, _given(args))
    state = _load_state(pipeline)
    report = status.collect(state, pipeline.store.path, pipeline.settings(state), expiry_days)
    sys.stdout.write(status.render_json(report) if args.json else status.render_table(report))
    return report.exit_code()


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="certbot-mailstack: %(levelname)s: %(message)s",
    )
    try:
        if args.command == "deploy-hook":
            return deploy_hook(args)
        if args.command == "post-hook":
            return post_hook(args)
        if args.command == "deploy":
            return deploy_command(args)
        if args.command == "verify":
            return verify_command(args)
        if args.command == "status":
            return status_command(args)
        if args.command == "remove":
            return remove_command(args)
    except MailstackError as exc:
        print(f"certbot-mailstack: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("certbot-mailstack: interrupted", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:  # e.g. "verify | head": the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
