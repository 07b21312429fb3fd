"""Vectorizers: a model you already use, with an embmemo cache in front of it."""

from __future__ import annotations

from .huggingface import HFTextVectorizer

__all__ = ["HFTextVectorizer"]
