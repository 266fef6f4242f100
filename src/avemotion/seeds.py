"""Random streams of a training run: one independent stream per purpose, derived from the run's seed.

A model's training draws random numbers for four purposes, and each gets its own generator, seeded from the
run's seed and the purpose by NumPy's ``SeedSequence`` (``SeedSequence(seed, spawn_key=(purpose id,))``, the
spawning NumPy recommends for parallel streams: the seed and the purpose both enter its hash, so no two
(seed, purpose) pairs share a state and no stream is another's shifted copy):

- ``weights``: every initial weight of the model (torch's global generator while the model is built; a
  backbone built from scratch and the TIM-Net on top of it draw one after the other from it);
- ``dropout``: every random draw of the training forward passes (TIM-Net's spatial dropout masks, the fusion
  perceptron's dropout, a backbone's own dropout and Wav2Vec2's LayerDrop): torch's global generator, re-seeded once the model is
  built, so the masks do not depend on how many numbers building the model took;
- ``batches``: the order of the training clips in every epoch (a ``torch.Generator`` of its own);
- ``augment``: NumPy's global generator, which Wav2Vec2 draws its SpecAugment time masks from
  (transformers' ``_compute_mask_indices``).

Before, one number seeded torch's global generator and the batch-order generator alike: both were MT19937
from the same state, so the first epoch's order and the initial weights came from the same draws.

A purpose's id is its fixed number in :data:`PURPOSES` (never reorder it: that would change every result).
A run with the same seed draws the same numbers and gives byte-identical outputs.
"""

from __future__ import annotations

import numpy as np
import torch

# purpose -> its spawn key; append new purposes, never renumber.
PURPOSES = {"weights": 0, "dropout": 1, "batches": 2, "augment": 3}


def stream_seed(seed: int, purpose: str) -> int:
    """The 32-bit seed of ``purpose``'s stream for the run seeded ``seed`` (32 bits: torch's CPU MT19937
    and NumPy's legacy global generator take no more)."""
    if purpose not in PURPOSES:
        raise KeyError(f"unknown random stream {purpose!r}; one of {', '.join(PURPOSES)}")
    if seed < 0:
        raise ValueError(f"a seed must be >= 0, got {seed}")
    sequence = np.random.SeedSequence(seed, spawn_key=(PURPOSES[purpose],))
    return int(sequence.generate_state(1, np.uint32)[0])


def seed_weights(seed: int) -> None:
    """Seed torch's global generator (every device) with the ``weights`` stream: call before building."""
    torch.manual_seed(stream_seed(seed, "weights"))


def seed_dropout(seed: int) -> None:
    """Seed torch's global generator (every device) with the ``dropout`` stream: call after building, before
    the first training step."""
    torch.manual_seed(stream_seed(seed, "dropout"))


def seed_augment(seed: int) -> None:
    """Seed NumPy's global generator with the ``augment`` stream (Wav2Vec2's SpecAugment masks)."""
    np.random.seed(stream_seed(seed, "augment"))


def batch_generator(seed: int) -> torch.Generator:
    """The ``batches`` stream: the generator of every epoch's clip order."""
    return torch.Generator().manual_seed(stream_seed(seed, "batches"))
