"""Front door 2: the ``certbot-mailstack`` command, for work outside certbot's own verbs.

Exit codes: 0 all good, 1 a check found a problem, 2 could not run. Expected failures print one
line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, Optional

from . import __version__
from .constants import DEFAULT_CONFIG_DIR
from .errors import MailstackError
from .pipeline import Pipeline
from .settings import OPTION_HELP, OPTION_NAMES

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
    sub.add_parser(
        "deploy-hook",
        parents=[_common()],
        help="redeploy the lineage in RENEWED_LINEAGE (certbot deploy hook; installed automatically)",
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
    pipeline.reload_pending(outcome)  # its warnings went to stderr through logging
    done = ", ".join(outcome.reloaded) or "nothing to reload"
    changed = ", ".join(outcome.changed) or "unchanged"
    print(f"certbot-mailstack: {os.path.basename(lineage)}: {changed}; reloaded: {done}")
    return EXIT_OK


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="certbot-mailstack: %(levelname)s: %(message)s",
    )
    try:
        if args.command == "deploy-hook":
            return deploy_hook(args)
    except MailstackError as exc:
        print(f"certbot-mailstack: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("certbot-mailstack: interrupted", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
