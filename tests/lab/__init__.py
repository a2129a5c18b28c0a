"""Test lab: throwaway Pebble, Postfix, Dovecot and certbot instances on free local ports."""
