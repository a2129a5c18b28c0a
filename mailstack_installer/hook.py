"""Renewal path 2: the deploy hook certbot runs after every renewal, for lineages certbot itself
would never hand to this installer (``certbot install`` does not record ``installer = mailstack``).

The hook is a tiny Python script pinned to the interpreter and the package location this code runs
from, so it works from a virtualenv, from Debian's package and from ``CERTBOT_PLUGIN_PATH`` alike,
whatever PATH cron gives it.
"""

from __future__ import annotations

import os
import sys

from . import fsutil
from .constants import HEADER, HOOK_NAME
from .errors import MisconfiguredError


def hook_path(config_dir: str) -> str:
    return os.path.join(config_dir, "renewal-hooks", "deploy", HOOK_NAME)


def render_hook() -> str:
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return (
        f"#!{sys.executable} -I\n"
        f"# {HEADER}\n"
        "# certbot runs this after each renewal; it redeploys lineages that certbot-mailstack manages\n"
        "# (RENEWED_LINEAGE) into Postfix and Dovecot and ignores all others.\n"
        "import sys\n"
        f"sys.path.insert(0, {package_parent!r})\n"
        "from mailstack_installer.cli import main\n"
        "sys.exit(main(['deploy-hook']))\n"
    )


def install_hook(config_dir: str) -> bool:
    """Write the hook if it is missing or differs; return whether it was written."""
    path = hook_path(config_dir)
    text = render_hook()
    if fsutil.read_or_none(path) == text.encode():
        return False
    try:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    except OSError as exc:
        raise MisconfiguredError(f"cannot create {os.path.dirname(path)}: {exc.strerror}") from None
    fsutil.atomic_write(path, text.encode(), mode=0o755)
    return True
