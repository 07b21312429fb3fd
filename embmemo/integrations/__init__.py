"""Adapters to the frameworks users already embed through (imported on use, each an
optional extra): ``embmemo.integrations.langchain`` and ``embmemo.integrations.llama_index``."""
