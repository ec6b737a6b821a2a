"""Small shared helpers: atomic I/O, locks, errors, progress output."""
