"""Session-wide test settings."""

import atexit
import os
import shutil
import tempfile

# sgtui holds one lock per engine port for a whole session (sgtui.portlock). Several people run the suite
# on one machine at once, each with stand-in runs on the default ports: give every pytest process its own
# lock directory so their sessions do not refuse each other's ports. (Subprocesses inherit it.)
if "SGTUI_LOCK_DIR" not in os.environ:
    os.environ["SGTUI_LOCK_DIR"] = tempfile.mkdtemp(prefix="sgtui-test-locks-")
    atexit.register(shutil.rmtree, os.environ["SGTUI_LOCK_DIR"], True)
