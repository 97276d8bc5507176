"""The one product fold behind rollout, gradient rollout and GAE: R = F_L ··· F_1, one layer at a time.

Each method turns a layer's attention (and its gradient) into a (B, N, N) factor F_l; the
explanation is the product of the factors, first layer rightmost, read at the class row. Layers
arrive first-to-last in a forward pass (R ← F_l R) and last-to-first in a backward pass
(R ← R F_l); both give the same product, and only the running product is kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from torch import Tensor


class ProductFold:
    """A running product of layer factors; ``add`` them in forward or (``backward=True``) reverse order."""

    def __init__(self, backward: bool = False) -> None:
        self.backward = backward
        self.value: Tensor | None = None

    def add(self, factor: Tensor) -> Tensor:
        """Fold in the next layer's (B, N, N) factor; returns the product so far."""
        if self.value is None:
            self.value = factor
        else:
            self.value = self.value @ factor if self.backward else factor @ self.value
        return self.value

    def result(self) -> Tensor:
        if self.value is None:
            raise ValueError("no layer was folded: the product of zero layers is undefined here")
        return self.value


def running_products(factors: Iterable[Tensor]) -> Iterator[Tensor]:
    """F_1, F_2 F_1, ..., F_L ··· F_1 for factors given first layer first."""
    fold = ProductFold()
    for factor in factors:
        yield fold.add(factor)


def product(factors: Iterable[Tensor]) -> Tensor:
    """F_L ··· F_1 for factors given first layer first."""
    fold = ProductFold()
    for factor in factors:
        fold.add(factor)
    return fold.result()
