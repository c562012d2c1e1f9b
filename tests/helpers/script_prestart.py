"""A training script that names the backend: its workers start at ``import torch``
(sandbox/prestart.py, SANDBOX_PRESTART=auto). ``spawn``: also starts a multiprocessing
child (spawn), which re-imports torch and this script."""

import sys

import torch

import prestart_body

AT_IMPORT = prestart_body.after_import()  # right after import torch, before anything else


def compile_model(model):
    return torch.compile(model, backend="sandbox")


if __name__ == "__main__":
    prestart_body.run(AT_IMPORT, compile_model, sys.argv[1:])
