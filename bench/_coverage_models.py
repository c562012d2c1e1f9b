"""The coverage sweep's model entries: real architectures, built from configs, one training step each.

Each model is made from a small config (never downloaded weights: nothing here reaches the
network), seeded, with dropout off, and wrapped so that its forward returns the loss: a Hugging
Face causal LM (GPT-2), an encoder (BERT), an encoder-decoder (T5), a timm CNN (resnet18) and
ViT, and torchvision's segmentation and detection models. :func:`run` takes one eager step
(forward, ``loss.backward()``) as the reference and the same step compiled with the variant's
backend, and compares the loss and every parameter's gradient (where they differ by more than
the tolerance, against a float64 eager step too); ``bench/_coverage_child.py`` accounts the
graphs the backend saw, as it does for an operator.

A model whose library cannot be imported is a row that says what to install, never a crash.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import importlib.util
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils._pytree as pytree

PREFIX = "model:"
VOCAB, SEQ, BATCH = 256, 32, 2
IMAGE = 64  # pixels a side: small enough for a CPU compile, large enough for every stride

# Inductor fuses and reorders float32 reductions, and the last bits that move grow through a
# network's layers: the loss is held to eager closely, and each gradient against its own largest
# entry (an entry near zero may differ by more, relative to itself, than a large one).
LOSS_RTOL, LOSS_ATOL = 1e-4, 1e-5
GRAD_TOL, GRAD_FLOOR = 1e-3, 1e-3
# Beyond that, as torch's own benchmarks judge a float32 compiled model against a float64 run:
# twice eager's error (three times for a tensor under a thousand entries, where noise dominates),
# plus a margin, here a hundredth of the gradient's size: a wrong kernel misses by far more.
FP64_MULT, FP64_MULT_SMALL, GRAD_RMS64 = 2.0, 3.0, 1e-2


@dataclasses.dataclass(frozen=True)
class Model:
    name: str
    what: str
    needs: tuple[str, ...]  # the packages it imports, a dependency before what needs it
    build: Callable[[], tuple[torch.nn.Module, dict[str, Any]]]


class _WithLoss(torch.nn.Module):
    """A model and its loss in one forward, so the loss compiles with it as a training step's would."""

    def __init__(self, model: torch.nn.Module, loss: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        self.model, self.loss = model, loss

    def forward(self, **batch: Any) -> torch.Tensor:
        return self.loss(self.model, **batch)


def _generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _tokens(g: torch.Generator, length: int = SEQ) -> torch.Tensor:
    return torch.randint(1, VOCAB, (BATCH, length), generator=g)


def _hf_loss(model: torch.nn.Module, **batch: Any) -> torch.Tensor:
    return model(**batch).loss


def _gpt2() -> tuple[torch.nn.Module, dict[str, Any]]:
    from transformers import GPT2Config, GPT2LMHeadModel  # optional: the models extra

    # GPT-2's own token ids (50256) lie past this vocabulary.
    config = GPT2Config(
        vocab_size=VOCAB,
        n_positions=SEQ,
        n_embd=64,
        n_layer=2,
        n_head=2,
        n_inner=128,
        bos_token_id=VOCAB - 1,
        eos_token_id=VOCAB - 1,
    )
    config.update(dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False))
    ids = _tokens(_generator())
    return _WithLoss(GPT2LMHeadModel(config), _hf_loss), {"input_ids": ids, "labels": ids}


