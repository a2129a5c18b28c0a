"""certbot-mailstack: serve the right Let's Encrypt certificate per SNI name from Postfix and Dovecot."""

__version__ = "0.1.0"
