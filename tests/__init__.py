"""The test suite is a package: helpers import as `tests.<area>.<module>`, no path edits."""
