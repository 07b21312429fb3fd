"""Vectorizers: a model you already use, with an embmemo cache in front of it."""

from __future__ import annotations

from .base import CachingVectorizer
from .huggingface import HFTextVectorizer
from .openai import OpenAITextVectorizer

__all__ = ["CachingVectorizer", "HFTextVectorizer", "OpenAITextVectorizer"]
