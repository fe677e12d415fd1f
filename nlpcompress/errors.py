"""The two error types: bad settings in the Python API, and bad input at the command line."""


class UserError(Exception):
    """Bad input from the user: the message names what is wrong and what is allowed (exit code 2)."""


class ConfigError(ValueError):
    """A bad parameter of a technique's typed config; ``field`` names it so a recipe can point at its key.

    Raised by the configs' own validation (the one place each parameter is checked). The recipe
    schema turns it into a validation error at ``stages.<i>.<field>``, the CLI into one line.
    """

    def __init__(self, field: str, value: object, message: str):
        super().__init__(f"{field}: {message} (got {value!r})")
        self.field, self.value, self.message = field, value, message
