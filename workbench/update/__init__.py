"""Knowledge updates: update folders, the update strategies (reindex, continue, retrain), their measures and report section."""
