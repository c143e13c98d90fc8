"""botkit: a chat bot framework whose brain is a LoRA-fine-tuned causal language model."""
__version__ = "0.1.0"
