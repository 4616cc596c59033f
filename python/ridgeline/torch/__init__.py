"""PyTorch models under Ridgeline's scans: the evaluator a worker starts for
``[landscape.evaluator] python = "module:function"`` (``ridgeline.torch.evaluator``).

The function takes no arguments and returns ``(model, loss_fn, batches)``: a
``torch.nn.Module``, a function ``loss_fn(outputs, targets)`` giving the batch's mean
loss, and a list of ``(inputs, targets)`` batches (tensors, or tuples/dicts of tensors
passed to the model as ``model(*inputs)`` / ``model(**inputs)``). torch is imported only
under this package, never by the rest of ``ridgeline``.
"""
