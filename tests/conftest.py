"""Test configuration shared by every test module.

* Registers the flowmap-oracle plugin so that ``pytest --impl=package.module:factory`` works
  (and pytester, which the plugin's own tests use).
* Under pytest-xdist every worker uses one torch thread: ``make test`` runs two workers on a
  2-core machine, and two threads per worker oversubscribe the cores (measured: single ops up
  to 30x slower under load).
"""

import os

import torch

pytest_plugins = ["flowmap_oracle.oracle.plugin", "pytester"]

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
