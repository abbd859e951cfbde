"""Core: errors, paths and artifact names, the artifact catalogue, typed configs and presets, shared records,
atomic artifacts and manifests, locks, cost measures, text and language helpers, model files on disk (hub),
plot helpers. Imports nothing else of the project."""
