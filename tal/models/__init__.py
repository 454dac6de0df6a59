"""Model heads, one file each, registered by name in `tal.registry.MODELS` when imported."""
from tal.models import a2net, tan2d, tcn  # noqa: F401  (registers "a2net", "2dtan", "tcn")
