"""Postfix: the SNI map's format (``mapfile``) and the daemon (``daemon``)."""

from .daemon import Postfix

__all__ = ["Postfix"]
