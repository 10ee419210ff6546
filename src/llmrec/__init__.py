"""llmrec: language models in recommendation, end to end, on an ordinary machine.

Heavy parts are imported lazily by the modules that need them; importing ``llmrec`` itself is cheap.
"""

from llmrec.errors import (
    ConfigError,
    DataValidationError,
    LeakageError,
    LlmrecError,
    NotFittedError,
    StoreError,
    UnknownIdError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataValidationError",
    "LeakageError",
    "LlmrecError",
    "NotFittedError",
    "StoreError",
    "UnknownIdError",
    "__version__",
]
