"""Training: training data (gold or synthesized), the trainer, LoRA / continued pre-training / RAFT / from-scratch fine-tuning, adapters and export."""
