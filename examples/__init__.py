"""Small independent implementations checked by the oracle (see the README's "Check your
implementation"). Each module's ``implementation()`` is a factory for ``flowmap-oracle check``."""
