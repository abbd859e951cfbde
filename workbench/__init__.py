"""workbench: RAG vs fine-tuning on one corpus."""
__version__ = "0.1.0"
