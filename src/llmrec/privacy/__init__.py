"""Privacy built in: personal data scrubbed before it is stored or logged, raw text only encrypted, user deletion.

* :class:`TextProtection` decides what of a user-written text (a profile, a chat message) is stored: the scrubbed
  text always (:func:`llmrec.text.pii.scrub` on the raw text, before any other normalisation), and the raw text
  only when configured, then encrypted with Fernet (``cryptography``) under a key from the environment.
* :class:`PiiLogFilter` scrubs every log record; :func:`install_log_scrubbing` puts it on the handlers the CLI and
  the server log through.
* :func:`forget_user` and :func:`export_user` delete or export everything stored about a user, with an audit
  row saying who did it;
* :func:`subject_digest` is how the audit log names a user without keeping the id (see
  :meth:`llmrec.data.store.Store.forget_user`).

Private training: DP-SGD is a training option of the sequential scorers (``TrainOptions(dp=DPOptions(...))``,
see :mod:`llmrec.models.sequential`), and :mod:`llmrec.privacy.federated` trains them by federated averaging over
user partitions (``TrainOptions(federated=FederatedOptions(...))``). The option types are re-exported here.
"""

from llmrec.models.base import ClientDPOptions, DPOptions, FederatedOptions, PrivacyReport
from llmrec.privacy.at_rest import KEY_ENV, RAW_ENV, TextProtection, subject_digest
from llmrec.privacy.logs import PiiLogFilter, install_log_scrubbing
from llmrec.privacy.rights import derived_text_hashes, export_user, forget_user

__all__ = [
    "KEY_ENV",
    "RAW_ENV",
    "ClientDPOptions",
    "DPOptions",
    "FederatedOptions",
    "PiiLogFilter",
    "PrivacyReport",
    "TextProtection",
    "derived_text_hashes",
    "export_user",
    "forget_user",
    "install_log_scrubbing",
    "subject_digest",
]
