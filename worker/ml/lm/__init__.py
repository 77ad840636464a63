"""Language models (GPT-2 and other causal LMs): data, loading, training (``text.train``) and generation
(``text.generate``: the static, continuous and cross-job batching engines)."""
