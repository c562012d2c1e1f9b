"""A worker that is slow to start: on PYTHONPATH, this delays every sandbox worker's
interpreter by SLOW_WORKER_START_S seconds before it imports anything (a busy machine,
a slow file system), and leaves every other interpreter alone."""

import os
import sys
import time

if "sandbox.isolation.worker" in getattr(sys, "orig_argv", ()):
    time.sleep(float(os.environ.get("SLOW_WORKER_START_S", "0")))
