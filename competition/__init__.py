"""VQA competition toolkit: split, train LLaVA per fold, predict, vote, tune and submit."""

__version__ = "0.1.0"
