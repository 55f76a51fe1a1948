"""Test plug-in file that defines no Plugin subclass (fails validation)."""


class NotAPlugin:
    name = "not-a-plugin"
