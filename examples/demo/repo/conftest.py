# Makes the repository root importable, as in most small projects.
