"""Renewal path 2: the hooks certbot runs from its ``renewal-hooks`` directories.

The deploy hook runs after every renewal, for lineages certbot itself would never hand to this
installer (``certbot install`` does not record ``installer = mailstack``); during ``certbot renew``
it only rebuilds the configuration. The post hook runs once at the end of the run and reloads each
daemon once, however many lineages were renewed (a Dovecot reload at 10,000 names costs ~10 s).

Both are tiny Python scripts pinned to the interpreter and the package location this code runs
from, so they work from a virtualenv, from Debian's package and from ``CERTBOT_PLUGIN_PATH`` alike,
whatever PATH cron gives them. Once the package is removed they say so and exit 0, so a hook left
behind never turns a renewal into a failure (Debian's postrm deletes them on purge).
"""

from __future__ import annotations

import os
import sys
from typing import List

from . import fsutil
from .constants import HEADER, HOOK_NAME
from .errors import MisconfiguredError

#: What each hook does, and the ``certbot-mailstack`` arguments it runs.
PURPOSE = {
    "deploy": "redeploys a renewed lineage that certbot-mailstack manages (RENEWED_LINEAGE) into Postfix "
    "and Dovecot and ignores all others; under certbot renew the post hook reloads",
    "post": "reloads Postfix and Dovecot once, at the end of a certbot renew run, if a deploy changed them",
}


#: What a hook says, and exits 0 with, once the package is gone (removed but not purged, or a
#: deleted virtualenv's package path): a renewal must never fail because of this package's hook.
_UNINSTALLED = (
    "certbot-mailstack is not installed any more: this hook does nothing (delete {path} to silence it)"
)


def hook_path(config_dir: str, kind: str = "deploy") -> str:
    return os.path.join(config_dir, "renewal-hooks", kind, HOOK_NAME)


def _argv(config_dir: str, kind: str) -> List[str]:
    if kind == "deploy":
        return ["deploy-hook", "--defer-reload"]
    return ["post-hook", "--config-dir", os.path.abspath(config_dir)]


def render_hook(config_dir: str, kind: str = "deploy") -> str:
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return (
        f"#!{sys.executable} -I\n"
        f"# {HEADER}\n"
        f"# certbot runs this {kind} hook; it {PURPOSE[kind]}.\n"
        "import sys\n"
        f"sys.path.insert(0, {package_parent!r})\n"
        "try:\n"
        "    from mailstack_installer.cli import main\n"
        "except ModuleNotFoundError as exc:\n"
        "    if exc.name != 'mailstack_installer':\n"
        "        raise\n"
        f"    print({_UNINSTALLED.format(path=hook_path(config_dir, kind))!r})\n"
        "    sys.exit(0)\n"
        f"sys.exit(main({_argv(config_dir, kind)!r}))\n"
    )


def post_hook_installed(config_dir: str) -> bool:
    """Whether certbot will run this package's post hook at the end of a renew run."""
    path = hook_path(config_dir, "post")
    data = fsutil.read_or_none(path)
    return data is not None and HEADER.encode() in data and os.access(path, os.X_OK)


def install_hooks(config_dir: str) -> bool:
    """Write the deploy and post hooks where missing or different; return whether any was written.

    The post hook goes first: a deploy hook that leaves its reload to it must find it in place.
    """
    written = False
    for kind in ("post", "deploy"):
        path = hook_path(config_dir, kind)
        text = render_hook(config_dir, kind)
        if fsutil.read_or_none(path) == text.encode():
            continue
        try:
            os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        except OSError as exc:
            raise MisconfiguredError(f"cannot create {os.path.dirname(path)}: {exc.strerror}") from None
        fsutil.atomic_write(path, text.encode(), mode=0o755)
        written = True
    return written
