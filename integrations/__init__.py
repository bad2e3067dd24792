"""Adapters of the core reasoner for retrieval stacks, imported as ``tongsearch_qr.integrations.<stack>``.

Each adapter imports its stack only when its own module is imported, so ``import tongsearch_qr``
never pulls in PyTerrier, LlamaIndex or Haystack.
"""
