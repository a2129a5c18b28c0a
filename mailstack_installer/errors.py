"""The package's own error hierarchy.

Each error carries one line a sysadmin can act on. The two front doors (the certbot installer and the
``certbot-mailstack`` command) translate them: to certbot's ``NoInstallationError`` /
``MisconfigurationError`` / ``PluginError``, or to an exit code and one line on stderr.
"""


class MailstackError(Exception):
    """Anything that stops a deployment; the message is the whole story, no traceback needed."""


class NotInstalledError(MailstackError):
    """A daemon, a tool or a configuration directory is missing."""


class MisconfiguredError(MailstackError):
    """The mail stack's configuration is wrong or a daemon refused it."""


class ServiceError(MisconfiguredError):
    """A daemon could not be reloaded or restarted, or did not serve what it was given: a fault of the
    host, not of one lineage, so a bulk import stops instead of trying its lineages one by one."""


class InputError(MailstackError):
    """A name, path or certificate file given to us cannot be deployed."""


class CommandError(MailstackError):
    """An external command failed."""
