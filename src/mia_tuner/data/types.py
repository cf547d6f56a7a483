"""The member/non-member set every other part of the package speaks."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

MEMBER = 1
NON_MEMBER = 0


@dataclass(frozen=True)
class MembershipSet:
    """Texts with membership labels (1 = member, 0 = non-member)."""

    texts: tuple[str, ...]
    labels: tuple[int, ...]
    name: str = "unnamed"
    info: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "texts", tuple(self.texts))
        object.__setattr__(self, "labels", tuple(int(label) for label in self.labels))
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def n_member(self) -> int:
        return sum(1 for label in self.labels if label == MEMBER)

    @property
    def n_nonmember(self) -> int:
        return sum(1 for label in self.labels if label == NON_MEMBER)

    def fingerprint(self) -> str:
        """A content hash of texts and labels, in order (used in cache keys)."""
        payload = json.dumps([self.texts, self.labels], ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]

    def subset(self, indices, name: str | None = None) -> "MembershipSet":
        indices = list(indices)
        return MembershipSet(
            texts=tuple(self.texts[i] for i in indices),
            labels=tuple(self.labels[i] for i in indices),
            name=name or self.name,
            info=dict(self.info),
        )


def text_hash(text: str) -> str:
    """Stable identity of one text (cache keys, duplicate checks)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
