"""LoRA fine-tuning: data formats, the training loop, evaluation."""
