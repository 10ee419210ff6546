"""Adaptation: fit the language model to recommendation (instruction data, LoRA, prompt tuning).

Everything here learns from the training part of a split only. Modules import torch and peft lazily, inside the
functions that train, so importing ``llmrec.adapt`` stays cheap.
"""
