"""Option errors: unknown keys, bad values (``options=`` and ``SANDBOX_*``), unknown modes.

Each case compiles a tiny function with ``backend="sandbox"`` and records what the
user gets at the first call (where dynamo invokes the backend).
"""

import os

import torch

import common
import sandbox

CASES = [
    ("unknown_key", {"options": {"num_workers": 2}}, {}),
    ("bad_workers", {"options": {"workers": 0}}, {}),
    ("bad_timeout", {"options": {"timeout_s": -5}}, {}),
    ("bad_memory", {"options": {"memory_limit_mb": "lots"}}, {}),
    ("bad_on_failure", {"options": {"on_failure": "ignore"}}, {}),
    ("bad_unpicklable", {"options": {"unpicklable": "maybe"}}, {}),
    ("bad_mode", {"mode": "fastest"}, {}),
    ("bad_mode_in_options", {"options": {"mode": "fastest", "workers": 1}}, {}),
    ("mode_in_options_not_text", {"options": {"mode": 3}}, {}),
    ("workers_as_text", {"options": {"workers": "2"}}, {}),
    ("trace_as_text", {"options": {"trace": "yes"}}, {}),
    ("env_bad_on_failure", {}, {"SANDBOX_ON_FAILURE": "explode"}),
    ("env_bad_workers", {}, {"SANDBOX_WORKERS": "two"}),
    ("env_bad_timeout", {}, {"SANDBOX_TIMEOUT_S": "soon"}),
    ("env_bad_memory", {}, {"SANDBOX_MEMORY_LIMIT_MB": "-1"}),
    ("env_bad_unpicklable", {}, {"SANDBOX_UNPICKLABLE": "sometimes"}),
    # options= beats the environment: this one is valid and compiles
    ("options_beat_env", {"options": {"unpicklable": "in_process"}}, {"SANDBOX_UNPICKLABLE": "sometimes"}),
]

x = torch.randn(4)
results = {}
for name, kwargs, env in CASES:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        y = torch.compile(lambda t: t * 2 + 1, backend="sandbox", **kwargs)(x)
        results[name] = {"raised": None, "correct": common.close(y, x * 2 + 1)}
    except Exception as e:  # noqa: BLE001 - the test looks at it
        option_errors = [c for c in common.chain(e) if isinstance(c, sandbox.OptionError)]
        results[name] = {
            "raised": common.exception_info(e),
            # What `except sandbox.OptionError:` around the call catches: the error itself, not a wrapper.
            "caught_as_option_error": isinstance(e, sandbox.OptionError),
            "option_error": str(option_errors[0]) if option_errors else None,
        }
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    torch._dynamo.reset()

common.emit({"pid": os.getpid(), "results": results, "reports": common.reports()})
