"""Dovecot: the drop-in's format (``dropin``) and the daemon (``daemon``)."""

from .daemon import Dovecot

__all__ = ["Dovecot"]
