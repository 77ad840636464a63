"""The training loss of ``text.train``: the LM head and the cross-entropy as one autograd node.

A Hugging Face causal LM computes the loss as ``logits = lm_head(h)`` (a ``(N, V)`` tensor: 67 MB for the 14M
model's batch of 8 × 256 tokens and its 8,192-token vocabulary, 1.6 GB at GPT-2 124M's 8 × 1024 × 50,304), then
``log_softmax`` (another ``(N, V)``), ``nll_loss``; backward zero-fills a third ``(N, V)`` for ``nll_loss``'s
gradient and runs ``log_softmax``'s backward over two of them. :func:`linear_cross_entropy` instead turns the logits
into their gradient ``(softmax - onehot)`` in place during the forward pass (the loss needs ``logsumexp`` anyway),
keeps that one buffer for backward, and folds the loss's scale into the two small matrix products of backward:
the same function and gradients (to float rounding), fewer passes over the largest tensor of the step.

Only for model types whose logits are exactly ``lm_head(last_hidden_state)`` (no bias, scaling or soft-capping):
:data:`FUSED_MODEL_TYPES`. Any other model computes its own loss (:class:`CausalLMLoss` falls back).
"""

from __future__ import annotations

import torch
from torch import nn

# Model types checked to compute logits as ``lm_head(base_model(...).last_hidden_state)`` and nothing more.
FUSED_MODEL_TYPES = frozenset({"gpt2"})


def _compute_dtype(device_type: str, dtype: torch.dtype) -> torch.dtype:
    """The dtype autocast would run a matmul in here (``dtype`` outside autocast)."""
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return dtype


class _LinearCrossEntropy(torch.autograd.Function):
    """``mean(cross_entropy(hidden @ weight.T, targets))`` with the logits' gradient formed in the forward pass."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        device_type = hidden.device.type
        dtype = _compute_dtype(device_type, hidden.dtype)
        with torch.autocast(device_type, enabled=False):  # explicit dtypes: backward runs outside autocast
            h, w = hidden.to(dtype), weight.to(dtype)  # (N, C), (V, C)
            logits = torch.mm(h, w.t()).float()  # (N, V) fp32 (a no-op cast in fp32)
            lse = torch.logsumexp(logits, dim=1)  # (N,)
            loss = (lse - logits.gather(1, targets[:, None]).squeeze(1)).mean()  # ()
            grad = logits.sub_(lse[:, None]).exp_()  # (N, V) softmax, in the logits' buffer
            grad.scatter_add_(1, targets[:, None], torch.full_like(lse[:, None], -1.0))  # softmax - onehot
            grad = grad.to(dtype)  # (N, V) in the matmul dtype (a no-op in fp32)
        ctx.save_for_backward(h, w, grad)
        ctx.dtypes = (hidden.dtype, weight.dtype)
        return loss

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        h, w, grad = ctx.saved_tensors
        scale = grad_loss / grad.shape[0]  # () d(mean)/d(sum), times the incoming gradient
        grad_hidden = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_hidden = (torch.mm(grad, w) * scale).to(ctx.dtypes[0])  # (N, C)
        if ctx.needs_input_grad[1]:
            grad_weight = (torch.mm(grad.t(), h) * scale).to(ctx.dtypes[1])  # (V, C)
        return grad_hidden, grad_weight, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the logits ``hidden @ weight.T`` against ``targets``.

    ``hidden`` ``(N, C)``, ``weight`` ``(V, C)``, ``targets`` ``(N,)`` int64 (every target counts: packed blocks have
    no padding). Without gradients (evaluation) it is the plain computation.
    """
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(hidden, weight, targets)
    logits = torch.mm(hidden, weight.t()).float()  # (N, V)
    return nn.functional.cross_entropy(logits, targets)


class CausalLMLoss(nn.Module):
    """``forward(x)``: the next-token loss of ``model`` on blocks ``x`` ``(B, T)`` (mean over ``B * (T - 1)``).

    Uses :func:`linear_cross_entropy` for :data:`FUSED_MODEL_TYPES`, the model's own loss otherwise. A module (not a
    function) so that DDP and ``torch.compile`` can wrap the whole loss computation.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        self.fused = (
            getattr(model.config, "model_type", None) in FUSED_MODEL_TYPES
            and isinstance(head, nn.Linear)
            and head.bias is None
        )

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.long()  # (B, T)
        if not self.fused:
            return self.model(input_ids=x, labels=x, use_cache=False).loss
        hidden = self.model.base_model(input_ids=x, use_cache=False).last_hidden_state  # (B, T, C)
        inputs = hidden[:, :-1].reshape(-1, hidden.shape[-1])  # (B * (T-1), C): position t predicts token t+1
        return linear_cross_entropy(inputs, self.model.get_output_embeddings().weight, x[:, 1:].reshape(-1))
