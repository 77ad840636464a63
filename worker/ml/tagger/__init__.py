"""Token classification (named-entity tagging): the ``text.train_tagger`` and ``text.tag`` kinds' ML code.

``data`` (tokenizer, sub-word label alignment, length-bucketed batches), ``model`` (scratch BERT presets, hub and
registry encoders), ``train`` (the AdamW loop with checkpoints and resume), ``metrics`` (entity-level precision,
recall and f1 as conlleval/seqeval count them; token accuracy), ``infer`` (batched tagging with simple aggregation
and character offsets). Pure torch/transformers: no Celery, Flask or database here.
"""
