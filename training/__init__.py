"""GRPO training of query reasoners with TRL, imported as ``tongsearch_qr.training``.

Needs the ``train`` extra (``pip install tongsearch-qr[train]``); the core never imports it.
"""
