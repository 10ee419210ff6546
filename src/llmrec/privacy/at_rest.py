"""What of a user-written text is stored: the scrubbed text always, the raw text only by choice and encrypted.

Profiles and chat messages are the two places people type personal data into a recommender ("I'm Jane, mail me at
jane@example.com"). By default only the scrubbed text is kept: :func:`llmrec.text.pii.scrub` runs on the raw text
as typed, before any cleaning or tokenising, so punctuation stripping can never split an e-mail address into
words that slip past it. A deployment that must keep what was typed (a legal hold, a support desk) sets
``LLMREC_KEEP_RAW_TEXT=1`` and ``LLMREC_PII_KEY`` (a Fernet key, ``TextProtection.generate_key()``); the raw text
is then stored beside the scrubbed one as a Fernet token (AES-128-CBC + HMAC-SHA256, from ``cryptography``), never
in a column a prompt, an embedding or a listing reads. Several comma-separated keys rotate: the first encrypts,
every one decrypts.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from llmrec.errors import ConfigError
from llmrec.text.pii import ScrubPolicy, scrub

if TYPE_CHECKING:
    from llmrec.config import Settings

__all__ = ["KEY_ENV", "RAW_ENV", "Protected", "TextProtection", "subject_digest"]

KEY_ENV = "LLMREC_PII_KEY"
"""Environment variable holding the Fernet key(s) of the raw text (comma-separated: the first encrypts)."""
RAW_ENV = "LLMREC_KEEP_RAW_TEXT"
"""Environment variable that turns on keeping the raw text (encrypted)."""

_INSTALL_FIX = "pip install -c constraints.txt 'llmrec[privacy]' (the cryptography package)"


@dataclass(frozen=True)
class Protected:
    """A text as it is stored.

    Attributes:
        text: The scrubbed text (what every reader sees).
        raw: The raw text as a Fernet token, or ``None`` when raw text is not kept (the default) or nothing was
            scrubbed from it (then ``text`` is the raw text).
        counts: PII replaced, per kind.

    """

    text: str
    raw: str | None = None
    counts: Mapping[str, int] = field(default_factory=dict)


class TextProtection:
    """Scrubs user-written text for storage and, when configured, encrypts the raw text (see the module docstring).

    Args:
        keep_raw: Also keep the raw text, encrypted (needs ``key``).
        key: Fernet key(s), urlsafe base64 of 32 bytes, comma-separated for rotation. A key without ``keep_raw``
            still decrypts raw text stored earlier (for exports).
        policy: What the scrubber removes (everything it knows by default).

    Raises:
        ConfigError: ``keep_raw`` without a key, a malformed key, or ``cryptography`` missing while a key is given.

    Example:
        >>> TextProtection().protect("mail jane@example.com").text
        'mail [EMAIL]'

    """

    def __init__(
        self, *, keep_raw: bool = False, key: str | SecretStr | None = None, policy: ScrubPolicy | None = None
    ) -> None:
        secret = key.get_secret_value() if isinstance(key, SecretStr) else key
        secret = (secret or "").strip() or None
        if keep_raw and secret is None:
            raise ConfigError(
                f"keeping the raw text ({RAW_ENV}) needs an encryption key",
                field=KEY_ENV,
                fix=f"set {KEY_ENV} to a key from `python -c 'from llmrec.privacy import TextProtection; "
                "print(TextProtection.generate_key())'`, or leave raw text off (only scrubbed text is stored)",
            )
        self.keep_raw = keep_raw
        self.policy = policy or ScrubPolicy()
        self._fernet: Any = _fernet(secret) if secret is not None else None

    def __repr__(self) -> str:
        return f"TextProtection(keep_raw={self.keep_raw}, key={'set' if self._fernet is not None else 'none'})"

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> TextProtection:
        """The protection the deployment configured (``LLMREC_KEEP_RAW_TEXT``, ``LLMREC_PII_KEY``)."""
        from llmrec.config import get_settings

        settings = settings or get_settings()
        return cls(keep_raw=settings.keep_raw_text, key=settings.pii_key)

    @staticmethod
    def generate_key() -> str:
        """A fresh Fernet key (keep it secret, and keep it: raw text stored under it is unreadable without it)."""
        fernet_cls = _fernet_classes()[0]
        return str(fernet_cls.generate_key().decode("ascii"))

    @property
    def can_decrypt(self) -> bool:
        """Whether a key is configured (raw text stored under it can be read back)."""
        return self._fernet is not None

    def scrub(self, text: str) -> str:
        """``text`` with its PII replaced by placeholders (run on the raw text, before any other normalisation)."""
        return scrub(text, self.policy).text if text else text

    def protect(self, text: str) -> Protected:
        """What to store for ``text``: the scrubbed text, and the encrypted raw text when it is kept and differs."""
        if not text:
            return Protected(text or "")
        result = scrub(text, self.policy)
        raw = self.encrypt(text) if self.keep_raw and result.text != text else None
        return Protected(result.text, raw, result.counts)

    def encrypt(self, text: str) -> str:
        """``text`` as a Fernet token (ASCII).

        Raises:
            ConfigError: No key is configured.

        """
        if self._fernet is None:
            raise ConfigError("no encryption key is configured", field=KEY_ENV, fix=f"set {KEY_ENV}")
        return str(self._fernet.encrypt(text.encode("utf-8")).decode("ascii"))

    def decrypt(self, token: str) -> str:
        """The text a token of :meth:`encrypt` holds.

        Raises:
            ConfigError: No key is configured, or none of the keys opens the token (a wrong or rotated-out key).

        """
        if self._fernet is None:
            raise ConfigError(
                "raw text is stored encrypted but no key is configured", field=KEY_ENV, fix=f"set {KEY_ENV}"
            )
        invalid = _fernet_classes()[2]
        try:
            return str(self._fernet.decrypt(token.encode("ascii")).decode("utf-8"))
        except (invalid, UnicodeError) as exc:
            raise ConfigError(
                "the stored raw text cannot be decrypted with the configured key(s)",
                field=KEY_ENV,
                fix=f"add the key it was stored under to {KEY_ENV} (comma-separated keys all decrypt)",
            ) from exc


def _fernet_classes() -> tuple[Any, Any, Any]:
    try:
        from cryptography.fernet import Fernet, InvalidToken, MultiFernet
    except ImportError as exc:
        raise ConfigError("encrypting raw text needs the cryptography package", fix=_INSTALL_FIX) from exc
    return Fernet, MultiFernet, InvalidToken


def _fernet(secret: str) -> Any:
    fernet_cls, multi_cls, _ = _fernet_classes()
    keys = [k.strip() for k in secret.split(",") if k.strip()]
    try:
        return multi_cls([fernet_cls(k.encode("ascii")) for k in keys])
    except (ValueError, UnicodeError) as exc:
        raise ConfigError(
            f"{KEY_ENV} is not a Fernet key (32 bytes, urlsafe base64)",
            field=KEY_ENV,
            fix="make one with TextProtection.generate_key()",
        ) from exc


def new_salt() -> str:
    """A random salt for :func:`subject_digest` (16 bytes, hex)."""
    return secrets.token_hex(16)


def subject_digest(dataset: str, user_id: str, salt: str) -> str:
    """How the audit log names a user: SHA-256 of salt, dataset and id, so the log never holds the id itself.

    Whoever knows the id can check an audit row (recompute with the row's salt); the row alone does not give the
    id back, except by trying candidate ids, which is why the log is shown to the admin only.
    """
    return hashlib.sha256(f"{salt}\x00{dataset}\x00{user_id}".encode()).hexdigest()
