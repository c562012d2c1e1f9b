"""Starts workers, reports their pids, then waits to be killed (SIGKILL) by the test."""

import os
import time

import torch  # noqa: F401

import common
import sandbox

sandbox.warmup(workers=2, wait=True)
workers = sandbox.workers()
common.emit({"pid": os.getpid(), "workers": workers, "pool_processes": common.worker_trees()})
time.sleep(600)