def _bert() -> tuple[torch.nn.Module, dict[str, Any]]:
    from transformers import BertConfig, BertForMaskedLM  # optional: the models extra

    config = BertConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=2)
    config.update(dict(intermediate_size=128, max_position_embeddings=SEQ))
    config.update(dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    g = _generator()
    ids = _tokens(g)
    mask = torch.ones_like(ids)
    mask[1, SEQ * 3 // 4 :] = 0  # the second sequence is padded: the attention mask is not all ones
    masked = torch.rand(ids.shape, generator=g) < 0.25
    labels = torch.where(masked & (mask == 1), ids, torch.full_like(ids, -100))
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    return _WithLoss(BertForMaskedLM(config), _hf_loss), batch


def _t5() -> tuple[torch.nn.Module, dict[str, Any]]:
    from transformers import T5Config, T5ForConditionalGeneration  # optional: the models extra

    config = T5Config(vocab_size=VOCAB, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2)
    config.update(dict(num_heads=4, dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, use_cache=False))
    g = _generator()
    batch = {"input_ids": _tokens(g), "labels": _tokens(g, SEQ // 2)}
    return _WithLoss(T5ForConditionalGeneration(config), _hf_loss), batch


def _classify(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(images), labels)


def _images(classes: int) -> dict[str, Any]:
    g = _generator()
    images = torch.randn(BATCH, 3, IMAGE, IMAGE, generator=g)
    return {"images": images, "labels": torch.randint(0, classes, (BATCH,), generator=g)}


def _timm(name: str, **kwargs: Any) -> tuple[torch.nn.Module, dict[str, Any]]:
    import timm  # optional: the models extra

    model = timm.create_model(name, pretrained=False, num_classes=10, **kwargs)
    return _WithLoss(model, _classify), _images(10)


def _segment(model: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(images)["out"], masks)


def _deeplabv3() -> tuple[torch.nn.Module, dict[str, Any]]:
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large  # optional: the models extra

    model = deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=4, aux_loss=False)
    g = _generator()
    images = torch.randn(BATCH, 3, IMAGE, IMAGE, generator=g)
    masks = torch.randint(0, 4, (BATCH, IMAGE, IMAGE), generator=g)
    return _WithLoss(model, _segment), {"images": images, "masks": masks}


def _detect(model: torch.nn.Module, images: list[torch.Tensor], targets: list[dict[str, Any]]) -> torch.Tensor:
    losses = model(images, targets)
    return sum(losses.values())


def _fasterrcnn() -> tuple[torch.nn.Module, dict[str, Any]]:
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn  # optional: the models extra

    side = 2 * IMAGE
    # Samplers that keep every anchor and proposal: one that subsamples draws random numbers,
    # and the step would differ from itself under another seed.
    keep_all = dict(rpn_batch_size_per_image=1_000_000, box_batch_size_per_image=1_000_000)
    model = fasterrcnn_mobilenet_v3_large_fpn(
        weights=None, weights_backbone=None, num_classes=3, min_size=side, max_size=side, **keep_all
    )
    g = _generator()
    images = [torch.rand(3, side, side, generator=g) for _ in range(BATCH)]
    corners = torch.rand(BATCH, 2, 2, generator=g) * side / 2
    boxes = [torch.cat([c[0], c[0] + c[1] + side / 4]).unsqueeze(0) for c in corners]
    targets = [{"boxes": b, "labels": torch.tensor([1 + i % 2])} for i, b in enumerate(boxes)]
    return _WithLoss(model, _detect), {"images": images, "targets": targets}


HF, TIMM, TORCHVISION = ("transformers",), ("torchvision", "timm"), ("torchvision",)
MODELS: dict[str, Model] = {
    m.name: m
    for m in (
        Model("gpt2", "Hugging Face GPT-2 causal LM, 2 layers, d=64", HF, _gpt2),
        Model("bert", "Hugging Face BERT masked LM, 2 layers, d=64, a padded sequence", HF, _bert),
        Model("t5", "Hugging Face T5 encoder-decoder, 2+2 layers, d=64", HF, _t5),
        Model("resnet18", f"timm resnet18, {IMAGE}x{IMAGE} images", TIMM, lambda: _timm("resnet18")),
        Model(
            "vit_tiny",
            f"timm vit_tiny_patch16_224 at {IMAGE}x{IMAGE}",
            TIMM,
            lambda: _timm("vit_tiny_patch16_224", img_size=IMAGE),
        ),
        Model("deeplabv3", "torchvision deeplabv3_mobilenet_v3_large", TORCHVISION, _deeplabv3),
        Model("fasterrcnn", "torchvision fasterrcnn_mobilenet_v3_large_fpn, train mode", TORCHVISION, _fasterrcnn),
    )
}


def select(spec: str) -> list[str]:
    """``all``, ``none`` or comma-separated names, as entry names (``model:NAME``)."""
    if spec.strip() in ("", "none"):
        return []
    names = list(MODELS) if spec.strip() == "all" else [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise SystemExit(f"unknown models: {', '.join(unknown)} (known: {', '.join(MODELS)})")
    return [PREFIX + n for n in names]


_IMPORT_ERRORS: dict[str, str] = {}


def _import_error(module: str) -> str | None:
    """Why ``module`` cannot be imported here, or None when it can. A torchvision that fails on
    import (a build for another torch) is also hidden from transformers, which imports it
    whenever it is found and would fail with it."""
    if module not in _IMPORT_ERRORS:
        try:
            importlib.import_module(module)
            _IMPORT_ERRORS[module] = ""
        except Exception as e:  # a missing module, or one built against another torch
            _IMPORT_ERRORS[module] = f"{type(e).__name__}: {str(e)[:160]}"
            if module == "torchvision":
                sys.modules["torchvision"] = None  # type: ignore[assignment]
    return _IMPORT_ERRORS[module] or None


def missing(model: Model) -> str | None:
    """``not installed: pip install ...`` for a model whose libraries do not import (with the
    first one's error), else None."""
    if model.needs == HF and importlib.util.find_spec("torchvision") is not None:
        _import_error("torchvision")  # before transformers looks for it
    for module in model.needs:
        err = _import_error(module)
        if err:
            return f"not installed: pip install {' '.join(model.needs)} ({module}: {err})"
    return None


def _no_dropout(module: torch.nn.Module) -> None:
    # The compiled step draws random numbers in another order than eager: with dropout on,
    # the two would not compare. The configs turn dropout off; this catches what they miss.
    for m in module.modules():
        if isinstance(m, torch.nn.modules.dropout._DropoutNd):
            m.p = 0.0


def _step(
    module: torch.nn.Module, batch: dict[str, Any], seed: int, call: Callable[..., Any] | None = None
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The loss and the gradients of ``module``'s parameters after ``call`` (the module itself,
    or its compiled form, whose parameter names carry a prefix) ran forward and backward."""
    torch.manual_seed(seed)
    loss = (module if call is None else call)(**batch)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def _float64(module: torch.nn.Module, batch: dict[str, Any]) -> tuple[Any, Any] | None:
    """The eager step in float64 (the answer float32 rounds towards), or None where the model
    does not run in float64."""
    as64 = pytree.tree_map_only(torch.Tensor, lambda t: t.double() if t.is_floating_point() else t, batch)
    try:
        return _step(module.double(), as64, 0)
    except Exception:  # a model with a float32-only kernel: judged against eager alone
        return None


def _rms(t: torch.Tensor) -> float:
    return float(t.double().pow(2).mean().sqrt()) if t.numel() else 0.0


def _judge(
    got: tuple[torch.Tensor, dict[str, torch.Tensor]],
    eager: tuple[torch.Tensor, dict[str, torch.Tensor]],
    exact: tuple[torch.Tensor, dict[str, torch.Tensor]] | None,
) -> dict[str, Any]:
    """What does not match eager, the largest gradient difference against eager (relative to the
    largest entry of eager's gradient of that parameter) and where, and the largest distance
    from the float64 step (root mean square, relative to the float64 gradient's), eager's beside it.

    A loss or gradient that differs from eager by more than the tolerance still matches when it
    is no further from the float64 step than ``FP64_MULT`` times eager's own float32 error plus
    ``GRAD_RMS64``: batch norm over small groups and deep stacks amplify rounding, and Inductor
    rounds otherwise than eager. A gradient that is zero but for rounding (a key projection's
    bias: softmax ignores a shift shared by all keys) is measured against ``GRAD_FLOOR`` of the
    model's largest gradient, so that its rounding noise is not taken for a difference."""
    (loss, grads), (loss_eager, grads_eager) = got, eager
    out: dict[str, Any] = {"mismatched": [], "grad_err": 0.0, "grad_err_at": "", "float64_reference": bool(exact)}
    if set(grads) != set(grads_eager) or any(grads[n].shape != grads_eager[n].shape for n in grads_eager):
        names = sorted(n for n in set(grads) | set(grads_eager) if n not in grads or n not in grads_eager)
        names += sorted(n for n in grads_eager if n in grads and grads[n].shape != grads_eager[n].shape)
        out["mismatched"].append(f"gradients missing or shaped otherwise: {', '.join(names[:5])}")
        return out
    if not torch.allclose(loss, loss_eager, rtol=LOSS_RTOL, atol=LOSS_ATOL):
        r = exact[0] if exact else None
        if r is None or abs(float(loss) - float(r)) > FP64_MULT * abs(float(loss_eager) - float(r)) + LOSS_ATOL:
            out["mismatched"].append(f"loss {float(loss):.6g} against eager {float(loss_eager):.6g}")
    largest = max((float(g.abs().max()) for g in grads_eager.values() if g.numel()), default=0.0)
    largest_rms = max((_rms(g) for g in grads_eager.values()), default=0.0)
    out.update(grad_rms64=0.0, grad_rms64_eager=0.0, grad_rms64_at="")
    for name in sorted(grads_eager):
        a, b = grads[name], grads_eager[name]
        if not b.numel():
            continue
        scale = max(float(b.abs().max()), GRAD_FLOOR * largest, 1e-30)
        err = float((a - b).abs().max()) / scale
        if err > out["grad_err"]:
            out["grad_err"], out["grad_err_at"] = err, name
        if exact is not None:
            r = exact[1][name]
            rms = max(_rms(r), GRAD_FLOOR * largest_rms, 1e-30)
            mine, eagers = _rms(a.double() - r) / rms, _rms(b.double() - r) / rms
            if mine > out["grad_rms64"]:
                out.update(grad_rms64=mine, grad_rms64_eager=eagers, grad_rms64_at=name)
            mult = FP64_MULT_SMALL if b.numel() < 1000 else FP64_MULT
            if err > GRAD_TOL and mine > mult * eagers + GRAD_RMS64:
                out["mismatched"].append(f"gradient of {name}: {mine:.3g} from float64 (eager {eagers:.3g})")
        elif err > GRAD_TOL:
            out["mismatched"].append(f"gradient of {name}: {err:.3g} of its largest entry")
    return out


def run(name: str, backend: str) -> dict[str, Any]:
    """One model's training step under ``backend`` against eager, as an entry's record (graphs
    are the caller's: it reads them from what the backend reported)."""
    model = MODELS[name]
    rec: dict[str, Any] = {"samples": 0, "compared": 0, "failed": 0, "mismatch": 0, "eager_error": 0, "random": 0}
    rec.update(errors=[], mismatched=[], model=model.what)
    hint = missing(model)
    if hint:
        rec["not_installed"] = hint
        rec["seconds"] = 0.0
        return rec
    rec["samples"] = 1
    try:
        torch.manual_seed(0)
        built, batch = model.build()
        _no_dropout(built)
        built.train()
        # The compiled and float64 steps start from the weights eager started from.
        fresh, exact = copy.deepcopy(built), _float64(copy.deepcopy(built), batch)
        t0 = time.perf_counter()
        eager = _step(built, batch, 0)
        rec["eager_seconds"] = round(time.perf_counter() - t0, 3)
        for p in built.parameters():
            p.grad = None
        again, _ = _step(built, batch, 1)
    except Exception as e:
        rec["eager_error"] = 1
        rec["errors"].append(f"eager: {traceback.format_exception_only(type(e), e)[-1].strip()[:300]}")
        rec["seconds"] = 0.0
        return rec
    rec["parameters"] = sum(p.numel() for p in fresh.parameters())
    torch._dynamo.reset()
    t0 = time.perf_counter()
    try:
        got = _step(fresh, batch, 0, torch.compile(fresh, backend=backend))
    except Exception as e:
        rec["seconds"] = round(time.perf_counter() - t0, 3)
        rec["failed"] = 1
        rec["errors"].append(traceback.format_exception_only(type(e), e)[-1].strip()[:300])
        return rec
    rec["seconds"] = round(time.perf_counter() - t0, 3)
    rec["loss_eager"], rec["loss"] = float(eager[0]), float(got[0])
    # The loss of a second eager step under another seed: where it moves, the model draws random
    # numbers, and only the step's completion is judged.
    if not torch.allclose(again, eager[0], rtol=LOSS_RTOL, atol=LOSS_ATOL):
        rec["random"] = 1
        return rec
    rec["compared"] = 1
    rec.update(_judge(got, eager, exact))
    rec["mismatch"] = int(bool(rec["mismatched"]))
    return rec
