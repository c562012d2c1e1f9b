"""script_prestart.py's program, but its text never names the backend: the name is
built at run time, so ``import torch`` cannot tell that it will compile through the
sandbox (SANDBOX_PRESTART=auto starts the workers at torch.compile instead)."""

import sys

import torch

import prestart_body

AT_IMPORT = prestart_body.after_import()
BACKEND = "sand" + "box"


def compile_model(model):
    return torch.compile(model, backend=BACKEND)


if __name__ == "__main__":
    prestart_body.run(AT_IMPORT, compile_model, sys.argv[1:])
