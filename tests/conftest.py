"""Registers the flowmap-oracle plugin so that ``pytest --impl=package.module:factory`` works."""

pytest_plugins = ["flowmap_oracle.pytest_plugin"]
