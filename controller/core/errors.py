"""The core's error vocabulary; each adapter maps it once (CLI: exit codes, kopf: its errors)."""


class SettingsError(Exception):
    """Something in the declarations or schemas prevents a correct result."""


class SchemaError(SettingsError):
    """The schema documents themselves are inconsistent (a bug in schemas/, not in user input)."""
