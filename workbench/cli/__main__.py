"""``python -m workbench.cli``: the same entry as the ``workbench`` command."""
from workbench.cli import app

app()
