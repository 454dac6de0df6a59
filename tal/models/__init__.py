"""Model heads, one file each, registered by name in `tal.registry.MODELS` when imported."""
from tal.models import a2net, man, tan2d, tcn  # noqa: F401  (registers "a2net", "man", "2dtan", "tcn")
from tal.models import s2dtan  # noqa: F401  (registers "s2dtan")
from tal.models import s3d  # noqa: F401  (registers "s3d")
from tal.models import bsnpp  # noqa: F401  (registers "bsnpp")
