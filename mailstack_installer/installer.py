"""Front door 1: the certbot installer ``mailstack``. Thin: it stages what certbot hands it and
drives the same pipeline as the ``certbot-mailstack`` command, translating errors to certbot's.

Call sequences it is built for (see certbot's ``_internal/main.py`` and ``client.py``):
``run``/``install``: prepare -> (deploy_cert, save)* -> save(title) -> restart;
``renew``: prepare -> renew_deploy(lineage) -> restart, never deploy_cert or save.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Set, Union

from certbot import errors, interfaces
from certbot.display import util as display_util
from certbot.plugins import common

from . import hook, verify
from .errors import InputError, MailstackError, NotInstalledError
from .model import CertFiles
from .names import normalize_name
from .pipeline import Outcome, Pipeline, Request
from .settings import OPTION_HELP, OPTION_NAMES

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """Our errors become certbot's, with the same one-line message."""
    try:
        yield
    except NotInstalledError as exc:
        raise errors.NoInstallationError(str(exc)) from None
    except InputError as exc:
        raise errors.PluginError(str(exc)) from None
    except MailstackError as exc:
        raise errors.MisconfigurationError(str(exc)) from None


class Installer(common.Installer, interfaces.RenewDeployer):
    """Deploy certificates into Postfix SNI maps and Dovecot local_name blocks."""

    description = "Deploy certificates into Postfix SNI maps and Dovecot local_name blocks"

    @classmethod
    def add_parser_arguments(cls, add: Callable[..., None]) -> None:
        # Defaults are None so that an unset option falls back to the one persisted at the last
        # deployment; every value is a string, so it survives certbot's renewal conf.
        for name in OPTION_NAMES:
            add(name, default=None, help=OPTION_HELP[name])
        add(
            "verify",
            action="store_true",
            default=False,
            help="after each deployment or renewal, check by TLS handshakes on every mail port that the "
            "deployed names are served their certificate, and report those that are not",
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._staged: Dict[str, Request] = {}
        self._touched_live_files = False  # set once this process is about to change live files
        self._deployed_names: List[str] = []  # for --mailstack-verify

    def _pipeline(self) -> Pipeline:
        given = {name: self.conf(name) for name in OPTION_NAMES}
        return Pipeline(self.config.config_dir, given)

    # -- certbot's Installer interface ----------------------------------------------------------

    def prepare(self) -> None:
        """Cheap checks only: that the daemons' tools and config files exist.

        During ``renew`` any error raised here makes certbot drop ``installer = mailstack`` from the
        renewal conf for good, so there a damaged state file or option only logs a warning and is
        reported, with its one line, by renew_deploy/restart instead.
        """
        pipeline = self._pipeline()
        try:
            settings = pipeline.settings()
        except MailstackError as exc:
            if getattr(self.config, "verb", None) == "renew":
                logger.warning("mailstack: %s", exc)
                return
            with _translated():
                raise
        with _translated():
            pipeline.check_installed(settings)

    def more_info(self) -> str:
        return (
            "Maps each certificate name to its lineage's privkey.pem and fullchain.pem in a Postfix "
            "tls_server_sni_maps table (built with postmap -F) and in Dovecot local_name blocks, "
            "then reloads both daemons; a deploy hook keeps them current after certbot renew."
        )

    def get_all_names(self) -> Iterable[str]:
        names: Set[str] = set()
        with _translated():
            pipeline = self._pipeline()
            state = pipeline.store.load()
            names.update(state.plan.names())
            for daemon in pipeline.daemons(pipeline.settings(state)):
                if daemon is not None:
                    names.update(daemon.known_names())
        valid = set()
        for name in names:
            try:
                valid.add(normalize_name(name))
            except InputError:
                continue
        return valid

    def deploy_cert(
        self, domain: str, cert_path: str, key_path: str, chain_path: str, fullchain_path: str
    ) -> None:
        """Stage ``domain`` for its lineage; files are written by save() or restart()."""
        if not fullchain_path:
            raise errors.PluginError(
                f"{domain}: mailstack serves the full chain, so it needs --fullchain-path"
            )
        with _translated():
            name = normalize_name(domain)
        files = CertFiles(os.path.abspath(key_path), os.path.abspath(fullchain_path))
        staged = self._staged.get(files.lineage_id)
        names = (staged.names if staged else ()) + (name,)
        self._staged[files.lineage_id] = Request(files, names)

    def enhance(self, domain: str, enhancement: str, options: Optional[Union[List[str], str]] = None) -> None:
        raise errors.PluginError(f"mailstack does not support the {enhancement} enhancement")

    def supported_enhancements(self) -> List[str]:
        return []

    def save(self, title: Optional[str] = None, temporary: bool = False) -> None:
        """Apply staged names when certbot saves with a title (once per ``run``/``install``).

        certbot also calls an untitled save() after each name; building the map per name would
        cost a postmap run and a Dovecot validation each, so those wait for the titled one.
        """
        if title is None or temporary:
            return
        if self._apply_staged():
            self.finalize_checkpoint(title)

    def config_test(self) -> None:
        with _translated():
            pipeline = self._pipeline()
            for daemon in pipeline.daemons(pipeline.settings()):
                daemon.check_config()

    def restart(self) -> None:
        """Apply anything still staged, then reload each daemon whose configuration changed.

        Under ``certbot renew`` the reload is left to the post hook, which certbot runs once after
        every lineage is done: K renewed lineages cost one reload per daemon, not K.
        """
        with _translated():
            if self._apply_staged():
                self.finalize_checkpoint("mailstack deployment")
            pipeline = self._pipeline()
            if self._reload_deferred():
                logger.info("mailstack: reload left to the post hook at the end of this renew run")
                return
            self._report(pipeline.reload_pending())
            if self.conf("verify") is True and self._deployed_names:
                self._verify(pipeline)

    def _reload_deferred(self) -> bool:
        return (
            getattr(self.config, "verb", None) == "renew"
            and getattr(self.config, "directory_hooks", True) is not False
            and hook.post_hook_installed(self.config.config_dir)
        )

    # -- renewal --------------------------------------------------------------------------------

    def renew_deploy(self, lineage: Any, *args: Any, **kwargs: Any) -> None:
        """Renewal path 1: rebuild for a lineage certbot renewed (restart() reloads afterwards)."""
        with _translated():
            pipeline = self._pipeline()
            outcome = pipeline.refresh(os.path.dirname(lineage.fullchain_path))
            if outcome is not None:
                hook.install_hooks(self.config.config_dir)  # keep them pointing at this Python and package
                known = pipeline.store.load().plan.lineages.get(os.path.dirname(lineage.fullchain_path))
                self._deployed_names += list(known.names) if known else []
        if outcome is None:
            logger.info("mailstack: %s is not deployed by mailstack; nothing to do", lineage.lineagename)

    # -- certbot's reverter ---------------------------------------------------------------------

    def rollback_checkpoints(self, rollback: int = 1) -> None:
        super().rollback_checkpoints(rollback)
        self._staged.clear()
        with _translated():
            self._pipeline().mark_for_reload()

    def recovery_routine(self) -> None:
        """certbot's clean-up after a failed deploy: undo what this process changed, if anything."""
        super().recovery_routine()
        self._staged.clear()
        if self._touched_live_files:
            with _translated():
                self._pipeline().mark_for_reload()

    # -- internals ------------------------------------------------------------------------------

    def _checkpoint(self, existing: Set[str], created: Set[str]) -> None:
        self._touched_live_files = True
        if existing:
            self.add_to_checkpoint(existing, "mailstack: Postfix SNI map, Dovecot drop-in, state")
        if created:
            self.reverter.register_file_creation(False, *sorted(created))

    def _apply_staged(self) -> bool:
        if not self._staged:
            return False
        requests = list(self._staged.values())
        self._deployed_names += [normalize_name(n) for request in requests for n in request.names]
        with _translated():
            outcome = self._pipeline().deploy(requests, checkpoint=self._checkpoint)
            hook.install_hooks(self.config.config_dir)
        self._staged.clear()
        self._report(outcome)
        return True

    def _verify(self, pipeline: Pipeline) -> None:
        """--mailstack-verify: report (not fail on) names a daemon does not serve correctly."""
        settings = pipeline.settings()
        found = [
            item for daemon in pipeline.daemons(settings) if daemon is not None for item in daemon.listeners()
        ]
        plan = pipeline.store.load().plan
        mapped = set(plan.names())
        names = [n for n in dict.fromkeys(self._deployed_names) if n in mapped]
        problems = verify.problems_after_deploy(plan, names, found)
        for line in problems:
            logger.warning("mailstack verify: %s", line)
        if problems:
            display_util.notify(f"mailstack: {len(problems)} name/port check(s) failed; see the log or run "
                                "certbot-mailstack verify")  # fmt: skip
        else:
            logger.info(
                "mailstack verify: %d name(s) served correctly on %d listener(s)", len(names), len(found)
            )
        self._deployed_names.clear()

    @staticmethod
    def _report(outcome: Outcome) -> None:
        if outcome.reloaded:
            logger.info("mailstack: reloaded %s", ", ".join(outcome.reloaded))
