"""Training: importers, validation, dataset building, the LoRA recipe and the job runner."""
