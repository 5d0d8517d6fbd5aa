"""Registers the flowmap-oracle plugin so that ``pytest --impl=package.module:factory`` works
(and pytester, which the plugin's own tests use)."""

pytest_plugins = ["flowmap_oracle.pytest_plugin", "pytester"]
