"""Test doubles of the dialer's ports (importable by any test suite, not used in production).

* ``dialer.testing.memory.MemoryStore``: ``DispatchPort`` (and ``SetupPort``) in memory;
* ``dialer.testing.setup``: ``SetupPort``, ``ContractStore`` and the ``launch`` builder, the same
  on ``SqlStore`` and ``MemoryStore``;
* ``dialer.testing.conformance``: mypy's proof that both fit their ports.
"""
