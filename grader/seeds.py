"""Seeds derived from the deployment's secret seed, one way: whatever a seed is used for (a check's
inputs, a child's RNG, a training run), the secret cannot be worked back from it. The student's
code sees derived seeds at most (``torch.initial_seed()`` in the child), never the secret."""
from __future__ import annotations

import hashlib


def derive_seed(secret: int, purpose: str) -> int:
    """A 63-bit seed for ``purpose`` ("check:attention:values", "child", "training:mnist"): a keyed
    hash of the secret, so that seeds for different purposes are independent and reveal nothing."""
    key = hashlib.sha256(str(int(secret)).encode()).digest()  # any size of secret, as a 32-byte key
    digest = hashlib.blake2b(purpose.encode(), key=key, digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1
