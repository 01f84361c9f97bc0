"""Session-wide test settings."""

import atexit
import os
import shutil
import tempfile

import pytest

# sgtui holds one lock per engine port for a whole session (sgtui.portlock). Several people run the suite
# on one machine at once, and the two xdist workers of one run are two such suites, each with stand-in
# runs (no server) on the default ports: give every pytest process, each worker included, its own lock
# directory so their sessions do not refuse each other's ports. (Subprocesses inherit it; a worker
# inherits its controller's, hence the worker check.)
if "SGTUI_LOCK_DIR" not in os.environ or os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["SGTUI_LOCK_DIR"] = tempfile.mkdtemp(prefix="sgtui-test-locks-")
    atexit.register(shutil.rmtree, os.environ["SGTUI_LOCK_DIR"], True)


# Two pytest-xdist workers (`-n 2` in pyproject's addopts). Each module stays whole on one worker, so a module
# fixture (one engine server, one trainer run) starts once. The real-engine modules are the long poles:
# they form two groups of similar length that go out first, one per worker, and the other modules fill in
# behind them. (Without xdist, e.g. `-p no:xdist`, the marks are inert and the order is the same set.)
ENGINE_GROUPS = {
    "tests/test_e2e_engines.py": "engines-a",
    "tests/runner/test_sglang_real.py": "engines-a",
    "tests/test_interleave_engines.py": "engines-a",  # ~2 min: both CPU servers, taking turns
    "tests/test_external_engine.py": "engines-a",  # one vLLM CPU server the test starts, measured via --vllm-url
    "tests/runner/test_vllm_real.py": "engines-b",
    "tests/tui/test_tui_real_engine.py": "engines-b",
    "tests/faults/test_engine_faults.py": "engines-b",
    "tests/runner/test_full_sync_vllm.py": "engines-b",  # full-weight sync: a server of each engine
    "tests/runner/test_full_sync_sglang.py": "engines-b",
}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which turns the marks into scheduling groups
def pytest_collection_modifyitems(config, items):
    root = config.rootpath
    for item in items:
        module = item.path.relative_to(root).as_posix()
        item.add_marker(pytest.mark.xdist_group(ENGINE_GROUPS.get(module, module)))
    order = list(ENGINE_GROUPS)
    items.sort(key=lambda item: order.index(m) if (m := item.path.relative_to(root).as_posix()) in order
               else len(order))
